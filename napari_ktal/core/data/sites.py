"""Which pool volumes the rows of a particle list are: matched by tomogram and position, not by file.

A project made from a particle list knows where each volume was cut (:class:`~.pool.Site`: the
tomogram's name and the pick's position in its voxels) and how its tomograms are sampled (the
geometries in P/source/picks.json). A list that carries classes (an oracle, labels to import) is
converted to voxels with those geometries, without opening a tomogram, and each row is the pool
volume picked within one voxel of it in the same tomogram. So a list in another format, order
or subset (RELION 5 picks labelled by a Dynamo table with classes, say) still finds its rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .particles import PickList, to_voxels
from .particles.base import PIXELS
from .pool import Pool
from .tomograms import Catalogue, CatalogueEntry, Geometry

MATCH_DISTANCE = 1.0  # voxels


def match_picks(picks: PickList, pool: Pool, record: dict) -> tuple[dict[int, str], list[str]]:
    """``({pool index: class}, [rows that match no volume])`` for the rows of ``picks`` with a class.

    Raises:
        InputError: the list carries no class, or two rows give one volume different classes.
    """
    from scipy.spatial import cKDTree

    if not picks.has_classes:
        raise InputError(picks.path, "carries no classes",
                         "a particle list gives classes in rlnClassNumber (STAR), column 22 (Dynamo), "
                         "a label column (CSV) or its objects (copick)")
    if pool.sites is None:
        raise InputError(picks.path, "is a particle list, but this project was not made from one",
                         "label its volumes with a path,label CSV")
    tomograms = record.get("tomograms", [])
    aliases: dict[str, int] = dict(record.get("names", {}))  # the list's names of each tomogram
    for k, t in enumerate(tomograms):
        aliases.setdefault(t["name"], k)
    entries = [CatalogueEntry(name, Path(tomograms[k]["path"]), tomograms[k]["path"]) for name, k in aliases.items()]
    catalogue = Catalogue(Path(record.get("tomograms_source") or picks.path), entries)
    tomogram_of_name: dict[str, int] = {}
    for name in dict.fromkeys(picks.tomograms):
        entry = catalogue.match(name)
        if entry is None and name in picks.tomogram_files:
            entry = next((e for e in entries if e.path == picks.tomogram_files[name]), None)
        tomogram_of_name[name] = -1 if entry is None else aliases[entry.name]
    site_tomogram = np.array([aliases.get(s.tomogram, -1) for s in pool.sites])
    site_xyz = np.array([(s.x, s.y, s.z) for s in pool.sites], np.float64)
    rows_tomogram = np.array([tomogram_of_name[n] for n in picks.tomograms])
    found: dict[int, str] = {}
    first_row: dict[int, int] = {}
    unmatched: list[str] = []
    for t, tomo in enumerate(tomograms):
        rows = np.flatnonzero(rows_tomogram == t)
        if not len(rows):
            continue
        geometry = Geometry.from_dict(tomo["geometry"])
        _fill_pixel_sizes(picks, rows, tomo)
        voxels = to_voxels(picks, rows, geometry)
        candidates = np.flatnonzero(site_tomogram == t)
        tree = cKDTree(site_xyz[candidates])
        dist, nearest = tree.query(voxels, distance_upper_bound=MATCH_DISTANCE)
        for row, d, k in zip(rows.tolist(), dist.tolist(), nearest.tolist()):
            label = picks.classes[row]
            if label is None:
                continue
            if not np.isfinite(d):
                unmatched.append(f"{picks.where(row)} ({picks.tomograms[row]})")
                continue
            index = int(candidates[k])
            if index in found and found[index] != label:
                raise InputError(picks.path, f"{picks.where(row)} gives class {label!r} to the particle that "
                                             f"{picks.where(first_row[index])} gives {found[index]!r}")
            found[index] = label
            first_row.setdefault(index, row)
    for row in np.flatnonzero(rows_tomogram < 0).tolist():
        if picks.classes[row] is not None:
            unmatched.append(f"{picks.where(row)} (tomogram {picks.tomograms[row]!r} is not in the project)")
    return found, unmatched


def _fill_pixel_sizes(picks: PickList, rows: np.ndarray, tomo: dict) -> None:
    """RELION 4 rows without a pixel size: the tilt-series pixel the project stored for the tomogram."""
    if picks.convention.kind != PIXELS or picks.pixel_size is None or not picks.extra.get("tilt_series_pixels"):
        return
    missing = rows[~np.isfinite(picks.pixel_size[rows])]
    if len(missing):
        if not tomo.get("tilt_series_pixel"):
            raise InputError(picks.path, f"{picks.where(int(missing[0]))}: RELION 4 coordinates need the tilt-series "
                                         "pixel size (rlnTomoTiltSeriesPixelSize)", "pass --pick-pixel-size")
        picks.pixel_size[missing] = tomo["tilt_series_pixel"]


# ----------------------------------------------------------------------------- context


@dataclass(frozen=True)
class SiteContext:
    """A slab of a tomogram around one pool volume's pick, with its box, for showing it in place."""

    slab: np.ndarray
    """(z, y, x) float32: the box's depth of z planes, ``width`` voxels across, as the pool stores
    contrast (dark particles)."""
    origin: tuple[int, int, int]
    """(z, y, x) voxel of the tomogram at ``slab[0, 0, 0]``."""
    box: tuple[int, int, int, int]
    """(z0, y0, x0, side): the box's first voxel in slab coordinates, and its side (tomogram voxels)."""
    voxel_size: float
    tomogram: str
    path: str
    clipped: bool

    def outline(self) -> np.ndarray:
        """The box's rectangle in (y, x) slab voxels (4 corners, for a napari Shapes layer)."""
        _, y0, x0, side = self.box
        return np.array([[y0, x0], [y0, x0 + side], [y0 + side, x0 + side], [y0 + side, x0]], np.float64) - 0.5


def site_context(pool: Pool, record: dict, index: int, *, width_boxes: float = 4.0) -> SiteContext:
    """The slab around pool volume ``index``: only those voxels of its tomogram are read."""
    from .particles import PickOptions
    from .tomograms import open_tomogram

    if pool.sites is None or record is None:
        raise InputError(None, "this project's volumes were not cut from tomograms: there is no context to show")
    site = pool.sites[index]
    aliases = dict(record.get("names", {}))
    k = aliases.get(site.tomogram)
    if k is None:
        k = next((j for j, t in enumerate(record["tomograms"]) if t["name"] == site.tomogram), 0)
    info = record["tomograms"][k]
    path = Path(info["path"])
    if record.get("format") == "copick" and not path.is_file():
        from .particles.copick_picks import run_tomogram

        tomo = run_tomogram(Path(record["extra"]["config"]), site.tomogram,
                            PickOptions.from_dict(record.get("options", {})))
    else:
        if not path.is_file():
            raise InputError(path, f"tomogram {info['name']} is not there any more (moved?); the context is read "
                                   "from it")
        tomo = open_tomogram(CatalogueEntry(info["name"], path, str(path)))
    try:
        side = int(record.get("box_in", pool.box))
        cx, cy, cz = site.centre
        half, wide = side // 2, int(round(width_boxes * side)) // 2
        z0, y0, x0 = cz - half, cy - wide, cx - wide
        slab = tomo.read_region((z0, z0 + side), (y0, y0 + 2 * wide), (x0, x0 + 2 * wide))
        nz, ny, nx = tomo.shape
        oz, oy, ox = max(z0, 0), max(y0, 0), max(x0, 0)
        if record.get("invert"):
            np.negative(slab, out=slab)
        # the voxel size the project was cut at: a header may leave it unset (tomograms.star or
        # --tomogram-voxel-size gave it then)
        voxel = float(info.get("geometry", {}).get("voxel_size", tomo.voxel_size))
        return SiteContext(slab, (oz, oy, ox), (z0 - oz, cy - half - oy, cx - half - ox, side), voxel,
                           site.tomogram, str(tomo.path), site.clipped)
    finally:
        tomo.close()
