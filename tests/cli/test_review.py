"""``ktal-cryo review`` end to end: a project made, labeled and trained through the CLI, its labels
judged out of sample into a labels CSV (path,label,suggested,score, most suspect first) that the
labels reader reads, calibrated confidences in predict; and the one-line errors."""

import csv

import numpy as np
from easy_volumes import CLASSES, write_stack

from napari_ktal.cli import main
from napari_ktal.core.data.labels_csv import read_label_rows
from napari_ktal.core.loop.label_review import load_calibration, load_review
from napari_ktal.core.project import Project

N = 24
FLIPPED = (5, 14)
RECIPE = """
name = "easy"
[model]
width = 4
[train]
epochs = 6
lr = 0.1
min_steps = 0
lr_milestones = []
batch_size = 8
"""


def _stack(folder):
    """``folder/easy.mrcs``: N easy volumes of 16^3 (tests/easy_volumes.py), and ``folder/labels.csv``
    labeling them, FLIPPED wrongly."""
    y = write_stack(folder / "easy.mrcs", N)
    given = y.copy()
    given[list(FLIPPED)] = (y[list(FLIPPED)] + 2) % 4
    with open(folder / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows([f"{i + 1}@easy.mrcs", CLASSES[k]] for i, k in enumerate(given))
    return folder / "easy.mrcs", folder / "labels.csv"


def _fail(argv, capsys, words) -> None:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err, (code, err)
    assert len(err.splitlines()) == 1 and err.startswith("ktal-cryo: error:"), err
    for word in words:
        assert word in err, err


def test_review_writes_suspects_as_a_labels_csv_and_calibrates_predict(tmp_path, capsys, one_torch_thread):
    stack, labels = _stack(tmp_path / "data")
    recipe = tmp_path / "easy.toml"
    recipe.write_text(RECIPE)
    proj = tmp_path / "p"
    base = ["--project", proj, "--device", "cpu"]
    assert main([str(a) for a in ["train", stack, *base, "--recipe", recipe, "--classes", ",".join(CLASSES)]]) == 0
    _fail(["review", *base, "--out", tmp_path / "s.csv"], capsys, ["no trained cycle"])
    assert main([str(a) for a in ["import-labels", labels, "--project", proj]]) == 0
    assert main([str(a) for a in ["train", *base]]) == 0
    _fail(["review", *base, "--out", tmp_path / "s.csv", "--folds", "1"], capsys, ["--folds 1", "at least 2"])
    _fail(["review", *base, "--out", tmp_path / "s.csv", "--repeats", "0"], capsys, ["--repeats 0", "at least 1"])

    capsys.readouterr()
    out = tmp_path / "data" / "suspects.csv"  # beside the data: its paths name the volumes
    assert main([str(a) for a in ["review", *base, "--out", out, "--folds", "3", "--repeats", "2"]]) == 0
    said = capsys.readouterr().out
    assert "judged 24 labels out of sample (3 folds x 2 repeats" in said and "ECE" in said and "T = " in said
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "label", "suggested", "score"] and len(rows) == N
    project = Project(proj)
    review = load_review(project)
    assert review.crossfit.n_repeats == 2 and review.crossfit.repeat_logits.shape == (2, N, len(CLASSES))
    expected = review.rows(project.pool.keys)
    assert [r["path"] for r in rows] == [r.key for r in expected]  # the review's order: most suspect first
    assert [r["label"] for r in rows] == [r.given for r in expected]
    assert [r["suggested"] for r in rows] == [r.suggested for r in expected]
    scores = [float(r["score"]) for r in rows]
    assert all(0 <= s <= 1 for s in scores) and np.allclose(scores, [r.score for r in expected], atol=5e-4)
    n_flagged = sum(r.suspect for r in expected)
    assert scores[:n_flagged] == sorted(scores[:n_flagged], reverse=True)
    assert scores[n_flagged:] == sorted(scores[n_flagged:], reverse=True)
    read = read_label_rows(out)  # the labels reader takes it: every path names its volume of the stack
    assert [(r.frame, r.label) for r in read] == [(int(r["path"].split("@")[0]), r["label"]) for r in rows]

    assert main([str(a) for a in ["predict", *base]]) == 0
    assert "raw softmax confidences" in capsys.readouterr().out  # calibration is asked for, never by default
    assert main([str(a) for a in ["predict", *base, "--calibrated"]]) == 0
    temperature = load_calibration(project).temperature
    assert f"confidences calibrated, T = {temperature:.3g}" in capsys.readouterr().out


def test_review_of_too_few_labels_says_so(tmp_path, capsys, tiny_recipe_file, one_torch_thread):
    stack, labels = _stack(tmp_path / "data")
    lines = labels.read_text().splitlines()
    labels.write_text("\n".join(lines[:4]) + "\n")  # 3 labels
    proj = tmp_path / "p"
    base = ["--project", proj, "--device", "cpu"]
    recipe = tiny_recipe_file()
    assert main([str(a) for a in ["train", stack, *base, "--recipe", recipe, "--classes", ",".join(CLASSES)]]) == 0
    assert main([str(a) for a in ["import-labels", labels, "--project", proj]]) == 0
    assert main([str(a) for a in ["train", *base]]) == 0
    before = sorted(p.name for p in proj.iterdir())
    _fail(["review", *base, "--out", tmp_path / "s.csv"], capsys, ["only 3 volume(s) labeled", "at least 4"])
    assert sorted(p.name for p in proj.iterdir()) == before and not (tmp_path / "s.csv").exists()
