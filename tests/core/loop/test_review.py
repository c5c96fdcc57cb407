"""Reviewing labels: provenance from the journal, the teacher's opinion, likely mistakes first,
per-class examples, and the time labeling and training took (plain Python, no Qt)."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_ktal.core import loop as al
from napari_ktal.core.loop.review import (
    ReviewRow,
    TeacherView,
    class_examples,
    filter_rows,
    provenance,
    review_rows,
    teacher_opinion,
)
from napari_ktal.core.loop.session import LabelingSession
from napari_ktal.core.evaluation.summary import IDLE_CAP, cycle_summary, labeling_times

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_provenance_follows_corrections_renames_and_unsets(project):
    project.label(0, "class_00", cycle=0)
    project.label(1, "class_01", cycle=0)
    project.label(0, "class_02", cycle=1, was="class_00")  # a correction
    project.unlabel(1, by="user", cycle=1, was="class_01")
    project.label(2, "class_01", by="import", cycle=1)
    project.rename_class("class_01", "ribosome")
    prov = provenance(project)
    assert set(prov) == {0, 2}
    assert (prov[0].label, prov[0].cycle, prov[0].was, prov[0].n_changes) == ("class_02", 1, "class_00", 2)
    assert (prov[2].label, prov[2].by) == ("ribosome", "import")
    assert prov[0].t is not None


def _view(classes, probs: dict[int, list[float]]) -> TeacherView:
    idx = np.array(sorted(probs))
    return TeacherView(3, classes, idx, np.array([probs[i] for i in idx], np.float32))


def test_likely_mistakes_come_first_and_filters(project):
    classes = project.classes
    labels = {0: "class_00", 1: "class_01", 2: "class_02", 3: "class_00", 4: "class_01"}
    project.label_many(labels, cycle=0)
    teacher = _view(classes, {0: [0.9, 0.05, 0.05],  # agrees
                              1: [0.7, 0.2, 0.1],  # disagrees, p(label) 0.2
                              2: [0.1, 0.85, 0.05],  # disagrees, p(label) 0.05: most likely a mistake
                              3: [0.6, 0.3, 0.1]})  # agrees; 4: no opinion
    rows = review_rows(project, labels, teacher)
    assert [r.index for r in rows] == [2, 1, 3, 0, 4]
    assert rows[0].disagrees and rows[0].predicted == "class_01" and rows[0].confidence == pytest.approx(0.85)
    assert rows[0].p_label == pytest.approx(0.05) and rows[0].cycle == 0 and rows[0].by == "user"
    assert math.isnan(rows[-1].p_label) and not rows[-1].disagrees
    assert [r.index for r in filter_rows(rows, disagree_only=True)] == [2, 1]
    assert [r.index for r in filter_rows(rows, "class_00")] == [3, 0]
    assert review_rows(project, {}, teacher) == []
    assert isinstance(review_rows(project)[0], ReviewRow)  # labels from the journal, no teacher


def test_examples_are_the_labeled_volumes_the_teacher_is_surest_of(project):
    classes = project.classes
    labels = {0: "class_00", 1: "class_00", 2: "class_00", 3: "class_01"}
    teacher = _view(classes, {0: [0.5, 0.4, 0.1], 1: [0.9, 0.05, 0.05], 2: [0.7, 0.2, 0.1], 3: [0.1, 0.8, 0.1]})
    ex = class_examples(labels, teacher, classes, per_class=2)
    assert ex == {"class_00": [1, 2], "class_01": [3], "class_02": []}
    assert class_examples(labels, None, classes, per_class=2)["class_00"] == [0, 1]


def test_the_teacher_opinion_after_a_cycle_and_the_next_training_set_uses_corrections(project, sim_truth,
                                                                                     tiny_recipe):
    assert teacher_opinion(project, [0, 1], torch.device("cpu")) is None  # nothing trained yet
    s = LabelingSession(project)
    for q in s.batch:
        s.assign(sim_truth[q.key])
    al.train_cycle(project, tiny_recipe, torch.device("cpu"), seed=0)
    s.reload()
    view = teacher_opinion(project, list(s.labels), torch.device("cpu"))
    assert view.cycle == 0 and view.classes == project.classes
    assert view.probabilities.shape == (len(s.labels), 3)
    assert np.allclose(view.probabilities.sum(1), 1, atol=1e-5)
    i = next(iter(s.labels))
    assert view.guess(i)[0] in project.classes and i in view
    # correct a label in review: the journal says so, and the next cycle trains on the correction
    wrong = next(c for c in project.classes if c != s.label_of(i))
    s.relabel(i, wrong)
    rows = review_rows(project, s.labels, view)
    row = next(r for r in rows if r.index == i)
    assert row.label == wrong and row.was is not None and row.cycle == 1
    idx, y, _ = project.labeled_arrays()
    assert project.classes[y[list(idx).index(i)]] == wrong


def test_labeling_time_from_the_journal_caps_pauses(project, monkeypatch):
    import napari_ktal.core.project.journal as journal

    batch = al.initial_query(project, project.recipe())
    start = project.paths.query(0).stat().st_mtime
    assert len(batch) == 3
    clock = iter([start + 10, start + 15, start + 15 + 3600, start + 3700])  # an hour's break before the 3rd
    monkeypatch.setattr(journal, "time", SimpleNamespace(time=lambda: next(clock)))
    for q in batch:
        project.label(q.index, "class_00", cycle=0)
    project.label(batch[0].index, "class_01", by="import", cycle=0)  # not the expert's time
    seconds = labeling_times(project, {0: {q.index for q in batch}})[0]
    assert seconds == pytest.approx(10 + 5 + IDLE_CAP)
    rows = cycle_summary(project)
    assert rows[0].labeling_seconds == pytest.approx(seconds) and math.isnan(rows[0].train_seconds)
    assert math.isnan(rows[0].test_balanced_accuracy)  # history.csv without the column: read as missing


def test_cycle_summary_reads_training_time_and_balanced_accuracy_when_present(project, sim_truth, tiny_recipe):
    batch = al.initial_query(project, tiny_recipe)
    project.label_many({q.index: sim_truth[q.key] for q in batch}, cycle=0)
    report = al.train_cycle(project, tiny_recipe, torch.device("cpu"), seed=0)
    row = report.history_row() | {"test_balanced_accuracy": 0.625}
    project.record_cycle(row)  # a history.csv written by a napari-ktal that has the column
    from napari_ktal.core.project import history

    path = project.paths.history
    text = path.read_text().splitlines()
    text[0] += ",test_balanced_accuracy"
    text[1] += ",0.625"
    path.write_text("\n".join(text) + "\n")
    rows = cycle_summary(project)
    assert rows[0].train_seconds == pytest.approx(report.train_seconds, rel=1e-4)
    assert rows[0].test_balanced_accuracy == 0.625
    assert history.read_history(path)[0]["test_balanced_accuracy"] == "0.625"
