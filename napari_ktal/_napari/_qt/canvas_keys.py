"""Our keys on the canvas, handled before napari's own key dispatch.

napari finds the function bound to a key by rebuilding a dict of every key binding of the
active layer and the viewer on each key press (hundreds of bindings, each turned into a
string): 10-35 ms per press on a 2-core laptop, a large share of the time from a key to the
next volume. This event filter on the canvas looks the key up in the few bindings we made
(:class:`~napari_ktal._napari.viewer_bindings.KeyBindings`) and calls it at once; other keys
go to napari as before. The same keys stay bound in napari too (a viewer without a Qt
canvas, or a napari whose canvas this cannot reach, still works through them).

Held down, N and P keep moving; a held class key, S or U acts once (no accidental labels).
A class key with no class in the project (Q in a project of 4 classes) is handed to
``unbound_class_key`` (the widget says so in the status line) and then to napari, whose own
keys (X, Y, Z, O orient a 3D plane) keep working.
"""

from __future__ import annotations

import contextlib
import weakref

from qtpy.QtCore import QEvent, QObject

from ...core.loop.session import CLASS_KEYS
from ..viewer_bindings import KEYS, KeyBindings
from .common import event_key

REPEATABLE = {KEYS["next"], KEYS["previous"]}


class CanvasKeys(QObject):
    def __init__(self, bindings: KeyBindings, parent=None, unbound_class_key=None):
        super().__init__(parent)
        self.bindings = bindings
        self.unbound_class_key = unbound_class_key  # called with a class key that labels nothing here
        self._canvas: weakref.ref | None = None

    def attach(self, viewer) -> bool:
        """Filter the key presses of ``viewer``'s canvas; False if it has no Qt canvas we can reach."""
        try:
            native = viewer.window._qt_viewer.canvas.native  # napari's Qt canvas (no public accessor)
        except AttributeError:
            return False
        self.detach()
        native.installEventFilter(self)
        self._canvas = weakref.ref(native)
        return True

    def draw_now(self) -> None:
        """Draw the canvas at once (not at the next event-loop turn)."""
        canvas = self._canvas() if self._canvas is not None else None
        if canvas is not None:
            with contextlib.suppress(RuntimeError):
                canvas.repaint()

    def detach(self) -> None:
        canvas = self._canvas() if self._canvas is not None else None
        self._canvas = None
        if canvas is not None:
            with contextlib.suppress(RuntimeError):  # the canvas is gone already
                canvas.removeEventFilter(self)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() != QEvent.Type.KeyPress:
            return False
        key = event_key(event)
        action = self.bindings.actions.get(key) if key is not None else None
        if action is None:
            if key in CLASS_KEYS and self.unbound_class_key is not None and not event.isAutoRepeat():
                self.unbound_class_key(key)
            return False
        if not event.isAutoRepeat() or key in REPEATABLE:
            action()
        return True
