"""A particle in its tomogram: a slab around the pick, with the box outlined (plain napari layers, no Qt).

The slab (the box's depth of z planes, four boxes across) is read by the core
(:func:`napari_ktal.core.loop.commands.particle_context`: only those voxels of the tomogram) and
shown as one 2D image, its planes averaged (a thick slice: the particle stands out of the noise
as it does in a tomogram viewer's slab mode). Both layers are placed in the tomogram's own
coordinates (Angstrom), so napari's status bar shows tomogram positions. While the context is
shown, the volume view's layers are hidden, the canvas is 2D and the camera fits the slab;
:meth:`ContextView.hide` puts the layers, the dimensions and the camera back.

The layers are removed through :func:`~.layer_removal.remove_layers`: napari 0.9 crashed the
process (SIGSEGV in ``glDrawArrays``) in the frame after a Shapes layer, or two Image layers, had
been removed without the canvas's OpenGL context current, which is what pressing C, then C, N
or a class key did. The box outline is an Image layer, not a Shapes layer, so that even a user who
deletes it from the layer list (napari's own removal, one layer) cannot bring that crash back. The
outline image has :data:`OUTLINE_SUBPIXELS` pixels per voxel, so its line is a fraction of a voxel
wide and lies just outside the box, leaving every voxel of the box visible; zero is transparent.
"""

from __future__ import annotations

import numpy as np

from .layer_removal import remove_layers
from .volume_view import VIEW_TAG, camera_of

OUTLINE_COLOR = (1.0, 0.8, 0.0)  # #ffcc00: yellow reads on grey noise in both napari themes
OUTLINE_SUBPIXELS = 2  # outline pixels per slab voxel: a line half a voxel wide
FIT_MARGIN = 0.05  # of the canvas, around the slab (napari's reset_view leaves the same)


def box_outline(shape_yx: tuple[int, int], box: tuple[int, int, int, int],
                subpixels: int = OUTLINE_SUBPIXELS) -> tuple[np.ndarray, tuple[float, float]]:
    """The box's outline as an image: 1 on a line just outside the box, 0 elsewhere.

    ``shape_yx``: the slab's (y, x) size in voxels; ``box``: (z0, y0, x0, side) in slab voxels
    (a :class:`~napari_ktal.core.data.sites.SiteContext`'s ``box``, which may reach past the slab
    where the box crosses the tomogram's edge). The image has ``subpixels`` pixels per voxel and
    covers the slab and the whole outline. Returns it and the slab coordinates (y, x) of its first
    pixel's centre (slab voxel ``j`` covers ``[j - 0.5, j + 0.5]``, the box ``[y0 - 0.5, y0 + side - 0.5]``).
    """
    f = int(subpixels)
    _, y0, x0, side = box
    # fine grid index g covers slab coordinates [g / f - 0.5, (g + 1) / f - 0.5]: the box starts at g = y0 * f
    top, bottom, left, right = y0 * f - 1, (y0 + side) * f, x0 * f - 1, (x0 + side) * f  # just outside it
    lo_y, lo_x = min(0, top), min(0, left)
    hi_y, hi_x = max(shape_yx[0] * f - 1, bottom), max(shape_yx[1] * f - 1, right)
    out = np.zeros((hi_y - lo_y + 1, hi_x - lo_x + 1), np.uint8)
    top, bottom, left, right = top - lo_y, bottom - lo_y, left - lo_x, right - lo_x
    out[top, left:right + 1] = out[bottom, left:right + 1] = 1
    out[top:bottom + 1, left] = out[top:bottom + 1, right] = 1
    return out, ((lo_y + 0.5) / f - 0.5, (lo_x + 0.5) / f - 0.5)


class ContextView:
    names = ("ktal context", "ktal context box")

    def __init__(self, viewer):
        self.viewer = viewer
        self._layers: list = []
        self._hidden: list = []  # (layer, was visible) of the layers we hid
        self._ndisplay: int | None = None
        self._camera: tuple | None = None  # (center, zoom, angles) before the context was shown

    @property
    def layers(self) -> list:
        """The slab and the outline (those still in the viewer)."""
        return [layer for layer in self._layers if layer in self.viewer.layers]

    @property
    def visible(self) -> bool:
        return bool(self.layers)

    def show(self, context, hide: list | None = None) -> None:
        """Show ``context`` (a SiteContext); hide the layers ``hide`` meanwhile."""
        self.remove_layers()
        v = context.voxel_size
        image = context.slab.mean(axis=0) if context.slab.size else np.zeros((1, 1), np.float32)
        _, oy, ox = context.origin
        lo, hi = (float(p) for p in np.percentile(image, (1, 99.5)))
        meta = {VIEW_TAG: True}
        slab = self.viewer.add_image(image, name=self.names[0], scale=(v, v), translate=(oy * v, ox * v),
                                     colormap="gray", contrast_limits=(lo, hi if hi > lo else lo + 1),
                                     metadata=meta, units="angstrom")
        lines, (fy, fx) = box_outline(image.shape, context.box)
        outline = self.viewer.add_image(
            lines, name=self.names[1], scale=(v / OUTLINE_SUBPIXELS,) * 2, translate=((oy + fy) * v, (ox + fx) * v),
            colormap=_outline_colormap(), contrast_limits=(0, 1), blending="translucent", interpolation2d="nearest",
            metadata=meta, units="angstrom")
        self._layers = [slab, outline]
        self.viewer.layers.selection.active = slab  # its contrast is what a user may want to change
        if self._ndisplay is None:  # the first show since hide(): remember the view
            camera = camera_of(self.viewer)
            self._camera = (tuple(camera.center), camera.zoom, tuple(camera.angles))
            self._ndisplay = self.viewer.dims.ndisplay
        for other in hide or []:
            if other in self.viewer.layers and other not in self._layers and other.visible:
                self._hidden.append((other, True))
                other.visible = False
        self.viewer.dims.ndisplay = 2
        fit(self.viewer, self._layers)

    def remove_layers(self) -> None:
        remove_layers(self.viewer, self._layers)
        self._layers = []

    def hide(self) -> None:
        """Remove the context and bring back what it hid: layers, 2D or 3D, the camera."""
        was_shown = self.visible or self._hidden
        self.remove_layers()
        for layer, visible in self._hidden:
            if layer in self.viewer.layers:
                layer.visible = visible
        self._hidden = []
        if self._ndisplay is not None and was_shown:
            self.viewer.dims.ndisplay = self._ndisplay
            if self._camera is not None:
                camera = camera_of(self.viewer)
                center, zoom, angles = self._camera
                camera.center, camera.zoom, camera.angles = center, zoom, angles
        self._ndisplay = None
        self._camera = None

    def toggle(self, context_of, hide: list | None = None) -> bool:
        """Show the context ``context_of()`` gives, or hide the one shown; True if it is shown now."""
        if self.visible:
            self.hide()
            return False
        self.show(context_of(), hide)
        return True


def fit(viewer, layers: list, margin: float = FIT_MARGIN) -> None:
    """Centre the 2D camera on ``layers`` and zoom to fit them, as napari's reset_view does for all layers.

    napari's own ``reset_view`` fits every layer, the hidden ones too; its ``layers=`` argument
    fails (IndexError) for 2D layers in a 3D world, which ours are after the 3D view.
    """
    lo = np.min([_world_box(layer)[0] for layer in layers], axis=0)
    hi = np.max([_world_box(layer)[1] for layer in layers], axis=0)
    camera = camera_of(viewer)
    camera.center = tuple((lo + hi) / 2)
    camera.zoom = (1 - margin) * float(np.min(np.asarray(_canvas_size(viewer), float) / np.maximum(hi - lo, 1e-9)))


def _world_box(layer) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) world corners of a 2D image layer's pixels (its extent plus half a pixel on each side)."""
    extent = np.asarray(layer.extent.world, float)[:, -2:]
    half = np.abs(np.asarray(layer.scale[-2:], float)) / 2
    return extent[0] - half, extent[1] + half


def _canvas_size(viewer) -> tuple[int, int]:
    """The canvas's (height, width) in screen pixels: ``viewer.canvas.size`` since napari 0.9."""
    size = getattr(getattr(viewer, "canvas", None), "size", None)
    return tuple(size) if size is not None else tuple(viewer._canvas_size)


def _outline_colormap():
    from napari.utils.colormaps import Colormap

    return Colormap(colors=[[0.0, 0.0, 0.0, 0.0], [*OUTLINE_COLOR, 1.0]], name="ktal outline")
