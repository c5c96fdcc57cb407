"""What every particle-list reader returns, and how its coordinates become voxels of a tomogram.

A reader gives, per row of the user's file (in the file's order): the tomogram's name as the
file writes it, three numbers x, y, z, and, where the file carries one, a class. How those
numbers relate to the tomogram is a :class:`Convention`; :func:`to_voxels` turns them into
0-based voxel coordinates of the tomogram *as read* (voxel ``i`` spans ``i - 0.5 .. i + 0.5``),
given the tomogram's :class:`~napari_ktal.core.data.tomograms.Geometry`. Each convention is
pinned by a test that extracts particles at known positions (tests/core/data/test_extract.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ...errors import InputError
from ..tomograms import Geometry

#: ``kind`` of a :class:`Convention`
PIXELS = "pixels"  # pixels of ``pixel_size`` A from the first voxel's centre (0, or 1 when one_based)
ANGSTROM = "angstrom"  # Angstrom from the first voxel's centre
CENTRED = "centred-angstrom"  # Angstrom from the tomogram's centre (RELION 5)
FRACTION = "fraction"  # 0..1 of the tomogram's extent (Warp's normalised coordinates)

#: ``--units`` a list that leaves its unit to the user may be read in (CSV: px or A; Warp: any)
UNITS = ("px", "A", "fraction")
UNIT_WORDS = {"px": "pixels", "A": "Angstrom", "fraction": "fractions of the tomogram"}


@dataclass(frozen=True)
class Convention:
    kind: str
    one_based: bool = False
    note: str = ""

    def describe(self) -> str:
        return {PIXELS: "pixels" + (" (1-based)" if self.one_based else ""), ANGSTROM: "Angstrom",
                CENTRED: "Angstrom from the tomogram centre", FRACTION: "fractions of the tomogram"}[self.kind]


@dataclass(frozen=True)
class PickOptions:
    """What a user can say about a particle list that the file itself may not."""

    units: str | None = None
    """CSV and Warp: ``px``, ``A`` or ``fraction`` (None: CSV px, Warp decides from the values)."""
    pick_pixel_size: float | None = None
    """Angstrom per pixel of pixel coordinates where the file does not say (Warp's --coords_angpix);
    None: the tomogram's voxel size."""
    tomogram_voxel_size: float | None = None
    """Angstrom per voxel of tomograms whose header leaves it unset (0)."""
    copick_user: str | None = None
    copick_session: str | None = None
    copick_objects: tuple[str, ...] | None = None
    copick_tomo_type: str | None = None
    copick_voxel_size: float | None = None

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict) -> PickOptions:
        known = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class PickList:
    """The rows of a particle list, as the file gives them."""

    path: Path
    format: str
    """``relion5``, ``relion4``, ``warp``, ``dynamo``, ``copick`` or ``csv``."""
    tomograms: list[str]
    coords: np.ndarray
    """(n, 3) float64: x, y, z as the file gives them (a shift column already added)."""
    convention: Convention
    pixel_size: np.ndarray | None = None
    """(n,) Angstrom per coordinate pixel (:data:`PIXELS`); NaN or None: the tomogram's voxel size."""
    classes: list[str | None] | None = None
    """Per row, the class the file gives (a number as text, a name), or None where none."""
    row_ids: list[str] | None = None
    """How pool keys and particles.csv name each row (default: the 1-based row number, the
    row's place among the list's particles)."""
    files: list[Path] = field(default_factory=list)
    """The files this list was read from (the list and its companions), copied into a project."""
    tomogram_files: dict[str, Path] = field(default_factory=dict)
    """Tomogram files the list itself names (a Dynamo .doc), by tomogram name; absolute, maybe missing."""
    tomogram_catalogue: Path | None = None
    """The file that names :attr:`tomogram_files` (a Dynamo .doc or .vll), for messages."""
    extra: dict = field(default_factory=dict)
    """What the format's writer needs to write the list back (copick: points and transforms)."""
    notes: list[str] = field(default_factory=list)
    """Decisions the reader took (said to the user and stored)."""
    lines: list[int] | None = None
    """The file line of each row, where messages name lines rather than rows (a CSV)."""
    units: str | None = None
    """The unit of :data:`UNITS` the coordinates were read in, where the format leaves it to the user."""
    unit_choices: tuple[str, ...] = ()
    """The units this list could be read in (``--units``): () where the format fixes them."""
    tomogram_hint: str = ""
    """How the list's tomogram names become files, said when a name matches none (a missing .doc)."""

    def __post_init__(self) -> None:
        self.coords = np.asarray(self.coords, dtype=np.float64).reshape(-1, 3)
        if self.row_ids is None:
            self.row_ids = [str(i + 1) for i in range(len(self.coords))]

    def __len__(self) -> int:
        return len(self.coords)

    def _place(self, i: int) -> tuple[str, str]:
        return ("line", str(self.lines[i])) if self.lines is not None else ("row", self.row_ids[i])

    def where(self, i: int) -> str:
        """``row 17`` (of the file's particles) or ``line 18`` (of a CSV), for messages."""
        return " ".join(self._place(i))

    def where_many(self, rows, limit: int = 10) -> str:
        """``rows 3, 5, 9`` (or ``lines ...``): the first ``limit`` of ``rows`` in order, for messages."""
        rows = sorted(int(i) for i in rows)
        places = [self._place(i) for i in rows[:limit]]
        more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
        return f"{places[0][0]}{'s' if len(rows) > 1 else ''} {', '.join(p[1] for p in places)}{more}"

    def read_as(self, units: str, pick_pixel_size: float | None = None) -> PickList:
        """The same rows, their coordinates read in ``units`` (one of :attr:`unit_choices`)."""
        convention, pixel = units_convention(units, len(self), pick_pixel_size)
        return replace(self, convention=convention, pixel_size=pixel, units=units)

    @property
    def has_classes(self) -> bool:
        return self.classes is not None and any(c is not None for c in self.classes)


def units_convention(units: str, n: int, pick_pixel_size: float | None) -> tuple[Convention, np.ndarray | None]:
    """The :class:`Convention` and per-row pixel size of ``n`` coordinates in ``units`` (:data:`UNITS`);
    pixels are ``pick_pixel_size`` Angstrom, or (None) the tomogram's voxels."""
    if units == "fraction":
        return Convention(FRACTION), None
    if units == "A":
        return Convention(ANGSTROM), None
    if units == "px":
        return Convention(PIXELS), np.full(n, pick_pixel_size or np.nan)
    raise ValueError(f"unknown units {units!r}")


def numbers(path: Path, table, columns, names=None, where=None) -> np.ndarray:
    """``table[columns]`` (a DataFrame) as (n, k) float64; InputError naming the first row and column whose
    value is not a finite number. ``names``: how messages call the columns; ``where(i)``: the row ("row 3")."""
    import pandas as pd

    names = list(columns) if names is None else list(names)
    where = where or (lambda i: f"row {i + 1}")
    values = np.column_stack([pd.to_numeric(table[c], errors="coerce").to_numpy(np.float64, na_value=np.nan)
                              for c in columns]) if len(table) else np.empty((0, len(columns)))
    bad = ~np.isfinite(values)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])  # the first row, then its first column
        raise InputError(path, f"{where(i)}: {names[j]} is {str(table[columns[j]].iloc[i])!r}, not a finite number")
    return values


def to_voxels(picks: PickList, rows: np.ndarray, geometry: Geometry) -> np.ndarray:
    """(len(rows), 3) float64 x, y, z in 0-based voxels of the tomogram of ``geometry``."""
    rows = np.asarray(rows, dtype=np.int64)
    c = picks.coords[rows]
    v = geometry.voxel_size
    kind = picks.convention.kind
    if kind == PIXELS:
        if picks.pixel_size is None:
            scale = np.ones(len(rows))
        else:
            p = picks.pixel_size[rows]
            scale = np.where(np.isfinite(p), p / v, 1.0)
        return (c - (1.0 if picks.convention.one_based else 0.0)) * scale[:, None]
    if kind == ANGSTROM:
        return c / v
    if kind == CENTRED:
        return (c + np.asarray(geometry.centre)[None, :]) / v
    if kind == FRACTION:
        extent = np.array([geometry.shape[2], geometry.shape[1], geometry.shape[0]], np.float64) - 1.0
        return c * extent[None, :]
    raise ValueError(f"unknown convention {kind!r}")


def from_voxels(picks: PickList, rows: np.ndarray, voxels: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The inverse of :func:`to_voxels`: voxel coordinates back in the list's own terms."""
    rows = np.asarray(rows, dtype=np.int64)
    voxels = np.asarray(voxels, dtype=np.float64).reshape(-1, 3)
    v = geometry.voxel_size
    kind = picks.convention.kind
    if kind == PIXELS:
        if picks.pixel_size is None:
            scale = np.ones(len(rows))
        else:
            p = picks.pixel_size[rows]
            scale = np.where(np.isfinite(p), p / v, 1.0)
        return voxels / scale[:, None] + (1.0 if picks.convention.one_based else 0.0)
    if kind == ANGSTROM:
        return voxels * v
    if kind == CENTRED:
        return voxels * v - np.asarray(geometry.centre)[None, :]
    if kind == FRACTION:
        extent = np.array([geometry.shape[2], geometry.shape[1], geometry.shape[0]], np.float64) - 1.0
        return voxels / extent[None, :]
    raise ValueError(f"unknown convention {kind!r}")


def class_number(name: str) -> int | None:
    """The class number a class name is (``"3"`` -> 3), or None for a name that is not a positive integer."""
    text = str(name).strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    return None


def class_numbers(classes: list[str]) -> dict[str, int]:
    """Numbers for the project's classes: a class named by a number keeps it; the others get the
    smallest numbers not taken, in the project's order (1..K when no class is a number)."""
    out = {c: n for c in classes if (n := class_number(c)) is not None}
    taken = set(out.values())
    k = 1
    for c in classes:
        if c in out:
            continue
        while k in taken:
            k += 1
        out[c] = k
        taken.add(k)
    return out


def label_of_number(value) -> str | None:
    """A class cell (2, "2", 2.0) as the class name it stands for; None for empty, 0 or not a number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        text = str(value).strip()
        return text or None
    if not np.isfinite(number) or number <= 0 or number != int(number):
        return None
    return str(int(number))
