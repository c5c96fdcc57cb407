"""Tomograms: finding them by name, opening them without reading them, reading slabs.

Where tomograms come from (``--tomograms``):

- a folder of MRC files (``.mrc``, ``.rec``, ``.map``, ``.mrcs``; not subfolders), each named
  after its tomogram: a pick's tomogram ``TS_01`` matches ``TS_01.mrc``, or a file whose name
  starts with ``TS_01`` and a separator (``TS_01_10.00Apx.mrc``, Warp's names; ``TS_01.rec``);
- RELION 5's ``tomograms.star`` (read with :mod:`starfile`): ``rlnTomoName``,
  ``rlnTomoReconstructedTomogram`` (a path relative to the RELION project folder: tried
  beside the STAR file, then in the folders above it), ``rlnTomoSizeX/Y/Z`` (the size in
  unbinned tilt-series pixels, which gives RELION's tomogram centre),
  ``rlnTomoTiltSeriesPixelSize`` and ``rlnTomoTomogramBinning``.

A tomogram is checked and opened with :func:`~.mrc.inspect_layout` and ``mrcfile.mmap``
(permissive, with one warning for a slightly-off header), and then read by slabs of whole z
planes: a slab is one contiguous run of bytes in the file, read with ``pread`` into a private
buffer. Pages read through a memory map count towards the process's resident memory until it
unmaps them; pages read with ``pread`` pass through the page cache only, so extracting from
tomograms far larger than memory keeps the resident set at the size of one slab.
"""

from __future__ import annotations

import math
import os
import re
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, InputWarning
from .mrc import VOLUME_SUFFIXES, inspect_layout, memory_map
from .star_blocks import read_star_blocks

__all__ = [
    "Catalogue",
    "CatalogueEntry",
    "Geometry",
    "Tomogram",
    "ZarrTomogram",
    "catalogue",
    "open_tomogram",
]

#: Suffixes that name a tomogram's tilt series or file rather than the tomogram itself.
NAME_SUFFIXES = (".tomostar", ".mrc", ".rec", ".st", ".mrcs", ".map", ".tomo", ".mdoc")
_SEPARATOR = re.compile(r"[_.\-]")
#: Voxel sizes that differ by less than this fraction are the same.
VOXEL_TOLERANCE = 0.01


@dataclass(frozen=True)
class Geometry:
    """Where a tomogram's voxels are, in the terms pick lists use.

    ``shape`` is (z, y, x) voxels; ``voxel_size`` Angstrom per voxel; ``centre`` the point in
    Angstrom (x, y, z, from the corner voxel's centre) that RELION 5's centred coordinates
    are measured from: ``rlnTomoSize / 2 * rlnTomoTiltSeriesPixelSize`` when tomograms.star
    gives the size, else ``shape / 2 * voxel_size`` (the same for a tomogram RELION binned
    from an even size; copick computes it so too).
    """

    shape: tuple[int, int, int]
    voxel_size: float
    centre: tuple[float, float, float]

    @classmethod
    def of(cls, shape, voxel_size: float, centre=None) -> Geometry:
        shape = tuple(int(s) for s in shape)
        if centre is None:
            centre = tuple(shape[2 - a] / 2 * voxel_size for a in range(3))
        return cls(shape, float(voxel_size), tuple(float(c) for c in centre))

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "voxel_size": self.voxel_size, "centre": list(self.centre)}

    @classmethod
    def from_dict(cls, d: dict) -> Geometry:
        return cls.of(d["shape"], d["voxel_size"], d.get("centre"))


# ------------------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    path: Path | None
    """The file, resolved; None when tomograms.star names a file that is not there."""
    named_as: str = ""
    """How the catalogue wrote the file (for messages)."""
    size_xyz: tuple[float, float, float] | None = None
    """rlnTomoSizeX/Y/Z: the tomogram's size in unbinned tilt-series pixels."""
    tilt_series_pixel: float | None = None
    binning: float | None = None
    looked_at: tuple[Path, ...] = ()
    """Where a missing file was looked for (absolute), for the message that it does not exist."""
    named_by: Path | None = None
    """The file that names this tomogram's file (tomograms.star, a Dynamo .doc), for messages."""

    @property
    def star_voxel_size(self) -> float | None:
        """The voxel size tomograms.star implies (tilt-series pixel x binning), if it says both."""
        if self.tilt_series_pixel and self.binning:
            return self.tilt_series_pixel * self.binning
        return None


@dataclass
class Catalogue:
    """The tomograms a ``--tomograms`` argument offers, by name."""

    source: Path
    entries: list[CatalogueEntry]
    _by_name: dict[str, CatalogueEntry] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {e.name: e for e in self.entries}

    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def match(self, name: str) -> CatalogueEntry | None:
        """The entry a pick's tomogram name means, or None; InputError if it could mean two.

        Rules, in order: the same name; the name without a directory or a file suffix
        (``TS_01.tomostar``, ``/data/TS_01.mrc``); the one entry whose name starts with the
        name and a separator (``TS_01_10.00Apx`` for ``TS_01``, never ``TS_010``); for a name
        that is a number (a Dynamo table's), the one entry that is the same number written
        with leading zeros (``1`` -> ``001``).
        """
        for candidate in _candidates(name):
            if candidate in self._by_name:
                return self._by_name[candidate]
        for candidate in _candidates(name):
            found = [e for e in self.entries
                     if e.name.startswith(candidate) and _SEPARATOR.match(e.name[len(candidate):] or "x")]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                names = ", ".join(e.name for e in found[:4])
                raise InputError(self.source, f"tomogram name {name!r} matches {len(found)} tomograms ({names})",
                                 "rename the files so that one name matches each tomogram")
        number = str(name).strip()
        if number.isdigit():
            found = [e for e in self.entries if e.name.isdigit() and int(e.name) == int(number)]
            if len(found) > 1:
                raise InputError(self.source, f"tomogram number {number} matches {len(found)} tomograms "
                                              f"({', '.join(e.name for e in found[:4])})",
                                 "rename the files so that one name matches each tomogram")
            if found:
                return found[0]
        return None


def _candidates(name: str) -> list[str]:
    name = str(name).strip()
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem = base
    changed = True
    while changed:
        changed = False
        for suffix in NAME_SUFFIXES:
            if stem.lower().endswith(suffix) and len(stem) > len(suffix):
                stem = stem[: -len(suffix)]
                changed = True
    return list(dict.fromkeys(c for c in (name, base, stem) if c))


def catalogue(source: str | Path) -> Catalogue:
    """The tomograms of a folder or of RELION 5's tomograms.star; InputError if there are none."""
    source = Path(source).expanduser().resolve()
    if not source.exists():
        raise InputError(source, "does not exist", "--tomograms takes a folder of MRC files or a tomograms.star")
    if source.is_dir():
        files = sorted(p for p in source.iterdir()
                       if p.suffix.lower() in VOLUME_SUFFIXES and p.is_file() and not p.name.startswith("."))
        if not files:
            raise InputError(source, "no tomograms in this folder", f"looked for {', '.join(VOLUME_SUFFIXES)}")
        entries = [CatalogueEntry(p.stem, p, p.name) for p in files]
        return Catalogue(source, entries)
    if source.suffix.lower() == ".star":
        return _star_catalogue(source)
    raise InputError(source, "is neither a folder of tomograms nor a tomograms.star")


def _star_catalogue(path: Path) -> Catalogue:
    blocks = read_star_blocks(path)
    table = next((b for b in blocks.values() if hasattr(b, "columns") and "rlnTomoName" in b.columns), None)
    if table is None:
        raise InputError(path, "no block with rlnTomoName", "expected RELION 5's tomograms.star (data_global)")
    if "rlnTomoReconstructedTomogram" not in table.columns:
        raise InputError(path, "has no rlnTomoReconstructedTomogram column",
                         "reconstruct the tomograms in RELION first, or pass the folder of tomograms instead")

    def number(row, column):
        if column not in table.columns:
            return None
        try:
            value = float(row[column])
        except (TypeError, ValueError):
            return None
        return value if math.isfinite(value) and value > 0 else None

    entries = []
    for _, row in table.iterrows():
        written = str(row["rlnTomoReconstructedTomogram"])
        sizes = [number(row, f"rlnTomoSize{a}") for a in "XYZ"]
        candidates = _places(path, written)
        found = next((c.resolve() for c in candidates if c.is_file()), None)
        entries.append(CatalogueEntry(
            str(row["rlnTomoName"]), found, written,
            tuple(sizes) if all(sizes) else None,
            number(row, "rlnTomoTiltSeriesPixelSize"), number(row, "rlnTomoTomogramBinning") or
            (1.0 if number(row, "rlnTomoTiltSeriesPixelSize") else None),
            looked_at=() if found else tuple(candidates), named_by=path))
    return Catalogue(path, entries)


def _places(star: Path, written: str) -> list[Path]:
    """Where a path as RELION writes it (relative to its project folder) may be: beside the STAR file, in
    the folders above it, or (its name alone) beside it; in that order, absolute."""
    p = Path(written).expanduser()
    if p.is_absolute():
        return [p]
    folder = star.parent
    return list(dict.fromkeys([*(base / p for base in (folder, *folder.parents[:4])), folder / p.name]))


# ------------------------------------------------------------------------- tomograms


class Tomogram:
    """One MRC tomogram, checked and opened; read by slabs of z planes (never whole)."""

    def __init__(self, name: str, path: Path, shape: tuple[int, int, int], voxel_size: float, dtype: np.dtype,
                 offset: int, header_voxel_size: float | None, voxel_size_known: bool = True):
        self.name = name
        self.path = path
        self.shape = shape
        self.voxel_size = voxel_size
        """Angstrom per voxel; 1.0 where nothing gives it (``voxel_size_known`` False)."""
        self.dtype = dtype
        self.offset = offset
        self.header_voxel_size = header_voxel_size
        self.voxel_size_known = voxel_size_known
        self._fd: int | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        z, y, x = self.shape
        return f"Tomogram({self.name!r}, {x}x{y}x{z}, {self.voxel_text})"

    @property
    def voxel_text(self) -> str:
        """``10 A``, or what the header says where nothing gives the voxel size, for messages."""
        return f"{self.voxel_size:g} A" if self.voxel_size_known else "unset size (0 in the header)"

    @property
    def plane_bytes(self) -> int:
        return self.shape[1] * self.shape[2] * self.dtype.itemsize

    def _read(self, buf: memoryview, offset: int) -> None:
        if self._fd is None:
            with self._lock:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_RDONLY)
        done, total = 0, len(buf)
        while done < total:
            got = os.preadv(self._fd, [buf[done:]], offset + done) if hasattr(os, "preadv") else \
                self._read_seek(buf[done:], offset + done)
            if not got:
                raise InputError(self.path, "is shorter than its header says (changed while it was read?)")
            done += got

    def _read_seek(self, buf: memoryview, offset: int) -> int:
        with self._lock, open(self.path, "rb", buffering=0) as f:
            f.seek(offset)
            return f.readinto(buf)

    def read_planes(self, z0: int, z1: int, out: np.ndarray | None = None) -> np.ndarray:
        """Planes ``z0:z1`` (clipped to the tomogram) as float32 ``(z1 - z0, y, x)``, one read."""
        z0, z1 = max(0, z0), min(self.shape[0], z1)
        n = max(0, z1 - z0)
        _, ny, nx = self.shape
        if out is None:
            out = np.empty((n, ny, nx), np.float32)
        if n == 0:
            return out
        offset = self.offset + z0 * self.plane_bytes
        if self.dtype == np.dtype(np.float32):
            self._read(memoryview(out.reshape(-1).view(np.uint8)), offset)
        else:
            raw = np.empty((n, ny, nx), self.dtype)
            self._read(memoryview(raw.reshape(-1).view(np.uint8)), offset)
            out[...] = raw
        return out

    def read_region(self, z: tuple[int, int], y: tuple[int, int], x: tuple[int, int]) -> np.ndarray:
        """The voxels ``[z0:z1, y0:y1, x0:x1]`` inside the tomogram (float32), reading only those rows."""
        (z0, z1), (y0, y1), (x0, x1) = (_clip(r, n) for r, n in zip((z, y, x), self.shape))
        out = np.empty((z1 - z0, y1 - y0, x1 - x0), np.float32)
        if out.size == 0:
            return out
        rows = np.empty((y1 - y0, self.shape[2]), self.dtype)
        for k, zz in enumerate(range(z0, z1)):
            start = self.offset + zz * self.plane_bytes + y0 * self.shape[2] * self.dtype.itemsize
            self._read(memoryview(rows.reshape(-1).view(np.uint8)), start)
            out[k] = rows[:, x0:x1]
        return out

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 (interpreter shutdown)
            pass

    def geometry(self, entry: CatalogueEntry | None = None) -> Geometry:
        """This tomogram's :class:`Geometry`; tomograms.star's size gives RELION's centre."""
        centre = None
        if entry is not None and entry.size_xyz and entry.tilt_series_pixel:
            centre = tuple(s / 2 * entry.tilt_series_pixel for s in entry.size_xyz)
        return Geometry.of(self.shape, self.voxel_size, centre)


class ZarrTomogram(Tomogram):
    """A tomogram held in a zarr array (a copick project's OME-Zarr); read by slabs too."""

    def __init__(self, name: str, array, voxel_size: float, where: str):
        super().__init__(name, Path(where), tuple(int(s) for s in array.shape), float(voxel_size),
                         np.dtype(array.dtype), 0, float(voxel_size))
        self.array = array

    def read_planes(self, z0: int, z1: int, out: np.ndarray | None = None) -> np.ndarray:
        z0, z1 = max(0, z0), min(self.shape[0], z1)
        data = np.asarray(self.array[z0:z1], dtype=np.float32)
        if out is None:
            return data
        out[...] = data
        return out

    def read_region(self, z, y, x) -> np.ndarray:
        (z0, z1), (y0, y1), (x0, x1) = (_clip(r, n) for r, n in zip((z, y, x), self.shape))
        return np.asarray(self.array[z0:z1, y0:y1, x0:x1], dtype=np.float32)

    def close(self) -> None:
        pass


def _clip(r: tuple[int, int], n: int) -> tuple[int, int]:
    a, b = max(0, int(r[0])), min(n, int(r[1]))
    return (a, max(a, b))


def _missing(entry: CatalogueEntry, where: str) -> InputError:
    """The error for a tomogram whose file is not there: the absolute path looked at, and who named it."""
    looked = list(entry.looked_at) or [Path(entry.named_as or entry.name).expanduser().absolute()]
    named = f"{entry.named_by} names it {entry.named_as!r}" if entry.named_by else f"named {entry.named_as!r}"
    also = ""
    if len(looked) > 1:
        shown = ", ".join(str(p) for p in looked[1:4]) + (", ..." if len(looked) > 4 else "")
        also = f"; also looked at {shown}"
    return InputError(looked[0], f"tomogram {entry.name!r} does not exist{where}", named + also)


def open_tomogram(entry: CatalogueEntry, *, used_by: str = "", voxel_size: float | None = None) -> Tomogram:
    """Check and open the tomogram of ``entry``; InputError names the file (and ``used_by``).

    The voxel size is the header's; where tomograms.star gives one too (tilt-series pixel x
    binning) the two must agree within 1%, and an unset header (0, or 1.0) takes the STAR's.
    ``voxel_size`` (``--tomogram-voxel-size``) is the one of a header that leaves it unset (0);
    one that gives another is an error. Where nothing gives it, the tomogram's ``voxel_size`` is
    1.0 and ``voxel_size_known`` False.
    """
    where = f" ({used_by})" if used_by else ""
    if entry.path is None:
        raise _missing(entry, where)
    layout = inspect_layout(entry.path)
    if len(layout.shape) != 3:
        kind = "an image" if len(layout.shape) == 2 else "a stack of volumes"
        raise InputError(entry.path, f"is {kind} ({'x'.join(map(str, layout.shape[::-1]))}), not a tomogram{where}")
    data = memory_map(layout)  # the data block is there and readable
    dtype, offset = data.dtype, int(getattr(data, "offset", 0))
    del data
    vz, vy, vx = layout.voxel_size
    if max(vz, vy, vx) > min(vz, vy, vx) * (1 + VOXEL_TOLERANCE):
        raise InputError(entry.path, f"voxels are not cubic ({vx:g} x {vy:g} x {vz:g} A){where}",
                         "resample the tomogram to cubic voxels")
    voxel, header, known = vx, vx, layout.voxel_size_set
    said = f"{vx:g} A" if known else "no voxel size (0)"
    star = entry.star_voxel_size
    if star is not None:
        if (not known or abs(vx - 1.0) < 1e-6) and abs(star - 1.0) > VOXEL_TOLERANCE:
            warnings.warn(f"{entry.path}: the header gives {said}; using tomograms.star's "
                          f"{entry.tilt_series_pixel:g} x {entry.binning:g} = {star:g} A", InputWarning, stacklevel=2)
            voxel, header, known = star, None, True
        elif abs(star - vx) > VOXEL_TOLERANCE * vx:
            raise InputError(entry.path, f"voxel size {vx:g} A in the header, but tomograms.star says "
                                         f"{entry.tilt_series_pixel:g} A x binning {entry.binning:g} = {star:g} A",
                             "one of the two is wrong; fix the header (or the STAR file)")
    elif voxel_size is not None:
        if not known:
            voxel, header, known = float(voxel_size), None, True
        elif abs(voxel_size - vx) > VOXEL_TOLERANCE * vx:
            raise InputError(entry.path, f"voxel size {vx:g} A in the header, but --tomogram-voxel-size "
                                         f"{voxel_size:g}", "the option is for headers that leave it unset (0)")
    return Tomogram(entry.name, layout.path, tuple(int(s) for s in layout.shape), float(voxel), np.dtype(dtype),
                    offset, header if known else None, known)


def close_all(tomograms: Iterable[Tomogram]) -> None:
    for t in tomograms:
        t.close()


class PlaneStream:
    """The z planes of a tomogram read ahead, in order, each once, by a thread into a ring buffer.

    The consumer asks for planes with :meth:`planes` (waiting until the reader has them) and says
    with :meth:`release` which planes it will not ask for again; the reader refills the ring
    behind it, ``chunk`` planes per ``pread``. So reading overlaps with cutting boxes, and the
    memory held is the ring: ``capacity`` planes.
    """

    def __init__(self, tomogram: Tomogram, start: int, capacity: int, chunk: int):
        nz, ny, nx = tomogram.shape
        self.tomogram, self.nz = tomogram, nz
        self.capacity = max(1, min(capacity, nz - start))
        self.chunk = max(1, min(chunk, self.capacity))
        self.ring = np.empty((self.capacity, ny, nx), np.float32)
        self.filled = self.released = start
        self._stop = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="ktal-tomogram-read", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._stop and self.filled < self.nz and \
                            self.filled + min(self.chunk, self.nz - self.filled) - self.released > self.capacity:
                        self._cond.wait()
                    if self._stop or self.filled >= self.nz:
                        return
                    z0 = self.filled
                z1 = min(self.nz, z0 + self.chunk)
                z = z0
                while z < z1:  # the chunk may wrap around the ring's end
                    k = z % self.capacity
                    n = min(z1 - z, self.capacity - k)
                    self.tomogram.read_planes(z, z + n, self.ring[k: k + n])
                    z += n
                with self._cond:
                    self.filled = z1
                    self._cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 (raised in the consumer's thread)
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def region(self, z: tuple[int, int], y: tuple[int, int], x: tuple[int, int]) -> np.ndarray:
        """Voxels ``[z0:z1, y0:y1, x0:x1]`` (planes within the tomogram, not released): a view of the
        ring where the planes lie in one piece (valid until released), else a copy of the window."""
        (z0, z1), (y0, y1), (x0, x1) = z, y, x
        with self._cond:
            while self.filled < z1 and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise self._error
        k0, k1 = z0 % self.capacity, (z1 - 1) % self.capacity + 1
        if k0 < k1:
            return self.ring[k0:k1, y0:y1, x0:x1]
        return np.concatenate([self.ring[k0:, y0:y1, x0:x1], self.ring[:k1, y0:y1, x0:x1]])

    def planes(self, z0: int, z1: int) -> np.ndarray:
        """Whole planes ``z0:z1`` (see :meth:`region`)."""
        return self.region((z0, z1), (0, self.ring.shape[1]), (0, self.ring.shape[2]))

    def release(self, z: int) -> None:
        """Planes below ``z`` are not needed any more."""
        with self._cond:
            if z > self.released:
                self.released = z
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join()
