"""Cutting boxes out of tomograms at the positions of a particle list.

:func:`plan_extraction` reads the list, finds and opens every tomogram it names, converts every
pick to voxels of its tomogram, and checks everything before anything is written: a tomogram
that is missing or that no name matches, a pick outside its tomogram, two picks of one particle,
voxel sizes that disagree, an extraction voxel size that cannot be reached. Each is one
:class:`~napari_ktal.core.errors.InputError` naming the row and the file.

Then :func:`iter_boxes` cuts the boxes tomogram by tomogram, reading each tomogram once, slab by
slab of whole z planes (:class:`~.tomograms.Tomogram`), and :func:`extract_to_folder` (one MRC
per particle and particles.csv) or :func:`import_picks_pool` (a project's pool) take them.

Conventions:

- A box of side ``B`` is centred on the voxel ``c`` nearest to the pick: it spans
  ``c - B // 2 .. c - B // 2 + B - 1``, so the pick's voxel is the box's voxel ``B // 2`` (the
  simulator's and RELION's box centre). Every pick lies within half a voxel of the box centre.
- A box that crosses the tomogram's edge is kept and flagged ``clipped``; the outside is filled
  with the mean of the inside, so it adds no contrast.
- A coarser extraction voxel size ``v`` than the tomogram's ``t`` is reached by Fourier cropping:
  a box of ``round(B * v / t)`` voxels is cut and its Fourier transform cropped to ``B``, which
  keeps every frequency below the new Nyquist and the box's first voxel in place. The voxel
  size reached (``t * round(B v / t) / B``) goes into every header and the project; it must be
  within 1% of the one asked for.
- Contrast: raw reconstructions show protein dark, Warp's tomograms (inverted by default)
  bright. Pools keep it dark (what the simulator makes and the viewer inverts for display).
  ``invert="auto"`` looks at up to 100 picks: if their centres are significantly brighter than
  the rest of their boxes, the tomograms are inverted while cutting; the decision, its
  statistic and the word ``auto`` are stored.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text, fsync_dir
from ..errors import InputError
from ..progress import QUIET, Progress, RunContext
from .particles import PickList, PickOptions, read_picks, to_voxels
from .particles.base import ANGSTROM, CENTRED, PIXELS, UNIT_WORDS
from .pool import SITE_COLUMNS, Pool, PoolWriter
from .tomograms import Catalogue, CatalogueEntry, Geometry, PlaneStream, Tomogram, catalogue, open_tomogram

__all__ = ["Contrast", "ExtractionPlan", "ExtractResult", "extract_to_folder", "fourier_crop", "import_picks_pool",
           "iter_boxes", "plan_extraction"]

SLAB_BYTES = 256 * 2**20  # one tomogram's slab of z planes held at a time (float32)
INVERT_CHOICES = ("auto", "yes", "no")
CONTRAST_SAMPLE = 100
CONTRAST_T = 3.0  # |t| below this: the data do not say; kept as is
BOX_MULTIPLE = 8


@dataclass(frozen=True)
class Contrast:
    invert: bool
    choice: str  # auto, yes or no
    statistic: float | None = None  # t of (centre - box) over the sampled picks; > 0: bright particles
    message: str = ""


@dataclass
class ExtractionPlan:
    """Everything an extraction needs, checked."""

    picks: PickList
    options: PickOptions
    tomograms: list[Tomogram]
    entries: list[CatalogueEntry | None]
    tomogram_of_row: np.ndarray  # (n,) index into tomograms
    voxels: np.ndarray  # (n, 3) x, y, z: the picks in 0-based voxels of their tomogram
    box: int
    box_in: int  # side cut from the tomogram (Fourier-cropped to box when larger)
    voxel_size: float  # of the boxes (Angstrom)
    contrast: Contrast
    tomograms_source: Path | None = None
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.voxels)

    @property
    def centres(self) -> np.ndarray:
        """(n, 3) int x, y, z: the voxel each box is centred on."""
        return np.rint(self.voxels).astype(np.int64)

    @property
    def tomogram_voxel_size(self) -> float:
        return self.tomograms[0].voxel_size

    def clipped(self) -> np.ndarray:
        """(n,) whether each box crosses its tomogram's edge."""
        out = np.zeros(len(self), bool)
        lo = self.centres - self.box_in // 2
        for t, tomo in enumerate(self.tomograms):
            rows = self.tomogram_of_row == t
            nz, ny, nx = tomo.shape
            n_xyz = np.array([nx, ny, nz])
            out[rows] = ((lo[rows] < 0) | (lo[rows] + self.box_in > n_xyz)).any(axis=1)
        return out

    def tomogram_name(self, row: int) -> str:
        return self.tomograms[self.tomogram_of_row[row]].name

    def keys(self) -> list[str]:
        """The pool key of each row: ``TS_01:17`` (tomogram, and the row as the list names it)."""
        return [f"{self.picks.tomograms[i]}:{self.picks.row_ids[i]}" for i in range(len(self))]

    def geometries(self) -> list[Geometry]:
        return [t.geometry(e) for t, e in zip(self.tomograms, self.entries)]

    def record(self) -> dict:
        """What a project stores about where its volumes came from (JSON)."""
        return {
            "format": self.picks.format,
            "file": str(self.picks.path),
            "files": [p.name for p in self.picks.files],
            "options": self.options.to_dict(),
            "convention": self.picks.convention.describe(),
            "tomograms_source": None if self.tomograms_source is None else str(self.tomograms_source),
            "names": {name: int(self.tomogram_of_row[i]) for name, i in
                      {n: i for i, n in reversed(list(enumerate(self.picks.tomograms)))}.items()},
            "tomograms": [{"name": t.name, "path": str(t.path), "geometry": g.to_dict(),
                           "tilt_series_pixel": None if e is None else e.tilt_series_pixel}
                          for t, e, g in zip(self.tomograms, self.entries, self.geometries())],
            "box": self.box, "box_in": self.box_in, "voxel_size": self.voxel_size,
            "tomogram_voxel_size": self.tomogram_voxel_size,
            "invert": self.contrast.invert, "invert_choice": self.contrast.choice,
            "contrast": self.contrast.message, "n": len(self),
            "extra": self.picks.extra, "notes": self.notes,
        }

    def summary(self) -> str:
        n_t = len(self.tomograms)
        crop = (f", cut at {self.box_in}^3 and Fourier-cropped" if self.box_in != self.box else "")
        first = self.tomograms[0]
        voxels = f"{first.voxel_size:g} A voxels" if first.voxel_size_known else f"voxels of {first.voxel_text}"
        return (f"{len(self)} picks ({self.picks.format}, {self.picks.convention.describe()}) in {n_t} "
                f"tomogram{'s' if n_t > 1 else ''} of {voxels}: boxes of {self.box}^3 at {self.voxel_size:g} A{crop}")

    def close(self) -> None:
        for t in self.tomograms:
            t.close()


# ------------------------------------------------------------------------- planning


def _find_tomogram(picks: PickList, name: str, row: int, cat: Catalogue | None, options: PickOptions):
    """(tomogram, catalogue entry) for the tomogram ``name`` of ``row``."""
    where = f"{picks.path.name} {picks.where(row)}"
    entry = cat.match(name) if cat is not None else None
    if entry is None and name in picks.tomogram_files:
        file = picks.tomogram_files[name]
        entry = CatalogueEntry(name, file if file.is_file() else None, str(file), looked_at=(file,),
                               named_by=picks.tomogram_catalogue)
    if entry is not None:
        return open_tomogram(entry, used_by=where, voxel_size=options.tomogram_voxel_size), entry
    if cat is None and picks.format == "copick":
        from .particles.copick_picks import run_tomogram

        return run_tomogram(picks.path, name, options), None
    hint = f"; {picks.tomogram_hint}" if picks.tomogram_hint else ""
    if cat is None:
        raise InputError(picks.path, f"{picks.where(row)}: tomogram {name!r} is not found",
                         f"pass --tomograms (a folder of tomograms, or RELION 5's tomograms.star){hint}")
    shown = ", ".join(cat.names()[:5]) + (", ..." if len(cat.names()) > 5 else "")
    raise InputError(picks.path, f"{picks.where(row)}: tomogram {name!r} matches no tomogram in {cat.source}",
                     f"found: {shown}{hint}")


def _pixel_sizes(picks: PickList, tomo_of_row: np.ndarray, entries: list[CatalogueEntry | None]) -> None:
    """RELION's tilt-series pixel: where data_optics and tomograms.star both give it they must agree;
    RELION 4 rows without one take their tomogram's (tomograms.star)."""
    relion = picks.format in ("relion4", "relion5") and picks.pixel_size is not None
    for t, entry in enumerate(entries):
        if not relion or entry is None or not entry.tilt_series_pixel:
            continue
        rows = np.flatnonzero((tomo_of_row == t) & np.isfinite(picks.pixel_size))
        bad = rows[np.abs(picks.pixel_size[rows] - entry.tilt_series_pixel) > 0.01 * entry.tilt_series_pixel]
        if len(bad):
            i = int(bad[0])
            raise InputError(picks.path, f"{picks.where(i)}: data_optics says the tilt-series pixel is "
                                         f"{picks.pixel_size[i]:g} A, tomograms.star says {entry.tilt_series_pixel:g} "
                                         f"A for tomogram {entry.name}", "are these picks from this RELION project?")
    if picks.convention.kind != PIXELS or picks.pixel_size is None or not picks.extra.get("tilt_series_pixels"):
        return
    missing = ~np.isfinite(picks.pixel_size)
    for t, entry in enumerate(entries):
        rows = missing & (tomo_of_row == t)
        if not rows.any():
            continue
        if entry is None or not entry.tilt_series_pixel:
            first = int(np.flatnonzero(rows)[0])
            raise InputError(picks.path, f"{picks.where(first)}: RELION 4 coordinates are in tilt-series pixels, but "
                                         "neither data_optics (rlnTomoTiltSeriesPixelSize) nor tomograms.star "
                                         "says their size", "pass --pick-pixel-size")
        picks.pixel_size[rows] = entry.tilt_series_pixel


def _voxels(picks: PickList, tomo_of_row: np.ndarray, tomograms: list[Tomogram],
            entries: list[CatalogueEntry | None]) -> np.ndarray:
    """(n, 3) x, y, z: every pick in 0-based voxels of its tomogram."""
    voxels = np.empty((len(picks), 3))
    for t, tomo in enumerate(tomograms):
        rows = np.flatnonzero(tomo_of_row == t)
        voxels[rows] = to_voxels(picks, rows, tomo.geometry(entries[t]))
    return voxels


def _check_voxel_size_known(picks: PickList, tomograms: list[Tomogram]) -> None:
    """Coordinates that are no plain voxels (Angstrom, pixels of a given size) need the tomogram's voxel size."""
    unknown = next((t for t in tomograms if not t.voxel_size_known), None)
    if unknown is None:
        return
    kind = picks.convention.kind
    sized = picks.pixel_size is not None and bool(np.isfinite(picks.pixel_size).any())
    if kind in (ANGSTROM, CENTRED) or (kind == PIXELS and sized):
        how = picks.convention.describe() + (" of a given size" if kind == PIXELS else "")
        raise InputError(unknown.path, f"the header leaves the voxel size unset (0), and {picks.path.name}'s "
                                       f"coordinates are {how}: placing them needs it",
                         "pass --tomogram-voxel-size (Angstrom per voxel), or set it in the header")


def _placement(voxels: np.ndarray, tomo_of_row: np.ndarray, tomograms: list[Tomogram]) -> tuple[bool, np.ndarray]:
    """(whether every pick lies inside its tomogram, (3,) the largest fraction of its tomogram's x, y and z
    extent that a pick reaches: how far from the first corner the picks go)."""
    extent = np.array([[t.shape[2], t.shape[1], t.shape[0]] for t in tomograms], np.float64)[tomo_of_row]
    centres = np.rint(voxels)
    inside = bool(((centres >= 0) & (centres < extent)).all())
    return inside, ((voxels + 0.5) / extent).max(axis=0)


#: Picks that reach no further than this fraction of their tomograms along every axis sit in a corner
CORNER = 0.25


def _units_that_fit(picks: PickList, tomo_of_row, tomograms, entries, options: PickOptions) -> list[str]:
    """The units other than its own that the list could be read in and that place every pick inside its
    tomogram, reaching past the first corner (:data:`CORNER`) along some axis."""
    fit = []
    for units in picks.unit_choices:
        if units != picks.units:
            voxels = _voxels(picks.read_as(units, options.pick_pixel_size), tomo_of_row, tomograms, entries)
            inside, reach = _placement(voxels, tomo_of_row, tomograms)
            if inside and (reach > CORNER).any():
                fit.append(units)
    return fit


def _check_units(picks: PickList, voxels: np.ndarray, tomo_of_row: np.ndarray, tomograms: list[Tomogram],
                 entries: list[CatalogueEntry | None], options: PickOptions) -> None:
    """Refuse coordinates read in the wrong unit: every pick inside a small corner of its tomogram
    (within :data:`CORNER` of every axis from the first voxel) while, read in another unit the list
    could be in, every pick lies inside its tomogram and they reach past that corner.

    Pixels read as Angstrom shrink a list by the voxel size (10x at 10 A): the picks crowd the
    first tenth of each axis. A legitimate list is refused only if its picks, all in that corner,
    would also all fit their tomograms scaled up by that factor: picks of one region elsewhere do
    not, and a single pick is never refused (its place says nothing).
    """
    if len(picks) < 2 or not picks.unit_choices:
        return
    inside, reach = _placement(voxels, tomo_of_row, tomograms)
    if not inside or (reach > CORNER).any():
        return
    fit = _units_that_fit(picks, tomo_of_row, tomograms, entries, options)
    if fit:
        t = tomograms[0]
        nz, ny, nx = t.shape
        raise InputError(picks.path, f"read as {UNIT_WORDS[picks.units]} (--units {picks.units}), all {len(picks)} "
                                     f"picks lie within {math.ceil(100 * reach.max())}% of one corner of their "
                                     f"tomograms ({t.name}: {nx} x {ny} x {nz} voxels of {t.voxel_text}); read as "
                                     f"{UNIT_WORDS[fit[0]]} they spread over them",
                         f"pass --units {fit[0]} if the coordinates are {UNIT_WORDS[fit[0]]}")


def _check_inside(picks: PickList, plan_voxels: np.ndarray, tomo_of_row, tomograms: list[Tomogram],
                  entries: list[CatalogueEntry | None], options: PickOptions) -> None:
    centres = np.rint(plan_voxels).astype(np.int64)
    for t, tomo in enumerate(tomograms):
        rows = np.flatnonzero(tomo_of_row == t)
        nz, ny, nx = tomo.shape
        c = centres[rows]
        outside = rows[((c < 0) | (c >= np.array([nx, ny, nz]))).any(axis=1)]
        if len(outside):
            i = int(outside[0])
            x, y, z = plan_voxels[i]
            how = picks.convention.describe()
            if picks.convention.kind == PIXELS and picks.pixel_size is not None and np.isfinite(picks.pixel_size[i]):
                how += f" of {picks.pixel_size[i]:g} A"
            fits = _units_that_fit(picks, tomo_of_row, tomograms, entries, options)
            hint = (f"coordinates read as {how}; read as {UNIT_WORDS[fits[0]]} (--units {fits[0]}) every pick lies "
                    "inside its tomogram" if fits else f"coordinates read as {how}; a wrong pixel size or tomogram?")
            raise InputError(picks.path, f"{picks.where(i)}: the pick at x={x:.1f}, y={y:.1f}, z={z:.1f} voxels lies "
                                         f"outside tomogram {tomo.name} ({nx} x {ny} x {nz} voxels of "
                                         f"{tomo.voxel_text}, {tomo.path.name})", hint)


def _check_duplicates(picks: PickList, plan_voxels: np.ndarray, tomo_of_row: np.ndarray) -> None:
    """Two picks of one particle: closer than a voxel, or on the same voxel (they would give one box twice)."""
    from scipy.spatial import cKDTree

    pairs: list[tuple[int, int]] = []
    for t in np.unique(tomo_of_row).tolist():
        rows = np.flatnonzero(tomo_of_row == t)
        close = cKDTree(plan_voxels[rows]).query_pairs(r=1.0, output_type="ndarray")
        pairs += [(int(rows[a]), int(rows[b])) for a, b in close]
        keys = np.rint(plan_voxels[rows]).astype(np.int64)
        _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
        for k in np.flatnonzero(counts > 1).tolist():
            same = rows[inverse.reshape(-1) == k]
            pairs.append((int(same[0]), int(same[1])))
    if pairs:
        i, j = min((min(a, b), max(a, b)) for a, b in pairs)
        raise InputError(picks.path, f"{picks.where(j)} picks the same particle as {picks.where(i)} (less than a "
                                     f"voxel apart in tomogram {picks.tomograms[i]})", "remove one of the two")


def extraction_box(box: int, voxel_size: float | None, tomogram_voxel: float, where: Path) -> tuple[int, float]:
    """(side to cut, voxel size reached) for boxes of ``box`` at ``voxel_size``."""
    if box < BOX_MULTIPLE or box % BOX_MULTIPLE:
        raise InputError(None, f"--box {box}: the box side must be a positive multiple of {BOX_MULTIPLE}")
    if voxel_size is None or abs(voxel_size - tomogram_voxel) <= 1e-3 * tomogram_voxel:
        return box, tomogram_voxel
    if not (voxel_size > 0 and math.isfinite(voxel_size)):
        raise InputError(None, f"--voxel-size {voxel_size:g} is not a positive number")
    if voxel_size < tomogram_voxel:
        raise InputError(where, f"extraction voxel size {voxel_size:g} A is finer than the tomograms' "
                                f"{tomogram_voxel:g} A", "extract at the tomograms' voxel size or coarser")
    box_in = int(round(box * voxel_size / tomogram_voxel))
    reached = tomogram_voxel * box_in / box
    if abs(reached - voxel_size) > 0.01 * voxel_size:
        raise InputError(where, f"extraction voxel size {voxel_size:g} A cannot be reached from {tomogram_voxel:g} A "
                                f"voxels with a box of {box} (closest: {reached:g} A)",
                         "choose a voxel size nearer a multiple of the tomograms' over the box")
    return box_in, reached


def plan_extraction(picks: str | Path | PickList, tomograms: str | Path | None, *, box: int = 32,
                    voxel_size: float | None = None, invert: str = "auto",
                    options: PickOptions | None = None) -> ExtractionPlan:
    """Read the particle list, find and check its tomograms and positions; write nothing.

    ``tomograms``: a folder of MRC files or RELION 5's tomograms.star; None for a list that names
    its own (a Dynamo .doc whose files exist, a copick project's tomograms).
    """
    options = options or PickOptions()
    if invert not in INVERT_CHOICES:
        raise InputError(None, f"--invert {invert!r}: choose auto, yes or no")
    given = options.tomogram_voxel_size
    if given is not None and not (math.isfinite(given) and given > 0):
        raise InputError(None, f"--tomogram-voxel-size {given:g} is not a positive number")
    if not isinstance(picks, PickList):
        picks = read_picks(picks, options)
    cat = catalogue(tomograms) if tomograms is not None else None
    names = list(dict.fromkeys(picks.tomograms))
    first_row = {}
    for i, name in enumerate(picks.tomograms):
        first_row.setdefault(name, i)
    opened: list[Tomogram] = []
    entries: list[CatalogueEntry | None] = []
    index_of_name: dict[str, int] = {}
    by_path: dict[str, int] = {}
    try:
        for name in names:
            tomo, entry = _find_tomogram(picks, name, first_row[name], cat, options)
            key = str(tomo.path)
            if key in by_path:  # two names of one tomogram (TS_01 and TS_01.tomostar)
                index_of_name[name] = by_path[key]
                tomo.close()
                continue
            by_path[key] = index_of_name[name] = len(opened)
            opened.append(tomo)
            entries.append(entry)
        first, v0 = opened[0], opened[0].voxel_size
        for tomo in opened[1:]:
            if abs(tomo.voxel_size - v0) > 0.01 * v0 or tomo.voxel_size_known != first.voxel_size_known:
                raise InputError(tomo.path, f"voxel size {tomo.voxel_text} differs from {first.voxel_text} of "
                                            f"{first.path.name}", "extract tomograms of one voxel size together"
                                 + ("" if tomo.voxel_size_known and first.voxel_size_known else
                                    "; --tomogram-voxel-size gives headers that leave it unset theirs"))
        tomo_of_row = np.array([index_of_name[n] for n in picks.tomograms], np.int64)
        _pixel_sizes(picks, tomo_of_row, entries)
        _check_voxel_size_known(picks, opened)
        voxels = _voxels(picks, tomo_of_row, opened, entries)
        _check_units(picks, voxels, tomo_of_row, opened, entries, options)
        _check_inside(picks, voxels, tomo_of_row, opened, entries, options)
        _check_duplicates(picks, voxels, tomo_of_row)
        box_in, reached = extraction_box(box, voxel_size, v0, picks.path)
        plan = ExtractionPlan(picks, options, opened, entries, tomo_of_row, voxels, box, box_in, reached,
                              Contrast(invert == "yes", invert), None if tomograms is None else Path(tomograms).resolve(),
                              list(picks.notes))
        if not first.voxel_size_known:
            plan.notes.append(f"the tomograms' headers leave the voxel size unset (0): the boxes are written at 1 A "
                              "(pass --tomogram-voxel-size to give it)")
        if invert == "auto":
            plan.contrast = decide_contrast(plan)
        elif invert == "yes":
            plan.contrast = Contrast(True, "yes", None, "contrast inverted (--invert yes)")
        else:
            plan.contrast = Contrast(False, "no", None, "contrast kept as is (--invert no)")
        plan.notes.append(plan.contrast.message)
        if voxel_size is not None and abs(reached - voxel_size) > 1e-6 * voxel_size:
            plan.notes.append(f"extraction voxel size {voxel_size:g} A reached as {reached:g} A "
                              f"(a box of {box_in} voxels cropped to {box})")
        return plan
    except BaseException:
        for t in opened:
            t.close()
        raise


# ------------------------------------------------------------------------- boxes


def _cut(stream: PlaneStream, lo: np.ndarray, box: int, shape: tuple[int, int, int]) -> tuple[np.ndarray, bool]:
    """The box whose first voxel (x, y, z) is ``lo``, from the planes ``stream`` holds; padded with the
    inside's mean where it leaves the tomogram (else a view of the stream's ring: copy it)."""
    nz, ny, nx = shape
    x0, y0, z0 = (int(v) for v in lo)
    zs, ze, ys, ye, xs, xe = max(z0, 0), min(z0 + box, nz), max(y0, 0), min(y0 + box, ny), max(x0, 0), \
        min(x0 + box, nx)
    inside = stream.region((zs, ze), (ys, ye), (xs, xe))
    if (zs, ze, ys, ye, xs, xe) == (z0, z0 + box, y0, y0 + box, x0, x0 + box):
        return inside, False
    out = np.full((box, box, box), float(inside.mean()) if inside.size else 0.0, np.float32)
    out[zs - z0: ze - z0, ys - y0: ye - y0, xs - x0: xe - x0] = inside
    return out, True


def fourier_crop(volume: np.ndarray, box: int) -> np.ndarray:
    """``volume`` (n^3) resampled to ``box``^3 by cropping its Fourier transform (n >= box).

    Frequencies up to the new Nyquist are kept exactly; the first voxel stays in place, so the
    voxel ``n // 2`` lands on ``box // 2`` when n and box are even. Values keep their scale
    (a constant stays that constant).
    """
    from scipy import fft as sfft

    n = volume.shape[0]
    if n == box:
        return np.asarray(volume, np.float32)
    spectrum = sfft.rfftn(np.asarray(volume, np.float32), workers=1)
    h = box // 2
    keep = np.r_[0: box - h, n - h: n]  # frequencies -h .. box - h - 1
    cropped = spectrum[np.ix_(keep, keep, np.arange(h + 1))]
    out = sfft.irfftn(cropped, s=(box, box, box), workers=1)
    return (out * (box / n) ** 3).astype(np.float32)


def decide_contrast(plan: ExtractionPlan) -> Contrast:
    """Whether the particles are bright (invert) or dark (keep), from up to 100 of the picks."""
    n = len(plan)
    rows = np.unique(np.linspace(0, n - 1, min(n, CONTRAST_SAMPLE)).round().astype(np.int64))
    b = plan.box_in
    g = np.arange(b) - b // 2
    zz, yy, xx = np.meshgrid(g, g, g, indexing="ij")
    r2 = zz**2 + yy**2 + xx**2
    core = r2 < (b / 4) ** 2  # inside the particle (a particle fills about half of its box) ...
    outer = r2 >= (3 * b / 8) ** 2  # ... against the box's corners, outside it
    scores = []
    lo = plan.centres - b // 2
    for i in rows.tolist():
        tomo = plan.tomograms[plan.tomogram_of_row[i]]
        x0, y0, z0 = lo[i]
        region = tomo.read_region((z0, z0 + b), (y0, y0 + b), (x0, x0 + b))
        if region.size < b**3 // 2 or not np.isfinite(region).all() or region.std() == 0:
            continue  # cutting refuses a box with NaN or Inf voxels (iter_boxes), and names it
        box_, _ = _pad_region(region, lo[i], b, tomo.shape)
        std = float(box_.std())
        if std > 0:
            scores.append((float(box_[core].mean()) - float(box_[outer].mean())) / std)
    if len(scores) < 3:
        return Contrast(False, "auto", None, "contrast kept as is: too few picks to tell whether particles are "
                                             "dark or bright (--invert yes if they are bright)")
    s = np.array(scores)
    t = float(s.mean() / (s.std(ddof=1) / math.sqrt(len(s)) + 1e-12))
    if t >= CONTRAST_T:
        return Contrast(True, "auto", t, f"contrast inverted: particles are bright in these tomograms (t = {t:+.1f} "
                                         f"over {len(s)} picks; Warp's default); boxes are stored dark, like raw data")
    if t <= -CONTRAST_T:
        return Contrast(False, "auto", t, f"contrast kept: particles are dark in these tomograms (t = {t:+.1f} over "
                                          f"{len(s)} picks), as in raw reconstructions")
    return Contrast(False, "auto", t, f"contrast kept as is: the picks do not show whether particles are dark or "
                                      f"bright (t = {t:+.1f} over {len(s)} picks); pass --invert yes if they are bright")


def _pad_region(region: np.ndarray, lo: np.ndarray, b: int, shape) -> tuple[np.ndarray, bool]:
    """A region read with :meth:`Tomogram.read_region` (clipped to the tomogram) as a full box."""
    nz, ny, nx = shape
    x0, y0, z0 = (int(v) for v in lo)
    if region.shape == (b, b, b):
        return region, False
    out = np.full((b, b, b), float(region.mean()) if region.size else 0.0, np.float32)
    zs, ys, xs = max(z0, 0), max(y0, 0), max(x0, 0)
    out[zs - z0: zs - z0 + region.shape[0], ys - y0: ys - y0 + region.shape[1],
        xs - x0: xs - x0 + region.shape[2]] = region
    return out, True


def read_box(plan: ExtractionPlan, row: int) -> np.ndarray:
    """One row's box as :func:`iter_boxes` gives it, reading only its voxels (for checks and views)."""
    tomo = plan.tomograms[plan.tomogram_of_row[row]]
    b = plan.box_in
    x0, y0, z0 = plan.centres[row] - b // 2
    region = tomo.read_region((z0, z0 + b), (y0, y0 + b), (x0, x0 + b))
    volume, _ = _pad_region(region, np.array([x0, y0, z0]), b, tomo.shape)
    if plan.contrast.invert:
        volume = -volume
    return fourier_crop(volume, plan.box)


def iter_boxes(plan: ExtractionPlan, run: RunContext = QUIET) -> Iterator[tuple[int, np.ndarray, bool]]:
    """``(row, box float32 (box, box, box) z-y-x, clipped)`` for every row, tomogram by tomogram.

    Each tomogram is read once, plane by plane in z order, by a thread that reads ahead into a
    ring of at most :data:`SLAB_BYTES` (:class:`~.tomograms.PlaneStream`) while this one cuts the
    boxes of the picks in the order of their z. A box is a view into the ring where it can be
    (no inversion, no cropping, not clipped): use it before asking for the next one.

    A box holding a NaN or Inf voxel is refused, as :func:`~.mrc.normalize` refuses such a
    subtomogram: the other boxes of that tomogram are still cut and checked (none is yielded
    any more), then an InputError names the tomogram and every row whose box holds one. The
    callers write nothing that stays (:func:`extract_to_folder`, :func:`import_picks_pool`).
    """
    b = plan.box_in
    half = b // 2
    centres = plan.centres
    for t, tomo in enumerate(plan.tomograms):
        rows = np.flatnonzero(plan.tomogram_of_row == t)
        if not len(rows):
            continue
        rows = rows[np.argsort(centres[rows, 2], kind="stable")]
        nz, ny, nx = tomo.shape
        plane = max(1, ny * nx * 4)
        chunk = max(1, min(b, (32 * 2**20) // plane))
        first = max(0, int(centres[rows[0], 2]) - half)
        stream = PlaneStream(tomo, first, max(b + 2 * chunk, SLAB_BYTES // plane), chunk)
        broken: list[int] = []  # rows whose box holds NaN or Inf: once one is found, the rest are only checked
        try:
            for k, row in enumerate(rows.tolist()):
                if k % 64 == 0:
                    run.check_cancel()
                lo = centres[row] - half
                stream.release(max(int(lo[2]), 0))
                volume, clipped = _cut(stream, lo, b, tomo.shape)
                if not np.isfinite(volume).all():
                    broken.append(row)
                if broken:
                    continue
                if plan.contrast.invert:
                    volume = np.negative(volume)
                yield row, fourier_crop(volume, plan.box), clipped
        finally:
            stream.close()
        if broken:
            raise _non_finite(plan, tomo, broken)


def _non_finite(plan: ExtractionPlan, tomo: Tomogram, rows: list[int]) -> InputError:
    """The error for boxes of ``tomo`` that hold non-finite voxels: the tomogram, the rows, how many."""
    n_tomogram = int((plan.tomogram_of_row == plan.tomogram_of_row[rows[0]]).sum())
    return InputError(tomo.path, f"holds NaN or Inf voxels in the boxes of {plan.picks.path.name} "
                                 f"{plan.picks.where_many(rows)} ({len(rows)} of the {n_tomogram} picks in tomogram "
                                 f"{tomo.name})",
                      "repair the tomogram (or reconstruct it again), or remove these picks")


# ------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class ExtractResult:
    folder: Path
    table: Path
    n: int
    n_clipped: int
    voxel_size: float
    notes: list[str]


PARTICLE_COLUMNS = ["path", "tomogram", "x", "y", "z", "clipped", "row", "label"]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._") or "tomogram"


def extract_to_folder(plan: ExtractionPlan, out: str | Path, *, run: RunContext = QUIET) -> ExtractResult:
    """One MRC per pick in ``out/subtomograms/``, ``out/particles.csv`` in the list's row order, and
    ``out/extraction.json`` (what was decided). ``out`` must be new or empty; an error or a cancel
    leaves it as it was."""
    import mrcfile

    out = Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(out, "is not a new or empty folder", "choose a new folder for the extracted particles")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    partial = out / ".subtomograms.partial"
    partial.mkdir()
    n = len(plan)
    width = max(6, len(str(n)))
    names = [f"{_safe(plan.tomogram_name(i))}_{i + 1:0{width}d}.mrc" for i in range(n)]
    clipped = np.zeros(n, bool)
    step, done = max(1, n // 100), 0
    try:
        for row, volume, was_clipped in iter_boxes(plan, run):
            with mrcfile.new(partial / names[row], overwrite=True) as mrc:
                mrc.set_data(volume)
                mrc.voxel_size = plan.voxel_size
            clipped[row] = was_clipped
            done += 1
            if done % step == 0 or done == n:
                run.emit(Progress("extract", done, n, message=names[row]))
        final = out / "subtomograms"
        os.replace(partial, final)
        fsync_dir(out)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(PARTICLE_COLUMNS)
        centres = plan.centres
        labels = plan.picks.classes or [None] * n
        for i in range(n):
            x, y, z = centres[i]
            writer.writerow([f"subtomograms/{names[i]}", plan.tomogram_name(i), x, y, z, int(clipped[i]),
                             plan.picks.row_ids[i], labels[i] or ""])
        record = plan.record() | {"n_clipped": int(clipped.sum())}
        record.pop("extra", None)
        atomic_write_text(out / "extraction.json", json.dumps(record, indent=2))
        atomic_write_text(out / "particles.csv", buf.getvalue())
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(out / "subtomograms", ignore_errors=True)
        for f in ("extraction.json", "particles.csv"):
            (out / f).unlink(missing_ok=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return ExtractResult(out, out / "particles.csv", n, int(clipped.sum()), plan.voxel_size, plan.notes)


POOL_COLUMNS = ["index", "key", "path", "frame", *SITE_COLUMNS]


def import_picks_pool(directory: str | Path, plan: ExtractionPlan, dtype: str = "float16", *,
                      run: RunContext = QUIET) -> Pool:
    """A project's pool cut straight from the tomograms (no intermediate files).

    Volumes are stored in the order they are cut (tomogram by tomogram, by z), so the pool file is
    written front to back; each volume's :class:`~.pool.Site` keeps its row of the list.
    """
    n = len(plan)
    writer = PoolWriter(directory, n, plan.box, dtype)
    keys = plan.keys()
    rows: list[list] = []
    try:
        step = max(1, n // 100)
        for k, (row, volume, clipped) in enumerate(iter_boxes(plan, run)):
            error = writer.first_error()
            if error is not None:
                raise error
            writer.add(k, volume, f"{plan.picks.path.name} {plan.picks.where(row)}")
            x, y, z = plan.voxels[row]
            tomo = plan.tomograms[plan.tomogram_of_row[row]]
            rows.append([k, keys[row], str(tomo.path), "", plan.picks.tomograms[row], repr(float(x)), repr(float(y)),
                         repr(float(z)), row, int(clipped)])
            if (k + 1) % step == 0 or k + 1 == n:
                run.emit(Progress("import", k + 1, n, message=keys[row]))
        return writer.finish(rows, POOL_COLUMNS, {"root": str(plan.picks.path.parent), "voxel_size": plan.voxel_size,
                                                  "source": "picks"})
    except BaseException:
        writer.abort()
        raise
