"""Showing one subtomogram: a 3D rendering beside its three orthogonal central slices.

Four Image layers form a 2 x 2 grid in the canvas (placed with ``translate``), captioned
by a Points layer that holds only text::

    [ 3D volume ] [ XY slice ]
    [ XZ slice  ] [ YZ slice ]

Stepping through a batch replaces the layers' data in place, so it costs a texture upload,
not a layer rebuild. Only the GUI thread may call :class:`VolumeView`.

Why this rendering, for noisy cryo-ET: a raw subtomogram at low SNR is mostly noise, and
a maximum-intensity projection of raw noise shows noise. Smoothing with a Gaussian of about
one voxel (what a structural biologist does first in IMOD or ChimeraX) keeps the particle's
low-resolution shape and removes the voxel-level noise. Protein is dark in raw data, so the
contrast is inverted for the projection (densest = brightest). The 3D layer is a maximum
intensity projection ('mip'; 'iso' looks like ChimeraX but needs a threshold per particle,
and 'attenuated_mip' drew ring artefacts on small boxes). Contrast limits are robust
percentiles (1st-99.9th): of the projection for the 3D layer (so the background between
particles goes dark) and of the volume for the slices, so a few extreme voxels cannot wash
the picture out. Smoothing, inversion and every layer control stay the user's to change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VIEW_TAG = "napari-ktal view"  # layer metadata key that marks our layers
GAP = 0.12  # gap between grid cells, as a fraction of the box
RENDERING = "mip"
PERCENTILES = (1.0, 99.9)


@dataclass(frozen=True)
class ViewData:
    volume: np.ndarray  # (z, y, x) float32, as displayed
    xy: np.ndarray  # central slices of the displayed volume
    xz: np.ndarray
    yz: np.ndarray
    limits: tuple[float, float]  # for the slices
    volume_limits: tuple[float, float]  # for the projection


def view_data(volume: np.ndarray, smoothing: float = 1.0, invert: bool = True) -> ViewData:
    """What the four layers show for ``volume`` (a pure function; cheap for 32-64^3 boxes)."""
    v = np.asarray(volume, dtype=np.float32)
    if invert:
        v = -v
    if smoothing > 0:
        from scipy.ndimage import gaussian_filter

        v = gaussian_filter(v, smoothing, mode="nearest")
    cz, cy, cx = (s // 2 for s in v.shape)
    return ViewData(v, v[cz], v[:, cy, :], v[:, :, cx], _limits(v), _limits(v.max(axis=0)))


def _limits(values: np.ndarray) -> tuple[float, float]:
    lo, hi = (float(p) for p in np.percentile(values, PERCENTILES))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


class VolumeView:
    """The four layers of the current volume in a viewer; created on first use."""

    names = ("ktal 3D", "ktal XY", "ktal XZ", "ktal YZ")
    captions = ("3D · max. projection", "XY · central slice", "XZ · central slice", "YZ · central slice")
    caption_layer = "ktal captions"

    def __init__(self, viewer, smoothing: float = 1.0, invert: bool = True):
        self.viewer = viewer
        self.smoothing = smoothing
        self.invert = invert
        self._layers: list = []
        self._captions = None
        self._geometry: tuple | None = None  # (box, voxel size) the translates were set for
        self._last: tuple[np.ndarray, float] | None = None

    @property
    def layers(self) -> list:
        """The four image layers (those still in the viewer)."""
        return [layer for layer in self._layers if layer in self.viewer.layers]

    @property
    def all_layers(self) -> list:
        """The image layers and the captions."""
        extra = [self._captions] if self._captions is not None and self._captions in self.viewer.layers else []
        return self.layers + extra

    def _ensure_layers(self, data: ViewData, scale: float) -> bool:
        """Make sure all four layers are in the viewer; True if any had to be (re)created."""
        if len(self.all_layers) == 5:
            return False
        for layer in self.all_layers:  # a user deleted some: start over with a clean set
            self.viewer.layers.remove(layer)
        common = {"colormap": "gray", "metadata": {VIEW_TAG: True}, "units": "angstrom"}
        vol = self.viewer.add_image(data.volume, name=self.names[0], rendering=RENDERING, scale=(scale,) * 3,
                                    contrast_limits=data.volume_limits, **common)
        slices = [self.viewer.add_image(arr, name=name, scale=(scale,) * 2, contrast_limits=data.limits, **common)
                  for arr, name in zip((data.xy, data.xz, data.yz), self.names[1:])]
        self._layers = [vol, *slices]
        self._captions = self.viewer.add_points(
            np.zeros((4, 2)), name=self.caption_layer, size=0, border_width=0, face_color="transparent",
            border_color="transparent",
            text={"string": list(self.captions), "anchor": "center", "color": "#c8c8c8", "size": 9},
            metadata={VIEW_TAG: True}, units="angstrom",
        )
        self._captions.editable = False
        self.viewer.layers.selection.active = vol  # its rendering controls are the useful ones
        self._geometry = None
        return True

    def _place(self, box: int, scale: float) -> None:
        if self._geometry == (box, scale):
            return
        step = box * scale * (1 + GAP)
        vol, xy, xz, yz = self._layers
        vol.scale, vol.translate = (scale,) * 3, (0.0, 0.0, 0.0)
        cells = ((0, 0), (0, 1), (1, 0), (1, 1))
        for layer, (row, col) in zip((xy, xz, yz), cells[1:]):
            layer.scale = (scale, scale)
            layer.translate = (row * step, col * step)
        # captions centred just above each cell, in world coordinates (the points layer keeps scale 1)
        above, centre = -0.07 * box * scale, 0.5 * (box - 1) * scale
        self._captions.data = np.array([(row * step + above - 0.5 * scale, col * step + centre) for row, col in cells])
        self._geometry = (box, scale)

    def show(self, volume: np.ndarray, voxel_size: float = 1.0) -> bool:
        """Show ``volume`` (z, y, x); True if the layers had to be (re)created.

        The layers are reused, so stepping through a batch costs a texture upload.
        """
        self._last = (volume, voxel_size)
        data = view_data(volume, self.smoothing, self.invert)
        created = self._ensure_layers(data, voxel_size)
        self._place(volume.shape[-1], voxel_size)
        limits = (data.volume_limits, data.limits, data.limits, data.limits)
        for layer, arr, lim in zip(self._layers, (data.volume, data.xy, data.xz, data.yz), limits):
            if not created:
                layer.data = arr
            lo, hi = layer.contrast_limits_range
            if lim[0] < lo or lim[1] > hi:  # widen only: each change of the range costs a refresh
                layer.contrast_limits_range = (min(lo, lim[0]), max(hi, lim[1]))
            layer.contrast_limits = lim
        if created:
            self.viewer.dims.ndisplay = 3
            self.fit()
        return created

    def fit(self) -> None:
        """Fit the grid in the canvas, with a margin for the captions and the text overlay."""
        self.viewer.reset_view()
        camera = getattr(self.viewer, "scene", self.viewer).camera  # viewer.scene since napari 0.9
        camera.zoom *= 0.85

    def refresh(self) -> None:
        """Show the last volume again (after a change of smoothing or contrast inversion)."""
        if self._last is not None:
            self.show(*self._last)

    def remove(self) -> None:
        for layer in self.all_layers:
            self.viewer.layers.remove(layer)
        self._layers, self._captions, self._geometry, self._last = [], None, None, None
