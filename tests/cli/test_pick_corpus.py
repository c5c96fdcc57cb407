"""A corpus of particle lists as labs write them, broken and unusual, through ``ktal-cryo``.

Two tomograms hold dark blobs at known positions; every case writes the same picks (or some of
them) the way one lab's tools would, often with something wrong or odd about it. Each case
expects one of two outcomes:

- ``Fails(words)``: ``extract`` and ``train`` both exit 2 with ONE line that names the file and
  the problem (``words``), and leave no output folder and no project behind;
- ``Cuts(rows)``: ``extract`` exits 0, every box is centred within a voxel of its particle's
  true position (the box centre, and the blob inside the box), and a project made from the list
  exports it back (``export --no-predictions``) with every column and value of the original.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import dynamotable
import mrcfile
import numpy as np
import pytest
from mrcfiles import write_mrc
from pickfiles import VOXEL, blob_tomogram, write_tomograms, write_tomograms_star

from napari_ktal.cli import main
from napari_ktal.core.data import PickOptions, read_picks
from napari_ktal.core.data.labels_csv import read_table
from napari_ktal.core.data.star_blocks import read_star_blocks

SHAPES = {"TS_01": (40, 64, 72), "TS_02": (40, 56, 64)}  # z, y, x
BOX = 16
# x, y, z voxels; the first two of TS_01 sit together in a corner (one region of a big tomogram)
PICKS = [("TS_01", (9.6, 10.3, 8.2)), ("TS_01", (15.1, 5.9, 6.3)), ("TS_01", (34.6, 22.1, 20.8)),
         ("TS_01", (26.2, 40.5, 27.3)), ("TS_01", (52.8, 47.9, 16.6)), ("TS_01", (60.1, 14.2, 30.5)),
         ("TS_02", (14.7, 12.3, 18.2)), ("TS_02", (40.4, 30.6, 24.9)), ("TS_02", (50.2, 44.8, 11.7)),
         ("TS_02", (24.9, 42.3, 29.6))]
NAMES = [n for n, _ in PICKS]
XYZ = np.array([p for _, p in PICKS])
ZEROS = {"TS_01": "001", "TS_02": "002"}


@dataclass(frozen=True)
class Fails:
    words: tuple[str, ...]
    file: str | None = None  # the file the message names first (default: the list's)


@dataclass(frozen=True)
class Cuts:
    rows: tuple[int, ...] = tuple(range(len(PICKS)))  # which of PICKS the list holds, in its order
    tomograms: dict = field(default_factory=lambda: {n: n for n in SHAPES})  # the file stem each name opens


@dataclass
class Case:
    picks: Path
    tomograms: Path | None
    args: tuple[str, ...] = ()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    volumes = {name: blob_tomogram(shape, XYZ[[n == name for n in NAMES]], seed=k, noise=0.3)
               for k, (name, shape) in enumerate(SHAPES.items())}
    files = write_tomograms(root / "tomograms", volumes)
    write_tomograms(root / "zeros", {ZEROS[n]: v for n, v in volumes.items()})
    return root, volumes, files


# ------------------------------------------------------------------------------------------------ writers


def star(blocks: list[tuple[str, list[str], list[list[str]]] | tuple[str, dict]], *, head="# version 50001\n",
         newline="\n") -> str:
    """STAR text as RELION writes it: ``(name, columns, rows)`` loops and ``(name, {key: value})`` blocks."""
    out = [head]
    for block in blocks:
        if len(block) == 2:
            name, pairs = block
            out.append(f"\ndata_{name}\n\n" + "".join(f"_{k}    {v}\n" for k, v in pairs.items()))
            continue
        name, columns, rows = block
        out.append(f"\ndata_{name}\n\nloop_\n" + "".join(f"_{c} #{k + 1}\n" for k, c in enumerate(columns)))
        out.append("".join("  ".join(map(str, r)) + "\n" for r in rows))
    return "".join(out).replace("\n", newline)


def f(v: float) -> str:
    return f"{v:.6f}"


def relion5_rows(rows=range(len(PICKS)), names=None, extra=lambda i: []):
    """rlnTomoName, rlnCenteredCoordinate*Angst (from the tomogram centre, shape / 2), then ``extra(i)``."""
    out = []
    for i in rows:
        name, p = PICKS[i]
        nz, ny, nx = SHAPES[name]
        c = np.array(p) * VOXEL - np.array([nx, ny, nz]) / 2 * VOXEL
        out.append([(names or {}).get(name, name), *map(f, c), *extra(i)])
    return out


R5 = ["rlnTomoName", "rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst"]
OPTICS = ("optics", ["rlnOpticsGroup", "rlnOpticsGroupName", "rlnTomoTiltSeriesPixelSize"],
          [[1, "opticsGroup1", f(VOXEL)]])


def relion5(path: Path, *, optics=True, newline="\n", head="# version 50001\n", names=None, rows=range(len(PICKS)),
            more=(), extra=lambda i: [], general=False) -> Path:
    blocks = []
    if general:
        blocks.append(("general", {"rlnTomoSubTomosAre2DStacks": 0}))
    if optics:
        blocks.append(OPTICS)
    columns = R5 + (["rlnOpticsGroup"] if optics else []) + list(more)
    blocks.append(("particles", columns, relion5_rows(rows, names, lambda i: ([1] if optics else []) + extra(i))))
    path.write_text(star(blocks, head=head, newline=newline), newline="")
    return path


def relion4(path: Path, *, optics=True, binning=2.0) -> Path:
    columns = ["rlnTomoName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ", "rlnAngleRot", "rlnAngleTilt",
               "rlnAnglePsi"] + (["rlnOpticsGroup"] if optics else [])
    rows = [[n, *(f(v * binning) for v in p), "10.0", "20.0", "30.0"] + ([1] if optics else []) for n, p in PICKS]
    blocks = [("optics", ["rlnOpticsGroup", "rlnOpticsGroupName", "rlnTomoTiltSeriesPixelSize",
                          "rlnTomoSubtomogramBinning"], [[1, "opticsGroup1", f(VOXEL / binning), "1.0"]])] \
        if optics else []
    path.write_text(star(blocks + [("particles", columns, rows)]))
    return path


def warp(path: Path, coords: np.ndarray) -> Path:
    columns = ["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi",
               "rlnMicrographName", "rlnAutopickFigureOfMerit"]
    rows = [[*map(f, c), "0.0", "0.0", "0.0", f"{n}.tomostar", f"{0.5 + 0.01 * i:.3f}"]
            for i, (n, c) in enumerate(zip(NAMES, coords))]
    path.write_text(star([("", columns, rows)], head=""))
    return path


def tomograms_star(path: Path, files: dict[str, Path], *, names=None) -> Path:
    columns = ["rlnTomoName", "rlnTomoSizeX", "rlnTomoSizeY", "rlnTomoSizeZ", "rlnTomoTiltSeriesPixelSize",
               "rlnTomoTomogramBinning", "rlnTomoReconstructedTomogram"]
    rows = [[(names or {}).get(n, n), nx, ny, nz, f(VOXEL), "1.0", str(files[n])] for n, (nz, ny, nx) in SHAPES.items()]
    path.write_text(star([("global", columns, rows)]))
    return path


def dynamo_lines(numbers: dict[str, int], n_cols=35, classes=None) -> list[str]:
    """Dynamo table rows: 1-based positions split into whole voxels (24-26) and shifts (4-6)."""
    lines = []
    for i, (name, p) in enumerate(PICKS):
        p1 = np.array(p) + 1.0
        whole = np.floor(p1)
        row = ["0"] * n_cols
        row[0], row[1], row[19], row[21] = str(i + 1), "1", str(numbers[name]), str(classes[i] if classes else 0)
        row[3:6] = [f"{v:.4f}" for v in p1 - whole]
        row[23:26] = [str(int(v)) for v in whole]
        if n_cols >= 36:
            row[35] = f"{VOXEL:g}"  # column 36: apix
        lines.append(" ".join(row))
    return lines


def csv_text(header: str, sep=",", newline="\n", units="px", order=("tomogram", "x", "y", "z"), extra=None,
             names=None, rows=range(len(PICKS)), bom=False) -> str:
    scale = VOXEL if units == "A" else 1.0
    lines = [header]
    for i in rows:
        name, p = PICKS[i]
        cells = {"tomogram": (names or {}).get(name, name), **{a: f"{v * scale:.4f}" for a, v in zip("xyz", p)}}
        lines.append(sep.join([cells[c] for c in order] + (extra(i) if extra else [])))
    return ("\ufeff" if bom else "") + newline.join(lines) + newline


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="")
    return path


def drop_value(text: str, line_start: str, k: int, extra: bool = False) -> str:
    """``text`` with the ``k``-th value of the first line starting ``line_start`` removed (or doubled)."""
    lines = text.split("\n")
    i = next(j for j, line in enumerate(lines) if line.startswith(line_start))
    cells = lines[i].split()
    if extra:
        cells.insert(k, cells[k])
    else:
        del cells[k]
    lines[i] = "  ".join(cells)
    return "\n".join(lines)


def with_voxels(folder: Path, src: Path, change) -> Path:
    """A copy of the tomograms in ``src`` with ``change(name, volume) -> (volume, voxel or None)`` applied."""
    for p in sorted(src.glob("*.mrc")):
        with mrcfile.open(p) as mrc:
            volume, voxel = change(p.stem, mrc.data.copy())
        write_mrc(folder / p.name, volume, None if voxel is None else (voxel,) * 3)
    return folder


# ------------------------------------------------------------------------------------------------ cases


def _c_relion5_optics_and_tomograms_star(tmp, world):
    return Case(relion5(tmp / "particles.star"), tomograms_star(tmp / "tomograms.star", world[2])), Cuts()


def _c_relion5_no_optics_folder(tmp, world):
    return Case(relion5(tmp / "particles.star", optics=False), world[0] / "tomograms"), Cuts()


def _c_relion5_general_block_angles_and_names(tmp, world):
    more = ["rlnTomoParticleName", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnClassNumber"]
    picks = relion5(tmp / "particles.star", general=True, more=more,
                    extra=lambda i: [f"{NAMES[i]}/{i + 1}", "12.5", "-40.0", "170.25", str(1 + i % 2)])
    return Case(picks, world[0] / "tomograms"), Cuts()


def _c_relion5_windows_line_endings(tmp, world):
    return Case(relion5(tmp / "particles.star", newline="\r\n"), world[0] / "tomograms"), Cuts()


def _c_relion5_comments_blank_lines_and_quotes(tmp, world):
    text = star([OPTICS, ("particles", R5 + ["rlnOpticsGroup", "rlnTomoParticleName"],
                          relion5_rows(extra=lambda i: [1, f"'{NAMES[i]} particle {i + 1}'"]))],
                head="# written by a lab script\n# version 50001\n")
    lines = text.split("\n")
    at = lines.index("_rlnTomoParticleName #6") + 3
    lines[at:at] = ["# a comment among the rows", "", "   "]  # skipped, as starfile and RELION do
    return Case(write(tmp / "particles.star", "\n".join(lines) + "\n\n\n"), world[0] / "tomograms"), Cuts()


def _c_relion5_leading_zero_names(tmp, world):
    return Case(relion5(tmp / "particles.star", names=ZEROS), world[0] / "zeros"), Cuts(tomograms=ZEROS)


def _c_relion5_leading_zero_names_in_tomograms_star(tmp, world):
    files = {n: world[0] / "zeros" / f"{ZEROS[n]}.mrc" for n in SHAPES}
    return (Case(relion5(tmp / "particles.star", names=ZEROS), tomograms_star(tmp / "tomograms.star", files,
                                                                              names=ZEROS)),
            Cuts(tomograms=ZEROS))


def _c_relion5_a_subset_of_one_region(tmp, world):
    """Two picks close together in one corner of one tomogram: a legitimate list, not a unit mistake."""
    return Case(relion5(tmp / "particles.star", rows=[0, 1]), world[0] / "tomograms"), Cuts(rows=(0, 1))


def _c_relion4_optics_binning_2(tmp, world):
    return Case(relion4(tmp / "particles.star"), world[0] / "tomograms"), Cuts()


def _c_relion4_pixel_from_tomograms_star(tmp, world):
    return (Case(relion4(tmp / "particles.star", optics=False, binning=1.0),
                 tomograms_star(tmp / "tomograms.star", world[2])), Cuts())


def _c_warp_pixels(tmp, world):
    return Case(warp(tmp / "warp.star", XYZ), world[0] / "tomograms"), Cuts()


def _c_warp_pixels_at_a_finer_pick_pixel(tmp, world):
    return Case(warp(tmp / "warp.star", XYZ * 2), world[0] / "tomograms", ("--pick-pixel-size", "5")), Cuts()


def _c_warp_fractions(tmp, world):
    extent = np.array([[SHAPES[n][2] - 1, SHAPES[n][1] - 1, SHAPES[n][0] - 1] for n in NAMES], float)
    return Case(warp(tmp / "warp.star", XYZ / extent), world[0] / "tomograms"), Cuts()


def _c_dynamo_doc_absolute(tmp, world):
    table = write(tmp / "picks.tbl", "\n".join(dynamo_lines({"TS_01": 1, "TS_02": 2})) + "\n")
    write(tmp / "picks.doc", "".join(f"{k + 1} {world[2][n]}\n" for k, n in enumerate(SHAPES)))
    return Case(table, None), Cuts()


def _c_dynamo_doc_relative_leading_zeros(tmp, world):
    shutil.copytree(world[0] / "zeros", tmp / "tomos")
    table = write(tmp / "picks.tbl", "\n".join(dynamo_lines({"TS_01": 1, "TS_02": 2}, n_cols=39)) + "\n")
    write(tmp / "picks.doc", "1 tomos/001.mrc\n2 tomos/002.mrc\n")
    return Case(table, None), Cuts(tomograms=ZEROS)


def _c_dynamo_numbers_without_doc_match_zero_padded_files(tmp, world):
    table = write(tmp / "picks.tbl", "\n".join(dynamo_lines({"TS_01": 1, "TS_02": 2})) + "\n")
    return Case(table, world[0] / "zeros"), Cuts(tomograms=ZEROS)


def _c_dynamo_vll_windows_line_endings(tmp, world):
    table = write(tmp / "picks.tbl", "\r\n".join(dynamo_lines({"TS_01": 1, "TS_02": 2})) + "\r\n")
    write(tmp / "picks.vll", f"{world[2]['TS_01']}\r\n* label = 1\r\n{world[2]['TS_02']}\r\n")
    return Case(table, None), Cuts()


def _c_csv_pixels(tmp, world):
    return Case(write(tmp / "picks.csv", csv_text("tomogram,x,y,z")), world[0] / "tomograms"), Cuts()


def _c_csv_angstrom(tmp, world):
    return (Case(write(tmp / "picks.csv", csv_text("tomogram,x,y,z", units="A")), world[0] / "tomograms",
                 ("--units", "A")), Cuts())


def _c_csv_header_case_spaces_and_bom(tmp, world):
    return (Case(write(tmp / "picks.csv", csv_text("Tomogram , X , Y , Z", sep=" , ", bom=True)),
                 world[0] / "tomograms"), Cuts())


def _c_csv_semicolons_windows_line_endings(tmp, world):
    return (Case(write(tmp / "picks.csv", csv_text("tomogram;x;y;z", sep=";", newline="\r\n")),
                 world[0] / "tomograms"), Cuts())


def _c_csv_tabs(tmp, world):
    return Case(write(tmp / "picks.csv", csv_text("tomogram\tx\ty\tz", sep="\t")), world[0] / "tomograms"), Cuts()


def _c_csv_reordered_with_more_columns_and_labels(tmp, world):
    text = csv_text("x,y,z,tomogram,score,label,note", order=("x", "y", "z", "tomogram"),
                    extra=lambda i: [f"{0.9 - 0.01 * i:.2f}", ["ribosome", "", "proteasome"][i % 3],
                                     f"\"pick {i}, ok\""])
    return Case(write(tmp / "picks.csv", text), world[0] / "tomograms"), Cuts()


def _c_csv_comments_and_padding(tmp, world):
    text = csv_text("tomogram,x,y,z", extra=lambda i: ["", ""])  # a spreadsheet's empty cells past the last column
    text = "# picked by hand, 2024-05-02\n" + text.replace("\nTS_02", "\n# second tomogram\nTS_02", 1)
    return Case(write(tmp / "picks.csv", text), world[0] / "tomograms"), Cuts()


def _c_csv_leading_zero_names(tmp, world):
    return (Case(write(tmp / "picks.csv", csv_text("tomogram,x,y,z", names=ZEROS)), world[0] / "zeros"),
            Cuts(tomograms=ZEROS))


def _c_csv_angstrom_of_one_region_in_a_corner(tmp, world):
    return (Case(write(tmp / "picks.csv", csv_text("tomogram,x,y,z", units="A", rows=[0, 1])),
                 world[0] / "tomograms", ("--units", "A")), Cuts(rows=(0, 1)))


def _c_tomogram_voxel_size_given_for_an_unset_header(tmp, world):
    folder = with_voxels(tmp / "unset", world[0] / "tomograms", lambda n, v: (v, None))
    return (Case(relion5(tmp / "particles.star"), folder, ("--tomogram-voxel-size", f"{VOXEL:g}")), Cuts())


def _c_relion5_particles_before_optics(tmp, world):
    text = star([("particles", R5 + ["rlnOpticsGroup"], relion5_rows(extra=lambda i: [1])), OPTICS])
    return Case(write(tmp / "particles.star", text), world[0] / "tomograms"), Cuts()


def _c_relion4_optics_with_image_pixel_and_binning(tmp, world):
    text = relion4(tmp / "particles.star", binning=2.0).read_text().replace(
        "_rlnTomoTiltSeriesPixelSize", "_rlnImagePixelSize").replace(f"{f(VOXEL / 2)}  1.0", f"{f(VOXEL)}  2.0")
    return Case(write(tmp / "particles.star", text), world[0] / "tomograms"), Cuts()


def _c_warp_names_as_paths_of_another_machine(tmp, world):
    text = warp(tmp / "warp.star", XYZ).read_text().replace(" TS_0", " /scratch/warp/TS_0")
    return Case(write(tmp / "warp.star", text), world[0] / "tomograms"), Cuts()


def _c_dynamo_42_columns_with_classes(tmp, world):
    lines = dynamo_lines({"TS_01": 1, "TS_02": 2}, n_cols=42, classes=[1 + i % 3 for i in range(len(PICKS))])
    write(tmp / "picks.doc", "".join(f"{k + 1} {world[2][n]}\n" for k, n in enumerate(SHAPES)))
    return Case(write(tmp / "picks.tbl", "\n".join(lines) + "\n"), None), Cuts()


def _c_csv_utf16_from_a_spreadsheet(tmp, world):
    (tmp / "picks.csv").write_bytes(csv_text("tomogram;x;y;z;class", sep=";", newline="\r\n",
                                             extra=lambda i: [str(1 + i % 2)]).encode("utf-16"))
    return Case(tmp / "picks.csv", world[0] / "tomograms"), Cuts()


# -- broken: one line, exit 2, nothing written


def _f_star_last_row_missing_a_value_without_a_final_newline(tmp, world):
    text = relion5(tmp / "p.star").read_text().rstrip("\n")
    text = text[: text.rindex("  ")]  # the optics group of the last pick
    return Case(write(tmp / "p.star", text), world[0] / "tomograms"), Fails(("data_particles row 10",
                                                                           "4 values for 5 columns"))


def _f_star_optics_group_not_in_data_optics(tmp, world):
    rows = relion5_rows(extra=lambda i: [2 if i == 3 else 1])
    text = star([OPTICS, ("particles", R5 + ["rlnOpticsGroup"], rows)])
    return Case(write(tmp / "p.star", text), world[0] / "tomograms"), Fails(("data_particles row 4", "optics group 2"))


def _f_star_unclosed_quote(tmp, world):
    rows = relion5_rows()
    rows[5][0] = "'TS_01"
    return Case(write(tmp / "p.star", star([("particles", R5, rows)])), world[0] / "tomograms"), Fails(("quotation",))


def _f_star_two_picks_of_one_particle(tmp, world):
    rows = relion5_rows()
    rows.insert(4, list(rows[2]))
    return (Case(write(tmp / "p.star", star([("particles", R5, rows)])), world[0] / "tomograms"),
            Fails(("row 5 picks the same particle as row 3",)))


def _f_dynamo_first_row_with_an_extra_value(tmp, world):
    lines = dynamo_lines({"TS_01": 1, "TS_02": 2})
    lines[0] += " 0"
    write(tmp / "picks.doc", "".join(f"{k + 1} {world[2][n]}\n" for k, n in enumerate(SHAPES)))
    return Case(write(tmp / "picks.tbl", "\n".join(lines) + "\n"), None), Fails(("line 1: row 1",
                                                                                 "36 values for 35 columns"))


def _f_csv_latin1(tmp, world):
    (tmp / "p.csv").write_bytes(csv_text("tomogram,x,y,z,note", extra=lambda i: ["caf\u00e9"]).encode("latin-1"))
    return Case(tmp / "p.csv", world[0] / "tomograms"), Fails(("line 2", "not UTF-8"))


def _f_csv_empty_tomogram_cell(tmp, world):
    text = csv_text("tomogram,x,y,z").replace("\nTS_02", "\n", 1)
    return Case(write(tmp / "p.csv", text), world[0] / "tomograms"), Fails(("line 8", "empty tomogram"))




def _f_star_row_missing_a_value_with_optics(tmp, world):
    text = drop_value(relion5(tmp / "p.star").read_text(), "TS_01", 2)  # the y of the first pick
    return Case(write(tmp / "p.star", text), world[0] / "tomograms"), Fails(("line", "data_particles row 1",
                                                                           "4 values for 5 columns", "missing"))


def _f_star_row_missing_a_value_without_optics(tmp, world):
    lines = relion5(tmp / "p.star", optics=False, more=["rlnAngleRot"], extra=lambda i: ["33.0"]).read_text()
    text = drop_value(lines, "TS_02", 3)  # the z of the 7th pick: z would be the angle
    return Case(write(tmp / "p.star", text), world[0] / "tomograms"), Fails(("data_particles row 7",
                                                                           "4 values for 5 columns"))


def _f_star_row_with_an_extra_value(tmp, world):
    text = drop_value(relion5(tmp / "p.star").read_text(), "TS_02", 1, extra=True)
    return Case(write(tmp / "p.star", text), world[0] / "tomograms"), Fails(("data_particles row 7", "6 values for 5",
                                                                           "a value too many"))


def _f_star_optics_row_missing_a_value(tmp, world):
    text = relion5(tmp / "p.star").read_text().replace(f"1  opticsGroup1  {f(VOXEL)}", f"1  {f(VOXEL)}")
    return Case(write(tmp / "p.star", text), world[0] / "tomograms"), Fails(("data_optics row 1",
                                                                           "2 values for 3 columns"))


def _f_tomograms_star_row_missing_a_value(tmp, world):
    tomos = tomograms_star(tmp / "tomograms.star", world[2])
    text = drop_value(tomos.read_text(), "TS_02", 3)
    return (Case(relion5(tmp / "p.star"), write(tmp / "tomograms.star", text)),
            Fails(("line 14: data_global row 2 has 6 values for 7 columns",), file=str(tmp / "tomograms.star")))


def _f_star_column_named_twice(tmp, world):
    text = relion5(tmp / "p.star", optics=False, more=["rlnTomoName"], extra=lambda i: [NAMES[i]]).read_text()
    return Case(write(tmp / "p.star", text), world[0] / "tomograms"), Fails(("'rlnTomoName' twice",))


def _f_star_key_value_with_two_values(tmp, world):
    text = relion5(tmp / "p.star", general=True).read_text().replace("Stacks    0", "Stacks    0 1")
    return Case(write(tmp / "p.star", text), world[0] / "tomograms"), Fails(("data_general", "2 values"))


def _f_star_nan_coordinate(tmp, world):
    rows = relion5_rows()
    rows[4][3] = "nan"
    text = star([("particles", R5, rows)])
    return Case(write(tmp / "p.star", text), world[0] / "tomograms"), Fails(("row 5", "rlnCenteredCoordinateZAngst",
                                                                           "'nan'"))


def _f_star_text_in_a_coordinate(tmp, world):
    rows = relion5_rows()
    rows[2][1] = "12,5"  # a decimal comma
    return (Case(write(tmp / "p.star", star([("particles", R5, rows)])), world[0] / "tomograms"),
            Fails(("row 3", "rlnCenteredCoordinateXAngst", "'12,5'", "not a finite number")))


def _f_star_empty_file(tmp, world):
    return Case(write(tmp / "p.star", ""), world[0] / "tomograms"), Fails(("no data block",))


def _f_star_header_only(tmp, world):
    return (Case(write(tmp / "p.star", star([OPTICS, ("particles", R5 + ["rlnOpticsGroup"], [])])),
                 world[0] / "tomograms"), Fails(("lists no particles",)))


def _f_star_with_a_byte_order_mark(tmp, world):
    text = "\ufeff" + relion5(tmp / "p.star", head="").read_text()
    return Case(write(tmp / "p.star", text), world[0] / "tomograms"), Fails(("byte-order mark",))


def _f_star_leading_zero_names_missing_in_the_folder(tmp, world):
    names = {"TS_01": "003", "TS_02": "002"}
    return (Case(relion5(tmp / "p.star", names=names), world[0] / "zeros"),
            Fails(("row 1", "'003' matches no tomogram", "001, 002")))


def _f_tomograms_star_names_a_missing_file(tmp, world):
    (tmp / "sub").mkdir()
    tomos = tomograms_star(tmp / "sub" / "tomograms.star", {**world[2], "TS_02": "rec/TS_02.mrc"})
    return (Case(relion5(tmp / "p.star"), tomos),
            Fails(("tomogram 'TS_02' does not exist", "p.star row 7", "'rec/TS_02.mrc'"),
                  file=str(tmp / "sub" / "rec" / "TS_02.mrc")))


def _f_dynamo_row_missing_a_value(tmp, world):
    lines = dynamo_lines({"TS_01": 1, "TS_02": 2})
    lines[3] = " ".join(lines[3].split()[:-1])
    write(tmp / "picks.doc", "".join(f"{k + 1} {world[2][n]}\n" for k, n in enumerate(SHAPES)))
    return Case(write(tmp / "picks.tbl", "\n".join(lines) + "\n"), None), Fails(("line 4", "row 4",
                                                                                 "34 values for 35 columns"))


def _f_dynamo_text_in_a_coordinate(tmp, world):
    lines = dynamo_lines({"TS_01": 1, "TS_02": 2})
    cells = lines[5].split()
    cells[24] = "y?"
    lines[5] = " ".join(cells)
    write(tmp / "picks.doc", "".join(f"{k + 1} {world[2][n]}\n" for k, n in enumerate(SHAPES)))
    return Case(write(tmp / "picks.tbl", "\n".join(lines) + "\n"), None), Fails(("row 6", "column 25 (y)", "'y?'"))


def _f_dynamo_empty_table(tmp, world):
    return Case(write(tmp / "picks.tbl", ""), None), Fails(("picks.tbl", "not a readable Dynamo table"))


def _f_dynamo_without_its_doc(tmp, world):
    table = write(tmp / "picks.tbl", "\n".join(dynamo_lines({"TS_01": 1, "TS_02": 2})) + "\n")
    return Case(table, None), Fails(("row 1", "tomogram '1' is not found", str(tmp / "picks.doc"),
                                     "does not exist"))


def _f_dynamo_doc_names_a_missing_file(tmp, world):
    table = write(tmp / "picks.tbl", "\n".join(dynamo_lines({"TS_01": 1, "TS_02": 2})) + "\n")
    write(tmp / "picks.doc", f"1 {world[2]['TS_01']}\n2 gone/TS_02.mrc\n")
    return Case(table, None), Fails(("does not exist", f"{tmp / 'picks.doc'} names it"),
                                    file=str(tmp / "gone" / "TS_02.mrc"))


def _f_csv_row_missing_a_value(tmp, world):
    text = csv_text("tomogram,x,y,z").replace(f"{XYZ[2][1]:.4f},", "", 1)
    return Case(write(tmp / "p.csv", text), world[0] / "tomograms"), Fails(("line 4", "row 3",
                                                                          "3 values for 4 columns"))


def _f_csv_row_with_an_extra_value(tmp, world):
    text = csv_text("tomogram,x,y,z", extra=lambda i: ["7"] if i == 5 else [])
    return Case(write(tmp / "p.csv", text), world[0] / "tomograms"), Fails(("line 7", "5 values for 4 columns"))


def _f_csv_column_named_twice(tmp, world):
    text = csv_text("tomogram,x,y,z,X", extra=lambda i: ["1"])
    return Case(write(tmp / "p.csv", text), world[0] / "tomograms"), Fails(("line 1", "'x' twice"))


def _f_csv_empty_file(tmp, world):
    return Case(write(tmp / "p.csv", ""), world[0] / "tomograms"), Fails(("no 'tomogram'",))


def _f_csv_header_only(tmp, world):
    return Case(write(tmp / "p.csv", "tomogram,x,y,z\r\n"), world[0] / "tomograms"), Fails(("lists no particles",))


def _f_csv_text_in_a_coordinate(tmp, world):
    text = csv_text("tomogram,x,y,z").replace(f"{XYZ[3][2]:.4f}", "n/a", 1)
    return Case(write(tmp / "p.csv", text), world[0] / "tomograms"), Fails(("line 5", "'n/a'"))


def _f_csv_nan_coordinate(tmp, world):
    text = csv_text("tomogram,x,y,z").replace(f"{XYZ[8][0]:.4f}", "NaN", 1)
    return Case(write(tmp / "p.csv", text), world[0] / "tomograms"), Fails(("line 10", "finite"))


def _f_csv_pixels_read_as_angstrom(tmp, world):
    return (Case(write(tmp / "p.csv", csv_text("tomogram,x,y,z")), world[0] / "tomograms", ("--units", "A")),
            Fails(("--units A", "corner", "--units px")))


def _f_csv_angstrom_read_as_pixels(tmp, world):
    return (Case(write(tmp / "p.csv", csv_text("tomogram,x,y,z", units="A")), world[0] / "tomograms"),
            Fails(("outside", "--units A")))


def _f_warp_pixels_read_as_angstrom(tmp, world):
    return (Case(warp(tmp / "w.star", XYZ), world[0] / "tomograms", ("--units", "A")),
            Fails(("--units A", "corner", "--units px")))


def _f_tomogram_with_nan_voxels(tmp, world):
    def hole(name, v):
        if name == "TS_02":
            v[20:30, 25:35, 35:45] = np.nan  # inside the boxes of TS_02's second pick only
        return v, VOXEL

    folder = with_voxels(tmp / "nan", world[0] / "tomograms", hole)
    return (Case(relion5(tmp / "p.star"), folder),
            Fails(("NaN", "p.star row 8 (1 of the 4 picks"), file=str(folder / "TS_02.mrc")))


def _f_tomogram_with_inf_voxels(tmp, world):
    def inf(name, v):
        if name == "TS_01":
            v[:, :, 40:] = np.inf  # in the boxes of picks 3, 5 and 6 (x 27-42, 45-60, 52-67)
        return v, VOXEL

    folder = with_voxels(tmp / "inf", world[0] / "tomograms", inf)
    return (Case(write(tmp / "p.csv", csv_text("tomogram,x,y,z")), folder),
            Fails(("Inf", "p.csv lines 4, 6, 7 (3 of the 6 picks"), file=str(folder / "TS_01.mrc")))


def _f_unset_voxel_size_for_angstrom_picks(tmp, world):
    folder = with_voxels(tmp / "unset", world[0] / "tomograms", lambda n, v: (v, None))
    return (Case(relion5(tmp / "p.star"), folder),
            Fails(("unset (0)", "--tomogram-voxel-size"), file=str(folder / "TS_01.mrc")))


def _f_binary_file_as_star(tmp, world):
    (tmp / "p.star").write_bytes(bytes(range(256)) * 8)
    return Case(tmp / "p.star", world[0] / "tomograms"), Fails(("not a text file",))


CASES = {name[3:]: fn for name, fn in sorted(globals().items()) if name.startswith(("_c_", "_f_"))}


def _run(argv, capsys):
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def _blob_centre(box: np.ndarray, radius: float = 4.0) -> np.ndarray:
    c = box.shape[0] // 2
    g = np.arange(box.shape[0]) - c
    zz, yy, xx = np.meshgrid(g, g, g, indexing="ij")
    w = np.clip(-(box - np.median(box)), 0, None) * (zz**2 + yy**2 + xx**2 <= radius**2)
    return np.array([(xx * w).sum(), (yy * w).sum(), (zz * w).sum()]) / w.sum() + c


def _fails(case: Case, expect: Fails, tmp_path, capsys):
    tomos = () if case.tomograms is None else ("--tomograms", case.tomograms)
    out, project = tmp_path / "out", tmp_path / "project"
    out.mkdir()  # a folder made for the boxes stays as it was: empty
    for argv in (["extract", case.picks, *tomos, "--out", out],
                 ["train", case.picks, *tomos, "--project", project, "--device", "cpu"]):
        code, _, err = _run([*argv, "--box", str(BOX), *case.args], capsys)
        assert code == 2, (code, err)
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("ktal-cryo: error:") and "Traceback" not in err, err
        assert lines[0].startswith(f"ktal-cryo: error: {expect.file or case.picks}"), err
        for word in expect.words:
            assert word in err, (word, err)
    assert not any(out.iterdir()), f"extract left {list(out.iterdir())} in {out}"
    assert not project.exists(), f"train left {project} behind"


def _written_back(picks: Path, exported: Path, args: tuple[str, ...]) -> None:
    """Every column and value of the original list is in the export (the class column may be added)."""
    suffix = picks.suffix.lower()
    if suffix == ".star":
        before, after = read_star_blocks(picks, as_text=True), read_star_blocks(exported, as_text=True)
        assert list(before) == list(after)
        for name, block in before.items():
            if hasattr(block, "columns"):
                assert list(block.columns) == [c for c in after[name].columns if c in block.columns]
                assert block.equals(after[name][list(block.columns)]), name
            else:
                assert block == after[name]
    elif suffix == ".tbl":
        before, after = dynamotable.read(str(picks)), dynamotable.read(str(exported))
        assert list(before.columns) == list(after.columns)
        assert before.equals(after)  # nothing labelled: the class column is kept too
    else:
        before = read_table(picks, ("tomogram", "x", "y", "z"))
        after = read_table(exported, ("tomogram", "x", "y", "z"))
        assert after.columns[: 1] == ["path"] and set(before.columns) <= set(after.columns)
        index = [after.columns.index(c) for c in before.columns]
        assert [[cells[k] for k in index] for _, cells in after.rows] == [cells for _, cells in before.rows]
    options = PickOptions(units=dict(zip(args[::2], args[1::2])).get("--units"))
    np.testing.assert_array_equal(read_picks(exported, options).coords, read_picks(picks, options).coords)


def _cuts(case: Case, expect: Cuts, tmp_path, capsys):
    tomos = () if case.tomograms is None else ("--tomograms", case.tomograms)
    out = tmp_path / "out"
    code, _, err = _run(["extract", case.picks, *tomos, "--out", out, "--box", BOX, "--invert", "no", *case.args],
                        capsys)
    assert code == 0, err
    with open(out / "particles.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(expect.rows)
    for k, (r, i) in enumerate(zip(rows, expect.rows)):
        name, truth = PICKS[i]
        assert r["tomogram"] == expect.tomograms[name] and r["row"] == str(k + 1)
        assert np.abs(np.array([int(r[a]) for a in "xyz"]) - truth).max() <= 0.5 + 1e-6, (r, truth)
        box = mrcfile.read(out / r["path"])
        found = _blob_centre(box) - BOX // 2
        expected = np.array(truth) - np.rint(truth)
        assert np.abs(found - expected).max() <= 1.0, (i, found, expected)
    project, exported = tmp_path / "project", tmp_path / f"exported{case.picks.suffix}"
    code, _, err = _run(["train", case.picks, *tomos, "--project", project, "--box", BOX, "--invert", "no",
                         "--device", "cpu", "--classes", "1,2", *case.args], capsys)
    assert code == 0, err
    code, _, err = _run(["export", "--project", project, "--out", exported, "--no-predictions"], capsys)
    assert code == 0, err
    _written_back(case.picks, exported, case.args)


@pytest.mark.parametrize("name", list(CASES))
def test_corpus(world, tmp_path, capsys, name):
    (tmp_path / "in").mkdir()
    case, expect = CASES[name](tmp_path / "in", world)
    if isinstance(expect, Fails):
        _fails(case, expect, tmp_path, capsys)
    else:
        _cuts(case, expect, tmp_path, capsys)
