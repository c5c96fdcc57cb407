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

from qtpy.QtCore import QAbstractListModel, QRect, QSize, Qt, Signal
from qtpy.QtGui import QColor, QPen
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QMenu,
    QStyle,
    QStyledItemDelegate,
    QVBoxLayout,
    QWidget,
)

from ...core.loop.session import CLASS_KEYS, class_of_key
from ..palette import UNLABELED, class_colors
from ..thumbnails import MODES as THUMB_MODES
from .common import ACTION_KEYS, event_key, pixmap_of

THUMB = 88  # thumbnail side in pixels
CELL = QSize(THUMB + 16, THUMB + 46)
ORDERS = {"rank": "batch order", "teacher": "teacher's class", "score": "most uncertain first",
          "label": "your label"}


class GalleryModel(QAbstractListModel):
    """The batch in display order; the view's state (labels, thumbnails) is read when painting."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list = []  # QueryItem per row, in display order
        self.position: dict[int, int] = {}  # pool index -> batch position

    def rowCount(self, parent=None) -> int:  # noqa: N802 - Qt's name
        return 0 if parent is not None and parent.isValid() else len(self.rows)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        item = self.rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return item.key
        if role == Qt.ItemDataRole.UserRole:
            return item
        return None

    def set_rows(self, rows: list, positions: dict[int, int]) -> None:
        self.beginResetModel()
        self.rows, self.position = list(rows), dict(positions)
        self.endResetModel()

    def row_of(self, pool_index: int) -> int | None:
        for r, item in enumerate(self.rows):
            if item.index == pool_index:
                return r
        return None

    def touch(self) -> None:
        """Everything may look different (labels, the current volume): repaint the visible cells."""
        if self.rows:
            self.dataChanged.emit(self.index(0), self.index(len(self.rows) - 1))


class _Delegate(QStyledItemDelegate):
    def __init__(self, gallery: GalleryView):
        super().__init__(gallery)
        self.g = gallery

    def sizeHint(self, option, index) -> QSize:  # noqa: N802 - Qt's name
        return CELL

    def paint(self, painter, option, index) -> None:
        g, item = self.g, index.data(Qt.ItemDataRole.UserRole)
        r = option.rect.adjusted(2, 2, -2, -2)
        painter.save()
        if option.state & QStyle.StateFlag.State_Selected:
            painter.fillRect(r, option.palette.highlight())
        box = QRect(r.x() + (r.width() - THUMB) // 2, r.y() + 3, THUMB, THUMB)
        pix = g.pixmap(item.index)
        if pix is not None:
            painter.drawPixmap(box.x() + (THUMB - pix.width()) // 2, box.y() + (THUMB - pix.height()) // 2, pix)
        else:
            painter.fillRect(box, QColor("#1a1c20"))
        label = g.label_of(item.index)
        pos = g.model.position.get(item.index, 0)
        if label is not None:
            painter.setPen(QPen(QColor(g.colors.get(label, UNLABELED)), 4))
        elif g.is_skipped(item.index):
            painter.setPen(QPen(QColor(UNLABELED), 2, Qt.PenStyle.DashLine))
        else:
            painter.setPen(QPen(QColor(UNLABELED), 1))
        painter.drawRect(box.adjusted(-1, -1, 1, 1))
        if pos == g.current:
            painter.setPen(QPen(QColor("#ffffff"), 2))
            painter.drawRect(box.adjusted(-4, -4, 4, 4))
        text = option.palette.text().color()
        painter.setPen(text)
        font = painter.font()
        font.setPointSizeF(max(6.0, font.pointSizeF() - 1.5))
        painter.setFont(font)
        line = painter.fontMetrics().lineSpacing()
        y = box.bottom() + 4
        score = "" if math.isnan(item.score) else f" · {item.score:.3g}"
        painter.drawText(QRect(r.x(), y, r.width(), line), Qt.AlignmentFlag.AlignHCenter, f"{pos + 1}{score}")
        if item.predicted:
            color = QColor(g.colors.get(item.predicted, UNLABELED))
            painter.fillRect(QRect(r.x() + 3, y + line + line // 4, line // 2, line // 2), color)
            teacher = f"{item.predicted} {100 * item.confidence:.0f}%"
            painter.drawText(QRect(r.x() + 3 + line // 2 + 2, y + line, r.width() - line // 2 - 5, line),
                             Qt.AlignmentFlag.AlignLeft, painter.fontMetrics().elidedText(
                                 teacher, Qt.TextElideMode.ElideRight, r.width() - line // 2 - 5))
        if label is not None:
            painter.setPen(QColor(g.colors.get(label, UNLABELED)))
            painter.drawText(QRect(r.x(), y + 2 * line, r.width(), line), Qt.AlignmentFlag.AlignHCenter,
                             painter.fontMetrics().elidedText(label, Qt.TextElideMode.ElideRight, r.width()))
        painter.restore()


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
    actionRequested = Signal(str)  # "next", "previous", "skip", "undo"
    modeChosen = Signal(str)  # a thumbnail mode

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = None
        self.thumbnail = lambda index: None
        self.colors: dict[str, str] = {}
        self.current = -1
        self._pixmaps: dict[int, object] = {}

        self.mode = QComboBox(self)
        for key, text in THUMB_MODES.items():
            self.mode.addItem(text, key)
        self.mode.setToolTip("What each thumbnail shows")
        self.order = QComboBox(self)
        for key, text in ORDERS.items():
            self.order.addItem(text, key)
        self.order.setToolTip("Order of the thumbnails (the teacher's class groups them)")
        self.summary = QLabel(self)
        hint = QLabel("click: show · Ctrl/Shift-click: select several · class key: label the selection", self)
        hint.setStyleSheet("color: gray;")
        tools = QHBoxLayout()
        tools.addWidget(QLabel("Thumbnails", self))
        tools.addWidget(self.mode)
        tools.addWidget(QLabel("Sort", self))
        tools.addWidget(self.order)
        tools.addWidget(self.summary, 1)
        tools.addWidget(hint)

        self.model = GalleryModel(self)
        self.list = _List(self)
        self.list.setModel(self.model)
        self.list.setItemDelegate(_Delegate(self))
        self.list.setViewMode(QListView.ViewMode.IconMode)
        self.list.setFlow(QListView.Flow.LeftToRight)
        self.list.setWrapping(True)
        self.list.setResizeMode(QListView.ResizeMode.Adjust)
        self.list.setMovement(QListView.Movement.Static)
        self.list.setUniformItemSizes(True)
        self.list.setGridSize(CELL)
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
        self.refresh_state(session)

    def _order_key(self, session):
        order = self.order.currentData()
        rank = {c: k for k, c in enumerate(session.classes)}
        n = len(rank)
        if order == "teacher":
            return lambda q: (rank.get(q.predicted, n), -_num(q.confidence), q.rank)
        if order == "score":
            return lambda q: (-_num(q.score), q.rank)
        if order == "label":
            return lambda q: (rank.get(session.label_of(q.index), -1), q.rank)
        return lambda q: q.rank

    def refresh_state(self, session) -> None:
        """Labels or the current volume changed: repaint, and keep the current volume in sight."""
        self.session = session
        if session is None:
            return
        self.current = session.position if session.visiting is None else -1
        n_lab, n_skip = session.n_labeled_in_batch, session.n_skipped_in_batch
        self.summary.setText(f"  {len(session)} volumes · {n_lab} labeled" + (f" · {n_skip} skipped" if n_skip else ""))
        self.model.touch()
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
        self.model.touch()

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
        k = class_of_key(key)
        if self.session is not None and k is not None and k < len(self.session.classes):
            chosen = self.selected()
            if chosen:
                self.assignRequested.emit(chosen, self.session.classes[k])

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
