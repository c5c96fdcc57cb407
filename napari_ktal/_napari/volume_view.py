"""Showing one subtomogram: a 3D rendering beside its three orthogonal central slices.

Four Image layers form a 2 x 2 grid in the canvas (placed with ``translate``)::

    [ 3D volume ] [ XY slice ]
    [ XZ slice  ] [ YZ slice ]

Stepping through a batch replaces the layers' data in place, so it costs a texture upload,
not a layer rebuild. Only the GUI thread may call :class:`VolumeView`.

Why this rendering, for noisy cryo-ET: a raw subtomogram at low SNR is mostly noise, and
a maximum-intensity projection of raw noise shows noise. Smoothing with a Gaussian of about
one voxel (what a structural biologist does first in IMOD or ChimeraX) keeps the particle's
low-resolution shape and removes the voxel-level noise. Protein is dark in raw data, so the
contrast is inverted for the projection (densest = brightest). Contrast limits are the 1st
and 99.9th percentiles of the displayed volume, so a few extreme voxels cannot wash it out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VIEW_TAG = "napari-ktal view"  # layer metadata key that marks our layers
GAP = 0.12  # gap between grid cells, as a fraction of the box
RENDERING = "attenuated_mip"
ATTENUATION = 0.25
PERCENTILES = (1.0, 99.9)


@dataclass(frozen=True)
class ViewData:
    volume: np.ndarray  # (z, y, x) float32, as displayed
    xy: np.ndarray  # central slices of the displayed volume
    xz: np.ndarray
    yz: np.ndarray
    limits: tuple[float, float]


def view_data(volume: np.ndarray, smoothing: float = 1.0, invert: bool = True) -> ViewData:
    """What the four layers show for ``volume`` (a pure function; cheap for 32-64^3 boxes)."""
    v = np.asarray(volume, dtype=np.float32)
    if invert:
        v = -v
    if smoothing > 0:
        from scipy.ndimage import gaussian_filter

        v = gaussian_filter(v, smoothing, mode="nearest")
    lo, hi = (float(p) for p in np.percentile(v, PERCENTILES))
    if not hi > lo:
        hi = lo + 1.0
    cz, cy, cx = (s // 2 for s in v.shape)
    return ViewData(v, v[cz], v[:, cy, :], v[:, :, cx], (lo, hi))


class VolumeView:
    """The four layers of the current volume in a viewer; created on first use."""

    names = ("ktal 3D", "ktal XY", "ktal XZ", "ktal YZ")

    def __init__(self, viewer, smoothing: float = 1.0, invert: bool = True):
        self.viewer = viewer
        self.smoothing = smoothing
        self.invert = invert
        self._layers: list = []
        self._geometry: tuple | None = None  # (box, voxel size) the translates were set for
        self._last: tuple[np.ndarray, float] | None = None

    @property
    def layers(self) -> list:
        return [layer for layer in self._layers if layer in self.viewer.layers]

    def _ensure_layers(self, data: ViewData, scale: float) -> bool:
        """Make sure all four layers are in the viewer; True if any had to be (re)created."""
        if len(self.layers) == 4:
            return False
        for layer in self.layers:  # a user deleted some: start over with a clean set
            self.viewer.layers.remove(layer)
        common = {"colormap": "gray", "contrast_limits": data.limits, "metadata": {VIEW_TAG: True}}
        vol = self.viewer.add_image(data.volume, name=self.names[0], rendering=RENDERING,
                                    attenuation=ATTENUATION, scale=(scale,) * 3, **common)
        slices = [self.viewer.add_image(arr, name=name, scale=(scale,) * 2, **common)
                  for arr, name in zip((data.xy, data.xz, data.yz), self.names[1:])]
        self._layers = [vol, *slices]
        self._geometry = None
        return True

    def _place(self, box: int, scale: float) -> None:
        if self._geometry == (box, scale):
            return
        step = box * scale * (1 + GAP)
        vol, xy, xz, yz = self._layers
        vol.scale, vol.translate = (scale,) * 3, (0.0, 0.0, 0.0)
        for layer, (row, col) in zip((xy, xz, yz), ((0, 1), (1, 0), (1, 1))):
            layer.scale = (scale, scale)
            layer.translate = (row * step, col * step)
        self._geometry = (box, scale)

    def show(self, volume: np.ndarray, voxel_size: float = 1.0) -> None:
        """Show ``volume`` (z, y, x); reuses the layers, so stepping through a batch is instant."""
        self._last = (volume, voxel_size)
        data = view_data(volume, self.smoothing, self.invert)
        created = self._ensure_layers(data, voxel_size)
        self._place(volume.shape[-1], voxel_size)
        for layer, arr in zip(self._layers, (data.volume, data.xy, data.xz, data.yz)):
            if not created:
                layer.data = arr
            layer.contrast_limits_range = data.limits
            layer.contrast_limits = data.limits
        if created:
            self.viewer.dims.ndisplay = 3
            self.viewer.reset_view()

    def refresh(self) -> None:
        """Show the last volume again (after a change of smoothing or contrast inversion)."""
        if self._last is not None:
            self.show(*self._last)

    def remove(self) -> None:
        for layer in self.layers:
            self.viewer.layers.remove(layer)
        self._layers, self._geometry, self._last = [], None, None
