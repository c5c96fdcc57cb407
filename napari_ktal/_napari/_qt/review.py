"""The review table: every label of the project, likely mistakes first; relabel or unlabel any.

Rows come from :meth:`~napari_ktal._napari.browser.Browser.review_rows` (volume, class, what
the labels judged out of sample suggest and their probability of the given label, cycle, who
and when, the latest teacher's guess and confidence, and its probability of the given label).
Once the current labels are judged out of sample (cross-fitted teachers that never saw the
label they judge, in the background after each cycle), likely mistakes come first by that
verdict; until then the line above the table says so and the rows are ordered by the latest
teacher, which trained on the labels. Filters: one class, and only the likely mistakes.
Click a column header to sort by it. With the table focused, a class key relabels the selected rows,
Delete takes their labels back, U undoes; a double click shows the volume in the viewer
(a class key there relabels it too). Every correction is a new journal record.

The table is rebuilt only while it is visible, and at most every 150 ms.
"""

from __future__ import annotations

import math
import time

from qtpy.QtCore import QAbstractTableModel, QSortFilterProxyModel, Qt, Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import qdebounced

from ...core.loop.session import class_of_key
from ..palette import UNLABELED, class_colors
from .common import ACTION_KEYS, REFRESH_MS, RefreshWhenShown, event_key, swatch
from .fields import shrinkable

COLUMNS = ["volume", "label", "suggested", "p(label) out of sample", "cycle", "by", "when", "teacher says",
           "confidence", "p(label)"]
OUT_OF_SAMPLE_TIP = ("Judged out of sample: by teachers trained without this label (cross-fitting), so a wrong "
                     "label is not simply memorised. 'suggested': their class; 'p(label) out of sample': their "
                     "probability of the label given.")
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
ALL = "all classes"


def _pct(v: float) -> str:
    return "—" if math.isnan(v) else f"{100 * v:.0f}%"


def _prob(v: float) -> str:
    """A probability to 3 significant digits (0.00412, 0.5, 0.997); a dash when unknown."""
    return "—" if math.isnan(v) else f"{v:.3g}"


class ReviewModel(QAbstractTableModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list = []
        self.colors: dict[str, str] = {}

    def rowCount(self, parent=None) -> int:  # noqa: N802 - Qt's name
        return 0 if parent is not None and parent.isValid() else len(self.rows)

    def columnCount(self, parent=None) -> int:  # noqa: N802 - Qt's name
        return 0 if parent is not None and parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802 - Qt's name
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def set_rows(self, rows: list, colors: dict[str, str]) -> None:
        self.beginResetModel()
        self.rows, self.colors = rows, colors
        self.endResetModel()

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        r, col = self.rows[index.row()], COLUMNS[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return {
                "volume": r.key, "label": r.label, "cycle": "—" if r.cycle is None else str(r.cycle),
                "by": r.by + (f" (was {r.was})" if r.was else ""),
                "when": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.t)) if r.t else "—",
                "teacher says": r.predicted or "—", "confidence": _pct(r.confidence), "p(label)": _pct(r.p_label),
                "suggested": r.suggested or "—", "p(label) out of sample": _prob(r.p_out),
            }[col]
        if role == SORT_ROLE:  # what a click on the header sorts by
            return _sort_key(r, col)
        if role == Qt.ItemDataRole.DecorationRole and col in ("label", "teacher says", "suggested"):
            name = {"label": r.label, "teacher says": r.predicted, "suggested": r.suggested}[col]
            return swatch(self.colors.get(name, UNLABELED)) if name else None
        if role == Qt.ItemDataRole.ForegroundRole and (col == "teacher says" and r.disagrees
                                                       or col in ("suggested", "p(label) out of sample") and r.suspect):
            return QColor("#ff9f43")
        if role == Qt.ItemDataRole.ToolTipRole:
            return _tip(r, col)
        if role == Qt.ItemDataRole.UserRole:
            return r
        return None


def _sort_key(r, col: str):
    """What a click on ``col``'s header sorts ``r`` by (unknown numbers first)."""
    def number(v: float) -> float:
        return -1.0 if math.isnan(v) else v

    return {"volume": r.key, "label": r.label, "cycle": -1 if r.cycle is None else r.cycle, "by": r.by,
            "when": r.t or 0.0, "teacher says": r.predicted, "confidence": number(r.confidence),
            "p(label)": number(r.p_label), "suggested": r.suggested, "p(label) out of sample": number(r.p_out)}[col]


def _tip(r, col: str) -> str:
    if col in ("suggested", "p(label) out of sample"):
        verdict = f" · likely a mistake (score {r.score:.3g})" if r.suspect else ""
        return OUT_OF_SAMPLE_TIP + verdict if r.judged else "Not judged out of sample yet"
    return f"pool index {r.index}" + (" · the teacher disagrees with this label" if r.disagrees else "")


class _Table(QTableView):
    keyAction = Signal(str)
    deleteRequested = Signal()

    def keyPressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            self.deleteRequested.emit()
            return
        key = event_key(event)
        if key is not None:
            self.keyAction.emit(key)
            return
        super().keyPressEvent(event)


class ReviewView(RefreshWhenShown, QWidget):
    relabelRequested = Signal(object, str)  # pool indices, class name
    classKeyPressed = Signal(object, str)  # pool indices, a class key ("3", "Q"): the controller knows its class
    unlabelRequested = Signal(object)  # pool indices
    visitRequested = Signal(int)  # pool index
    undoRequested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.source = None  # the browser: review_rows(label, disagree_only)
        self.session = None
        self._dirty = True
        self._refresh_soon = qdebounced(self.refresh, REFRESH_MS, parent=self)

        self.class_filter = QComboBox(self)
        self.class_filter.setToolTip("Show the labels of this class")
        shrinkable(self.class_filter, tip_shows_text=True)
        self.class_filter.addItem(ALL)
        self.disagree = QCheckBox("only likely mistakes", self)
        self.disagree.setToolTip("Labels flagged out of sample (once judged), else those the teacher disagrees with")
        self.count = QLabel(self)
        self.judging = QLabel(self)  # whether the order is the out-of-sample verdict, and if not why
        self.judging.setToolTip(OUT_OF_SAMPLE_TIP)
        self.judging.setWordWrap(True)
        self.target = QComboBox(self)
        self.target.setToolTip("The class the selected labels become")
        shrinkable(self.target, tip_shows_text=True)
        self.relabel_button = QPushButton("Relabel selected", self)
        self.unlabel_button = QPushButton("Unlabel selected", self)
        self.unlabel_button.setToolTip("Take the labels back: the volumes return to the unlabeled pool (Delete)")
        tools = QHBoxLayout()
        for w in (QLabel("Show", self), self.class_filter, self.disagree, self.count):
            tools.addWidget(w)
        tools.addStretch(1)
        for w in (QLabel("as", self), self.target, self.relabel_button, self.unlabel_button):
            tools.addWidget(w)

        self.model = ReviewModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.table = _Table(self)
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setSortingEnabled(True)
        self.table.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)  # the model's order
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().lineSpacing() + 6)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setToolTip("Likely mistakes first: flagged out of sample, most suspect first (before that: the "
                              "labels the teacher disagrees with, least probable first).\n"
                              "Double-click: show it · class key: relabel the selection · Delete: unlabel · U: undo")
        self.table.doubleClicked.connect(lambda i: self.visitRequested.emit(i.data(Qt.ItemDataRole.UserRole).index))
        self.table.keyAction.connect(self._key)
        self.table.deleteRequested.connect(self._unlabel)
        self.relabel_button.clicked.connect(
            lambda: self.selected() and self.relabelRequested.emit(self.selected(), self.target.currentText()))
        self.unlabel_button.clicked.connect(self._unlabel)
        self.class_filter.currentIndexChanged.connect(lambda _: self.refresh())
        self.disagree.toggled.connect(lambda _: self.refresh())

        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(tools)
        layout.addWidget(self.judging)
        layout.addWidget(self.table, 1)

    # -- filling -------------------------------------------------------------------------------------
    def set_classes(self, classes: list[str]) -> None:
        current = self.class_filter.currentText()
        colors = class_colors(classes)
        for combo, items in ((self.class_filter, [ALL, *classes]), (self.target, classes)):
            combo.blockSignals(True)
            keep = combo.currentText()
            combo.clear()
            for name in items:
                if name in colors:
                    combo.addItem(swatch(colors[name]), name)
                else:
                    combo.addItem(name)
            combo.setCurrentIndex(max(0, combo.findText(keep)))
            combo.blockSignals(False)
        if self.class_filter.currentText() != current:
            self.refresh()
        else:
            self.changed()

    def refresh(self) -> None:
        self._refresh_soon.cancel()
        if self.source is None or self.session is None:
            self.model.set_rows([], {})
            return
        keep = set(self.selected())
        label = None if self.class_filter.currentText() in ("", ALL) else self.class_filter.currentText()
        rows = self.source.review_rows(label, self.disagree.isChecked())
        self.model.set_rows(rows, class_colors(self.session.classes))
        n_likely = sum(r.likely_mistake for r in rows)
        judged = any(r.judged for r in rows)
        what = "likely mistakes" if judged else "teacher disagrees on"
        self.count.setText(f"{len(rows)} labels" + (f", {what} {n_likely}" if n_likely else ""))
        self.judging.setText(self.source.review_state())
        self._dirty = False
        if keep:
            selection = self.table.selectionModel()
            for r, row in enumerate(rows):
                if row.index in keep:
                    index = self.proxy.mapFromSource(self.model.index(r, 0))
                    selection.select(index, selection.SelectionFlag.Select | selection.SelectionFlag.Rows)

    # -- user actions ----------------------------------------------------------------------------------
    def selected(self) -> list[int]:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return [self.proxy.mapToSource(i).data(Qt.ItemDataRole.UserRole).index for i in rows]

    def _unlabel(self) -> None:
        if self.selected():
            self.unlabelRequested.emit(self.selected())

    def _key(self, key: str) -> None:
        if ACTION_KEYS.get(key) == "undo":
            self.undoRequested.emit()
            return
        if class_of_key(key) is not None and self.selected():
            self.classKeyPressed.emit(self.selected(), key)
