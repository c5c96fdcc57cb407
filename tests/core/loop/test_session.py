"""The labeling session (plain Python: no Qt, no viewer)."""

import math

import pytest
import torch

from napari_ktal.core import loop as al
from napari_ktal.core.errors import KtalError
from napari_ktal.core.loop.session import SKIP_BY, LabelingSession, Phase
from napari_ktal.core.project import Project

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_first_open_draws_the_cli_batch(project, tmp_path, sim_train_dir, tiny_recipe):
    s = LabelingSession(project)
    assert s.cycle == 0 and s.position == 0 and s.phase is Phase.LABELING
    assert project.query_cycles() == [0]  # written, as `ktal-cryo train` would
    twin = Project.create(tmp_path / "twin", sim_train_dir, tiny_recipe)
    cli_batch = al.initial_query(twin, tiny_recipe, seed=0)  # what `ktal-cryo train` (seed 0) draws
    assert [q.index for q in s.batch] == [q.index for q in cli_batch]


def test_assign_journals_at_once_and_moves_to_the_next_open_volume(project):
    s = LabelingSession(project)
    a, b, c = s.batch
    s.go_to(1)
    s.assign("class_01")
    assert Project(project.root).labels() == {b.index: "class_01"}  # on disk already
    assert s.position == 2
    s.assign_number(3)
    assert s.label_of(c.index) == "class_02"
    assert s.position == 0  # wrapped around to the one still open
    s.assign("class_00")
    assert s.n_open == 0 and s.phase is Phase.READY
    assert s.position == 0  # nothing open: stays put
    records = project.journal.records()
    assert [(r["index"], r["label"], r["cycle"]) for r in records] == [
        (b.index, "class_01", 0), (c.index, "class_02", 0), (a.index, "class_00", 0)]


def test_undo_restores_what_was_there_and_goes_back(project):
    s = LabelingSession(project)
    first = s.item
    s.assign("class_00")
    s.go_to(0)
    s.assign("class_02")  # relabel
    assert s.label_of(first.index) == "class_02"
    (change,) = s.undo()
    assert (change.before, change.after) == ("class_00", "class_02")
    assert s.label_of(first.index) == "class_00" and s.position == 0
    (change,) = s.undo()
    assert (change.before, change.after) == (None, "class_00")
    assert s.is_open(first.index) and project.labels() == {}
    assert s.undo() == () and not s.can_undo


def test_skips_survive_a_restart_and_undo(project):
    s = LabelingSession(project)
    first = s.item
    s.skip()
    assert s.is_skipped(first.index) and s.position == 1
    assert project.journal.records()[-1]["by"] == SKIP_BY
    (change,) = s.undo()
    assert change.after_skipped and change.after is None
    assert s.is_open(first.index)
    s.skip()
    s.assign("class_01")
    s.assign("class_02")
    assert s.phase is Phase.READY  # a skipped volume does not hold up the batch
    again = LabelingSession(Project(project.root))
    assert again.is_skipped(first.index) and again.n_open == 0
    again.go_to(0)
    again.assign("class_00")  # a skipped volume can still be labeled later
    assert not again.is_skipped(first.index)


def test_resume_derives_batch_position_and_labels_from_the_folder(project, sim_truth, tiny_recipe):
    s = LabelingSession(project)
    for q in s.batch:
        s.assign(sim_truth[q.key])
    al.train_cycle(project, tiny_recipe, torch.device("cpu"), seed=0)
    s.reload()
    assert s.cycle == 1 and s.phase is Phase.LABELING and s.can_undo  # undo reaches across batches
    s.go_to(1)
    s.assign(sim_truth[s.batch[1].key])
    s.go_to(1)  # wander

    resumed = LabelingSession(Project(project.root))
    assert (resumed.cycle, resumed.batch, resumed.position) == (1, s.batch, 0)
    assert resumed.labels == s.labels
    scored = [q.score for q in s.batch if not math.isnan(q.score)]
    assert resumed.mean_score() == pytest.approx(sum(scored) / len(scored))


def test_phase_done_when_the_pool_is_used_up(tmp_path, sim_train_dir, sim_truth, sim_classes, tiny_recipe):
    recipe = tiny_recipe.replace(active={"initial_fraction": 0.9, "step_fraction": 0.1, "final_fraction": 1.0})
    project = Project.create(tmp_path / "p", sim_train_dir, recipe, sim_classes)
    s = LabelingSession(project)
    for _ in range(2):
        for q in s.batch:
            if s.is_open(q.index):
                s.go_to(s.batch.index(q))
                s.assign(sim_truth[q.key])
        al.train_cycle(project, recipe, torch.device("cpu"), seed=0)
        s.reload()
    assert len(s.labels) == len(project.pool)
    assert s.phase is Phase.DONE


def test_classes_rename_remove_and_blockers(project):
    s = LabelingSession(project)
    assert s.training_blocker() == "label at least 2 volumes"
    s.assign("class_00")
    s.assign("class_01")
    assert s.training_blocker() is None
    assert s.add_junk_class() == "junk"
    with pytest.raises(KtalError, match="junk"):
        s.add_junk_class()
    s.rename_class("class_00", " ribosome ")
    assert s.label_of(s.batch[0].index) == "ribosome" and "ribosome" in s.classes
    s.go_to(0)
    s.assign("junk")
    (change,) = s.undo()
    assert (change.before, change.after) == ("ribosome", "junk")
    with pytest.raises(KtalError, match="labels 1 volumes"):
        s.remove_class("ribosome")
    s.remove_class("junk")
    with pytest.raises(KtalError, match="no class on key 9"):
        s.assign_number(9)
    with pytest.raises(KtalError, match="unknown class"):
        s.assign("nonsense")
    assert [c.after for c in s.undo()] == ["class_01"]
    assert [c.after for c in s.undo()] == ["ribosome"]  # what the step gave, renamed with its class


# -- more than nine classes, corrections, bulk labels, undo across batches ------------------------
def test_class_keys_reach_past_nine_and_skip_the_action_keys():
    from napari_ktal.core.loop.session import (
        CLASS_KEYS,
        class_for_key,
        class_of_key,
        key_of_class,
        keys_of_classes,
    )

    assert [key_of_class(k) for k in range(11)] == list("1234567890Q")
    assert class_of_key("0") == 9 and class_of_key("q") == 10 and class_of_key("N") is None
    assert not set("NPSUC") & set(CLASS_KEYS) and len(set(CLASS_KEYS)) == len(CLASS_KEYS) == 31
    assert key_of_class(32) is None and class_of_key("12") is None
    assert [keys_of_classes(n) for n in (0, 1, 2, 3, 9, 10, 12)] == [
        "", "1", "1, 2", "1-3", "1-9", "1-9, 0", "1-9, 0, Q W"]
    assert class_for_key(["a", "b"], "2") == "b"
    with pytest.raises(KtalError, match=r"^no class on key Q: this project has 2 classes \(keys 1, 2\)$"):
        class_for_key(["a", "b"], "q")
    with pytest.raises(KtalError, match="no classes yet"):
        class_for_key([], "1")


def test_a_tenth_and_an_eleventh_class_by_key(project):
    for k in range(3, 11):
        project.add_class(f"extra_{k}")
    s = LabelingSession(project)
    first, second = s.batch[0], s.batch[1]
    s.assign_key("0")
    s.assign_key("q")
    assert s.label_of(first.index) == s.classes[9] == "extra_9"
    assert s.label_of(second.index) == s.classes[10] == "extra_10"
    with pytest.raises(KtalError, match=r"no class on key W: this project has 11 classes \(keys 1-9, 0, Q\)"):
        s.assign_key("W")  # the 12th key: there are 11 classes


def test_relabel_any_volume_is_a_new_record_that_says_what_it_replaced(project, sim_truth, tiny_recipe):
    s = LabelingSession(project)
    for q in s.batch:
        s.assign(sim_truth[q.key])
    al.train_cycle(project, tiny_recipe, torch.device("cpu"), seed=0)
    s.reload()
    old = project.read_query(0)[0]
    wrong = next(c for c in s.classes if c != sim_truth[old.key])
    n_before = len(project.journal.records())
    s.relabel(old.index, wrong)  # a label of cycle 0's batch, corrected while batch 1 is on screen
    rec = project.journal.records()[-1]
    assert len(project.journal.records()) == n_before + 1  # appended, nothing rewritten
    assert (rec["op"], rec["index"], rec["label"], rec["was"], rec["cycle"], rec["by"]) == (
        "set", old.index, wrong, sim_truth[old.key], 1, "user")
    # the next training set uses the corrected label
    idx, y, _ = Project(project.root).labeled_arrays()
    assert s.classes[y[list(idx).index(old.index)]] == wrong
    assert s.position == 0 and s.visiting is None  # a correction from review does not move the batch
    s.undo()
    assert project.labels()[old.index] == sim_truth[old.key]
    assert project.journal.records()[-1]["was"] == wrong


def test_assign_many_is_one_undo_step(project):
    s = LabelingSession(project)
    a, b, c = s.batch
    s.assign_many([a.index, c.index], "class_02")
    assert s.labels == {a.index: "class_02", c.index: "class_02"}
    assert s.position == 1  # the current volume was labeled: on to the next open one
    s.go_to(1)
    s.assign("class_00")
    s.undo()
    step = s.undo()  # both bulk labels at once
    assert [(c.index, c.before, c.after) for c in step] == [(a.index, None, "class_02"), (c.index, None, "class_02")]
    assert s.labels == {} and s.position == 0 and not s.can_undo
    assert [r["op"] for r in project.journal.records()] == ["set", "set", "set", "unset", "unset", "unset"]


def test_undo_reaches_across_a_batch_boundary(project, sim_truth, tiny_recipe):
    s = LabelingSession(project)
    for q in s.batch[:-1]:
        s.assign(sim_truth[q.key])
    last = s.item
    wrong = next(c for c in s.classes if c != sim_truth[last.key])
    s.assign(wrong)  # the batch's last label, a mistake: the cycle trains on it anyway
    al.train_cycle(project, tiny_recipe, torch.device("cpu"), seed=0)
    s.reload()
    assert s.cycle == 1 and s.can_undo
    (change,) = s.undo()
    assert change.index == last.index and change.cycle == 0 and change.after == wrong
    assert s.label_of(last.index) is None and project.labels().get(last.index) is None
    assert s.visiting == last.index and s.current_index == last.index  # shown, though not in this batch
    s.assign(sim_truth[last.key])  # a class key now labels the visited volume
    assert project.labels()[last.index] == sim_truth[last.key] and s.visiting == last.index
    s.next()  # N: back to the batch, where it was
    assert s.visiting is None and s.position == 0


def test_unlabel_and_visit_any_volume(project):
    s = LabelingSession(project)
    a = s.batch[0]
    s.assign("class_01")
    outside = next(i for i in range(len(project.pool)) if s.position_of(i) is None)
    s.visit(outside)
    assert s.current_index == outside and s.item.index == s.batch[s.position].index
    s.assign("class_00")
    assert s.label_of(outside) == "class_00" and s.current_index == outside
    assert s.skip() is None and s.visiting is None  # S on a visited volume: back to the batch, no change
    assert s.unlabel(a.index).before == "class_01"
    rec = project.journal.records()[-1]
    assert (rec["op"], rec["by"], rec["was"], rec["cycle"]) == ("unset", "user", "class_01", 0)
    assert s.unlabel(a.index) is None  # nothing to take back
    s.undo()
    assert s.label_of(a.index) == "class_01"
    with pytest.raises(KtalError, match="no volume"):
        s.visit(len(project.pool))
