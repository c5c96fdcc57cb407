"""Finding, checking and reading subtomograms stored as MRC files.

Every problem with a user's file is raised as :class:`~napari_ktal.core.errors.InputError`
(one line naming the file); a file that is read only because mrcfile's permissive mode
forgave its header gives one :class:`~napari_ktal.core.errors.InputWarning`.

The MRC format itself is left to :mod:`mrcfile`: this module only decides which files
hold usable subtomograms (cubic, real-valued, a side that is a multiple of 8, finite
values) and turns mrcfile's failures into messages a user can act on.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import NamedTuple

import mrcfile
import numpy as np
from mrcfile import utils as mrc_utils
from mrcfile.constants import MAP_ID
from mrcfile.mrcfile import MrcFile

from ..errors import InputError, InputWarning
from .labels_csv import LabelRow, read_label_rows

__all__ = [
    "VOLUME_SUFFIXES",
    "MrcInfo",
    "MrcLayout",
    "inspect_layout",
    "memory_map",
    "VolumeRef",
    "find_volumes",
    "inspect_mrc",
    "iter_volumes",
    "normalize",
    "read_labels_csv",
    "read_volumes",
    "voxel_size",
]

VOLUME_SUFFIXES = (".mrc", ".mrcs", ".map", ".rec")
"""File suffixes treated as MRC volumes (matched case-insensitively)."""

_READABLE_MODES = {0: "int8", 1: "int16", 2: "float32", 6: "uint16", 12: "float16"}
_COMPLEX_MODES = (3, 4)
_OTHER_MODES = {16: "RGB", 101: "4-bit"}  # valid MRC, but not real-valued volumes
_HEADER_BYTES = 1024
_MAX_SIDE = 65536  # larger nx / ny / mz can only come from a corrupt header
_BOX_MULTIPLE = 8
_REL_STD_FLOOR = 1e-6  # std below this fraction of max |value| is float rounding noise


@dataclass(frozen=True, order=True)
class VolumeRef:
    """One subtomogram: a whole single-volume file, or one frame of a volume stack."""

    path: Path
    """Absolute, resolved path of the file."""
    frame: int | None
    """``None`` when the file holds one volume, else the 0-based index in the stack."""

    def __post_init__(self) -> None:
        if self.frame is not None and self.frame < 0:
            raise ValueError(f"frame must be >= 0 or None, got {self.frame}")

    def label_key(self, root: Path) -> str:
        """Name this volume relative to ``root``: ``"sub_001.mrc"`` or ``"3@stack.mrcs"``.

        Stack frames use RELION's 1-based ``k@file`` form, so the key can be written
        to a labels CSV in ``root`` and read back by :func:`read_labels_csv`. A file
        outside ``root`` keeps its absolute (posix) path.
        """
        try:
            name = self.path.relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            name = self.path.as_posix()
        return name if self.frame is None else f"{self.frame + 1}@{name}"


@dataclass(frozen=True)
class MrcInfo:
    """What the header of a usable subtomogram file says."""

    path: Path
    n_volumes: int
    box: int
    mode: int
    voxel_size: tuple[float, float, float]
    """Angstrom per voxel along (z, y, x); 1.0 where the header leaves it unset."""


# --------------------------------------------------------------------------- headers


class _BoundedMrcFile(MrcFile):
    """An :class:`~mrcfile.mrcfile.MrcFile` that never asks for more bytes than remain.

    mrcfile allocates a buffer of the size the header declares before reading into it;
    a corrupt extended-header size (``nsymbt``) would cost up to 2 GiB and seconds for
    a file of a few KiB. Capping the request keeps mrcfile's own checks (it then sees a
    short read and raises, or warns when permissive) at the cost of the file's size.
    """

    def _read_bytearray_from_stream(self, number_of_bytes: int) -> tuple[bytearray, int]:
        remaining = self._get_file_size() - self._iostream.tell()
        return super()._read_bytearray_from_stream(min(number_of_bytes, remaining))


class _Header(NamedTuple):
    header: np.recarray
    voxel_size: tuple[float, float, float]
    lenient: str | None  # what permissive mode forgave; None if read strictly


def _voxel_size_zyx(mrc: MrcFile) -> tuple[float, float, float]:
    """mrcfile's voxel size as (z, y, x); unset, zero or non-finite axes become 1.0."""
    with np.errstate(all="ignore"):  # mx == 0 in headers that leave the cell unset
        size = mrc.voxel_size
    return tuple(
        v if math.isfinite(v) and v > 0 else 1.0
        for v in (float(size.z), float(size.y), float(size.x))
    )


def _read_header(path: Path) -> _Header:
    """Read the header strictly, or permissively (recording what mrcfile forgave)."""
    try:
        with _BoundedMrcFile(path, header_only=True) as mrc:
            # A full strict read also refuses modes mrcfile does not know; the
            # permissive read may fix those by swapping the byte order.
            mode = int(mrc.header.mode)
            if mode in _READABLE_MODES or mode in _COMPLEX_MODES or mode in _OTHER_MODES:
                return _Header(mrc.header.copy(), _voxel_size_zyx(mrc), None)
    except ValueError:
        pass
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with _BoundedMrcFile(path, header_only=True, permissive=True) as mrc:
                header, size = mrc.header.copy(), _voxel_size_zyx(mrc)
    except ValueError as err:  # shorter than a header, negative sizes, ...
        raise InputError(path, "not an MRC file", str(err)) from err
    forgiven = "; ".join(dict.fromkeys(str(w.message) for w in caught))
    return _Header(header, size, forgiven or None)


def _expected_file_size(header: np.recarray) -> int:
    """Bytes of header, extended header and data block that ``header`` describes."""
    shape = mrc_utils.data_shape_from_header(header)
    item_size = mrc_utils.data_dtype_from_header(header).itemsize
    return header.nbytes + int(header.nsymbt) + math.prod(shape) * item_size


def _layout_problem(header: np.recarray, file_size: int) -> str | None:
    """Why the header cannot describe readable data in a file of ``file_size`` bytes."""
    mode = int(header.mode)
    if mode in _COMPLEX_MODES:
        return f"complex data (mode {mode}) is not supported; subtomograms must be real-valued"
    if mode in _OTHER_MODES:
        return f"{_OTHER_MODES[mode]} data (mode {mode}) is not supported; only real-valued maps are read"
    if mode not in _READABLE_MODES:
        readable = ", ".join(f"{m} {name}" for m, name in _READABLE_MODES.items())
        return f"corrupt header: unknown data mode {mode} (readable modes: {readable})"
    is_stack = mrc_utils.spacegroup_is_volume_stack(header.ispg)
    for name in ("nx", "ny", "nz", "mz") if is_stack else ("nx", "ny", "nz"):
        value = int(header[name])
        if value <= 0:
            return f"corrupt header: dimension {name}={value} is not positive"
        if value > _MAX_SIDE and name != "nz":
            return f"corrupt header: dimension {name}={value} is implausibly large"
    if int(header.nsymbt) < 0:
        return f"corrupt header: extended header size {int(header.nsymbt)} is negative"
    if is_stack and int(header.nz) % int(header.mz):
        return (
            f"corrupt header: volume stack with nz={int(header.nz)} "
            f"not a multiple of the volume depth mz={int(header.mz)}"
        )
    expected = _expected_file_size(header)
    if file_size < expected:
        return (
            f"truncated: the header describes {expected} bytes but the file holds only {file_size}"
        )
    return None


def _volume_geometry(path: Path, shape: tuple[int, ...]) -> tuple[int, int]:
    """``(n_volumes, box)`` of mrcfile's data shape, or InputError if not cubic volumes."""
    if len(shape) == 2:
        raise InputError(path, f"holds a 2D image ({shape[0]}x{shape[1]}), not a volume")
    n, (depth, height, width) = (shape[0] if len(shape) == 4 else 1), shape[-3:]
    if not depth == height == width:
        hint = "subtomograms must be cubic"
        if len(shape) == 3 and height == width and depth % width == 0:
            hint += f"; if this is a stack of {depth // width} volumes, set ispg=401 and mz={width}"
        raise InputError(path, f"not cubic: volumes are {depth}x{height}x{width} (z, y, x)", hint)
    if depth % _BOX_MULTIPLE:
        raise InputError(
            path,
            f"box side {depth} is not a multiple of {_BOX_MULTIPLE}",
            "crop or pad the subtomograms",
        )
    return n, depth


def _existing_file(path: str | Path) -> Path:
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise InputError(path, "does not exist")
    if not path.is_file():
        raise InputError(path, "is not a file")
    return path


@dataclass(frozen=True)
class MrcLayout:
    """What the header of any readable MRC file says, checked against the file's size."""

    path: Path
    shape: tuple[int, ...]
    """The data's shape as mrcfile reads it: (y, x), (z, y, x), or (n, z, y, x) for a volume stack."""
    mode: int
    voxel_size: tuple[float, float, float]
    """Angstrom per voxel along (z, y, x); 1.0 where the header leaves it unset."""
    origin: tuple[float, float, float]
    """The header's origin in Angstrom, (z, y, x)."""
    permissive: bool
    """Whether mrcfile must read it permissively (the header is slightly off)."""
    voxel_size_set: bool = True
    """Whether the header gives a voxel size (False: its cell is 0, or not a number, on some axis)."""


def _layout(path: str | Path) -> tuple[MrcLayout, list[str]]:
    """The checked layout of ``path`` and what was forgiven about it (not yet warned)."""
    path = _existing_file(path)
    try:
        file_size = path.stat().st_size
        if file_size < _HEADER_BYTES:
            raise InputError(path, "not an MRC file", f"only {file_size} bytes; an MRC header alone is {_HEADER_BYTES}")
        header, size, lenient = _read_header(path)
    except OSError as err:
        raise InputError(path, f"cannot be read ({err.strerror or err})") from err
    problem = _layout_problem(header, file_size)
    if problem is not None:
        if bytes(header.map)[:3] != MAP_ID[:3]:  # mrcfile's own test for the map ID
            raise InputError(path, "not an MRC file", f"no 'MAP ' ID at byte 208; {problem}")
        raise InputError(path, problem)
    notes = [lenient] if lenient else []
    extra = file_size - _expected_file_size(header)
    if extra:
        notes.append(f"{extra} bytes after the data block were ignored")
    origin = tuple(float(v) if math.isfinite(float(v)) else 0.0
                   for v in (header.origin.z, header.origin.y, header.origin.x))
    with np.errstate(all="ignore"):  # a cell of 0 over a sampling of 0
        given = np.array([header.cella.x, header.cella.y, header.cella.z], np.float64) / \
            np.array([header.mx, header.my, header.mz], np.float64)
    layout = MrcLayout(path, tuple(mrc_utils.data_shape_from_header(header)), int(header.mode), size, origin,
                       lenient is not None, bool((np.isfinite(given) & (given > 0)).all()))
    return layout, notes


def _warn_lenient(path: Path, notes: list[str]) -> None:
    if notes:
        warnings.warn(
            f"{path}: read permissively, the header is slightly off: {'; '.join(notes)}",
            InputWarning,
            stacklevel=3,
        )


def inspect_layout(path: str | Path) -> MrcLayout:
    """Check any real-valued MRC file (a subtomogram, a stack, a tomogram, an image); header only.

    Raises:
        InputError: the file is missing, not MRC, truncated, has a corrupt header or holds
            data that is not real-valued.

    Warns:
        InputWarning: the header is slightly off (map ID, machine stamp, extra bytes)
            but the data is usable.
    """
    layout, notes = _layout(path)
    _warn_lenient(layout.path, notes)
    return layout


def memory_map(layout: MrcLayout) -> np.ndarray:
    """The data of a checked file, memory-mapped read-only by mrcfile: only what is used is read."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # inspecting the file warned already
        try:
            mrc = mrcfile.mmap(layout.path, mode="r", permissive=layout.permissive)
        except (ValueError, OSError) as err:  # the file changed since it was checked
            raise InputError(layout.path, "data block cannot be read", str(err)) from err
    with mrc:  # closing leaves the array mapped (read-only)
        data = mrc.data
    if data is None or tuple(data.shape) != layout.shape:
        raise InputError(layout.path, "data block cannot be read")
    return data


def _inspect(path: str | Path) -> tuple[MrcInfo, bool]:
    """Check a subtomogram file's header; return its info and whether it must be read permissively."""
    layout, notes = _layout(path)
    n_volumes, box = _volume_geometry(layout.path, layout.shape)
    _warn_lenient(layout.path, notes)
    return MrcInfo(layout.path, n_volumes, box, layout.mode, layout.voxel_size), layout.permissive


def inspect_mrc(path: str | Path) -> MrcInfo:
    """Check that ``path`` holds one cubic volume or a stack of them; read the header only.

    Raises:
        InputError: the file is missing, not MRC, truncated, has a corrupt header, holds
            complex data, or its volumes are not cubic with a side that is a multiple of 8.

    Warns:
        InputWarning: the header is slightly off (map ID, machine stamp, extra bytes)
            but the data is usable.
    """
    return _inspect(path)[0]


def voxel_size(path: str | Path) -> tuple[float, float, float]:
    """Voxel size in Angstrom along (z, y, x) from the header; 1.0 for unset axes."""
    return inspect_mrc(path).voxel_size


# ----------------------------------------------------------------------------- data


@contextmanager
def _mapped_volumes(info: MrcInfo, permissive: bool) -> Iterator[np.ndarray]:
    """A checked subtomogram file's data as a ``(n_volumes, box, box, box)`` memory map."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # _inspect already warned
        try:
            mrc = mrcfile.mmap(info.path, mode="r", permissive=permissive)
        except (ValueError, OSError) as err:  # the file changed since it was checked
            raise InputError(info.path, "data block cannot be read", str(err)) from err
    with mrc:
        if mrc.data is None or mrc.data.size != info.n_volumes * info.box**3:
            raise InputError(info.path, "data block cannot be read")
        yield mrc.data.reshape((info.n_volumes,) + (info.box,) * 3)


def _require_finite(path: Path, volume: np.ndarray, frame: int | None, n_volumes: int) -> None:
    if np.isfinite(volume).all():
        return
    kind = "NaN" if np.isnan(volume).any() else "Inf"
    where = "" if frame is None else f" in frame {frame + 1} of {n_volumes}"
    raise InputError(path, f"non-finite values ({kind}){where}")


def read_volumes(path: str | Path) -> np.ndarray:
    """All volumes of a file as float32 ``(n, box, box, box)`` (``n == 1`` for one volume)."""
    info, permissive = _inspect(path)
    with _mapped_volumes(info, permissive) as data:
        volumes = data.astype(np.float32)
    for k, volume in enumerate(volumes):
        _require_finite(info.path, volume, None if info.n_volumes == 1 else k, info.n_volumes)
    return volumes


def _frame_index(ref: VolumeRef, info: MrcInfo) -> int:
    if ref.frame is None:
        if info.n_volumes == 1:
            return 0
        raise InputError(ref.path, f"is a stack of {info.n_volumes} volumes; a frame must be named")
    if ref.frame >= info.n_volumes:
        raise InputError(
            ref.path,
            f"frame {ref.frame + 1} is out of range (the file holds {info.n_volumes} volumes)",
        )
    return ref.frame


def _describe(ref: VolumeRef) -> str:
    return ref.path.name if ref.frame is None else f"frame {ref.frame + 1} of {ref.path.name}"


def iter_volumes(refs: Sequence[VolumeRef]) -> Iterator[tuple[VolumeRef, np.ndarray]]:
    """Yield ``(ref, float32 (box, box, box) volume)`` in the order of ``refs``.

    Each run of consecutive refs to the same file opens it once, memory-mapped, so
    only the requested frames of a large stack are read.

    Raises:
        InputError: a file cannot be read (see :func:`inspect_mrc`), a volume is not
            finite, or two different refs hold exactly the same voxels (a copied file:
            it would count one particle twice, in training or in a test set).
    """
    seen: dict[bytes, VolumeRef] = {}
    for path, run in itertools.groupby(refs, key=attrgetter("path")):
        info, permissive = _inspect(path)
        with _mapped_volumes(info, permissive) as data:
            for ref in run:
                volume = np.array(data[_frame_index(ref, info)], dtype=np.float32)
                _require_finite(info.path, volume, ref.frame, info.n_volumes)
                digest = hashlib.blake2b(volume.tobytes(), digest_size=16).digest()
                first = seen.setdefault(digest, ref)
                if first != ref:
                    raise InputError(
                        ref.path,
                        f"{'frame ' + str(ref.frame + 1) + ' ' if ref.frame is not None else ''}"
                        f"holds exactly the same voxels as {_describe(first)}",
                        "a duplicate file? remove one of the two",
                    )
                yield ref, volume


def normalize(volume: np.ndarray, path_for_errors: str | Path | None = None) -> np.ndarray:
    """``volume`` as float32 with zero mean and unit standard deviation (over all voxels).

    Raises:
        InputError: the volume is constant (its spread is float rounding noise at most)
            or not finite; the message names ``path_for_errors``.
    """
    volume = np.asarray(volume, dtype=np.float32)
    mean, std = float(volume.mean(dtype=np.float64)), float(volume.std(dtype=np.float64))
    if not math.isfinite(std):
        raise InputError(path_for_errors, "volume has non-finite values")
    if std <= _REL_STD_FLOOR * float(np.abs(volume).max()):
        raise InputError(
            path_for_errors, f"volume is constant (value {mean:.6g}); it holds no signal"
        )
    return ((volume - mean) / std).astype(np.float32)


# -------------------------------------------------------------------------- finding


def _natural_key(path: Path) -> tuple:
    """Sort key putting ``sub_2`` before ``sub_10``."""
    parts = re.split(r"(\d+)", path.name.casefold())
    return tuple(int(p) if p.isdigit() else p for p in parts), path.name


def _refs_of(info: MrcInfo) -> list[VolumeRef]:
    if info.n_volumes == 1:
        return [VolumeRef(info.path, None)]
    return [VolumeRef(info.path, k) for k in range(info.n_volumes)]


def _require_same_box(infos: Sequence[MrcInfo]) -> None:
    """All one box size; else name a file of a minority size and the files of the common size."""
    by_box: dict[int, list[MrcInfo]] = {}
    for info in infos:
        by_box.setdefault(info.box, []).append(info)
    if len(by_box) < 2:
        return
    common = max(by_box, key=lambda b: len(by_box[b]))  # ties: the first file's box (dict order)
    odd = next(info for info in infos if info.box != common)
    counts = ", ".join(f"{len(v)} of box {b}" for b, v in sorted(by_box.items()))
    raise InputError(
        odd.path,
        f"box {odd.box} differs from box {common} of {by_box[common][0].path.name}",
        f"all subtomograms must have the same size; found {counts}",
    )


def _volume_files(folder: Path) -> list[Path]:
    files = [
        p
        for p in folder.iterdir()
        if p.suffix.lower() in VOLUME_SUFFIXES and not p.name.startswith(".") and p.is_file()
    ]
    if not files:
        raise InputError(
            folder,
            "no volume files in this folder",
            f"looked for {', '.join(VOLUME_SUFFIXES)}, not in subfolders",
        )
    return sorted(files, key=_natural_key)


def _require_distinct_files(files: Sequence[Path]) -> None:
    """Refuse two names of one file (a symbolic or hard link): one particle would count twice."""
    seen: dict[tuple[int, int], Path] = {}
    for path in files:
        try:
            st = path.stat()
        except OSError as err:
            raise InputError(path, f"cannot be read ({err.strerror or err})") from err
        first = seen.setdefault((st.st_dev, st.st_ino), path)
        if first != path:
            raise InputError(
                path,
                f"is the same file as {first.name} (a link)",
                "each subtomogram must be in the folder once; remove the link",
            )


def find_volumes(source: str | Path) -> list[VolumeRef]:
    """Every subtomogram in ``source``: a volume or stack file, a folder, or a labels CSV.

    A folder contributes its volume files (not subfolders, not hidden files) in natural
    order; a CSV contributes the volumes it lists (see :func:`read_labels_csv`).
    All volumes must share one box size.
    """
    source = Path(source).expanduser().resolve()
    if not source.exists():
        raise InputError(source, "does not exist")
    if source.is_dir():
        files = _volume_files(source)
        _require_distinct_files(files)
        infos = [inspect_mrc(p) for p in files]
        refs = [ref for info in infos for ref in _refs_of(info)]
    elif source.suffix.lower() == ".csv":
        refs = [ref for ref, _ in read_labels_csv(source)]
        infos = [inspect_mrc(p) for p in dict.fromkeys(ref.path for ref in refs)]
    elif source.suffix.lower() in VOLUME_SUFFIXES:
        infos = [inspect_mrc(source)]
        refs = _refs_of(infos[0])
    else:
        raise InputError(
            source,
            "is neither a volume file nor a labels CSV",
            f"expected a folder, .csv or {', '.join(VOLUME_SUFFIXES)}",
        )
    _require_same_box(infos)
    return refs


# ----------------------------------------------------------------------- labels CSV


def _labelled_ref(row: LabelRow, csv_path: Path, infos: dict[Path, MrcInfo]) -> VolumeRef:
    """The volume a CSV row names; ``infos`` caches headers already checked."""
    if row.path not in infos:
        try:
            infos[row.path] = inspect_mrc(row.path)
        except InputError as err:
            raise InputError(csv_path, f"line {row.line}: {err}") from err
    n = infos[row.path].n_volumes
    if row.frame is None and n > 1:
        raise InputError(
            csv_path,
            f"line {row.line}: {row.cell!r} is a stack of {n} volumes",
            "name one volume as k@file, k from 1",
        )
    if row.frame is not None and row.frame > n:
        raise InputError(
            csv_path,
            f"line {row.line}: {row.cell!r} names frame {row.frame} "
            f"but the file holds {n} volume(s)",
        )
    return VolumeRef(row.path, None if n == 1 else row.frame - 1)


def read_labels_csv(path: str | Path) -> list[tuple[VolumeRef, str]]:
    """The ``(volume, label)`` pairs of a labels CSV, in file order.

    See :mod:`napari_ktal.core.data.labels_csv` for the format. Every named file must be a
    usable subtomogram file and every frame must exist. A volume listed twice with the
    same label is kept once, with an InputWarning; with different labels it is an error.
    """
    csv_path = Path(path).expanduser().resolve()
    infos: dict[Path, MrcInfo] = {}
    seen: dict[VolumeRef, LabelRow] = {}
    for row in read_label_rows(csv_path):
        ref = _labelled_ref(row, csv_path, infos)
        first = seen.setdefault(ref, row)
        if first is row:
            continue
        if first.label != row.label:
            raise InputError(
                csv_path,
                f"line {row.line}: {row.cell!r} is labelled {row.label!r} "
                f"here but {first.label!r} on line {first.line}",
            )
        warnings.warn(
            f"{csv_path}: line {row.line} repeats line {first.line} ({row.cell!r}); kept once",
            InputWarning,
            stacklevel=2,
        )
    return [(ref, row.label) for ref, row in seen.items()]
