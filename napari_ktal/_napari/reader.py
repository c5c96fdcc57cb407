"""npe2 reader: MRC volumes, volume stacks and tomograms as napari Image layers.

A reader is a pure function of the path: it returns layer data tuples and touches no
viewer. The header is checked from its first 1024 bytes before any data is mapped, so a
truncated or foreign file fails fast with one line naming the file and the problem. The
data is memory-mapped, so a 4 GB tomogram opens at once and napari reads only what it shows.

Scale: the header's voxel size in Angstrom, as (z, y, x); a stack of volumes (MRC space
group 401, e.g. RELION's ``.mrcs``) becomes a 4D layer ``(N, z, y, x)`` with scale
``(1, z, y, x)``. Unlike the project import (which only accepts cubic subtomograms), this
reader opens any real-valued MRC: tomograms, maps, single images.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from mrcfile.constants import MAP_ID
from mrcfile.dtypes import HEADER_DTYPE
from mrcfile.utils import data_shape_from_header, dtype_from_mode

from ..core.errors import InputError, InputWarning

SUFFIXES = (".mrc", ".mrcs", ".map", ".rec")
_HEADER_BYTES = HEADER_DTYPE.itemsize  # 1024
_REAL_MODES = {0: "int8", 1: "int16", 2: "float32", 6: "uint16", 12: "float16"}
_KNOWN_MODES = {**_REAL_MODES, 3: "complex int16", 4: "complex float32", 16: "RGB", 101: "4-bit"}
_MAX_SIDE = 1 << 20  # a larger dimension only comes from a corrupt header or the wrong byte order
_SAMPLE_VOXELS = 2_000_000  # contrast limits are estimated from about this many voxels

LayerData = tuple[np.ndarray, dict, str]


def get_reader(path: str | Sequence[str]) -> Callable[[str | Sequence[str]], list[LayerData]] | None:
    """The reader for ``path`` (one file or a list of files) if every file has an MRC suffix."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if paths and all(Path(p).suffix.lower() in SUFFIXES for p in paths):
        return read_mrc
    return None


def read_mrc(path: str | Sequence[str]) -> list[LayerData]:
    """One Image layer per file; raises :class:`InputError` (one line) for an unreadable file."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    return [_layer_of(Path(p)) for p in paths]


# -- header ------------------------------------------------------------------------------
def _parse_header(raw: bytes, byteorder: str) -> np.record:
    return np.frombuffer(raw, dtype=HEADER_DTYPE.newbyteorder(byteorder)).view(np.recarray)[0]


def _plausible(header) -> bool:
    dims = (int(header.nx), int(header.ny), int(header.nz))
    return int(header.mode) in _KNOWN_MODES and all(0 < d < _MAX_SIDE for d in dims)


def read_header(path: Path) -> tuple[np.record, str]:
    """The MRC header of ``path`` and its byte order ("<" or ">"): the one that makes sense of it.

    The machine stamp is not trusted (many writers leave it wrong); the order in which the
    mode and dimensions are plausible is taken.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read(_HEADER_BYTES)
    except FileNotFoundError:
        raise InputError(path, "does not exist") from None
    except IsADirectoryError:
        raise InputError(path, "is a folder, not an MRC file") from None
    except OSError as err:
        raise InputError(path, f"cannot be read ({err.strerror or err})") from None
    if len(raw) < _HEADER_BYTES:
        raise InputError(path, f"not an MRC file (only {len(raw)} bytes; an MRC header alone is 1024)")
    for order in ("<", ">"):
        header = _parse_header(raw, order)
        if _plausible(header):
            if bytes(header.map)[:3] != MAP_ID[:3]:
                warnings.warn(f"{path}: no 'MAP ' ID in the header; read it anyway", InputWarning, stacklevel=3)
            return header, order
    header = _parse_header(raw, "<")
    if bytes(header.map)[:3] != MAP_ID[:3]:
        raise InputError(path, "not an MRC file (no 'MAP ' ID and no sensible dimensions in its header)")
    raise InputError(path, f"corrupt header: mode {int(header.mode)}, dimensions "
                           f"{int(header.nx)} x {int(header.ny)} x {int(header.nz)}")


def _voxel_size_zyx(header, shape: tuple[int, ...]) -> tuple[float, float, float]:
    """Angstrom per voxel along (z, y, x) from the cell size; 1.0 where the header leaves it unset."""
    sampling = (int(header.mz), int(header.my), int(header.mx))
    cell = (float(header.cella.z), float(header.cella.y), float(header.cella.x))
    size = []
    for c, m in zip(cell, sampling):
        v = c / m if m > 0 else 0.0
        size.append(v if math.isfinite(v) and v > 0 else 1.0)
    return tuple(size)


# -- data --------------------------------------------------------------------------------
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
    header, byteorder = read_header(path)
    mode = int(header.mode)
    if mode not in _REAL_MODES:
        raise InputError(path, f"{_KNOWN_MODES[mode]} data (mode {mode}) cannot be shown; "
                               f"readable modes: {', '.join(_REAL_MODES.values())}")
    nsymbt = int(header.nsymbt)
    if nsymbt < 0:
        raise InputError(path, f"corrupt header: extended header size {nsymbt} is negative")
    if int(header.ispg) == 401 and (int(header.mz) <= 0 or int(header.nz) % int(header.mz)):
        raise InputError(path, f"corrupt header: volume stack with nz={int(header.nz)} "
                               f"not a multiple of the volume depth mz={int(header.mz)}")
    shape = data_shape_from_header(header)
    dtype = dtype_from_mode(mode).newbyteorder(byteorder)
    offset = _HEADER_BYTES + nsymbt
    expected = offset + math.prod(shape) * dtype.itemsize
    size = path.stat().st_size
    if size < expected:
        raise InputError(path, f"truncated: the header describes {expected} bytes but the file holds {size}")
    data = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    voxel = _voxel_size_zyx(header, shape)
    scale = voxel[-len(shape):] if len(shape) <= 3 else (1.0, *voxel)
    lo, hi = _robust_limits(data)
    meta = {
        "path": str(path),
        "voxel_size_angstrom": voxel,
        "origin_angstrom": (float(header.origin.z), float(header.origin.y), float(header.origin.x)),
        "n_volumes": shape[0] if len(shape) == 4 else 1,
    }
    kwargs = {"name": path.stem, "scale": scale, "contrast_limits": (lo, hi), "metadata": meta,
              "colormap": "gray", "units": "angstrom"}
    return data, kwargs, "image"
