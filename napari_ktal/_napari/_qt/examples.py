"""Per-class examples: for each class, the labeled volumes the teacher is most sure of.

One row per class (its colour, key and name, how many volumes it labels) and up to six
thumbnails, ranked by the latest teacher's probability of that class
(:func:`~napari_ktal.core.loop.review.class_examples`). A click shows the volume in the
viewer. Before any cycle is trained, the first labeled volumes of each class are shown.
Rebuilt only while visible.
"""

from __future__ import annotations

import math

from qtpy.QtCore import QSize, Qt, Signal
from qtpy.QtGui import QIcon
from qtpy.QtWidgets import (
    QAbstractItemView,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import qdebounced

from ...core.loop.session import key_of_class
from ..palette import class_color
from .common import REFRESH_MS, RefreshWhenShown, pixmap_of

THUMB = 72


class ExamplesView(RefreshWhenShown, QScrollArea):
    visitRequested = Signal(int)  # pool index

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.source = None  # the browser: examples(), thumbnail(index), teacher
        self.session = None
        self._dirty = True
        self._shown: dict[str, list[int]] = {}
        self._lists: dict[str, QListWidget] = {}
        self._refresh_soon = qdebounced(self.refresh, REFRESH_MS, parent=self)
        self.setWidgetResizable(True)
        self.inner = QWidget(self)
        self.rows = QVBoxLayout(self.inner)
        self.rows.setContentsMargins(2, 2, 2, 2)
        self.setWidget(self.inner)

    def refresh(self) -> None:
        """Rebuild the rows (classes, labels or the teacher's opinion changed)."""
        self._refresh_soon.cancel()
        self._dirty = False
        while self.rows.count():
            w = self.rows.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        self._lists = {}
        if self.source is None or self.session is None:
            return
        self._shown = self.source.examples()
        self.source.request([i for idx in self._shown.values() for i in idx])
        labels = self.session.labels
        teacher = self.source.teacher
        how = (f"ranked by cycle {teacher.cycle}'s teacher: the volumes it is most sure of" if teacher is not None
               else "no trained cycle yet: the first labeled volumes")
        head = QLabel(f"Examples of each class, {how}. Click one to show it.", self.inner)
        head.setWordWrap(True)
        self.rows.addWidget(head)
        for k, name in enumerate(self.session.classes):
            n = sum(1 for lab in labels.values() if lab == name)
            key = key_of_class(k)
            title = QLabel(f"<span style='color:{class_color(k)}'>■</span> <b>{name}</b>"
                           + (f" (key {key})" if key else "") + f" · {n} labeled", self.inner)
            self.rows.addWidget(title)
            strip = QListWidget(self.inner)
            strip.setViewMode(QListView.ViewMode.IconMode)
            strip.setFlow(QListView.Flow.LeftToRight)
            strip.setWrapping(False)
            strip.setMovement(QListView.Movement.Static)
            strip.setIconSize(QSize(THUMB, THUMB))
            strip.setFixedHeight(THUMB + 30)
            strip.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
            strip.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
            for i in self._shown.get(name, []):
                p = teacher.probability(i, name) if teacher is not None else float("nan")
                item = QListWidgetItem("" if math.isnan(p) else f"{100 * p:.0f}%")
                item.setData(Qt.ItemDataRole.UserRole, i)
                item.setToolTip(f"{self.session.project.pool.keys[i]} (pool index {i})")
                strip.addItem(item)
            if not self._shown.get(name):
                strip.addItem(QListWidgetItem("no labeled volume yet"))
            strip.itemClicked.connect(self._clicked)
            self.rows.addWidget(strip)
            self._lists[name] = strip
        self.rows.addStretch(1)
        self.thumbnails_ready(None)

    def thumbnails_ready(self, indices) -> None:
        """Put the thumbnails that are made into the strips."""
        if self.source is None:
            return
        for strip in self._lists.values():
            for r in range(strip.count()):
                item = strip.item(r)
                i = item.data(Qt.ItemDataRole.UserRole)
                if i is None or (indices is not None and indices and i not in indices and not item.icon().isNull()):
                    continue
                image = self.source.thumbnail(i)
                if image is not None:
                    item.setIcon(QIcon(pixmap_of(image, THUMB)))

    def _clicked(self, item) -> None:
        i = item.data(Qt.ItemDataRole.UserRole)
        if i is not None:
            self.visitRequested.emit(int(i))
