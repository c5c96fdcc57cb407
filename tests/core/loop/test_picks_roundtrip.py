"""Round trips through a project: particle list -> project -> labels -> export -> read again.

Every format must come back with the same rows, columns and values, and only the class changed
(STAR: every block read as text; Dynamo: every column of dynamotable's reading; CSV and copick:
the rows their readers give). Labels given as numbers keep them; names get the next free numbers.
"""

from __future__ import annotations

import csv

import dynamotable
import numpy as np
import pytest
import torch
from mrcfiles import write_mrc
from pickfiles import (
    VOXEL,
    blob_tomogram,
    copick_project,
    dynamo_table,
    pick_csv,
    random_positions,
    relion4_star,
    relion5_star,
    warp_star,
    write_tomograms,
)

from napari_ktal.core.data import PickOptions, read_picks
from napari_ktal.core.data.particles.star import particle_block
from napari_ktal.core.data.sites import site_context
from napari_ktal.core.data.star_blocks import read_star_blocks
from napari_ktal.core.errors import InputError
from napari_ktal.core.loop import PickSource, export_labels, import_labels, train_cycle
from napari_ktal.core.loop.commands import create_from_picks, prepare_training

SHAPES = {"TS_01": (40, 56, 64), "TS_02": (40, 48, 64)}
CLASSES = ["1", "2", "junk"]  # two classes named by numbers, one by a name


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("roundtrip")
    rng = np.random.default_rng(3)
    names, positions, volumes = [], [], {}
    for k, (name, shape) in enumerate(SHAPES.items()):
        pos = random_positions(shape, 5, rng, margin=8)
        volumes[name] = blob_tomogram(shape, pos, seed=k, noise=0.3)
        names += [name] * len(pos)
        positions.append(pos)
    positions = np.concatenate(positions)
    files = write_tomograms(tmp / "tomograms", volumes)
    return tmp, names, positions, files, volumes


def _project(tmp_path, picks, tomograms, recipe, options=None):
    src = PickSource(picks, tomograms, box=16, invert="no", options=options or PickOptions())
    return create_from_picks(tmp_path / "project", src, recipe, CLASSES)


def _index_of_row(project) -> dict[int, int]:
    """The pool stores volumes in the order they were cut: list row -> pool index."""
    return {s.row: i for i, s in enumerate(project.pool.sites)}


def _label(project, every=3):
    """Label some rows of the list: 1, 2, junk in turn; returns {row: class}."""
    given = {r: CLASSES[(r // every) % 3] for r in range(0, len(project.pool), every)}
    index = _index_of_row(project)
    project.label_many({index[r]: c for r, c in given.items()})
    return given


def _star_equal_but_classes(before: dict, after: dict, block: str) -> list[str]:
    assert list(before) == list(after)
    for name in before:
        a, b = before[name], after[name]
        if hasattr(a, "columns"):
            cols = [c for c in b.columns if c != "rlnClassNumber"] if name == block else list(b.columns)
            assert [c for c in a.columns if c != "rlnClassNumber"] == [c for c in cols if c != "rlnClassNumber"]
            assert a[[c for c in cols if c in a.columns]].equals(b[[c for c in cols if c in a.columns]])
        else:
            assert a == b
    return after[block]["rlnClassNumber"].tolist()


@pytest.mark.parametrize("flavour", ["relion5", "relion4", "warp"])
def test_star_round_trip(world, tmp_path, small_recipe, flavour):
    tmp, names, positions, _, _ = world
    if flavour == "relion5":
        picks = relion5_star(tmp_path / "p.star", names, positions, SHAPES)
    elif flavour == "relion4":
        picks = relion4_star(tmp_path / "p.star", names, positions)
    else:
        picks = warp_star(tmp_path / "p.star", names, positions)
    project = _project(tmp_path, picks, tmp / "tomograms", small_recipe)
    given = _label(project)
    out = tmp_path / "classified.star"
    result = export_labels(project, out)
    before = read_star_blocks(picks, as_text=True)
    classes = _star_equal_but_classes(before, read_star_blocks(out, as_text=True), particle_block(picks, before))
    numbers = {"1": "1", "2": "2", "junk": "3"}
    assert classes == [numbers[given[i]] if i in given else "0" for i in range(len(names))]
    assert result.n_labeled == len(given) and result.cycle is None
    with open(tmp_path / "classified.classes.csv", newline="") as f:
        assert {r["class"]: r["number"] for r in csv.DictReader(f)} == {"1": "1", "2": "2", "junk": "3"}
    # the export is a valid particle list again: the same picks, now with classes
    again = read_picks(out)
    np.testing.assert_allclose(again.coords, read_picks(picks).coords)
    assert again.classes == [numbers[given[i]] if i in given else None for i in range(len(names))]


def test_star_keeps_existing_classes_of_unlabeled_rows(world, tmp_path, small_recipe):
    tmp, names, positions, _, _ = world
    original = [7] * len(names)
    picks = relion5_star(tmp_path / "p.star", names, positions, SHAPES, classes=original)
    project = _project(tmp_path, picks, tmp / "tomograms", small_recipe)
    given = _label(project, every=4)
    export_labels(project, tmp_path / "out.star")
    classes = read_star_blocks(tmp_path / "out.star", as_text=True)["particles"]["rlnClassNumber"].tolist()
    assert classes == [{"1": "1", "2": "2", "junk": "3"}[given[i]] if i in given else "7" for i in range(len(names))]


def test_dynamo_round_trip(world, tmp_path, small_recipe):
    tmp, names, positions, files, _ = world
    numbers = {n: k + 1 for k, n in enumerate(SHAPES)}
    table = dynamo_table(tmp_path / "p.tbl", [numbers[n] for n in names], positions,
                         doc={k: files[n] for n, k in numbers.items()}, n_cols=39)
    project = _project(tmp_path, table, None, small_recipe)
    given = _label(project)
    out = tmp_path / "classified.tbl"
    export_labels(project, out)
    before, after = dynamotable.read(str(table)), dynamotable.read(str(out))
    assert list(before.columns) == list(after.columns) and len(after.columns) == 39
    others = [c for c in before.columns if c != "class"]
    assert before[others].equals(after[others])
    assert after["class"].tolist() == [{"1": 1, "2": 2, "junk": 3}[given[i]] if i in given else 0
                                       for i in range(len(names))]


def test_csv_round_trip(world, tmp_path, small_recipe):
    tmp, names, positions, _, _ = world
    picks = pick_csv(tmp_path / "p.csv", names, positions * 10.0)
    project = _project(tmp_path, picks, tmp / "tomograms", small_recipe, PickOptions(units="A"))
    given = _label(project)
    out = tmp_path / "labels.csv"
    export_labels(project, out)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "tomogram", "x", "y", "z", "label", "confidence", "source"]
    before, after = read_picks(picks, PickOptions(units="A")), read_picks(out, PickOptions(units="A"))
    assert after.tomograms == before.tomograms
    np.testing.assert_array_equal(after.coords, before.coords)  # the cells as given
    assert after.classes == [given.get(i) for i in range(len(names))]
    assert [r["source"] for r in rows] == ["user" if i in given else "" for i in range(len(names))]


def test_csv_export_keeps_every_column_of_the_list(world, tmp_path, small_recipe):
    """A CSV list comes back with its own columns, order and cells; label set where a class is known,
    kept where not; path, confidence and source added."""
    tmp, names, positions, _, _ = world
    lines = ["Score;Tomogram;X;Y;Z;label;note"]
    lines += [f"{0.5 + i / 100:.2f};{n};{p[0]:.6f};{p[1]:.6f};{p[2]:.6f};{'old' if i % 2 else ''};\"a; b\""
              for i, (n, p) in enumerate(zip(names, positions))]
    picks = tmp_path / "p.csv"
    picks.write_text("\n".join(lines) + "\n")
    project = _project(tmp_path, picks, tmp / "tomograms", small_recipe)
    given = _label(project)
    out = tmp_path / "labels.csv"
    export_labels(project, out)
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "Score", "Tomogram", "X", "Y", "Z", "label", "note", "confidence", "source"]
    for i, (row, line) in enumerate(zip(rows[1:], lines[1:])):
        score, name, x, y, z, label, note = next(csv.reader([line], delimiter=";"))
        assert row[1:6] == [score, name, x, y, z] and row[7] == note == "a; b"
        assert row[6] == given.get(i, label) and row[9] == ("user" if i in given else "")
    assert read_picks(out).tomograms == names


def test_a_tomogram_voxel_size_given_by_option_is_the_projects_and_its_contexts(world, tmp_path, small_recipe):
    """Headers that leave the voxel size unset: --tomogram-voxel-size places the picks and scales the context."""
    tmp, names, positions, _, volumes = world
    for name, volume in volumes.items():
        write_mrc(tmp_path / "tomos" / f"{name}.mrc", volume)  # voxel size 0 in the header
    picks = relion5_star(tmp_path / "p.star", names, positions, SHAPES)
    project = _project(tmp_path, picks, tmp_path / "tomos", small_recipe, PickOptions(tomogram_voxel_size=VOXEL))
    assert project.pool.voxel_size == VOXEL
    np.testing.assert_allclose([(s.x, s.y, s.z) for s in project.pool.sites],
                               positions[[s.row for s in project.pool.sites]], atol=1e-6)
    assert site_context(project.pool, project.source_record(), 0).voxel_size == VOXEL


def test_copick_round_trip(world, tmp_path, small_recipe):
    pytest.importorskip("copick")  # an optional dependency: pip install napari-ktal[copick]
    _, names, positions, _, volumes = world
    picks = {}
    for name in SHAPES:
        sel = [i for i, n in enumerate(names) if n == name]
        picks[name] = [("ribosome", positions[sel])]
    config = copick_project(tmp_path, volumes, picks)
    project = _project(tmp_path, config, None, small_recipe)
    given = _label(project)
    export_labels(project, config, copick_user="annotator", copick_session="7")
    before = read_picks(config, PickOptions(copick_session="0"))
    after = read_picks(config, PickOptions(copick_user="annotator", copick_session="7"))
    order = {rid.split("/")[0] + "#" + rid.split("#")[1]: k for k, rid in enumerate(before.row_ids)}
    labelled = [i for i in range(len(before)) if i in given]
    assert len(after) == len(labelled)
    for k in range(len(after)):
        run, _, _, _ = after.row_ids[k].split("/")
        # a class's picks file holds the labelled points of that class, locations and transforms as read
        match = [i for i in labelled if before.tomograms[i] == run and
                 np.allclose(before.coords[i], after.coords[k])]
        assert len(match) == 1 and given[match[0]] == after.classes[k]
    assert order  # the source picks are still there, unchanged
    assert len(before) == len(names)
    project.add_class("ribosome")
    project.label(0, "ribosome")
    with pytest.raises(InputError, match="would overwrite the picks"):
        export_labels(project, config, copick_user="picker", copick_session="0")


def test_oracle_and_import_from_a_particle_list_match_by_position(world, tmp_path, small_recipe):
    tmp, names, positions, files, _ = world
    picks = relion5_star(tmp_path / "p.star", names, positions, SHAPES)
    project = _project(tmp_path, picks, tmp / "tomograms", small_recipe)
    truth = [str(1 + i % 2) for i in range(len(names))]
    # the same particles, in another format, order and with some rows missing
    order = np.random.default_rng(0).permutation(len(names))[:-2]
    numbers = {n: k + 1 for k, n in enumerate(SHAPES)}
    table = dynamo_table(tmp_path / "labels.tbl", [numbers[names[i]] for i in order], positions[order],
                         doc={k: files[n] for n, k in numbers.items()}, classes=[int(truth[i]) for i in order])
    result = import_labels(project, table)
    assert result.n_imported == len(order)
    row_of = {i: s.row for i, s in enumerate(project.pool.sites)}
    assert {row_of[i]: c for i, c in project.labels().items()} == {int(i): truth[i] for i in order}
    with pytest.raises(InputError, match="has no label for 2"):
        prepare_training(project, oracle=table)
    full = relion5_star(tmp_path / "truth.star", names, positions, SHAPES, classes=[int(t) for t in truth])
    plan = prepare_training(project, oracle=full)
    assert {row_of[i]: c for i, c in plan.oracle.items()} == {i: truth[i] for i in range(len(names))}


def test_export_adds_the_teachers_classes_and_confidence(world, tmp_path, small_recipe, one_torch_thread):
    tmp, names, positions, _, _ = world
    picks = pick_csv(tmp_path / "p.csv", names, positions)
    project = _project(tmp_path, picks, tmp / "tomograms", small_recipe)
    given = {i: CLASSES[i % 3] for i in range(len(names)) if i % 2 == 0}  # by row of the list
    index = _index_of_row(project)
    project.label_many({index[r]: c for r, c in given.items()})
    train_cycle(project, small_recipe, torch.device("cpu"), seed=0, select=False)
    out = tmp_path / "out.csv"
    result = export_labels(project, out, device=torch.device("cpu"))
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert result.cycle == 0 and result.n_predicted == len(names) - len(given)
    for i, r in enumerate(rows):
        assert r["source"] == ("user" if i in given else "teacher")
        assert r["label"] in CLASSES and 0 < float(r["confidence"]) <= 1
        if i in given:
            assert r["label"] == given[i]
