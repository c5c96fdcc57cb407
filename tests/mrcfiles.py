"""MRC files for tests: written with mrcfile, then broken on purpose where a test needs that."""

from __future__ import annotations

import warnings
from pathlib import Path

import mrcfile
import numpy as np
from mrcfile.dtypes import HEADER_DTYPE

RNG = np.random.default_rng(0)


def write_mrc(
    path: Path, data: np.ndarray, voxel_xyz: tuple[float, float, float] | None = None
) -> Path:
    """Write ``data`` with mrcfile (4D data becomes a volume stack, ispg 401)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), mrcfile.new(path, overwrite=True) as mrc:
        warnings.simplefilter("ignore", RuntimeWarning)  # header stats of NaN/Inf test data
        mrc.set_data(data)
        if voxel_xyz is not None:
            mrc.voxel_size = voxel_xyz
    return path


def noise(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def poke(path: Path, field: str, value: int | bytes) -> None:
    """Overwrite one header field in place (offsets from mrcfile's own header dtype)."""
    dtype, offset = HEADER_DTYPE.fields[field][:2]
    raw = value if isinstance(value, bytes) else np.array(value, dtype=dtype).tobytes()
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(raw)
