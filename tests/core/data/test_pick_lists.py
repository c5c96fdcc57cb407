"""Reading particle lists: one value per column in every row, names as text, messages that name the row.

starfile and pandas read a row that lacks a value as its later values shifted into the wrong
columns (a pick's z taken from its angle); every table we read (STAR loops, Dynamo tables,
CSVs) is checked row by row against its columns first.
"""

from __future__ import annotations

import numpy as np
import pytest
from mrcfiles import noise, write_mrc

from napari_ktal.core.data import read_picks
from napari_ktal.core.data.star_blocks import read_star_blocks
from napari_ktal.core.data.tomograms import catalogue
from napari_ktal.core.errors import InputError

OPTICS = """
data_optics

loop_
_rlnOpticsGroup #1
_rlnOpticsGroupName #2
_rlnTomoTiltSeriesPixelSize #3
1 opticsGroup1 10.0
"""
PARTICLES = """
data_particles

loop_
_rlnTomoName #1
_rlnCenteredCoordinateXAngst #2
_rlnCenteredCoordinateYAngst #3
_rlnCenteredCoordinateZAngst #4
_rlnAngleTilt #5
TS_01 10.0 20.0 30.0 45.0
TS_01 11.0 21.0 31.0 46.0
TS_02 12.0 22.0 32.0 47.0
"""


def _write(path, text, newline="\n"):
    path.write_text(text.replace("\n", newline), newline="")
    return path


@pytest.mark.parametrize("old, new, where", [
    ("TS_01 11.0 21.0 31.0 46.0", "TS_01 11.0 21.0 46.0", "line 19: data_particles row 2 has 4 values for 5"),
    ("TS_02 12.0 22.0 32.0 47.0", "TS_02 12.0 22.0 32.0 47.0 0", "line 20: data_particles row 3 has 6 values for 5"),
    ("TS_01 10.0 20.0 30.0 45.0", "TS_01 10.0 20.0 30.0", "line 18: data_particles row 1 has 4 values for 5"),
    ("1 opticsGroup1 10.0", "1 10.0", "line 8: data_optics row 1 has 2 values for 3"),
])
def test_a_star_row_must_hold_one_value_per_column(tmp_path, old, new, where):
    path = _write(tmp_path / "p.star", (OPTICS + PARTICLES).replace(old, new))
    with pytest.raises(InputError, match=where) as err:
        read_picks(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_a_ragged_row_is_named_in_tomograms_star_and_its_key_value_blocks(tmp_path):
    tomos = _write(tmp_path / "tomograms.star", "data_global\n\nloop_\n_rlnTomoName\n_rlnTomoReconstructedTomogram\n"
                                                 "TS_01 a.mrc\nTS_02\n")
    with pytest.raises(InputError, match="line 7: data_global row 2 has 1 value for 2 columns"):
        catalogue(tomos)
    general = _write(tmp_path / "g.star", "data_general\n\n_rlnTomoSubTomosAre2DStacks 1 0\n" + PARTICLES)
    with pytest.raises(InputError, match="line 3: data_general gives _rlnTomoSubTomosAre2DStacks 2 values"):
        read_picks(general)


def test_a_column_named_twice_or_split_from_its_loop_is_refused(tmp_path):
    twice = _write(tmp_path / "twice.star", PARTICLES.replace("_rlnAngleTilt #5", "_rlnTomoName #5"))
    with pytest.raises(InputError, match="data_particles names column 'rlnTomoName' twice"):
        read_picks(twice)
    split = _write(tmp_path / "split.star", PARTICLES.replace("_rlnAngleTilt #5", "\n_rlnAngleTilt #5"))
    with pytest.raises(InputError, match="line 10: column _rlnAngleTilt of data_particles comes after a blank"):
        read_picks(split)


def test_star_text_as_labs_write_it_is_read_unchanged(tmp_path):
    """Windows line endings, comments, blank lines, quoted values with spaces, a final row without a newline."""
    text = ("# version 30001\n" + OPTICS + PARTICLES.replace("_rlnAngleTilt #5", "_rlnAngleTilt #5\n_rlnImageName #6")
            .replace("45.0\n", "45.0 'a b'\n\n# a comment\n").replace("46.0\n", "46.0 \"c d\"   # noted\n")
            .replace("47.0\n", "47.0 e"))
    path = _write(tmp_path / "p.star", text, newline="\r\n")
    picks = read_picks(path)
    assert picks.tomograms == ["TS_01", "TS_01", "TS_02"]
    np.testing.assert_array_equal(picks.coords, [[10, 20, 30], [11, 21, 31], [12, 22, 32]])
    assert read_star_blocks(path)["particles"]["rlnImageName"].tolist() == ["a b", "c d", "e"]


def test_names_are_text_in_every_format(tmp_path):
    star = _write(tmp_path / "p.star", PARTICLES.replace("TS_0", "00"))
    assert read_picks(star).tomograms == ["001", "001", "002"]
    tomos = _write(tmp_path / "tomograms.star", "data_global\n\nloop_\n_rlnTomoName\n_rlnTomoReconstructedTomogram\n"
                                                 "001 001\n010 0010\n")
    assert catalogue(tomos).names() == ["001", "010"]
    warp = _write(tmp_path / "w.star", "data_\n\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n_rlnCoordinateZ\n"
                                       "_rlnMicrographName\n1 2 3 007\n")
    assert read_picks(warp).tomograms == ["007"]
    table = tmp_path / "d.tbl"
    table.write_text(" ".join(["1", "1", "0", "0", "0", "0"] + ["0"] * 13 + ["7", "0", "0", "0", "5", "6", "7"]
                              + ["0"] * 9) + "\n")
    (tmp_path / "d.doc").write_text("7 007\n")
    assert read_picks(table).tomograms == ["007"]
    csv = _write(tmp_path / "p.csv", "tomogram,x,y,z\n007,1,2,3\n")
    assert read_picks(csv).tomograms == ["007"]


def test_a_number_names_its_zero_padded_tomogram(tmp_path):
    for name in ("001", "002", "TS_3"):
        write_mrc(tmp_path / f"{name}.mrc", noise(4, 8, 8))
    cat = catalogue(tmp_path)
    assert cat.match("1").name == "001" and cat.match("002").name == "002"
    assert cat.match("3") is None  # only a name that is all digits is a number
    write_mrc(tmp_path / "01.mrc", noise(4, 8, 8))
    assert catalogue(tmp_path).match("01").name == "01"  # the same name first
    with pytest.raises(InputError, match="tomogram number 1 matches 2 tomograms"):
        catalogue(tmp_path).match("1")


@pytest.mark.parametrize("old, new, where", [
    ("TS_01 11.0 21.0 31.0", "TS_01 11.0 21,5 31.0", "data_particles row 2: rlnCenteredCoordinateYAngst is '21,5'"),
    ("TS_02 12.0 22.0 32.0", "TS_02 12.0 22.0 nan", "data_particles row 3: rlnCenteredCoordinateZAngst is 'nan'"),
    ("1 opticsGroup1", "one opticsGroup1", "data_optics row 1: rlnOpticsGroup is 'one'"),
])
def test_a_value_that_is_no_number_is_named_with_its_row_and_column(tmp_path, old, new, where):
    path = _write(tmp_path / "p.star", (OPTICS + PARTICLES.replace("45.0", "45.0 1").replace(
        "_rlnAngleTilt #5", "_rlnAngleTilt #5\n_rlnOpticsGroup #6")).replace("46.0", "46.0 1").replace("47.0", "47.0 1")
                  .replace(old, new))
    with pytest.raises(InputError, match=f"{where}, not a finite number"):
        read_picks(path)


def _dynamo_row(tag, tomo=1, xyz=("5", "6", "7")) -> list[str]:
    row = ["0"] * 35
    row[0], row[19], row[23:26] = str(tag), str(tomo), list(xyz)
    return row


def test_dynamo_rows_hold_as_many_values_as_the_others_and_numbers(tmp_path):
    table = tmp_path / "d.tbl"
    rows = [_dynamo_row(k) for k in (1, 2, 3)]
    rows[1] = rows[1][:-1]
    table.write_text("\n".join(" ".join(r) for r in rows) + "\n")
    with pytest.raises(InputError, match="line 2: row 2 has 34 values for 35 columns"):
        read_picks(table)
    rows = [_dynamo_row(1), _dynamo_row(2, xyz=("5", "six", "7"))]
    table.write_text("\n".join(" ".join(r) for r in rows) + "\n")
    with pytest.raises(InputError, match=r"row 2: column 25 \(y\) is 'six', not a finite number"):
        read_picks(table)


def test_csv_rows_hold_one_cell_per_column_comments_and_padding_aside(tmp_path):
    ok = _write(tmp_path / "ok.csv",
                "# from a spreadsheet\ntomogram,x,y,z\nTS_01,1,2,3,,\n# TS_01,9,9,9\nTS_02,4,5,6\n")
    picks = read_picks(ok)
    assert picks.tomograms == ["TS_01", "TS_02"] and picks.where(1) == "line 5" and picks.row_ids == ["1", "2"]
    short = _write(tmp_path / "short.csv", "tomogram,x,y,z,label\nTS_01,1,2,3,a\nTS_02,4,5,6\n")
    with pytest.raises(InputError, match="line 3: row 2 has 4 values for 5 columns"):
        read_picks(short)
    long = _write(tmp_path / "long.csv", "tomogram,x,y,z\nTS_01,1,2,3,9\n")
    with pytest.raises(InputError, match="line 2: row 1 has 5 values for 4 columns"):
        read_picks(long)
    twice = _write(tmp_path / "twice.csv", "tomogram,x,y,Z,z\nTS_01,1,2,3,4\n")
    with pytest.raises(InputError, match="line 1: names column 'z' twice"):
        read_picks(twice)
