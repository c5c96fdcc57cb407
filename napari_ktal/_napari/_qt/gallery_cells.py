"""The gallery's cells: a list model over the batch and a delegate that paints each volume
(thumbnail framed in its label's colour, number and uncertainty, the teacher's class and
confidence, the label). The view is :mod:`.gallery`.

The label is a chip in its class's colour with black or white text (whichever contrasts more),
never class-coloured text: that was unreadable on the grey of a selected cell (contrast ratio
down to 1.04 on napari's dark theme) and on some class colours; the other lines use the
palette's text colour, its highlighted-text colour in a selected cell.
"""

from __future__ import annotations

import math

from qtpy.QtCore import QAbstractListModel, QRect, QSize, Qt
from qtpy.QtGui import QColor, QPen
from qtpy.QtWidgets import QStyle, QStyledItemDelegate

from ...core.loop.session import shown_score
from ..palette import UNLABELED, text_color_on

THUMB = 88  # thumbnail side in pixels
CELL = QSize(THUMB + 16, THUMB + 46)
CHIP_PADDING = 4  # pixels either side of a label's text in its chip


def caption(pos: int, item, batch: list) -> str:
    """A cell's first line: its place in the batch, and the strategy's score where the expert may see
    it (:func:`~napari_ktal.core.loop.session.shown_score`: none at all in a batch with an audit slice,
    so the audit volumes, which have none, look like the rest)."""
    shown = shown_score(item, batch)
    return f"{pos + 1}" if shown is None or math.isnan(shown) else f"{pos + 1} · {shown:.3g}"


class GalleryModel(QAbstractListModel):
    """The batch in display order; the view's state (labels, thumbnails) is read when painting."""

    def __init__(self, parent=None, label_of=lambda index: None):
        """``label_of(pool index)``: the volume's label or None (for the tooltip)."""
        super().__init__(parent)
        self.label_of = label_of
        self.rows: list = []  # QueryItem per row, in display order
        self.position: dict[int, int] = {}  # pool index -> batch position
        self._rows_by_index: dict[int, int] = {}

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
        if role == Qt.ItemDataRole.ToolTipRole:
            shown = shown_score(item, self.rows)
            score = ("score not shown" if shown is None else "random pick" if math.isnan(shown)
                     else f"uncertainty {shown:.3g}")
            teacher = f"teacher: {item.predicted} {100 * item.confidence:.0f}%" if item.predicted else "no teacher yet"
            label = self.label_of(item.index)
            yours = f" · your label: {label}" if label is not None else ""  # a cell elides a long class name
            return f"#{self.position.get(item.index, 0) + 1} {item.key} · {score} · {teacher}{yours}"
        return None

    def set_rows(self, rows: list, positions: dict[int, int]) -> None:
        self.beginResetModel()
        self.rows, self.position = list(rows), dict(positions)
        self._rows_by_index = {item.index: r for r, item in enumerate(self.rows)}
        self.endResetModel()


    def touch(self, pool_indices=None) -> None:
        """Repaint the cells of ``pool_indices`` (all if None)."""
        if not self.rows:
            return
        if pool_indices is None:
            self.dataChanged.emit(self.index(0), self.index(len(self.rows) - 1))
            return
        for i in pool_indices:
            r = self.row_of(i)
            if r is not None:
                self.dataChanged.emit(self.index(r), self.index(r))

    def row_of(self, pool_index: int) -> int | None:
        return self._rows_by_index.get(pool_index)


class CellDelegate(QStyledItemDelegate):
    def __init__(self, gallery):
        super().__init__(gallery)
        self.g = gallery

    def sizeHint(self, option, index) -> QSize:  # noqa: N802 - Qt's name
        return CELL

    def paint(self, painter, option, index) -> None:
        g, item = self.g, index.data(Qt.ItemDataRole.UserRole)
        r = option.rect.adjusted(2, 2, -2, -2)
        painter.save()
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        if selected:
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
        text = (option.palette.highlightedText() if selected else option.palette.text()).color()
        painter.setPen(text)
        font = painter.font()
        font.setPointSizeF(max(6.0, font.pointSizeF() - 1.5))
        painter.setFont(font)
        line = painter.fontMetrics().lineSpacing()
        y = box.bottom() + 4
        batch = g.session.batch if g.session is not None else [item]
        painter.drawText(QRect(r.x(), y, r.width(), line), Qt.AlignmentFlag.AlignHCenter, caption(pos, item, batch))
        if item.predicted:
            color = QColor(g.colors.get(item.predicted, UNLABELED))
            painter.fillRect(QRect(r.x() + 3, y + line + line // 4, line // 2, line // 2), color)
            teacher = f"{item.predicted} {100 * item.confidence:.0f}%"
            painter.drawText(QRect(r.x() + 3 + line // 2 + 2, y + line, r.width() - line // 2 - 5, line),
                             Qt.AlignmentFlag.AlignLeft, painter.fontMetrics().elidedText(
                                 teacher, Qt.TextElideMode.ElideRight, r.width() - line // 2 - 5))
        if label is not None:
            self._chip(painter, label, g.colors.get(label, UNLABELED), QRect(r.x(), y + 2 * line, r.width(), line))
        painter.restore()

    @staticmethod
    def _chip(painter, text: str, color: str, room: QRect) -> QRect:
        """``text`` centred in ``room`` on a chip of ``color``, in black or white; returns the chip."""
        fm = painter.fontMetrics()
        shown = fm.elidedText(text, Qt.TextElideMode.ElideRight, room.width() - 2 * CHIP_PADDING)
        width = fm.horizontalAdvance(shown) + 2 * CHIP_PADDING
        chip = QRect(room.x() + (room.width() - width) // 2, room.y(), width, room.height())
        painter.fillRect(chip, QColor(color))
        painter.setPen(QColor(text_color_on(color)))
        painter.drawText(chip, Qt.AlignmentFlag.AlignCenter, shown)
        return chip
