"""Small pieces the dock's views share: class-colour swatches, the class keys of a key event,
thumbnails as pixmaps, a view refreshed when shown."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QSize, Qt
from qtpy.QtGui import QColor, QIcon, QImage, QPixmap

from ...core.loop.session import CLASS_KEYS
from ..viewer_bindings import KEYS

ACTION_KEYS = {KEYS[name]: name for name in ("next", "previous", "skip", "undo")}  # "N" -> "next"
PLAIN_KEYS = frozenset(CLASS_KEYS) | frozenset(KEYS.values())  # every key we act on, without modifiers
REFRESH_MS = 150  # a view rebuilt from the session is rebuilt at most this often (e.g. while a key is held down)


def swatch(color: str, size: int = 12) -> QIcon:
    """A square icon of ``color`` (a class's colour on its button, in the table, in the examples)."""
    pix = QPixmap(QSize(size, size))
    pix.fill(QColor(color))
    return QIcon(pix)


def event_key(event) -> str | None:
    """The character of a plain key press (no Ctrl, Alt or Meta) of one of our keys, upper case: '3', 'Q', 'N',
    'C'; else None."""
    mods = event.modifiers()
    blocked = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier | \
        Qt.KeyboardModifier.MetaModifier
    if mods & blocked:
        return None
    text = event.text().upper()
    if len(text) == 1 and text in PLAIN_KEYS:
        return text
    return None


def pixmap_of(image: np.ndarray, side: int) -> QPixmap:
    """An 8-bit grey image as a ``side`` x ``side`` pixmap (smoothly scaled once, then cached by the caller)."""
    img = np.ascontiguousarray(image, dtype=np.uint8)
    h, w = img.shape
    qimg = QImage(img.data, w, h, w, QImage.Format.Format_Grayscale8).copy()  # copy: own the bytes
    return QPixmap.fromImage(qimg).scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio,
                                          Qt.TransformationMode.SmoothTransformation)


class RefreshWhenShown:
    """Mixin for a view rebuilt from the session: :meth:`changed` rebuilds soon if the view is
    visible, else when it is next shown. The view sets ``_dirty`` and ``_refresh_soon`` (superqt's
    ``qdebounced(self.refresh, REFRESH_MS, parent=self)``: once, REFRESH_MS after the last of several
    quick changes) in its ``__init__``; list it before the Qt base class."""

    def changed(self) -> None:
        """Labels, classes or the teacher's opinion changed."""
        self._dirty = True
        if self.isVisible():
            self._refresh_soon()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        if self._dirty:
            self.refresh()
