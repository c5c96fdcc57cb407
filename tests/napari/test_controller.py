"""The dock's logic without Qt or a viewer: a labeling session, auto-training, messages.

The package's serial runner stands in for the Qt task runner: jobs wait until the test runs them,
and cancelled ones never run, by the same delivery rules (a cancelled job's result is dropped).
What the controller tells the view is recorded from its signals.
"""

from __future__ import annotations

import sys

import pytest

from napari_ktal._napari.controller import PROGRESS_INTERVAL, TRAIN, Controller, ProgressThrottle, undo_message
from napari_ktal._napari.runner import SerialRunner
from napari_ktal.core.errors import KtalError
from napari_ktal.core.loop import Phase
from napari_ktal.core.loop.session import Change
from napari_ktal.core.progress import Progress, RunContext
from napari_ktal.core.project import ProjectLocked

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Recorder:
    """Every signal the controller emits, in order: [(name, *args)]."""

    def __init__(self, events):
        self.calls: list[tuple] = []
        events.all.connect(lambda info: self.calls.append((info.signal.name, *info.args)))

    def said(self, name: str) -> list:
        return [c[1:] for c in self.calls if c[0] == name]


class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def ctl(clock):
    runner = SerialRunner()
    controller = Controller(runner, clock=clock)
    controller.device = "cpu"
    yield controller, runner, Recorder(controller.events)
    controller.close_project()


def _label_batch(controller, truth):
    s = controller.session
    while s.phase is Phase.LABELING:
        controller.assign(truth[s.item.key])


def test_a_finished_batch_trains_the_next_cycle_in_the_background(ctl, project, sim_truth):
    controller, runner, hooks = ctl
    s = controller.open_project(project.root)
    assert hooks.said("opened") and runner.running(TRAIN) is None  # (a warm-up job, unless torch is warm)
    _label_batch(controller, sim_truth)
    assert s.phase is Phase.READY and runner.running(TRAIN) is not None and controller.training
    assert ("job_changed", TRAIN, True) in hooks.calls
    assert hooks.said("status")[-1] == ((f"Training cycle 0 with {len(s.labels)} labeled volumes on the CPU. "
                                         "You can keep browsing and relabeling."),)
    runner.run()
    assert s.cycle == 1 and s.phase is Phase.LABELING and not controller.training
    trained = [text for (text,) in hooks.said("status") if text.startswith("Cycle 0 trained on")]
    assert trained
    row = s.project.history()[-1]  # the status line says the cycle's audit estimate, as history has it
    if row.get("estimated_accuracy") not in (None, "", "nan"):
        assert "Accuracy (audit): " in trained[-1]
    assert hooks.said("history_changed") and hooks.said("job_changed")[-1] == (TRAIN, False)


def test_taking_a_label_back_cancels_training_and_it_restarts_when_the_batch_is_done(ctl, project, sim_truth):
    controller, runner, hooks = ctl
    s = controller.open_project(project.root)
    _label_batch(controller, sim_truth)
    first = runner.running(TRAIN)
    controller.undo()
    assert first.stop.is_set() and runner.running(TRAIN) is None and s.phase is Phase.LABELING
    assert "training stopped" in hooks.said("status")[-1][0]
    controller.assign(sim_truth[s.item.key])  # done again while the cancelled job has not finished
    assert runner.running(TRAIN) is None  # it waits for the cancelled one ...
    runner.run()  # ... which ends (never ran) and starts the next; running that one trains cycle 0
    assert runner.running(TRAIN) is not None
    runner.run()
    assert s.cycle == 1


def test_a_label_changed_in_place_while_training_is_kept_for_the_next_cycle(ctl, project, sim_truth):
    controller, runner, hooks = ctl
    s = controller.open_project(project.root)
    _label_batch(controller, sim_truth)
    s.go_to(0)
    other = next(c for c in s.classes if c != s.label_of(s.item.index))
    controller.assign(other)
    assert runner.running(TRAIN) is not None and "counts from the next cycle" in hooks.said("status")[-1][0]


def test_classes_cannot_be_renamed_or_removed_while_a_cycle_trains(ctl, project, sim_truth):
    controller, runner, _ = ctl
    controller.open_project(project.root)
    _label_batch(controller, sim_truth)
    with pytest.raises(KtalError, match="while a cycle trains"):
        controller.rename_class("class_00", "ribosome")
    controller.add_junk_class()  # adding is fine
    runner.run()
    controller.rename_class("class_00", "ribosome")
    assert controller.session.classes[0] == "ribosome"


def test_without_auto_training_the_user_starts_it_and_blockers_are_named(ctl, project, sim_truth):
    controller, runner, hooks = ctl
    controller.auto_train = False
    controller.open_project(project.root)
    _label_batch(controller, sim_truth)
    assert runner.running(TRAIN) is None
    assert controller.start_training() is not None and runner.running(TRAIN) is not None


def test_export_needs_a_trained_cycle_and_a_second_window_is_refused(ctl, project):
    controller, _, _ = ctl
    controller.open_project(project.root)
    with pytest.raises(KtalError, match="no trained models yet"):
        controller.export_predictions(project.root / "p.csv")
    other = Controller(SerialRunner())
    with pytest.raises(ProjectLocked, match="napari"):
        other.open_project(project.root)


def test_progress_is_worded_once_and_a_message_reaches_the_status_line(ctl, project):
    controller, _, hooks = ctl
    controller.on_progress(Progress("train", 3, 10, cycle=2, epoch=2, epochs=5, metrics={"teacher_loss": 0.5}))
    assert hooks.said("progress")[-1] == ("cycle 2: epoch 2/5 · loss 0.500", 13, 50)
    controller.on_progress(Progress("train", 0, 1, cycle=2, epoch=1, epochs=5, message="out of GPU memory"))
    assert hooks.said("status")[-1] == ("out of GPU memory",)


# -- the gallery's thumbnails, the review's teacher, corrections, timing ---------------------------------
def test_thumbnails_and_the_teacher_opinion_are_made_in_the_background(ctl, project, sim_truth):
    from napari_ktal._napari.browser import TEACHER, THUMBNAILS

    controller, runner, hooks = ctl
    s = controller.open_project(project.root)
    b = controller.browser
    assert runner.running(THUMBNAILS) is not None and runner.running(TEACHER) is None  # nothing trained yet
    assert b.thumbnail(s.batch[0].index) is None
    runner.run(THUMBNAILS)
    assert all(b.thumbnail(q.index) is not None for q in s.batch)
    assert sorted(i for (done,) in hooks.said("thumbnails_ready") for i in done) == sorted(q.index for q in s.batch)
    _label_batch(controller, sim_truth)
    runner.run(TRAIN)  # the cycle ends: the new batch's thumbnails, then the teacher's opinion
    assert hooks.said("batch_changed") and s.cycle == 1
    assert runner.running(THUMBNAILS) is not None and runner.running(TEACHER) is None  # the gallery first
    runner.run(THUMBNAILS)
    assert runner.running(TEACHER) is not None
    runner.run()
    assert all(b.thumbnail(q.index) is not None for q in s.batch)
    assert b.teacher is not None and b.teacher.cycle == 0 and hooks.said("teacher_changed")
    rows = b.review_rows()
    assert len(rows) == len(s.labels) and all(r.predicted for r in rows)
    assert sum(len(v) for v in b.examples().values()) == len(s.labels)  # 3 labels, 6 per class at most
    assert b.guess(s.batch[0].index) is not None
    # another kind of thumbnail: made again, the old job's results are not mixed in
    b.set_settings(mode="slice")
    assert b.thumbnail(s.batch[0].index) is None and runner.running(THUMBNAILS) is not None
    runner.run()
    assert b.thumbnail(s.batch[0].index) is not None and b.settings.mode == "slice"


def test_corrections_bulk_labels_visits_and_undo_across_batches(ctl, project, sim_truth):
    controller, runner, hooks = ctl
    s = controller.open_project(project.root)
    a, b, c = s.batch
    controller.assign_to([a.index, b.index], sim_truth[a.key])  # the gallery's selection
    assert s.label_of(b.index) == sim_truth[a.key] and hooks.said("labels_changed")
    controller.assign_to([b.index], sim_truth[b.key])
    controller.go_to(2)
    controller.assign_key(str(s.classes.index(sim_truth[c.key]) + 1))
    assert runner.running(TRAIN) is not None
    runner.run()
    assert s.cycle == 1
    controller.undo()  # reaches back into cycle 0's batch
    assert s.label_of(c.index) is None and s.visiting == c.index
    assert "batch of cycle 0" in hooks.said("status")[-1][0]
    controller.assign(sim_truth[c.key])  # a class key labels the visited volume again
    assert project.labels()[c.index] == sim_truth[c.key]
    controller.next()
    assert s.visiting is None
    wrong = next(k for k in s.classes if k != sim_truth[a.key])
    controller.relabel(a.index, wrong)
    assert project.journal.records()[-1]["was"] == sim_truth[a.key]
    controller.unlabel_many([a.index, b.index])
    assert a.index not in s.labels and b.index not in s.labels
    controller.visit(a.index)
    assert s.current_index == a.index
    controller.assign_key("9")  # no 9th class: nothing is labeled, and the status line says so
    assert a.index not in s.labels
    assert hooks.said("status")[-1] == ("No class on key 9: this project has 3 classes (keys 1-3).",)
    controller.assign_key_to([a.index], "q")  # the gallery's or review's selection: the same
    assert a.index not in s.labels and "No class on key Q" in hooks.said("status")[-1][0]


def test_the_cycle_status_says_how_long_labeling_and_training_took(ctl, project, sim_truth):
    controller, runner, hooks = ctl
    controller.open_project(project.root)
    _label_batch(controller, sim_truth)
    runner.run()
    text = hooks.said("status")[-1][0]
    assert "labeling took" in text and "training" in text and " s" in text


def test_training_runs_in_a_thread_of_its_own_with_a_lower_priority(monkeypatch, tmp_path):
    import os
    import threading

    from napari_ktal._napari import background
    from napari_ktal._napari import controller as ctl_module

    seen = {}

    def fake_cycle(root, device, seed, run):
        seen["thread"] = threading.current_thread().name
        tid = threading.get_native_id()
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, tid) if hasattr(os, "getpriority") else None
        return "report"

    monkeypatch.setattr(ctl_module.commands, "train_next_cycle", fake_cycle)
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) if hasattr(os, "getpriority") else None
    assert ctl_module.train_job(tmp_path, "cpu", 0, None) == "report"
    assert seen["thread"] == "napari-ktal training"
    if sys.platform.startswith("linux"):
        assert seen["nice"] == min(19, before + background.TRAIN_NICE)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # ours is untouched

    def failing(*args, **kwargs):
        raise KtalError("out of labels")

    monkeypatch.setattr(ctl_module.commands, "train_next_cycle", failing)
    with pytest.raises(KtalError, match="out of labels"):
        ctl_module.train_job(tmp_path, "cpu", 0, None)


def test_progress_updates_are_throttled_but_epochs_and_the_end_get_through(ctl, clock):
    controller, _, hooks = ctl
    for step in range(1, 51):  # 50 batches within one throttle interval
        controller.on_progress(Progress("train", step, 50, cycle=0, epoch=1, epochs=2, elapsed=0.01 * step))
        clock.now += PROGRESS_INTERVAL / 100
    assert len(hooks.said("progress")) == 1  # the first, then nothing for PROGRESS_INTERVAL
    controller.on_progress(Progress("train", 50, 50, cycle=0, epoch=1, epochs=2, metrics={"teacher_loss": 0.5},
                                    elapsed=0.5))  # the epoch's end, with its losses: shown
    assert hooks.said("progress")[-1] == ("cycle 0: epoch 1/2 · loss 0.500 · ~0 s left", 50, 100)
    controller.on_progress(Progress("train", 1, 50, cycle=0, epoch=2, epochs=2, elapsed=0.6))
    assert hooks.said("progress")[-1][1] == 51  # a new epoch is shown at once
    controller.on_progress(Progress("train", 2, 50, cycle=0, epoch=2, epochs=2, elapsed=0.61))
    assert hooks.said("progress")[-1][1] == 51  # too soon after it
    clock.now += PROGRESS_INTERVAL
    controller.on_progress(Progress("train", 3, 50, cycle=0, epoch=2, epochs=2, elapsed=0.62))
    assert hooks.said("progress")[-1][1] == 53  # an interval later: shown


def test_the_throttle_lets_one_event_through_per_interval_of_its_clock():
    now = [0.0]
    throttle = ProgressThrottle(0.25, clock=lambda: now[0])
    step = [Progress("train", k, 100, epoch=1, epochs=1) for k in range(1, 100)]
    shown = []
    for k, event in enumerate(step):
        now[0] = k * 0.1
        if throttle.due(event):
            shown.append(event.done)
    assert shown == list(range(1, 100, 3))  # each third tick of 0.1 s is the first 0.25 s after the last shown
    throttle.reset()
    assert throttle.due(step[0])  # after a reset (training stopped) the next event is shown at once


def test_undoing_a_bulk_assignment_says_what_it_took_back(ctl, project):
    """The issue: undoing 4 labels given at once named one volume ("Undone: sub_000069.mrc ... unlabeled again")."""
    controller, runner, hooks = ctl
    s = controller.open_project(project.root)
    a, b, c = s.batch
    keys = s.project.pool.keys
    controller.assign_to([b.index], s.classes[0])
    controller.assign_to([a.index, b.index, c.index], s.classes[2])  # the gallery's selection, one undo step
    assert runner.running(TRAIN) is not None  # the batch is done: it trains
    controller.undo()
    (said,) = hooks.said("status")[-1]
    assert said.startswith(
        f"Undone: {s.classes[2]} on 3 volumes ({keys[a.index]}, {keys[b.index]}, {keys[c.index]}): "
        f"2 unlabeled again, 1 {s.classes[0]} again. ")
    assert "training stopped" in said  # and what that did to training, in the same line
    assert s.labels == {b.index: s.classes[0]} and runner.running(TRAIN) is None


def test_undo_message_names_a_few_volumes_counts_the_rest_and_says_where_they_come_from():
    keys = [f"sub_{i:06d}.mrc" for i in range(100)]
    bulk = tuple(Change(i, None, None, False, cycle=2, after="ribosome") for i in (69, 70, 71, 72, 73, 74))
    assert undo_message(bulk, keys, cycle=2) == (
        "Undone: ribosome on 6 volumes (sub_000069.mrc, sub_000070.mrc, sub_000071.mrc, sub_000072.mrc and 2 more): "
        "all 6 are unlabeled again.")
    assert undo_message(bulk[:1], keys, cycle=3) == (
        "Undone: ribosome on sub_000069.mrc: it is unlabeled again. It is from the batch of cycle 2: a label key "
        "now labels it, N goes back to the batch.")
    assert undo_message(bulk[:2], keys, cycle=3).endswith(
        "They are from the batch of cycle 2; sub_000069.mrc is shown: a label key now labels it, N goes back to the "
        "batch.")
    skip = (Change(5, 0, "junk", False, cycle=2, after_skipped=True),)
    assert undo_message(skip, keys, cycle=2) == "Undone: the skip of sub_000005.mrc: it is junk again."
    taken_back = (Change(7, None, "ribosome", False, cycle=2),)
    assert undo_message(taken_back, keys, cycle=2) == (
        "Undone: taking back the label of sub_000007.mrc: it is ribosome again.")


def test_the_device_in_words_never_reads_as_started_automatically():
    """The status line said "(auto)", which read as "started automatically"; it names the device now."""
    on_gpu = Controller(SerialRunner(), devices=["auto", "cuda:0", "cuda:1", "cpu"])
    assert on_gpu.device == "auto" and on_gpu.device_text() == "cuda:0 (device: auto)"
    on_gpu.device = "CUDA:1"
    assert on_gpu.device == "cuda:1" and on_gpu.device_text() == "cuda:1"
    on_cpu = Controller(SerialRunner(), devices=["auto", "cpu"])
    assert on_cpu.device_text() == "the CPU (device: auto)"
    with pytest.raises(KtalError, match="unknown device 'tpu'"):
        on_cpu.device = "tpu"
    with pytest.raises(KtalError, match="device 'cuda:0' does not work here; choose from auto, cpu"):
        on_cpu.device = "cuda"
    assert on_cpu.device == "auto"


def test_what_follows_a_trained_cycle_waits_for_the_injected_defer(project, sim_truth):
    """The new batch's first volume is shown first; the gallery and the plot follow when ``defer`` runs them."""
    later = []
    runner = SerialRunner()
    controller = Controller(runner, defer=later.append)
    controller.device = "cpu"
    heard = Recorder(controller.events)
    try:
        controller.open_project(project.root)
        _label_batch(controller, sim_truth)
        heard.calls.clear()
        runner.run(TRAIN)
        assert controller.session.cycle == 1 and heard.said("show") and len(later) == 1
        assert not heard.said("batch_changed") and not heard.said("history_changed")
        later.pop()()
        assert heard.said("batch_changed") and heard.said("history_changed")
    finally:
        controller.close_project()


def test_the_status_line_words_the_audit_estimate_and_the_stop_suggestion():
    from types import SimpleNamespace

    from napari_ktal._napari.controller import _trust_text

    report = SimpleNamespace(estimated_accuracy=0.85, estimated_accuracy_low=0.7, estimated_accuracy_high=0.94,
                             stop_suggested=1, stop_reason="labeling could stop")
    assert _trust_text(report) == " Accuracy (audit): 85% [70-94%]. Labeling could stop."
    none = SimpleNamespace(estimated_accuracy=float("nan"), estimated_accuracy_low=float("nan"),
                           estimated_accuracy_high=float("nan"), stop_suggested=0, stop_reason="")
    assert _trust_text(none) == ""
