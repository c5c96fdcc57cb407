"""The whole path on the simulated scene, as the README runs it: picks + tomograms -> train with an
oracle -> export -> a STAR file for RELION that is the picks file with rlnClassNumber filled in."""

from __future__ import annotations

import csv

import pytest
import torch

from napari_ktal.cli import main
from napari_ktal.core.data.star_blocks import read_star_blocks
from napari_ktal.core.project import Project


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_picks_to_classified_star(tmp_path, tiny_recipe_file, one_thread, capsys):
    scene, project = tmp_path / "scene", tmp_path / "project"
    assert main(["simulate-scene", str(scene), "--classes", "2", "--per-class", "10", "--junk", "4",
                 "--tomograms", "1", "--shape", "160x160x48", "--seed", "1"]) == 0
    assert main(["train", str(scene / "particles.star"), "--tomograms", str(scene / "tomograms.star"),
                 "--project", str(project), "--recipe", str(tiny_recipe_file()), "--oracle",
                 str(scene / "truth.star"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "24 picks (relion5" in out and "contrast kept: particles are dark" in out
    classified = tmp_path / "classified.star"
    assert main(["export", "--project", str(project), "--out", str(classified), "--device", "cpu"]) == 0
    before = read_star_blocks(scene / "particles.star", as_text=True)
    after = read_star_blocks(classified, as_text=True)
    truth = read_star_blocks(scene / "truth.star", as_text=True)["particles"]["rlnClassNumber"].tolist()
    assert list(after) == list(before) and after["optics"].equals(before["optics"])
    assert after["particles"].drop(columns="rlnClassNumber").equals(before["particles"])
    p = Project(project)
    labelled_rows = [p.pool.sites[i].row for i in p.labels()]
    classes = after["particles"]["rlnClassNumber"].tolist()
    assert labelled_rows and all(classes[r] == truth[r] for r in labelled_rows)  # oracle classes keep their numbers
    assert set(classes) <= {"1", "2", "3"}  # the others: the teacher's class
    with open(tmp_path / "classified.classes.csv", newline="") as f:
        assert {r["class"] for r in csv.DictReader(f)} == {"1", "2", "3"}
