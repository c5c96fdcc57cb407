"""A label and a button that fit any width: their text is elided ("sub_00…123.mrc") and then
shown whole in the tooltip.

The dock gets about 365 px of content width on a 1280 x 800 screen; names (volume files, class
names) are as long as a lab makes them. A plain QLabel or QPushButton asks for its whole text
and, squeezed, is cut without a sign ("Canc"); these ask only for a few characters and say
what they hide.
"""

from __future__ import annotations

from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import (
    QLabel,
    QPushButton,
    QSizePolicy,
    QStyle,
    QStyleOptionButton,
    QStylePainter,
)

MIN_CHARS = "MMMM"  # the least a squeezed label or button shows: about four characters and "…"


class ElidedLabel(QLabel):
    """One line of plain text, elided to the label's width; the whole text is then in the tooltip.

    :meth:`setToolTip` sets what the tooltip says besides; :meth:`full_text` is the text set.
    """

    def __init__(self, text: str = "", parent=None, mode: Qt.TextElideMode = Qt.TextElideMode.ElideMiddle):
        super().__init__(parent)
        self._full, self._tip, self._mode = "", "", mode
        self.elided = False
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.setText(text)

    def full_text(self) -> str:
        return self._full

    def setText(self, text: str) -> None:  # noqa: N802 - Qt's name
        self._full = text
        self._elide()
        self.updateGeometry()

    def setToolTip(self, tip: str) -> None:  # noqa: N802 - Qt's name
        self._tip = tip
        self._elide()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return self._with_text_width(super().sizeHint(), self._full)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return self._with_text_width(super().minimumSizeHint(), MIN_CHARS + "…")

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._elide()

    def _with_text_width(self, hint: QSize, text: str) -> QSize:
        margins = self.contentsMargins()
        return QSize(self.fontMetrics().horizontalAdvance(text) + margins.left() + margins.right()
                     + 2 * self.margin(), hint.height())

    def _elide(self) -> None:
        width = self.contentsRect().width() - 2 * self.margin()
        shown = self.fontMetrics().elidedText(self._full, self._mode, max(width, 0))
        self.elided = shown != self._full
        super().setText(shown)
        super().setToolTip("\n".join(t for t in (self._full if self.elided else "", self._tip) if t))


class ElidedButton(QPushButton):
    """A push button whose text is elided to its width; the whole text is then first in its tooltip."""

    def __init__(self, text: str = "", parent=None):
        super().__init__(text, parent)
        self._tip = ""
        self.elided = False
        # a push button's policy (Minimum) makes its whole text its least width; this one may shrink
        self.setSizePolicy(QSizePolicy.Policy.Preferred, self.sizePolicy().verticalPolicy())

    def setText(self, text: str) -> None:  # noqa: N802 - Qt's name
        super().setText(text)
        self._update_tip()

    def setToolTip(self, tip: str) -> None:  # noqa: N802 - Qt's name
        self._tip = tip
        self._update_tip()

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        hint = super().minimumSizeHint()
        squeezed = self.fontMetrics().horizontalAdvance(self.text()) - self.fontMetrics().horizontalAdvance(
            MIN_CHARS + "…")
        return QSize(max(hint.width() - max(squeezed, 0), 0), hint.height())

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._update_tip()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        option = QStyleOptionButton()
        self.initStyleOption(option)
        option.text = self._shown(option)
        QStylePainter(self).drawControl(QStyle.ControlElement.CE_PushButton, option)

    def _shown(self, option: QStyleOptionButton) -> str:
        """The text as it fits beside the icon in the button's contents."""
        room = self.style().subElementRect(QStyle.SubElement.SE_PushButtonContents, option, self).width()
        if not option.icon.isNull():
            room -= option.iconSize.width() + 4  # Qt's gap between a button's icon and its text
        return self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight, max(room, 0))

    def _update_tip(self) -> None:
        option = QStyleOptionButton()
        self.initStyleOption(option)
        self.elided = self._shown(option) != self.text()
        super().setToolTip("\n".join(t for t in (self.text() if self.elided else "", self._tip) if t))
