"""The pool: every subtomogram of a project, normalised, in one memory-mapped array.

``P/pool/volumes.npy`` is a standard ``.npy`` file (N, box, box, box), float16 by default:
zero-mean, unit-variance volumes fit float16's range with ~1e-3 relative precision, and the
pool then takes half the disk and page cache. It is opened memory-mapped, so a pool far
larger than RAM is read only where training, scoring or the viewer touch it.
``P/pool/index.csv`` maps each row to its source (file, and frame for stacks).

Bounded memory (docs/performance.md): the pool is written with plain ``write`` calls and
read with ``pread`` into private buffers, never through the memory map, so a pool of 10^5
volumes (6.5 GB) is imported, scored and predicted with a resident set of a few hundred MB:
pages of a memory map that a process has touched count towards its resident memory until
it unmaps them, pages it merely read through the page cache do not.
"""

from __future__ import annotations

import csv
import json
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ..atomic import atomic_open, atomic_write_text, fsync_dir
from ..errors import ProjectError
from ..progress import QUIET, Progress, RunContext
from .mrc import VolumeRef, find_volumes, inspect_mrc, iter_volumes, normalize
from .source import Reopen

VOLUMES_FILE = "volumes.npy"
INDEX_FILE = "index.csv"
INFO_FILE = "info.json"


class _FileReader:
    """Positional reads of one file: ``os.preadv`` where the OS has it, else seek + readinto under a lock."""

    def __init__(self, path: Path):
        self._f = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by close() or on collection)
        self._lock = threading.Lock()
        self._preadv = getattr(os, "preadv", None)

    def read_into(self, buf: memoryview, offset: int) -> None:
        done, total = 0, len(buf)
        while done < total:
            if self._preadv is not None:
                got = self._preadv(self._f.fileno(), [buf[done:]], offset + done)
            else:
                with self._lock:
                    self._f.seek(offset + done)
                    got = self._f.readinto(buf[done:])
            if not got:
                raise ProjectError(f"{self._f.name}: the pool file is shorter than its header says")
            done += got

    def close(self) -> None:
        self._f.close()


@dataclass(frozen=True)
class Site:
    """Where a volume cut from a tomogram came from (pools made from a particle list)."""

    tomogram: str
    """The tomogram's name, as the particle list gives it."""
    x: float
    y: float
    z: float
    """The pick's position in 0-based voxels of the tomogram as read (the box is centred on the
    voxel nearest to it)."""
    row: int
    """0-based row of the particle list."""
    clipped: bool
    """Whether the box crossed the tomogram's edge (the outside was padded)."""

    @property
    def centre(self) -> tuple[int, int, int]:
        """The box's centre voxel (x, y, z)."""
        return (int(round(self.x)), int(round(self.y)), int(round(self.z)))


SITE_COLUMNS = ["tomogram", "x", "y", "z", "row", "clipped"]


@dataclass
class Pool:
    directory: Path
    volumes: np.ndarray  # read-only memmap (N, box, box, box)
    keys: list[str]  # label keys relative to the data root: "sub_001.mrc", "3@stack.mrcs"
    refs: list[VolumeRef]  # where each volume came from (for a particle list: the tomogram file)
    voxel_size: float  # Angstrom
    sites: list[Site] | None = None  # where in its tomogram each volume was cut (particle lists only)
    _file: _FileReader | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return self.volumes.shape[0]

    @property
    def box(self) -> int:
        return int(self.volumes.shape[-1])

    def read(self, indices, dtype=np.float32) -> np.ndarray:
        """Volumes for ``indices`` (any order, repeats allowed) as ``dtype`` (None: the stored dtype).

        Each distinct row is read once, in disk order, with one ``pread`` per run of
        consecutive rows into a private buffer: the memory map is not touched, so reading
        the whole pool does not grow this process's resident memory.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"pool index out of range 0..{n - 1}")
        uniq, inverse = np.unique(idx, return_inverse=True)
        rows = self._read_rows(uniq)
        if len(uniq) != len(idx) or not np.array_equal(uniq, idx):
            rows = rows[inverse.reshape(-1)]  # back to the order asked for, repeats included
        want = rows.dtype if dtype is None else np.dtype(dtype)
        if want == rows.dtype:
            return rows
        out = np.empty(rows.shape, dtype=want)
        copy_serial(rows, out)
        return out

    def _read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Sorted distinct row numbers -> their stored bytes as an array (stored dtype)."""
        shape = self.volumes.shape[1:]
        out = np.empty((len(rows), *shape), dtype=self.volumes.dtype)
        if not len(rows):
            return out
        row_bytes = out[0].nbytes
        offset = int(getattr(self.volumes, "offset", 0))
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = np.concatenate([[0], breaks])
        ends = np.concatenate([breaks, [len(rows)]])
        flat = memoryview(out.reshape(-1).view(np.uint8))
        reader = self._reader()
        for a, b in zip(starts.tolist(), ends.tolist()):
            reader.read_into(flat[a * row_bytes : b * row_bytes], offset + int(rows[a]) * row_bytes)
        return out

    def _reader(self) -> _FileReader:
        if self._file is None:
            self._file = _FileReader(self.directory / VOLUMES_FILE)
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def index_of(self) -> dict[VolumeRef, int]:
        """Volume file (and frame) -> row, for volumes imported from MRC files (not cut from tomograms)."""
        if self.sites is not None:
            return {}
        return {r: i for i, r in enumerate(self.refs)}

    def reopen(self) -> Reopen:
        """Another process opens this pool by its folder (all must see the same file system)."""
        return Pool.open, (str(self.directory),)

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
        paths: dict[str, Path] = {}  # one Path per file: a stack's 1000 frames share it (10^5 rows load fast)
        refs = [VolumeRef(paths.get(r["path"]) or paths.setdefault(r["path"], Path(r["path"])),
                          int(r["frame"]) if r["frame"] != "" else None) for r in rows]
        sites = None
        if rows and all(r.get(c) not in (None, "") for c in SITE_COLUMNS for r in rows[:1]):
            try:  # written by an import from a particle list; older index.csv files have no such columns
                sites = [Site(r["tomogram"], float(r["x"]), float(r["y"]), float(r["z"]), int(r["row"]),
                              r["clipped"] == "1") for r in rows]
            except (KeyError, TypeError, ValueError) as exc:
                raise ProjectError(f"{directory}: index.csv has a damaged row ({exc})") from None
        return cls(directory, volumes, [r["key"] for r in rows], refs, float(info.get("voxel_size", 1.0)), sites)


IMPORT_CHUNK = 32  # volumes normalised and written per step (4 MiB of float32 at 32^3: stays in cache)


def normalize_many(volumes: np.ndarray, out: np.ndarray, paths, work: np.ndarray | None = None) -> None:
    """:func:`~.volumes.normalize` for a chunk of volumes at once, written into ``out``.

    ``volumes`` (k, b, b, b) float32 is left unchanged. Mean and standard deviation come from
    float32 passes with a residual-mean correction (two-pass, like ``np.std``); they differ from
    normalize's float64 ones by ~1e-7 relative, far below float16's resolution. A volume that
    might be constant (or overflows float32) goes through :func:`normalize` itself, which
    raises the same error as always. ``paths[i]`` names volume i in that error.

    Single-threaded on purpose (numpy, and torch only below its parallel grain size): it runs
    beside the thread that reads, and OpenMP teams on shared cores stall (docs/performance.md).
    """
    k = len(volumes)
    n = int(np.prod(volumes.shape[1:]))
    flat = volumes.reshape(k, n)
    w = (np.empty((k, n), np.float32) if work is None else work[:k]).reshape(k, n)
    with np.errstate(over="ignore", invalid="ignore"):
        mean = np.add.reduce(flat, axis=1) / np.float32(n)
        np.subtract(flat, mean[:, None], out=w)
        resid = np.add.reduce(w, axis=1, dtype=np.float64) / n
        ssq = np.einsum("ij,ij->i", w, w).astype(np.float64)
        mean64 = mean.astype(np.float64) + resid
        std64 = np.sqrt(np.maximum(ssq / n - resid * resid, 0.0))
        # max|v| <= |mean| + sqrt(n) * std, so this std is surely above normalize's constant floor
        sure = np.isfinite(std64) & (std64 * (1 - 1e-6 * math.sqrt(n)) > 1.001e-6 * np.abs(mean64))
        w -= resid.astype(np.float32)[:, None]
        w /= np.where(sure, std64, 1.0).astype(np.float32)[:, None]
    copy_serial(w, out[:k].reshape(k, n))
    for i in np.flatnonzero(~sure).tolist():
        out[i] = normalize(volumes[i], paths[i])


_GRAIN = 32768  # at::internal::GRAIN_SIZE: torch runs smaller element-wise ops on the calling thread


def copy_serial(src: np.ndarray, dst: np.ndarray) -> None:
    """``dst[...] = src`` for same-shape C-contiguous arrays, float16 <-> float32 through torch
    (~8x numpy's conversion) in pieces below torch's grain size, so it stays on this thread:
    it runs beside other work (a reader thread, the normalising worker), and OpenMP teams on
    busy cores stall."""
    if {src.dtype, dst.dtype} <= {np.dtype(np.float16), np.dtype(np.float32)} and src.dtype != dst.dtype \
            and src.flags.c_contiguous and dst.flags.c_contiguous:
        a, b = torch.from_numpy(src).view(-1), torch.from_numpy(dst).view(-1)
        for s in range(0, a.numel(), _GRAIN):
            b[s : s + _GRAIN].copy_(a[s : s + _GRAIN])
    else:
        dst[...] = src


def import_pool(
    directory: str | Path,
    source: str | Path,
    dtype: str = "float16",
    *,
    run: RunContext = QUIET,
) -> Pool:
    """Read, validate and normalise every volume under ``source`` into ``directory``.

    ``source`` is a volume file, a volume stack, a folder of them, or a labels CSV. The pool
    is written to a ``.partial`` file and renamed only when complete, so an error or a
    cancel leaves nothing half-imported behind.

    Volumes are normalised ``IMPORT_CHUNK`` at a time and written with plain ``write`` calls
    by a second thread while this one reads the next chunk, so the pool never sits in this
    process's memory (docs/performance.md).
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
    dt = np.dtype(dtype)
    try:
        with open(partial, "wb") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": np.lib.format.dtype_to_descr(dt), "fortran_order": False,
                    "shape": (len(refs), box, box, box)})
            f.flush()
            _write_volumes(f, refs, box, dt, run)
            f.flush()
            os.fsync(f.fileno())
        if partial.stat().st_size != _npy_size(partial, len(refs), box, dt):
            raise ProjectError(f"{partial}: the pool file was not written completely")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    keys = _KeyCache(root)
    with atomic_open(directory / INDEX_FILE, "w") as f:
        w = csv.writer(f)
        w.writerow(["index", "key", "path", "frame"])
        for i, ref in enumerate(refs):
            w.writerow([i, keys(ref), str(ref.path), "" if ref.frame is None else ref.frame])
    atomic_write_text(
        directory / INFO_FILE,
        json.dumps({"n": len(refs), "box": box, "dtype": dtype, "root": str(root),
                    "voxel_size": float(first.voxel_size[-1]) or 1.0}, indent=2),
    )
    os.replace(partial, directory / VOLUMES_FILE)
    fsync_dir(directory)
    return Pool.open(directory)


def _write_volumes(f: BinaryIO, refs: list[VolumeRef], box: int, dt: np.dtype, run: RunContext) -> None:
    """The volumes of ``refs``, normalised, appended to ``f`` in ``dt``: this thread reads chunk
    j+1 while a worker thread normalises and writes chunk j (two of each buffer)."""
    n_total, chunk = len(refs), max(1, min(IMPORT_CHUNK, len(refs)))
    raws = [np.empty((chunk, box, box, box), np.float32) for _ in range(2)]
    outs = [np.empty((chunk, box, box, box), dt) for _ in range(2)]
    work = np.empty((chunk, box, box, box), np.float32)  # the worker's scratch
    jobs: list = [None, None]

    def process(turn: int, k: int, paths: list[Path]) -> None:
        normalize_many(raws[turn][:k], outs[turn], paths, work)
        f.write(memoryview(outs[turn][:k].reshape(-1).view(np.uint8)))

    def wait(turn: int) -> None:
        job, jobs[turn] = jobs[turn], None
        if job is not None:
            job.result()

    step, next_emit, k, turn, paths = max(1, n_total // 100), 0, 0, 0, []
    with ThreadPoolExecutor(1, thread_name_prefix="ktal-pool-import") as worker:
        try:
            for i, (ref, vol) in enumerate(iter_volumes(refs)):
                if vol.shape != (box, box, box):
                    raise ProjectError(f"{ref.path}: box {vol.shape} differs from the first volume's {box}^3")
                if k == 0:
                    wait(turn)  # the worker is done with this turn's buffers
                raws[turn][k] = vol
                paths.append(ref.path)
                k += 1
                if k == chunk or i == n_total - 1:
                    jobs[turn] = worker.submit(process, turn, k, paths)
                    k, turn, paths = 0, 1 - turn, []
                    run.check_cancel()
                    if i >= next_emit or i == n_total - 1:
                        run.emit(Progress("import", i + 1, n_total, message=ref.path.name))
                        next_emit = i + step
            wait(1 - turn)
            wait(turn)
        except BaseException:
            # a problem the worker found in an earlier chunk is reported first (file order)
            for t in (1 - turn, turn):
                job, jobs[t] = jobs[t], None
                if job is not None and job.exception() is not None:
                    raise job.exception() from None
            raise


def _npy_size(path: Path, n: int, box: int, dt: np.dtype) -> int:
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        return f.tell() + n * box**3 * dt.itemsize


class _KeyCache:
    """``ref.label_key(root)`` for many frames of few files, resolving each file's name once.

    A stack frame's key is ``"{frame + 1}@{name}"``; the cache learns ``name`` from the
    first frame of each file and checks that shape, so it can only ever agree with
    :meth:`~.volumes.VolumeRef.label_key` (it calls that whenever the shape differs).
    """

    def __init__(self, root: Path):
        self.root = root
        self.names: dict[Path, str | None] = {}

    def __call__(self, ref: VolumeRef) -> str:
        if ref.frame is None:
            return ref.label_key(self.root)
        if ref.path not in self.names:
            key, prefix = ref.label_key(self.root), f"{ref.frame + 1}@"
            self.names[ref.path] = key[len(prefix):] if key.startswith(prefix) else None
            return key
        name = self.names[ref.path]
        return ref.label_key(self.root) if name is None else f"{ref.frame + 1}@{name}"


WRITERS = 2  # threads that normalise and write: numpy and torch release the GIL; a busy machine shares its cores


class PoolWriter:
    """A new pool written volume by volume, each at its own row, in any order (an import from a
    particle list cuts boxes tomogram by tomogram and slab by slab, not in the list's order).

    Volumes are normalised :data:`IMPORT_CHUNK` at a time and written with ``pwrite`` by a worker
    thread while the caller cuts the next ones. The file is ``volumes.npy.partial`` until
    :meth:`finish` has checked that every row was written, then it is renamed; :meth:`abort`
    removes it.
    """

    def __init__(self, directory: str | Path, n: int, box: int, dtype: str = "float16"):
        self.directory = Path(directory)
        if (self.directory / VOLUMES_FILE).exists():
            raise ProjectError(f"{self.directory}: a pool already exists here")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.n, self.box, self.dtype = n, box, np.dtype(dtype)
        self.partial = self.directory / (VOLUMES_FILE + ".partial")
        self._f = open(self.partial, "w+b")  # noqa: SIM115 (closed in finish/abort)
        np.lib.format.write_array_header_1_0(
            self._f, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                      "shape": (n, box, box, box)})
        self._f.flush()
        self._data_offset = self._f.tell()
        self._row_bytes = box ** 3 * self.dtype.itemsize
        self._f.truncate(self._data_offset + n * self._row_bytes)
        self._written = np.zeros(n, bool)
        self._worker = ThreadPoolExecutor(WRITERS, thread_name_prefix="ktal-pool-write")
        chunk = max(1, min(IMPORT_CHUNK, n))
        turns = WRITERS + 1  # the caller fills one buffer while each worker normalises and writes another
        self._raws = [np.empty((chunk, box, box, box), np.float32) for _ in range(turns)]
        self._outs = [np.empty((chunk, box, box, box), self.dtype) for _ in range(turns)]
        self._works = [np.empty((chunk, box, box, box), np.float32) for _ in range(turns)]
        self._jobs: list = [None] * turns
        self._turn, self._k, self._rows, self._names = 0, 0, [], []

    def _process(self, turn: int, k: int, rows: list[int], names: list) -> None:
        normalize_many(self._raws[turn][:k], self._outs[turn], names, self._works[turn])
        fd = self._f.fileno()
        j = 0
        while j < k:  # one pwrite per run of consecutive rows
            e = j + 1
            while e < k and rows[e] == rows[e - 1] + 1:
                e += 1
            data = memoryview(self._outs[turn][j:e].reshape(-1).view(np.uint8))
            offset, done = self._data_offset + rows[j] * self._row_bytes, 0
            while done < len(data):
                done += os.pwrite(fd, data[done:], offset + done)
            j = e

    def _wait(self, turn: int) -> None:
        job, self._jobs[turn] = self._jobs[turn], None
        if job is not None:
            job.result()

    def add(self, row: int, volume: np.ndarray, name: str) -> None:
        """Stage ``volume`` (box^3, any float dtype) for ``row``; ``name`` says which in an error."""
        if self._k == 0:
            self._wait(self._turn)
        self._raws[self._turn][self._k] = volume
        self._rows.append(int(row))
        self._names.append(name)
        self._written[row] = True
        self._k += 1
        if self._k == len(self._raws[0]):
            self._flush()

    def _flush(self) -> None:
        if self._k:
            self._jobs[self._turn] = self._worker.submit(self._process, self._turn, self._k, self._rows, self._names)
            self._turn, self._k, self._rows, self._names = (self._turn + 1) % len(self._jobs), 0, [], []

    def finish(self, index_rows: list[list], columns: list[str], info: dict) -> Pool:
        """Write the last volumes, index.csv (``columns``, one row per volume) and info.json; rename."""
        try:
            self._flush()
            for t in range(len(self._jobs)):
                self._wait((self._turn + t) % len(self._jobs))  # in submission order
            if not self._written.all():
                raise ProjectError(f"{self.partial}: {int((~self._written).sum())} volumes were not written")
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            self._worker.shutdown()
            with atomic_open(self.directory / INDEX_FILE, "w") as f:
                w = csv.writer(f)
                w.writerow(columns)
                w.writerows(index_rows)
            atomic_write_text(self.directory / INFO_FILE, json.dumps(
                {"n": self.n, "box": self.box, "dtype": self.dtype.name} | info, indent=2))
            os.replace(self.partial, self.directory / VOLUMES_FILE)
            fsync_dir(self.directory)
        except BaseException:
            self.abort()
            raise
        return Pool.open(self.directory)

    def abort(self) -> None:
        """Stop and remove the partial file (what the worker was writing is waited for)."""
        for t in range(len(self._jobs)):
            job, self._jobs[t] = self._jobs[t], None
            if job is not None:
                job.exception()  # waits; an error there is not this call's to raise
        self._worker.shutdown()
        if not self._f.closed:
            self._f.close()
        self.partial.unlink(missing_ok=True)

    def first_error(self) -> BaseException | None:
        """A problem the worker found (a constant volume, a full disk), raised by the next add or finish."""
        for t in range(len(self._jobs)):
            job = self._jobs[(self._turn + t) % len(self._jobs)]
            if job is not None and job.done() and job.exception() is not None:
                return job.exception()
        return None
