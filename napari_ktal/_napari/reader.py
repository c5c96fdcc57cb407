"""npe2 reader: MRC volumes, volume stacks and tomograms as napari Image layers.

A reader is a pure function of the path: it returns layer data tuples and touches no
viewer. The header is checked by :func:`napari_ktal.core.data.mrc.inspect_layout` (the same
checks the project import uses, through mrcfile) before any data is mapped, so a truncated or
foreign file fails fast with one line naming the file and the problem. The data is
memory-mapped, so a 4 GB tomogram opens at once and napari reads only what it shows.

Scale: the header's voxel size in Angstrom, as (z, y, x); a stack of volumes (MRC space
group 401, e.g. RELION's ``.mrcs``) becomes a 4D layer ``(N, z, y, x)`` with scale
``(1, z, y, x)``. Unlike the project import (which only accepts cubic subtomograms), this
reader opens any real-valued MRC: tomograms, maps, single images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..core.data.mrc import VOLUME_SUFFIXES, inspect_layout, memory_map

_SAMPLE_VOXELS = 2_000_000  # contrast limits are estimated from about this many voxels

LayerData = tuple[np.ndarray, dict, str]


def get_reader(path: str | Sequence[str]) -> Callable[[str | Sequence[str]], list[LayerData]] | None:
    """The reader for ``path`` (one file or a list of files) if every file has an MRC suffix."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if paths and all(Path(p).suffix.lower() in VOLUME_SUFFIXES for p in paths):
        return read_mrc
    return None


def read_mrc(path: str | Sequence[str]) -> list[LayerData]:
    """One Image layer per file; raises :class:`InputError` (one line) for an unreadable file."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    return [_layer_of(Path(p)) for p in paths]


def _robust_limits(data: np.ndarray) -> tuple[float, float]:
    """1st and 99.9th percentiles of an evenly strided sample (noisy cryo-ET: min/max are outliers)."""
    step = max(1, round((data.size / _SAMPLE_VOXELS) ** (1 / data.ndim)))
    sample = np.asarray(data[(slice(None, None, step),) * data.ndim], dtype=np.float32)
    lo, hi = np.percentile(sample, [1.0, 99.9])
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        lo, hi = float(np.nanmin(sample)), float(np.nanmax(sample))
        hi = hi if hi > lo else lo + 1.0
    return float(lo), float(hi)


def _layer_of(path: Path) -> LayerData:
    layout = inspect_layout(path)
    data = memory_map(layout)
    shape, voxel = layout.shape, layout.voxel_size
    scale = voxel[-len(shape):] if len(shape) <= 3 else (1.0, *voxel)
    lo, hi = _robust_limits(data)
    meta = {
        "path": str(layout.path),
        "voxel_size_angstrom": voxel,
        "origin_angstrom": layout.origin,
        "n_volumes": shape[0] if len(shape) == 4 else 1,
    }
    kwargs = {"name": path.stem, "scale": scale, "contrast_limits": (lo, hi), "metadata": meta,
              "colormap": "gray", "units": "angstrom"}
    return data, kwargs, "image"
