"""`ktal-cryo` end to end on tiny simulated data, as a user runs it."""

import csv
import subprocess
import sys

import pytest

from napari_ktal.cli import main
from napari_ktal.core.project import HISTORY_COLUMNS, Project

TINY = """
name = "tiny"
[model]
width = 4
stem = "strided"
[train]
epochs = 2
lr_milestones = []
batch_size = 8
eval_batch_size = 64
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    assert main(["simulate", str(out), "--classes", "3", "--per-class", "10", "--test-per-class", "2",
                 "--snr", "1", "--seed", "1"]) == 0
    recipe = out / "tiny.toml"
    recipe.write_text(TINY)
    return out, recipe


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_simulate_writes_train_and_test_sets(data):
    out, _ = data
    assert len(_rows(out / "train" / "labels.csv")) == 30
    assert len(_rows(out / "test" / "labels.csv")) == 6


def test_simulated_run_with_oracle(data, tmp_path, capsys):
    out, recipe = data
    proj = tmp_path / "proj"
    args = ["train", str(out / "train"), "--project", str(proj), "--recipe", str(recipe),
            "--oracle", str(out / "train" / "labels.csv"), "--test", str(out / "test" / "labels.csv"),
            "--device", "cpu", "--seed", "3"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "test acc" in printed  # the per-cycle table
    hist = _rows(proj / "history.csv")
    assert list(hist[0]) == HISTORY_COLUMNS
    # 10% -> 40% of 30 volumes by 5%, halves rounded up: 3, 4.5, 6, 7.5, 9, 10.5, 12
    p = Project(proj)
    assert [int(r["n_labeled"]) for r in hist] == [3, 5, 6, 8, 9, 11, 12]
    assert all(0.0 <= float(r["test_accuracy"]) <= 1.0 for r in hist)
    # a batch of 1 is all audit slice (no strategy score); the others have one
    uncertainty = [r["mean_uncertainty"] for r in hist]
    assert all(float(u) >= 0 for u in uncertainty[:-1] if u) and uncertainty[-1] == "" and any(uncertainty)
    assert sum(int(r["audit_held_out"]) for r in hist) == len(Project(proj).audits()) > 0
    assert (proj / "learning_curve.png").stat().st_size > 1000
    assert p.checkpoint_cycles() == list(range(7))
    labels = p.labels()
    assert len(labels) == 12
    oracle = {r["path"]: r["label"] for r in _rows(out / "train" / "labels.csv")}
    assert all(oracle[p.pool.keys[i]] == lab for i, lab in labels.items())  # answers come from the oracle
    # every queried batch of cycle c >= 1 was selected from unlabeled volumes only, without repeats
    seen = set()
    for c in p.query_cycles():
        batch = [q.index for q in p.read_query(c)]
        assert not (set(batch) & seen)
        seen |= set(batch)
    # running again resumes: nothing left to do, history untouched
    assert main(args) == 0
    assert "done already" in capsys.readouterr().out
    assert len(_rows(proj / "history.csv")) == 7


def test_an_oracle_with_slips_and_the_stop_rule_are_reported(data, tmp_path, capsys):
    """``--flip-answers``: the oracle's wrong answers are those oracle_flips.csv lists; the table shows the
    audit estimate and the end of the run says where the stop rule first suggested stopping."""
    out, recipe = data
    proj = tmp_path / "proj"
    base = ["train", str(out / "train"), "--project", str(proj), "--recipe", str(recipe), "--device", "cpu"]
    assert main(base + ["--flip-answers", "0.1"]) == 2  # no oracle: refused before it trains
    assert "need an oracle" in capsys.readouterr().err and not (proj / "oracle_flips.csv").exists()
    assert main(base + ["--oracle", str(out / "train" / "labels.csv"), "--flip-answers", "0.1", "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert "est. " in printed and "stop rule: " in printed.splitlines()[-3]
    flips = _rows(proj / "oracle_flips.csv")
    assert len(flips) == 3  # 10% of 30
    p = Project(proj)
    oracle = {r["path"]: r["label"] for r in _rows(out / "train" / "labels.csv")}
    flipped = {int(f["index"]) for f in flips}
    assert all(oracle[f["key"]] == f["true"] != f["given"] for f in flips)
    for i, label in p.labels().items():  # every answer the oracle gave is right but the flipped ones
        assert (label != oracle[p.pool.keys[i]]) == (i in flipped)


def test_interactive_cycle_import_labels_and_predict(data, tmp_path, capsys):
    out, recipe = data
    proj = tmp_path / "proj"
    train = ["train", str(out / "train"), "--project", str(proj), "--recipe", str(recipe), "--device", "cpu",
             "--classes", "class_00,class_01,class_02,junk"]
    assert main(train) == 0  # no labels yet: writes the initial batch
    assert "no labels yet" in capsys.readouterr().out
    p = Project(proj)
    batch = p.read_query(0)
    assert len(batch) == 3
    # the biologist labels the batch (here from the simulator's truth) and imports it
    truth = {r["path"]: r["label"] for r in _rows(out / "train" / "labels.csv")}
    answers = out / "train" / "answers_cycle0.csv"  # paths in a labels file stay inside its folder
    with open(answers, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        for q in batch:
            w.writerow([q.key, truth[q.key]])
    assert main(["import-labels", str(answers), "--project", str(proj)]) == 0
    assert main(train[:1] + train[2:]) == 0  # DATA is optional once the project exists
    printed = capsys.readouterr().out
    assert "next batch to label" in printed
    nxt = Project(proj).read_query(1)
    assert len(nxt) == 2 and all(q.index not in {b.index for b in batch} for q in nxt)
    assert all(q.predicted in p.classes and 0 < q.confidence <= 1 for q in nxt)
    assert main(["predict", "--project", str(proj), "--device", "cpu"]) == 0
    preds = _rows(proj / "predictions.csv")
    assert len(preds) == 30 and sum(1 for r in preds if r["label"]) == 3


@pytest.mark.parametrize("make_bad,expect", [
    (lambda d: None, "no volume files"),
    (lambda d: (d / "x.mrc").write_bytes(b"this is not an MRC file" * 100), "x.mrc"),
])
def test_bad_data_is_one_line_and_exit_2(tmp_path, capsys, make_bad, expect):
    bad = tmp_path / "bad"
    bad.mkdir()
    make_bad(bad)
    assert main(["train", str(bad), "--project", str(tmp_path / "p"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ktal-cryo: error:") and expect in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "p").exists()  # nothing half-created


def test_unknown_test_label_and_bad_recipe(data, tmp_path, capsys):
    out, _ = data
    bad_recipe = tmp_path / "r.toml"
    bad_recipe.write_text("[train]\nepoch = 2\n")
    assert main(["train", str(out / "train"), "--project", str(tmp_path / "p"), "--recipe", str(bad_recipe)]) == 2
    assert "did you mean 'epochs'" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", ["simulate", "train", "import-labels", "predict", "review"])
def test_help_for_each_command(cmd):
    res = subprocess.run([sys.executable, "-m", "napari_ktal.cli", cmd, "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "usage: ktal-cryo" in res.stdout
