"""The pool: every subtomogram of a project, normalised, in one memory-mapped array.

``P/pool/volumes.npy`` is a standard ``.npy`` file (N, box, box, box), float16 by default:
zero-mean, unit-variance volumes fit float16's range with ~1e-3 relative precision, and the
pool then takes half the disk and page cache. It is opened memory-mapped, so a pool far
larger than RAM is read only where training, scoring or the viewer touch it.
``P/pool/index.csv`` maps each row to its source (file, and frame for stacks).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_open, atomic_write_text, fsync_dir
from .errors import ProjectError
from .progress import Progress, ProgressCallback, StopFlag, check_cancel, emit
from .volumes import VolumeRef, find_volumes, inspect_mrc, iter_volumes, normalize

VOLUMES_FILE = "volumes.npy"
INDEX_FILE = "index.csv"
INFO_FILE = "info.json"


@dataclass
class Pool:
    directory: Path
    volumes: np.ndarray  # read-only memmap (N, box, box, box)
    keys: list[str]  # label keys relative to the data root: "sub_001.mrc", "3@stack.mrcs"
    refs: list[VolumeRef]  # where each volume came from
    voxel_size: float  # Angstrom

    def __len__(self) -> int:
        return self.volumes.shape[0]

    @property
    def box(self) -> int:
        return int(self.volumes.shape[-1])

    def read(self, indices) -> np.ndarray:
        """float32 volumes for ``indices`` (any order); reads each row once, in disk order."""
        idx = np.asarray(indices, dtype=np.int64)
        order = np.argsort(idx, kind="stable")
        out = np.empty((len(idx), *self.volumes.shape[1:]), dtype=np.float32)
        out[order] = self.volumes[idx[order]]
        return out

    def index_of(self) -> dict[VolumeRef, int]:
        return {r: i for i, r in enumerate(self.refs)}

    @classmethod
    def open(cls, directory: str | Path) -> Pool:
        directory = Path(directory)
        try:
            info = json.loads((directory / INFO_FILE).read_text())
            volumes = np.load(directory / VOLUMES_FILE, mmap_mode="r")
            with open(directory / INDEX_FILE, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        except (OSError, ValueError) as exc:
            raise ProjectError(f"{directory}: the pool is missing or damaged ({exc})") from None
        if len(rows) != volumes.shape[0]:
            raise ProjectError(f"{directory}: index.csv lists {len(rows)} volumes but volumes.npy has {volumes.shape[0]}")
        refs = [VolumeRef(Path(r["path"]), int(r["frame"]) if r["frame"] != "" else None) for r in rows]
        return cls(directory, volumes, [r["key"] for r in rows], refs, float(info.get("voxel_size", 1.0)))


def import_pool(
    directory: str | Path,
    source: str | Path,
    dtype: str = "float16",
    on_progress: ProgressCallback | None = None,
    should_stop: StopFlag | None = None,
) -> Pool:
    """Read, validate and normalise every volume under ``source`` into ``directory``.

    ``source`` is a volume file, a volume stack, a folder of them, or a labels CSV. The pool
    is written to a ``.partial`` file and renamed only when complete, so an error or a
    cancel leaves nothing half-imported behind.
    """
    directory, source = Path(directory), Path(source)
    if (directory / VOLUMES_FILE).exists():
        raise ProjectError(f"{directory}: a pool already exists here")
    refs = find_volumes(source)
    root = source.resolve() if source.is_dir() else source.resolve().parent
    first = inspect_mrc(refs[0].path)
    box = first.box
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / (VOLUMES_FILE + ".partial")
    out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.dtype(dtype), shape=(len(refs), box, box, box))
    try:
        step = max(1, len(refs) // 100)
        for i, (ref, vol) in enumerate(iter_volumes(refs)):
            if vol.shape != (box, box, box):
                raise ProjectError(f"{ref.path}: box {vol.shape} differs from the first volume's {box}^3")
            out[i] = normalize(vol, ref.path)
            if i % step == 0 or i == len(refs) - 1:
                check_cancel(should_stop)
                emit(on_progress, Progress("import", i + 1, len(refs), message=ref.path.name))
        out.flush()
        out = None  # close the memmap before fsync and rename
        with open(partial, "rb+") as f:
            os.fsync(f.fileno())
    except BaseException:
        out = None
        partial.unlink(missing_ok=True)
        raise
    with atomic_open(directory / INDEX_FILE, "w") as f:
        w = csv.writer(f)
        w.writerow(["index", "key", "path", "frame"])
        for i, ref in enumerate(refs):
            w.writerow([i, ref.label_key(root), str(ref.path), "" if ref.frame is None else ref.frame])
    atomic_write_text(
        directory / INFO_FILE,
        json.dumps({"n": len(refs), "box": box, "dtype": dtype, "root": str(root),
                    "voxel_size": float(first.voxel_size[-1]) or 1.0}, indent=2),
    )
    os.replace(partial, directory / VOLUMES_FILE)
    fsync_dir(directory)
    return Pool.open(directory)
