"""Bad particle lists and tomograms through ``ktal-cryo``: exit 2, one line naming the file, nothing lost.

Each case runs ``extract`` and ``train`` (which would create a project) on a broken input and
checks the one-line error, that no output folder or project is left behind, and, for labels
given to an existing project (``import-labels``, ``train --oracle``), that the project is
byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from mrcfiles import noise, poke, write_mrc
from pickfiles import (
    blob_tomogram,
    dynamo_table,
    pick_csv,
    random_positions,
    relion5_star,
    write_tomograms,
    write_tomograms_star,
)

from napari_ktal.cli import main

SHAPES = {"TS_01": (32, 48, 48), "TS_02": (32, 40, 48)}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("badpicks")
    rng = np.random.default_rng(5)
    names, positions, volumes = [], [], {}
    for k, (name, shape) in enumerate(SHAPES.items()):
        pos = random_positions(shape, 3, rng, margin=8)
        volumes[name] = blob_tomogram(shape, pos, seed=k, noise=0.3)
        names += [name] * 3
        positions.append(pos)
    positions = np.concatenate(positions)
    files = write_tomograms(tmp / "tomograms", volumes)
    picks = relion5_star(tmp / "picks.star", names, positions, SHAPES)
    return tmp, names, positions, files, picks


def snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def run_failing(argv, capsys, names: list[str], words: list[str]) -> str:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, (code, err)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ktal-cryo: error:"), err
    for word in names + words:
        assert word in err, err
    return err


def _both_commands(tmp_path, capsys, picks, tomograms, names, words, extra=()):
    """extract and train fail alike, and leave no folder behind."""
    out, project = tmp_path / "out", tmp_path / "project"
    tomos = [] if tomograms is None else ["--tomograms", tomograms]
    run_failing(["extract", picks, *tomos, "--out", out, "--box", "16", *extra], capsys, names, words)
    assert not out.exists()
    run_failing(["train", picks, *tomos, "--project", project, "--box", "16", "--device", "cpu", *extra], capsys,
                names, words)
    assert not project.exists()


def test_wrong_pixel_size_names_both_numbers(base, tmp_path, capsys):
    tmp, names, positions, files, picks = base
    star = write_tomograms_star(tmp_path / "tomograms.star", files, SHAPES, binning=2.0, voxel=5.0)
    _both_commands(tmp_path, capsys, picks, star, ["TS_01.mrc"], ["10 A in the header", "= 5 A"])


def test_optics_and_tomograms_star_disagree_on_the_tilt_series_pixel(base, tmp_path, capsys):
    tmp, names, positions, files, _ = base
    star = write_tomograms_star(tmp_path / "tomograms.star", files, SHAPES, binning=2.0)  # 5 A tilt series
    picks = relion5_star(tmp_path / "p.star", names, positions, SHAPES, binning=4.0)  # optics: 2.5 A
    _both_commands(tmp_path, capsys, picks, star, ["p.star", "row 1"], ["2.5 A", "5 A"])


def test_a_finer_extraction_voxel_size_names_both_numbers(base, tmp_path, capsys):
    tmp, names, positions, files, picks = base
    _both_commands(tmp_path, capsys, picks, tmp / "tomograms", ["picks.star"], ["5 A", "10 A"],
                   extra=["--voxel-size", "5"])


def test_missing_tomogram_file(base, tmp_path, capsys):
    tmp, names, positions, files, picks = base
    gone = dict(files, TS_02=tmp_path / "nowhere" / "TS_02.mrc")
    star = write_tomograms_star(tmp_path / "tomograms.star", gone, SHAPES)
    _both_commands(tmp_path, capsys, picks, star, ["TS_02"], ["does not exist", "row 4"])
    # a path relative to the RELION project: named where it was looked for, not as written
    (tmp_path / "sub").mkdir()
    star = write_tomograms_star(tmp_path / "sub" / "tomograms.star", dict(files, TS_02="rec/TS_02.mrc"), SHAPES)
    _both_commands(tmp_path, capsys, picks, star, [f"error: {tmp_path / 'sub' / 'rec' / 'TS_02.mrc'}: "],
                   ["tomogram 'TS_02' does not exist", f"{star} names it 'rec/TS_02.mrc'", str(tmp_path / "rec")])


def test_a_name_that_matches_no_tomogram(base, tmp_path, capsys):
    tmp, names, positions, files, _ = base
    picks = relion5_star(tmp_path / "p.star", ["TS_01"] * 3 + ["TS_09"] * 3, positions, SHAPES | {"TS_09": (32, 40, 48)})
    _both_commands(tmp_path, capsys, picks, tmp / "tomograms", ["p.star", "row 4"], ["'TS_09' matches no tomogram"])


def test_a_pick_outside_its_tomogram(base, tmp_path, capsys):
    tmp, names, positions, files, _ = base
    moved = positions.copy()
    moved[2, 0] = 60.0  # TS_01 is 48 wide
    picks = relion5_star(tmp_path / "p.star", names, moved, SHAPES)
    _both_commands(tmp_path, capsys, picks, tmp / "tomograms", ["p.star", "row 3", "TS_01.mrc"], ["outside"])


def test_duplicate_picks(base, tmp_path, capsys):
    tmp, names, positions, files, _ = base
    twice = positions.copy()
    twice[4] = twice[3] + 0.3
    picks = pick_csv(tmp_path / "p.csv", names, twice)
    _both_commands(tmp_path, capsys, picks, tmp / "tomograms", ["p.csv", "line 6", "line 5"], ["same particle"])


def test_an_empty_list(base, tmp_path, capsys):
    tmp, *_ = base
    picks = tmp_path / "empty.star"
    picks.write_text("data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCenteredCoordinateXAngst #2\n"
                     "_rlnCenteredCoordinateYAngst #3\n_rlnCenteredCoordinateZAngst #4\n")
    _both_commands(tmp_path, capsys, picks, tmp / "tomograms", ["empty.star"], ["lists no particles"])
    csv = tmp_path / "empty.csv"
    csv.write_text("tomogram,x,y,z\n")
    _both_commands(tmp_path, capsys, csv, tmp / "tomograms", ["empty.csv"], ["lists no particles"])


@pytest.mark.parametrize("columns, words", [
    (["rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst"],
     ["no rlnTomoName"]),
    (["rlnTomoName", "rlnAngleRot"], ["has no rlnCoordinateX, rlnCoordinateY, rlnCoordinateZ"]),
    (["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"], ["no rlnTomoName (RELION) or rlnMicrographName"]),
])
def test_star_without_the_needed_columns(base, tmp_path, capsys, columns, words):
    tmp, *_ = base
    picks = tmp_path / "cols.star"
    body = "".join(f"_{c} #{k + 1}\n" for k, c in enumerate(columns))
    row = " ".join("TS_01" if c == "rlnTomoName" else "1.0" for c in columns)
    picks.write_text(f"data_particles\n\nloop_\n{body}{row}\n")
    _both_commands(tmp_path, capsys, picks, tmp / "tomograms", ["cols.star"], words)


def test_not_a_star_file(base, tmp_path, capsys):
    tmp, *_ = base
    picks = tmp_path / "binary.star"
    picks.write_bytes(np.random.default_rng(0).bytes(2000))
    _both_commands(tmp_path, capsys, picks, tmp / "tomograms", ["binary.star"], [])


def test_a_huge_tomogram_header(base, tmp_path, capsys):
    """A header that claims 40000^3 voxels (256 TB) in a small file: refused before anything is read."""
    tmp, names, positions, files, picks = base
    folder = tmp_path / "tomos"
    shutil.copytree(tmp / "tomograms", folder)
    for field in ("nx", "ny", "nz"):
        poke(folder / "TS_02.mrc", field, 40000)
    _both_commands(tmp_path, capsys, picks, folder, ["TS_02.mrc"], ["truncated"])


def test_a_2d_image_is_not_a_tomogram(base, tmp_path, capsys):
    tmp, names, positions, files, picks = base
    folder = tmp_path / "tomos"
    shutil.copytree(tmp / "tomograms", folder)
    write_mrc(folder / "TS_02.mrc", noise(48, 48))
    _both_commands(tmp_path, capsys, picks, folder, ["TS_02.mrc"], ["not a tomogram"])


def test_bad_labels_leave_an_existing_project_unchanged(base, tmp_path, capsys):
    tmp, names, positions, files, picks = base
    project = tmp_path / "project"
    assert main(["train", str(picks), "--tomograms", str(tmp / "tomograms"), "--project", str(project), "--box", "16",
                 "--device", "cpu", "--classes", "1,2"]) == 0
    before = snapshot(project)
    far = positions.copy()
    far[0] += 5.0  # a particle the project does not have
    labels = relion5_star(tmp_path / "labels.star", names, far, SHAPES, classes=[1, 2] * 3)
    run_failing(["import-labels", labels, "--project", project], capsys, ["labels.star", "row 1"],
                ["not in the project's pool"])
    partial = relion5_star(tmp_path / "partial.star", names[:4], positions[:4], SHAPES, classes=[1, 2, 1, 2])
    run_failing(["train", "--project", project, "--oracle", partial, "--device", "cpu"], capsys, ["partial.star"],
                ["no label for 2 of the 6"])
    no_classes = relion5_star(tmp_path / "none.star", names, positions, SHAPES)
    run_failing(["import-labels", no_classes, "--project", project], capsys, ["none.star"], ["carries no classes"])
    run_failing(["export", "--project", project, "--out", tmp_path / "x.tbl", "--format", "dynamo"], capsys,
                ["--format dynamo"], ["relion5 particle list"])
    assert snapshot(project) == before


def test_a_copick_project_without_copick_installed(base, tmp_path, capsys, monkeypatch):
    import sys

    tmp, *_ = base
    config = tmp_path / "copick.json"
    config.write_text('{"config_type": "filesystem", "pickable_objects": [], "overlay_root": "local:///nowhere"}')
    monkeypatch.setitem(sys.modules, "copick", None)  # as if the optional extra were not installed
    _both_commands(tmp_path, capsys, config, None, ["copick.json"], ["copick package is not installed",
                                                                     "napari-ktal[copick]"])


def test_a_tomogram_with_nan_voxels_is_refused_by_extract_as_by_train(base, tmp_path, capsys):
    """extract used to write boxes full of NaN and exit 0; it refuses them as train does, naming every row."""
    tmp, names, positions, files, picks = base
    folder = tmp_path / "tomos"
    shutil.copytree(tmp / "tomograms", folder)
    with mrcfile.open(folder / "TS_01.mrc") as mrc:
        volume = mrc.data.copy()
    centres = np.rint(positions[:3, 0]).astype(int)  # TS_01's picks; a box spans x = c - 8 .. c + 7
    volume[:, :, centres.min() + 8:] = np.nan  # in every box of TS_01 but the one furthest left
    write_mrc(folder / "TS_01.mrc", volume, (10.0, 10.0, 10.0))
    hit = [i for i in range(3) if centres[i] > centres.min()]
    assert 0 < len(hit) < 3
    rows = ", ".join(str(i + 1) for i in hit)
    _both_commands(tmp_path, capsys, picks, folder, [str(folder / "TS_01.mrc")],
                   ["NaN", f"picks.star row{'s' if len(hit) > 1 else ''} {rows} ({len(hit)} of the 3 picks"])


def test_pixels_given_as_angstrom_are_refused_naming_the_unit_that_fits(base, tmp_path, capsys):
    tmp, names, positions, files, _ = base
    pixels = pick_csv(tmp_path / "px.csv", names, positions)
    _both_commands(tmp_path, capsys, pixels, tmp / "tomograms", ["px.csv"],
                   ["read as Angstrom (--units A)", "corner", "read as pixels they spread", "--units px"],
                   extra=["--units", "A"])
    angstrom = pick_csv(tmp_path / "A.csv", names, positions * 10.0)
    _both_commands(tmp_path, capsys, angstrom, tmp / "tomograms", ["A.csv", "line 2"],
                   ["outside", "read as Angstrom (--units A) every pick lies inside"])


def test_an_unset_voxel_size_is_said_to_be_unset_and_how_to_give_it(base, tmp_path, capsys):
    tmp, names, positions, files, picks = base
    folder = tmp_path / "tomos"
    for name, file in files.items():
        with mrcfile.open(file) as mrc:
            write_mrc(folder / file.name, mrc.data.copy())  # the header's voxel size stays 0
    err = run_failing(["extract", picks, "--tomograms", folder, "--out", tmp_path / "out", "--box", "16"], capsys,
                      [str(folder / "TS_01.mrc")], ["leaves the voxel size unset (0)", "--tomogram-voxel-size"])
    assert "1 A" not in err
    assert main(["extract", str(picks), "--tomograms", str(folder), "--out", str(tmp_path / "out"), "--box", "16",
                 "--tomogram-voxel-size", "10"]) == 0


def test_a_dynamo_table_without_its_doc_names_the_missing_doc(base, tmp_path, capsys):
    tmp, names, positions, files, _ = base
    table = dynamo_table(tmp_path / "picks.tbl", [1 if n == "TS_01" else 2 for n in names], positions)
    _both_commands(tmp_path, capsys, table, tmp / "tomograms", ["picks.tbl", "row 1", str(tmp_path / "picks.doc")],
                   ["'1' matches no tomogram", "does not exist"])


def test_a_ragged_tomograms_star_row_is_no_missing_tomogram(base, tmp_path, capsys):
    tmp, names, positions, files, picks = base
    star = write_tomograms_star(tmp_path / "tomograms.star", files, SHAPES)
    lines = star.read_text().splitlines()
    k = next(i for i, line in enumerate(lines) if line.startswith("TS_02"))
    lines[k] = " ".join(lines[k].split()[:3] + lines[k].split()[4:])  # rlnTomoSizeZ left out
    star.write_text("\n".join(lines) + "\n")
    _both_commands(tmp_path, capsys, picks, star, [str(star), f"line {k + 1}", "data_global row 2"],
                   ["6 values for 7 columns"])
