"""The gallery of the batch: every volume as a thumbnail, with the teacher's guess and the score.

A list view in icon mode over a small model (uniform item sizes: a 300-volume batch scrolls
as fast as a 30-volume one; only the visible thumbnails are painted). Thumbnails come from
the controller's browser, made once in the background; until then a cell shows its number.

Mouse: a click shows the volume in the viewer; Ctrl/Shift-click selects several. Keys (with
the gallery focused): arrows move, Enter shows, a class key labels every selected volume,
N / P / S / U as in the viewer. The sort menu orders by batch rank, the teacher's class
(grouped), the uncertainty or your label.
"""

from __future__ import annotations

import math

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QMenu,
    QVBoxLayout,
    QWidget,
)

from ...core.loop.session import CLASS_KEYS, class_of_key, shown_score
from ..palette import class_colors
from ..thumbnails import MODES as THUMB_MODES
from .common import ACTION_KEYS, event_key, pixmap_of
from .elided import ElidedLabel
from .gallery_cells import CELL, THUMB, CellDelegate, GalleryModel

ORDERS = {"rank": "batch order", "teacher": "teacher's class", "score": "most uncertain first",
          "label": "your label"}


class _List(QListView):
    keyAction = Signal(str)  # a class key ("3", "Q") or an action key ("N", "U")

    def keyPressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        key = event_key(event)
        if key is not None:
            self.keyAction.emit(key)
            event.accept()
            return
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.currentIndex().isValid():
            self.clicked.emit(self.currentIndex())
            return
        super().keyPressEvent(event)


class GalleryView(QWidget):
    goToRequested = Signal(int)  # batch position
    assignRequested = Signal(object, str)  # pool indices, class name
    classKeyPressed = Signal(object, str)  # pool indices, a class key ("3", "Q"): the controller knows its class
    actionRequested = Signal(str)  # "next", "previous", "skip", "undo"
    modeChosen = Signal(str)  # a thumbnail mode

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = None
        self.thumbnail = lambda index: None
        self.colors: dict[str, str] = {}
        self.current = -1
        self._pixmaps: dict[int, object] = {}
        self._state: dict[int, tuple] = {}  # pool index -> (label, skipped) as last painted

        self.mode = QComboBox(self)
        for key, text in THUMB_MODES.items():
            self.mode.addItem(text, key)
        self.mode.setToolTip("What each thumbnail shows")
        self.order = QComboBox(self)
        for key, text in ORDERS.items():
            self.order.addItem(text, key)
        self.order.setToolTip("Order of the thumbnails (the teacher's class groups them)")
        self.summary = QLabel(self)
        hint = ElidedLabel("click: show · Ctrl/Shift-click: select several · class key: label the selection", self,
                           Qt.TextElideMode.ElideRight)
        hint.setStyleSheet("color: gray;")
        tools = QHBoxLayout()
        tools.addWidget(QLabel("Thumbnails", self))
        tools.addWidget(self.mode)
        tools.addWidget(QLabel("Sort", self))
        tools.addWidget(self.order)
        tools.addWidget(self.summary, 1)
        tools.addWidget(hint)

        self.model = GalleryModel(self, label_of=self.label_of)
        self.list = _List(self)
        self.list.setModel(self.model)
        self.list.setItemDelegate(CellDelegate(self))
        self.list.setViewMode(QListView.ViewMode.IconMode)
        self.list.setFlow(QListView.Flow.LeftToRight)
        self.list.setWrapping(True)
        self.list.setResizeMode(QListView.ResizeMode.Adjust)
        self.list.setMovement(QListView.Movement.Static)
        self.list.setUniformItemSizes(True)
        self.list.setGridSize(CELL)
        # at least one row of cells: more would not fit under napari's layer docks on an 800 px screen
        self.list.setMinimumHeight(CELL.height() + 2 * self.list.frameWidth())
        self.list.setSpacing(0)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.list.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.list.verticalScrollBar().setSingleStep(CELL.height() // 3)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._menu)
        self.list.clicked.connect(self._clicked)
        self.list.keyAction.connect(self._key)
        self.mode.currentIndexChanged.connect(lambda _: self.modeChosen.emit(self.mode.currentData()))
        self.order.currentIndexChanged.connect(lambda _: self.set_batch(self.session))

        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(tools)
        layout.addWidget(self.list, 1)

    # -- what a cell shows ------------------------------------------------------------------------
    def label_of(self, index: int) -> str | None:
        return self.session.label_of(index) if self.session is not None else None

    def is_skipped(self, index: int) -> bool:
        return self.session is not None and self.session.is_skipped(index)

    def pixmap(self, index: int):
        pix = self._pixmaps.get(index)
        if pix is None:
            image = self.thumbnail(index)
            if image is not None:
                pix = self._pixmaps[index] = pixmap_of(image, THUMB)
        return pix

    # -- filling --------------------------------------------------------------------------------
    def set_batch(self, session) -> None:
        """Show ``session``'s batch (a new batch, or another order)."""
        self.session = session
        if session is None:
            self.model.set_rows([], {})
            return
        self.colors = class_colors(session.classes)
        rows = sorted(session.batch, key=self._order_key(session))
        self.model.set_rows(rows, {q.index: pos for pos, q in enumerate(session.batch)})
        self._state = {}
        self.refresh_state(session)

    def _order_key(self, session):
        order = self.order.currentData()
        rank = {c: k for k, c in enumerate(session.classes)}
        n = len(rank)
        if order == "teacher":
            return lambda q: (rank.get(q.predicted, n), -_num(q.confidence), q.rank)
        if order == "score":  # by the score the expert may see: none in a batch with an audit slice
            return lambda q: (-_num(shown_score(q, session.batch)), q.rank)
        if order == "label":
            return lambda q: (rank.get(session.label_of(q.index), -1), q.rank)
        return lambda q: q.rank

    def refresh_state(self, session) -> None:
        """Labels or the current volume changed: repaint the cells that changed, keep the current in sight."""
        self.session = session
        if session is None:
            return
        before = self.current
        self.current = session.position if session.visiting is None else -1
        state = {q.index: (session.label_of(q.index), session.is_skipped(q.index)) for q in session.batch}
        changed = {i for i, st in state.items() if self._state.get(i) != st}
        for pos in (before, self.current):
            if 0 <= pos < len(session.batch):
                changed.add(session.batch[pos].index)
        self._state = state
        n_lab, n_skip = session.n_labeled_in_batch, session.n_skipped_in_batch
        self.summary.setText(f"  {len(session)} volumes · {n_lab} labeled" + (f" · {n_skip} skipped" if n_skip else ""))
        self.model.touch(changed)
        if session.item is not None and session.visiting is None:
            row = self.model.row_of(session.item.index)
            if row is not None:
                self.list.scrollTo(self.model.index(row), QAbstractItemView.ScrollHint.EnsureVisible)

    def classes_changed(self, session) -> None:
        self.colors = class_colors(session.classes) if session is not None else {}
        self.model.touch()

    def thumbnails_ready(self, indices: list[int]) -> None:
        if not indices:  # another kind of thumbnail: forget the pixmaps
            self._pixmaps.clear()
        self.model.touch(indices or None)

    def clear_pixmaps(self) -> None:
        self._pixmaps.clear()

    # -- user actions --------------------------------------------------------------------------------
    def selected(self) -> list[int]:
        """Pool indices of the selected cells, in display order (the current one if none is selected)."""
        rows = sorted(i.row() for i in self.list.selectionModel().selectedIndexes())
        if not rows and self.list.currentIndex().isValid():
            rows = [self.list.currentIndex().row()]
        return [self.model.rows[r].index for r in rows]

    def _clicked(self, index) -> None:
        item = index.data(Qt.ItemDataRole.UserRole)
        if item is not None:
            self.goToRequested.emit(self.model.position[item.index])

    def _key(self, key: str) -> None:
        if key in ACTION_KEYS:
            self.actionRequested.emit(ACTION_KEYS[key])
            return
        if class_of_key(key) is not None:
            chosen = self.selected()
            if chosen:
                self.classKeyPressed.emit(chosen, key)

    def _menu(self, pos) -> None:
        if self.session is None or not self.selected():
            return
        menu = QMenu(self)
        for k, name in enumerate(self.session.classes):
            key = f"\t{CLASS_KEYS[k]}" if k < len(CLASS_KEYS) else ""
            action = menu.addAction(f"Label {len(self.selected())} as {name}{key}")
            action.setData(name)
        chosen = menu.exec(self.list.viewport().mapToGlobal(pos))
        if chosen is not None:
            self.assignRequested.emit(self.selected(), chosen.data())


def _num(v: float) -> float:
    return -1.0 if v is None or math.isnan(v) else float(v)
