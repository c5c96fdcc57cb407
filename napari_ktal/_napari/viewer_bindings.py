"""What the widget sets on the napari viewer while a project is open: key bindings and the
canvas text overlay (off unless the user turns it on: without a GPU, a frame with changed
text costs ~100 ms more to draw). Both are put back as they were when the project closes.
No Qt here."""

from __future__ import annotations

import math
from collections.abc import Callable

from ..core.loop.session import shown_score

KEYS = {"next": "N", "previous": "P", "skip": "S", "undo": "U", "context": "C"}  # and 1-9, 0, letters for classes
OVERLAY_CHARS = ("0123456789%·:/.,;()-_@ —abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class KeyBindings:
    """Keys bound in the viewer and on our layers (a layer's keys win over the viewer's)."""

    def __init__(self):
        self._bound: list[tuple[object, str, object]] = []  # (keymap owner, key, previous binding)
        self.actions: dict[str, Callable[[], None]] = {}  # key (upper case) -> action, while bound

    def bind(self, owners: list, actions: dict[str, Callable[[], None]]) -> None:
        self.unbind()
        self.actions = {key.upper(): action for key, action in actions.items()}
        for key, action in actions.items():
            handler = _key_handler(action, key)
            for owner in owners:
                previous = owner.bind_key(key, handler, overwrite=True)
                self._bound.append((owner, key, previous))

    def unbind(self) -> None:
        for owner, key, previous in reversed(self._bound):
            owner.bind_key(key, previous, overwrite=True)  # None unbinds; else restores
        self._bound = []
        self.actions = {}


def _key_handler(action: Callable[[], None], key: str):
    """A key binding for napari: called with the keymap's owner (viewer or layer), which it ignores."""

    def handler(owner=None) -> None:
        action()

    handler.__name__ = handler.__qualname__ = f"napari_ktal_key_{key}"  # napari's keymap reads names
    return handler


class TextOverlay:
    """The canvas text overlay, remembered before first use and restored after."""

    def __init__(self, viewer):
        self.viewer = viewer
        self._before: tuple[bool, str, float] | None = None

    def _overlay(self):
        """``viewer.canvas.overlays.text`` since napari 0.9, ``viewer.text_overlay`` before."""
        canvas = getattr(self.viewer, "canvas", None)
        overlays = getattr(canvas, "overlays", None)
        return overlays.text if overlays is not None and hasattr(overlays, "text") else self.viewer.text_overlay

    def show(self, text: str) -> None:
        overlay = self._overlay()
        if self._before is None:
            self._before = (overlay.visible, overlay.text, overlay.font_size)
        overlay.text = text
        overlay.font_size = 9
        overlay.visible = True

    def prewarm(self, text: str) -> None:
        """Show ``text`` (every character the overlay will need) so that the next frame renders its
        glyphs once: a glyph drawn for the first time costs 10-30 ms without a GPU, too much for
        the frame after a key press or at a cycle's end."""
        self.show(text)

    def restore(self) -> None:
        if self._before is not None:
            overlay = self._overlay()
            overlay.visible, overlay.text, overlay.font_size = self._before
            self._before = None


def overlay_text(session, guess) -> str:
    """Two lines about the volume on screen: where it is, what the teacher says, its label."""
    index = session.current_index
    label = session.label_of(index) or ("skipped" if session.is_skipped(index) else "—")
    if session.visiting is None:
        item = session.item
        teacher = f"teacher: {item.predicted} {100 * item.confidence:.0f}%" if item.predicted else "random pick"
        shown = shown_score(item, session.batch)
        score = "" if shown is None or math.isnan(shown) else f" · uncertainty {shown:.3g}"
        where = f"cycle {session.cycle} · {session.position + 1} / {len(session)} · {item.key}"
    else:
        g = guess(index)
        teacher, score = (f"teacher: {g[0]} {100 * g[1]:.0f}%" if g else "teacher: —"), ""
        where = f"reviewing {session.project.pool.keys[index]} (not in this batch; N: back to the batch)"
    return f"{where}\n{teacher}{score} · label: {label}"
