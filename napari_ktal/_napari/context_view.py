"""A particle in its tomogram: a slab around the pick, with the box outlined (plain napari layers, no Qt).

The slab (the box's depth of z planes, four boxes across) is read by the core
(:func:`napari_ktal.core.loop.commands.particle_context`: only those voxels of the tomogram) and
shown as one 2D image, its planes averaged (a thick slice: the particle stands out of the noise
as it does in a tomogram viewer's slab mode), with a Shapes layer outlining the box. Both are
placed in the tomogram's own coordinates (Angstrom), so napari's status bar shows tomogram
positions. While the context is shown, the volume view's layers are hidden and the canvas is 2D;
:meth:`ContextView.hide` puts them back.
"""

from __future__ import annotations

import numpy as np

from .volume_view import VIEW_TAG

OUTLINE_COLOR = "#ffcc00"


class ContextView:
    names = ("ktal context", "ktal context box")

    def __init__(self, viewer):
        self.viewer = viewer
        self._layers: list = []
        self._hidden: list = []  # (layer, was visible) of the layers we hid
        self._ndisplay: int | None = None

    @property
    def visible(self) -> bool:
        return any(layer in self.viewer.layers for layer in self._layers)

    def show(self, context, hide: list | None = None) -> None:
        """Show ``context`` (a SiteContext); hide the layers ``hide`` meanwhile."""
        self.remove_layers()
        v = context.voxel_size
        image = context.slab.mean(axis=0) if context.slab.size else np.zeros((1, 1), np.float32)
        oz, oy, ox = context.origin
        lo, hi = (float(p) for p in np.percentile(image, (1, 99.5)))
        meta = {VIEW_TAG: True}
        layer = self.viewer.add_image(image, name=self.names[0], scale=(v, v), translate=(oy * v, ox * v),
                                      colormap="gray", contrast_limits=(lo, hi if hi > lo else lo + 1),
                                      metadata=meta, units="angstrom")
        box = self.viewer.add_shapes([context.outline()], shape_type="rectangle", name=self.names[1],
                                     edge_color=OUTLINE_COLOR, face_color="transparent", edge_width=max(1.0, v / 2),
                                     scale=(v, v), translate=(oy * v, ox * v), metadata=meta, units="angstrom")
        box.editable = False
        self._layers = [layer, box]
        for other in hide or []:
            if other in self.viewer.layers and other not in self._layers:
                self._hidden.append((other, other.visible))
                other.visible = False
        if self._ndisplay is None:
            self._ndisplay = self.viewer.dims.ndisplay
        self.viewer.dims.ndisplay = 2
        self.viewer.reset_view()

    def remove_layers(self) -> None:
        for layer in self._layers:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self._layers = []

    def hide(self) -> None:
        """Remove the context and bring back what it hid."""
        was_shown = self.visible or self._hidden
        self.remove_layers()
        for layer, visible in self._hidden:
            if layer in self.viewer.layers:
                layer.visible = visible
        self._hidden = []
        if self._ndisplay is not None and was_shown:
            self.viewer.dims.ndisplay = self._ndisplay
        self._ndisplay = None

    def toggle(self, context_of, hide: list | None = None) -> bool:
        """Show the context ``context_of()`` gives, or hide the one shown; True if it is shown now."""
        if self.visible:
            self.hide()
            return False
        self.show(context_of(), hide)
        return True
