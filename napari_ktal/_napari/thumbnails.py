"""Thumbnails of pool volumes for the gallery and the per-class examples; no Qt.

A thumbnail is an 8-bit grey image of one volume, as the viewer shows it (smoothed, contrast
inverted; see :mod:`.volume_view`): either its maximum-intensity projection along z (what the
3D view shows at its starting angle) or its central XY slice. They are computed once per
volume and display setting, in a worker (:func:`thumbnail_job`), and kept in a
:class:`ThumbnailCache` for the session.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.progress import QUIET, RunContext
from .volume_view import PERCENTILES

MODES = {"projection": "max. projection (z)", "slice": "central slice (XY)"}
CHUNK = 32  # volumes per delivery: a usual batch in one, a 300-volume gallery in steps


@dataclass(frozen=True)
class ThumbSettings:
    mode: str = "projection"  # a key of MODES
    smoothing: float = 1.0
    invert: bool = True


@dataclass(frozen=True)
class ThumbnailChunk:
    """Some thumbnails made with ``settings``: delivered as a job's progress."""

    settings: ThumbSettings
    images: dict[int, np.ndarray]  # pool index -> (box, box) uint8


def thumbnail(volume: np.ndarray, settings: ThumbSettings = ThumbSettings()) -> np.ndarray:
    """One (box, box) uint8 image of ``volume`` (z, y, x)."""
    v = np.asarray(volume, dtype=np.float32)
    if settings.invert:
        v = -v
    if settings.smoothing > 0:
        from scipy.ndimage import gaussian_filter

        v = gaussian_filter(v, settings.smoothing, mode="nearest")
    if settings.mode == "slice":
        img, ref = v[v.shape[0] // 2], v
    else:
        img = ref = v.max(axis=0)
    lo, hi = (float(p) for p in np.percentile(ref, PERCENTILES))
    scaled = (img - lo) * (255.0 / (hi - lo if hi > lo else 1.0))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def thumbnail_job(pool, indices, settings: ThumbSettings, run: RunContext = QUIET,
                  chunk: int = CHUNK) -> ThumbSettings:
    """Thumbnails of ``indices`` of ``pool``, ``chunk`` at a time, each chunk sent as ``run``'s progress
    (a :class:`ThumbnailChunk`, not a :class:`~napari_ktal.core.progress.Progress`)."""
    indices = [int(i) for i in indices]
    for start in range(0, len(indices), chunk):
        run.check_cancel()
        part = indices[start:start + chunk]
        volumes = pool.read(part)
        images = {i: thumbnail(v, settings) for i, v in zip(part, volumes)}
        run.emit(ThumbnailChunk(settings, images))
    return settings


@dataclass
class ThumbnailCache:
    """Thumbnails made so far, per display setting; what is still to make."""

    images: dict[ThumbSettings, dict[int, np.ndarray]] = field(default_factory=dict)

    def get(self, settings: ThumbSettings, index: int) -> np.ndarray | None:
        return self.images.get(settings, {}).get(int(index))

    def add(self, chunk: ThumbnailChunk) -> list[int]:
        self.images.setdefault(chunk.settings, {}).update(chunk.images)
        return list(chunk.images)

    def missing(self, settings: ThumbSettings, indices) -> list[int]:
        have = self.images.get(settings, {})
        return [int(i) for i in dict.fromkeys(indices) if int(i) not in have]

    def clear(self) -> None:
        self.images.clear()
