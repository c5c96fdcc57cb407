"""Showing one subtomogram: its projection beside its three orthogonal central slices.

Two modes, the user's choice (the dock's *View* setting):

- ``panels`` (the default, fast): one 2D Image layer holding a 2 x 2 mosaic, the maximum
  projection along z (what the 3D view shows at its starting angle) and the three central
  slices, each scaled to its own contrast range::

      [ max. projection ] [ XY slice ]
      [ XZ slice        ] [ YZ slice ]

  Stepping through a batch writes the new mosaic into the layer's array and refreshes it:
  one texture upload of a 2D image, and a frame a software OpenGL renderer draws in a few ms.
- ``3d``: four Image layers in the same grid (placed with ``translate``), the first a 3D
  rendering that the user can rotate, as before; a frame costs ~10x more to draw without a GPU.

The 3D grid is captioned by a Points layer that holds only text; the panels are not (text
costs a software OpenGL renderer ~15 ms a frame; the dock says what each panel is). Only
the GUI thread may call :class:`VolumeView`.

Why this rendering, for noisy cryo-ET: a raw subtomogram at low SNR is mostly noise, and
a maximum-intensity projection of raw noise shows noise. Smoothing with a Gaussian of about
one voxel (what a structural biologist does first in IMOD or ChimeraX) keeps the particle's
low-resolution shape and removes the voxel-level noise. Protein is dark in raw data, so the
contrast is inverted for the projection (densest = brightest). The 3D layer is a maximum
intensity projection ('mip'; 'iso' looks like ChimeraX but needs a threshold per particle,
and 'attenuated_mip' drew ring artefacts on small boxes). Contrast limits are robust
percentiles (1st-99.9th): of the projection for the projection (so the background between
particles goes dark) and of the volume for the slices, so a few extreme voxels cannot wash
the picture out. Smoothing, inversion and every layer control stay the user's to change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .layer_removal import remove_layers

VIEW_TAG = "napari-ktal view"  # layer metadata key that marks our layers
GAP = 0.12  # gap between grid cells, as a fraction of the box
RENDERING = "mip"
PERCENTILES = (1.0, 99.9)
MODES = {"panels": "projection + slices (fast)", "3d": "3D volume + slices (rotatable)"}


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


def camera_of(viewer):
    """The viewer's camera: ``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before."""
    return getattr(viewer, "scene", viewer).camera


def _limits(values: np.ndarray) -> tuple[float, float]:
    lo, hi = (float(p) for p in np.percentile(values, PERCENTILES))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def gap_pixels(box: int) -> int:
    return max(1, round(GAP * box))


def mosaic(data: ViewData, out: np.ndarray | None = None) -> np.ndarray:
    """The 2 x 2 panels as one float32 image with values in [0, 1] (gaps 0), written into ``out`` if given."""
    box = data.volume.shape[-1]
    g = gap_pixels(box)
    side = 2 * box + g
    if out is None or out.shape != (side, side):
        out = np.zeros((side, side), np.float32)
    else:
        out.fill(0.0)
    projection = data.volume.max(axis=0)
    cells = ((projection, data.volume_limits), (data.xy, data.limits), (data.xz, data.limits), (data.yz, data.limits))
    for (img, (lo, hi)), (row, col) in zip(cells, ((0, 0), (0, 1), (1, 0), (1, 1))):
        r, c = row * (box + g), col * (box + g)
        cell = out[r:r + box, c:c + box]
        np.subtract(img, lo, out=cell)
        cell *= 1.0 / (hi - lo)
        np.clip(cell, 0.0, 1.0, out=cell)
    return out


class VolumeView:
    """The layers of the current volume in a viewer; created on first use."""

    names3d = ("ktal 3D", "ktal XY", "ktal XZ", "ktal YZ")
    panels_name = "ktal panels"
    captions = ("3D · max. projection", "XY · central slice", "XZ · central slice", "YZ · central slice")
    legend = {"panels": "top: max. projection (z) | XY slice · bottom: XZ | YZ slice (central slices)",
              "3d": "top: 3D volume (drag to rotate) | XY slice · bottom: XZ | YZ slice"}
    caption_layer = "ktal captions"

    def __init__(self, viewer, smoothing: float = 1.0, invert: bool = True, mode: str = "panels"):
        self.viewer = viewer
        self.smoothing = smoothing
        self.invert = invert
        self.mode = mode
        self._layers: list = []
        self._captions = None
        self._geometry: tuple | None = None  # (mode, box, voxel size) the layout was made for
        self._last: tuple[np.ndarray, float] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.panels_name,) if self.mode == "panels" else self.names3d

    @property
    def layers(self) -> list:
        """The image layers (those still in the viewer)."""
        return [layer for layer in self._layers if layer in self.viewer.layers]

    @property
    def all_layers(self) -> list:
        """The image layers and the captions."""
        extra = [self._captions] if self._captions is not None and self._captions in self.viewer.layers else []
        return self.layers + extra

    def set_mode(self, mode: str) -> None:
        """Switch between ``panels`` and ``3d`` (the layers are made anew on the next show)."""
        if mode not in MODES:
            raise ValueError(f"unknown view mode {mode!r}; one of {', '.join(MODES)}")
        if mode != self.mode:
            last = self._last
            self.remove()
            self.mode = mode
            if last is not None:
                self.show(*last)

    # -- making the layers ---------------------------------------------------------------------
    def _ensure_layers(self, data: ViewData, scale: float) -> bool:
        """Make sure all our layers are in the viewer; True if any had to be (re)created."""
        want = len(self.names) + (self.mode == "3d")  # + the captions
        if len(self.all_layers) == want and len(self._layers) == len(self.names):
            return False
        remove_layers(self.viewer, self.all_layers)  # a user deleted some: start over with a clean set
        common = {"colormap": "gray", "metadata": {VIEW_TAG: True}, "units": "angstrom"}
        self._captions = None
        if self.mode == "panels":
            self._layers = [self.viewer.add_image(mosaic(data), name=self.panels_name, scale=(scale,) * 2,
                                                  contrast_limits=(0.0, 1.0), **common)]
            self.viewer.layers.selection.active = self._layers[0]
            self._geometry = None
            return True
        vol = self.viewer.add_image(data.volume, name=self.names3d[0], rendering=RENDERING, scale=(scale,) * 3,
                                    contrast_limits=data.volume_limits, **common)
        slices = [self.viewer.add_image(arr, name=name, scale=(scale,) * 2, contrast_limits=data.limits, **common)
                  for arr, name in zip((data.xy, data.xz, data.yz), self.names3d[1:])]
        self._layers = [vol, *slices]
        self._captions = self.viewer.add_points(
            np.zeros((4, 2)), name=self.caption_layer, size=0, border_width=0, face_color="transparent",
            border_color="transparent",
            text={"string": list(self.captions), "anchor": "center", "color": "#c8c8c8", "size": 9},
            metadata={VIEW_TAG: True}, units="angstrom",
        )
        self._captions.editable = False
        self.viewer.layers.selection.active = self._layers[0]  # its controls are the useful ones
        self._geometry = None
        return True

    def _place(self, box: int, scale: float) -> None:
        if self._geometry == (self.mode, box, scale):
            return
        if self.mode == "panels":
            self._geometry = (self.mode, box, scale)
            return
        step = box * scale * (1 + GAP)
        vol, xy, xz, yz = self._layers
        vol.scale, vol.translate = (scale,) * 3, (0.0, 0.0, 0.0)
        for layer, (row, col) in zip((xy, xz, yz), ((0, 1), (1, 0), (1, 1))):
            layer.scale = (scale, scale)
            layer.translate = (row * step, col * step)
        # captions centred just above each cell, in world coordinates (the points layer keeps scale 1)
        above, centre = -0.07 * box * scale, 0.5 * (box - 1) * scale
        cells = ((0, 0), (0, 1), (1, 0), (1, 1))
        self._captions.data = np.array([(row * step + above - 0.5 * scale, col * step + centre) for row, col in cells])
        self._geometry = (self.mode, box, scale)

    # -- showing -------------------------------------------------------------------------------
    def show(self, volume: np.ndarray, voxel_size: float = 1.0) -> bool:
        """Show ``volume`` (z, y, x); True if the layers had to be (re)created.

        The layers are reused: stepping through a batch costs a texture upload.
        """
        self._last = (volume, voxel_size)
        data = view_data(volume, self.smoothing, self.invert)
        created = self._ensure_layers(data, voxel_size)
        if self.mode == "panels":
            self._show_panels(data, voxel_size, created)
        else:
            self._show_3d(data, voxel_size, created)
        if created:
            self.viewer.dims.ndisplay = 3 if self.mode == "3d" else 2
            self.fit()
        return created

    def _show_panels(self, data: ViewData, scale: float, created: bool) -> None:
        layer = self._layers[0]
        self._place(data.volume.shape[-1], scale)
        if created:
            return
        target = layer.data
        side = 2 * data.volume.shape[-1] + gap_pixels(data.volume.shape[-1])
        if isinstance(target, np.ndarray) and target.shape == (side, side) and target.dtype == np.float32:
            mosaic(data, out=target)  # in place: no new extent, no dims update, one texture upload
            layer.refresh(extent=False, thumbnail=False)  # the layer list keeps the first thumbnail
        else:  # another box size
            layer.data = mosaic(data)
            layer.scale = (scale, scale)

    def _show_3d(self, data: ViewData, scale: float, created: bool) -> None:
        self._place(data.volume.shape[-1], scale)
        limits = (data.volume_limits, data.limits, data.limits, data.limits)
        for layer, arr, lim in zip(self._layers, (data.volume, data.xy, data.xz, data.yz), limits):
            if not created:
                layer.data = arr
            lo, hi = layer.contrast_limits_range
            if lim[0] < lo or lim[1] > hi:  # widen only: each change of the range costs a refresh
                layer.contrast_limits_range = (min(lo, lim[0]), max(hi, lim[1]))
            layer.contrast_limits = lim

    def fit(self) -> None:
        """Fit the grid in the canvas, with a margin for the captions and the text overlay."""
        self.viewer.reset_view()
        camera_of(self.viewer).zoom *= 0.85

    def refresh(self) -> None:
        """Show the last volume again (after a change of smoothing or contrast inversion)."""
        if self._last is not None:
            self.show(*self._last)

    def remove(self) -> None:
        remove_layers(self.viewer, self.all_layers)
        self._layers, self._captions, self._geometry, self._last = [], None, None, None
