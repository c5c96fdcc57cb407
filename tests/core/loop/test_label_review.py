"""Judging a project's labels out of sample: planted mistakes first, stored, known stale when labels
change; export's confidences calibrated with the stored temperature."""

import csv

import numpy as np
import pytest
import torch
from easy_volumes import CLASSES, easy_recipe, write_stack

from napari_ktal.core import loop as al
from napari_ktal.core.errors import KtalError
from napari_ktal.core.loop.label_review import load_calibration, load_review, review_blocker, review_labels
from napari_ktal.core.loop.review import filter_rows, review_rows
from napari_ktal.core.project import Project
from napari_ktal.core.trust import Calibration

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")
FLIPPED = (3, 17, 30, 41)


def easy_project(root, n: int = 48, flipped=FLIPPED, recipe=None) -> tuple[Project, np.ndarray]:
    """A project of ``n`` easy volumes (an MRC stack in ``root/data``), every one labeled, the ones
    in ``flipped`` wrongly (class + 2), and cycle 0 trained on those labels. Returns it and the truth."""
    recipe = recipe or easy_recipe()
    truth = write_stack(root / "data" / "easy.mrcs", n)
    project = Project.create(root / "project", root / "data" / "easy.mrcs", recipe, CLASSES)
    given = truth.copy()
    given[list(flipped)] = (truth[list(flipped)] + 2) % 4
    project.label_many({i: CLASSES[k] for i, k in enumerate(given)}, cycle=0)
    al.train_cycle(project, recipe, CPU, seed=0, select=False)
    return project, truth


def test_planted_mistakes_come_first_and_the_review_is_stored(tmp_path):
    project, truth = easy_project(tmp_path)
    review = review_labels(project, CPU, folds=4, seed=1)
    rows = review.rows(project.pool.keys)
    assert len(rows) == 48 and review.crossfit.n_folds == 4 and review.cycle == 0
    top = {r.index for r in rows[: 2 * len(FLIPPED)]}
    assert len(top & set(FLIPPED)) >= 3, [(r.index, round(r.score, 2)) for r in rows[:8]]
    for r in rows:
        assert 0 <= r.score <= 1 and 0 <= r.p_given <= 1 and r.key == project.pool.keys[r.index]
    assert [r.score for r in rows if r.suspect] == sorted((r.score for r in rows if r.suspect), reverse=True)
    planted = [r for r in rows if r.index in FLIPPED]
    assert np.mean([r.suggested == CLASSES[truth[r.index]] for r in planted]) >= 0.75

    stored = load_review(project)
    assert stored is not None and stored.rows(project.pool.keys) == rows and stored.classes == CLASSES
    assert stored.is_current(project.labels())
    table = review_rows(project, judged=stored)  # the review tab's rows: in the out-of-sample order
    assert [r.index for r in table] == [r.index for r in rows] and all(r.judged for r in table)
    assert [r.p_out for r in table] == [r.p_given for r in rows]
    assert {r.index for r in filter_rows(table, disagree_only=True)} == {r.index for r in rows if r.suspect}
    cal = load_calibration(project)
    assert cal == review.calibration and cal.n == 48 and cal.temperature > 0
    # a correction makes the stored review stale
    project.label(FLIPPED[0], CLASSES[truth[FLIPPED[0]]], was=CLASSES[(truth[FLIPPED[0]] + 2) % 4])
    assert not load_review(project).is_current(project.labels())


def test_what_cannot_be_judged_says_why(project, sim_truth):
    assert "no trained cycle" in review_blocker(project)
    with pytest.raises(KtalError, match="no trained cycle"):
        review_labels(project, CPU)
    batch = al.initial_query(project, project.recipe(), seed=0)
    project.label_many({q.index: sim_truth[q.key] for q in batch[:3]}, cycle=0)
    al.train_cycle(project, project.recipe(), CPU, seed=0, select=False)
    assert "only 3 volume(s) labeled" in review_blocker(project)
    others = [i for i in range(len(project.pool)) if i not in {q.index for q in batch}]
    project.label_many({i: project.classes[0] for i in [q.index for q in batch] + others[:2]}, cycle=1)
    assert "at least 2 classes" in review_blocker(project)  # 5 labels, one class
    project.label_many({i: project.classes[1] for i in others[2:4]}, cycle=1)
    assert review_blocker(project) is None


def test_export_and_predict_confidences_use_the_stored_temperature(tmp_path):
    project, _ = easy_project(tmp_path, n=24, flipped=())
    raw = al.write_predictions(project, tmp_path / "raw.csv", CPU)
    assert raw.temperature is None
    raw_conf = _confidences(tmp_path / "raw.csv")
    # an overconfident teacher (T > 1 fitted): calibrated confidences are lower, predictions the same
    from napari_ktal.core.loop.label_review import CALIBRATION_FILE

    (project.paths.review).mkdir()
    (project.paths.review / CALIBRATION_FILE).write_text(
        '{"temperature": 4.0, "ece_before": 0.2, "ece_after": 0.05, "n": 24, "cycle": 0}')
    assert load_calibration(project) == Calibration(4.0, 0.2, 0.05, 24)
    assert al.write_predictions(project, tmp_path / "raw2.csv", CPU).temperature is None  # asked for, never by default
    cal = al.write_predictions(project, tmp_path / "cal.csv", CPU, calibrated=True)
    assert cal.temperature == 4.0
    cal_conf = _confidences(tmp_path / "cal.csv")
    assert _column(tmp_path / "cal.csv", "predicted") == _column(tmp_path / "raw.csv", "predicted")
    assert np.all(cal_conf <= raw_conf + 1e-4) and np.mean(cal_conf) < np.mean(raw_conf) - 0.05
    # a threshold on calibrated confidence keeps fewer volumes than on overconfident ones
    assert (cal_conf >= 0.9).sum() < (raw_conf >= 0.9).sum()
    exported = al.export_labels(project, tmp_path / "labels.csv", fmt="csv", device=CPU, calibrated=True)
    assert exported.temperature == 4.0


def _column(path, name):
    with open(path, newline="") as f:
        return [row[name] for row in csv.DictReader(f)]


def _confidences(path) -> np.ndarray:
    return np.array([float(v) for v in _column(path, "confidence")])


@pytest.mark.parametrize("agree, weak", [(18, False), (10, True)])
def test_the_review_says_how_often_its_judges_agree_and_when_they_are_too_weak(agree, weak):
    """Out of 20 judged labels (one more not judged), ``agree`` predicted as labeled: the sentence both
    shells print, with its Wilson interval, warns when fewer than 70% agree."""
    from napari_ktal.core.loop.label_review import LabelReview
    from napari_ktal.core.trust import CrossFit

    labels = np.arange(21) % 2
    pred = labels.copy()
    pred[agree:20] = 1 - pred[agree:20]
    logits = np.eye(2, dtype=np.float32)[pred] * 4
    probs = torch.from_numpy(logits).softmax(1).numpy()
    judged = np.arange(21) < 20
    cf = CrossFit(np.arange(21), labels, logits, probs, np.arange(21) % 2, 2, judged, 1.0)
    text = LabelReview(0, CLASSES[:2], cf, Calibration(1.0, 0.0, 0.0, 21), 0).agreement_text()
    assert text.startswith(f"the out-of-sample teachers agree with {5 * agree}% [") and "of 20 labels" in text
    assert ("weak judges" in text) == weak
