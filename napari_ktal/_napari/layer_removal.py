"""Removing our layers from a viewer without crashing napari's canvas (no Qt imported here).

napari (0.9.2) flushes vispy's queue of OpenGL commands (``context.finish()`` in
``VispyCanvas._clean_and_update_scenegraph``) each time a layer is removed, whether or not the
canvas's OpenGL context is current, and outside a paint event it usually is not. With Mesa under
Xvfb (napari 0.9.2, vispy 0.17, PyQt6), removing a Shapes layer, or two Image layers before the
next frame, crashed the process in that frame's ``glDrawArrays`` every time (one Image layer at a
time did not); with the canvas's context made current around the removals, 20 rounds of each
passed. :func:`remove_layers` does that: our views remove their layers only through it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator


def remove_layers(viewer, layers: Iterable) -> None:
    """Remove ``layers`` (those still in ``viewer``) with the canvas's OpenGL context current."""
    layers = [layer for layer in layers if layer in viewer.layers]
    if not layers:
        return
    with _canvas_context_current(viewer):
        for layer in layers:
            viewer.layers.remove(layer)


@contextlib.contextmanager
def _canvas_context_current(viewer) -> Iterator[None]:
    gl_widget = _canvas_widget(viewer)
    made_current = False
    if gl_widget is not None:
        with contextlib.suppress(RuntimeError):  # the widget is being deleted: nothing to draw any more
            gl_widget.makeCurrent()
            made_current = True
    try:
        yield
    finally:
        if made_current:
            with contextlib.suppress(RuntimeError):
                gl_widget.doneCurrent()


def _canvas_widget(viewer):
    """napari's OpenGL canvas widget (a QOpenGLWidget; no public accessor), or None (a ViewerModel)."""
    try:
        native = viewer.window._qt_viewer.canvas.native
    except AttributeError:
        return None
    return native if hasattr(native, "makeCurrent") and hasattr(native, "doneCurrent") else None
