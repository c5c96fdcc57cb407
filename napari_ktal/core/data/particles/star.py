"""Particle lists in STAR files (read and written with :mod:`starfile`): RELION 5, RELION 4, Warp.

Which flavour a file is follows from its particle block's columns:

- **RELION 5** (``rlnCenteredCoordinateX/Y/ZAngst``, ``rlnTomoName``): Angstrom from the
  tomogram's centre. RELION's ``ParticleSet::getParticleCoordDecenteredPixel`` adds the centre
  ``rlnTomoSize / 2.0`` (tomograms.star, unbinned tilt-series pixels, float division) after
  dividing by the tilt-series pixel size; ``reconstruct_tomogram`` samples voxel ``i`` at
  unbinned pixel ``i * binning`` (origin 0 since RELION 4.1). So a pick is at voxel
  ``(centred + size / 2 * tilt_series_pixel) / voxel_size``. RELION's projection code uses
  ``int(size / 2)`` instead (relion issue 1137, PR 1353): the two differ by half an unbinned
  pixel on an odd-sized axis; we follow the particle code, and a test pins it.
- **RELION 4** (``rlnCoordinateX/Y/Z``, ``rlnTomoName``): unbinned tilt-series pixels, so voxel
  ``c * tilt_series_pixel / voxel_size``; the pixel size from the optics block
  (``rlnTomoTiltSeriesPixelSize``, else ``rlnImagePixelSize / rlnTomoSubtomogramBinning``), else
  tomograms.star, else ``--pick-pixel-size``.
- **Warp / WarpTools** (``rlnCoordinateX/Y/Z``, ``rlnMicrographName`` = ``<TS>.tomostar``): pixels
  from the first voxel's centre at ``--pick-pixel-size`` (WarpTools' ``--coords_angpix``; default the
  tomogram's voxel size), or 0-1 fractions (``--units fraction``, chosen by itself when every value
  lies in 0..1): WarpTools scales them by ``dimension - 1``, as done here with the tomogram's size.

Origins (``rlnOriginX/Y/ZAngst``, RELION 3.0's ``rlnOriginX/Y/Z`` in pixels) are subtracted, the
Angstrom ones rotated by ``rlnTomoSubtomogramRot/Tilt/Psi`` where given, as
``ParticleSet::getPosition`` does. A class is ``rlnClassNumber``.

Written back (:func:`write_classes`): the user's file with every block, row, column and value
as written (every value is read as text), ``rlnClassNumber`` set (added last if absent).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...atomic import atomic_write_text
from ...errors import InputError
from ..star_blocks import read_star_blocks
from .base import (
    CENTRED,
    PIXELS,
    UNITS,
    Convention,
    PickList,
    PickOptions,
    label_of_number,
    numbers,
    units_convention,
)

CLASS_COLUMN = "rlnClassNumber"
_R5 = ("rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst")
_PX = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
_SUBTOMOGRAM_ANGLES = ("rlnTomoSubtomogramRot", "rlnTomoSubtomogramTilt", "rlnTomoSubtomogramPsi")


def particle_block(path: Path, blocks: dict) -> str:
    """The name of the block that lists the particles (with coordinates)."""
    tables = {name: b for name, b in blocks.items() if hasattr(b, "columns")}
    if "particles" in tables:
        return "particles"
    with_coords = [n for n, b in tables.items() if set(_R5) <= set(b.columns) or set(_PX) <= set(b.columns)]
    if len(with_coords) == 1:
        return with_coords[0]
    if not with_coords:
        found = ", ".join(sorted({c for b in tables.values() for c in b.columns})[:12]) or "none"
        raise InputError(path, "has no particle block: no columns rlnCenteredCoordinateX/Y/ZAngst (RELION 5) "
                               f"or rlnCoordinateX/Y/Z (RELION 4, Warp) (found: {found})")
    raise InputError(path, f"has several particle blocks ({', '.join(with_coords)})", "name one data_particles")


def _require(path: Path, table, columns, what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(path, f"particle block has no {', '.join(missing)} column{'s' if len(missing) > 1 else ''} "
                               f"({what})", f"found: {', '.join(map(str, table.columns[:12]))}")


def _numbers(path: Path, table, columns, block: str) -> np.ndarray:
    return numbers(path, table, list(columns), where=lambda i: f"data_{block} row {i + 1}")


def _subtomogram_matrices(table) -> np.ndarray | None:
    """RELION's A_subtomogram for each row (rlnTomoSubtomogramRot/Tilt/Psi, ZYZ), or None if absent."""
    if not all(c in table.columns for c in _SUBTOMOGRAM_ANGLES):
        return None
    from scipy.spatial.transform import Rotation

    angles = table[list(_SUBTOMOGRAM_ANGLES)].to_numpy(dtype=np.float64)
    # RELION's Euler_angles2matrix(rot, tilt, psi) is the transpose (inverse) of the active
    # intrinsic ZYZ rotation by (rot, tilt, psi); pinned in tests against RELION's closed form
    return np.transpose(Rotation.from_euler("ZYZ", angles, degrees=True).as_matrix(), (0, 2, 1))


def _origins_angstrom(path: Path, table, block: str) -> np.ndarray | None:
    cols = ("rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst")
    if not all(c in table.columns for c in cols):
        return None
    shifts = _numbers(path, table, cols, block)
    if all(c in table.columns for c in _SUBTOMOGRAM_ANGLES):
        _numbers(path, table, _SUBTOMOGRAM_ANGLES, block)  # each a number, or a message naming the row
    matrices = _subtomogram_matrices(table)
    if matrices is not None:
        shifts = np.einsum("nij,nj->ni", matrices, shifts)
    return shifts


def _optics_pixel_sizes(path: Path, blocks: dict, table, block: str) -> np.ndarray | None:
    """Per row, the tilt-series pixel size of its optics group (NaN where the optics block has none)."""
    optics = blocks.get("optics")
    if optics is None or not hasattr(optics, "columns") or "rlnOpticsGroup" not in optics.columns:
        return None
    if "rlnTomoTiltSeriesPixelSize" in optics.columns:
        values = _numbers(path, optics, ["rlnTomoTiltSeriesPixelSize"], "optics")[:, 0]
    elif "rlnImagePixelSize" in optics.columns and "rlnTomoSubtomogramBinning" in optics.columns:
        image, binning = _numbers(path, optics, ["rlnImagePixelSize", "rlnTomoSubtomogramBinning"], "optics").T
        values = image / binning
    else:
        values = np.full(len(optics), np.nan)
    own = _numbers(path, optics, ["rlnOpticsGroup"], "optics")[:, 0]
    sizes = {float(g): (v if np.isfinite(v) and v > 0 else np.nan) for g, v in zip(own, values)}
    if "rlnOpticsGroup" in table.columns:
        groups = _numbers(path, table, ["rlnOpticsGroup"], block)[:, 0]
        unknown = np.flatnonzero([g not in sizes for g in groups])
        if len(unknown):
            i = int(unknown[0])
            raise InputError(path, f"data_{block} row {i + 1}: optics group {groups[i]:g} is not in data_optics",
                             f"data_optics lists {', '.join(f'{g:g}' for g in sizes)}")
        return np.array([sizes[g] for g in groups], np.float64)
    if len(sizes) == 1:
        return np.full(len(table), next(iter(sizes.values())))
    return None


def read(path: Path, options: PickOptions) -> PickList:
    path = Path(path).resolve()
    blocks = read_star_blocks(path)
    name = particle_block(path, blocks)
    table = blocks[name]
    n = len(table)
    classes = None
    if CLASS_COLUMN in table.columns:
        classes = [label_of_number(v) for v in table[CLASS_COLUMN].tolist()]
    extra = {"block": name}
    notes: list[str] = []
    if set(_R5) <= set(table.columns):
        _require(path, table, ["rlnTomoName"], "RELION 5 names each particle's tomogram there")
        coords = _numbers(path, table, _R5, name)
        shifts = _origins_angstrom(path, table, name)
        if shifts is not None:
            coords = coords - shifts
        # not needed to place the picks (Angstrom), but checked against tomograms.star's
        pixel = _optics_pixel_sizes(path, blocks, table, name)
        return PickList(path, "relion5", [str(t) for t in table["rlnTomoName"]], coords, Convention(CENTRED),
                        pixel_size=pixel, classes=classes, files=[path], extra=extra)
    _require(path, table, _PX, "coordinates")
    coords = _numbers(path, table, _PX, name)
    if "rlnTomoName" in table.columns:  # RELION 4: unbinned tilt-series pixels
        pixel = _optics_pixel_sizes(path, blocks, table, name)
        if pixel is None:
            pixel = np.full(n, np.nan)
        if options.pick_pixel_size:
            pixel = np.where(np.isfinite(pixel), pixel, options.pick_pixel_size)
        shifts = _origins_angstrom(path, table, name)
        if shifts is not None:
            with np.errstate(invalid="ignore"):
                coords = coords - shifts / pixel[:, None]
        return PickList(path, "relion4", [str(t) for t in table["rlnTomoName"]], coords, Convention(PIXELS),
                        pixel_size=pixel, classes=classes, files=[path], extra=extra | {"tilt_series_pixels": True})
    if "rlnMicrographName" not in table.columns:
        raise InputError(path, "particle block has no rlnTomoName (RELION) or rlnMicrographName (Warp) column",
                         "each particle must name its tomogram")
    if all(c in table.columns for c in ("rlnOriginX", "rlnOriginY", "rlnOriginZ")):
        coords = coords - _numbers(path, table, ("rlnOriginX", "rlnOriginY", "rlnOriginZ"), name)
    units = options.units
    if units is None:
        if n and np.all((coords >= 0) & (coords <= 1)):
            units = "fraction"
            notes.append("every coordinate lies in 0..1: read as WarpTools' normalised coordinates "
                         "(--units px to read them as pixels)")
        else:
            units = "px"
    convention, pixel = units_convention(units, n, options.pick_pixel_size)
    return PickList(path, "warp", [str(t) for t in table["rlnMicrographName"]], coords, convention,
                    pixel_size=pixel, classes=classes, files=[path], extra=extra, notes=notes, units=units,
                    unit_choices=UNITS)


def write_classes(source: Path, out: Path, block: str, values: list[str]) -> None:
    """Write ``source`` to ``out`` with ``rlnClassNumber`` of block ``block`` set to ``values``."""
    import starfile

    blocks = read_star_blocks(source, as_text=True)
    table = blocks[block].copy()
    if len(table) != len(values):
        raise InputError(source, f"block data_{block} has {len(table)} rows, the project {len(values)}",
                         "the project's copy of the list was changed")
    table[CLASS_COLUMN] = [str(v) for v in values]
    blocks[block] = table
    atomic_write_text(out, starfile.to_string(blocks))
