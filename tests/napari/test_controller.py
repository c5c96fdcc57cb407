"""The dock's logic without Qt or a viewer: a labeling session, auto-training, messages.

A serial runner stands in for the Qt task runner: jobs wait until the test runs them, and
cancelled ones never run, with the same delivery rules (a cancelled job's result is dropped).
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field

import pytest

from napari_ktal._napari.controller import TRAIN, Controller, Hooks
from napari_ktal.core.errors import Cancelled, KtalError
from napari_ktal.core.loop import Phase
from napari_ktal.core.progress import Progress
from napari_ktal.core.project import ProjectLocked

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass
class Job:
    id: int
    kind: str
    fn: object
    callbacks: dict
    stop: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    delivered: bool = False


class SerialRunner:
    """Runs jobs when told to, in the calling thread; the TaskRunner's rules otherwise."""

    def __init__(self):
        self.jobs: list[Job] = []
        self._ids = itertools.count(1)

    def start(self, kind, job, **callbacks):
        self.cancel(kind)
        task = Job(next(self._ids), kind, job, callbacks)
        self.jobs.append(task)
        return task

    def _live(self, kind):
        return [j for j in self.jobs if (kind is None or j.kind == kind) and not j.stop.is_set() and not j.delivered]

    def running(self, kind=None):
        return next(iter(self._live(kind)), None)

    def busy(self, kind=None):
        return any((kind is None or j.kind == kind) and not j.done for j in self.jobs)

    def cancel(self, kind=None):
        hit = False
        for j in self._live(kind):
            j.stop.set()
            hit = True
            if j.callbacks.get("on_cancelled"):
                j.callbacks["on_cancelled"]()
        return hit

    def shutdown(self, timeout=30.0):
        for j in self.jobs:
            j.stop.set()
        self.jobs.clear()
        return True

    def run(self, kind=None) -> None:
        """Run every pending job (of ``kind``), in start order, delivering as the Qt runner does."""
        for job in [j for j in self.jobs if not j.done and (kind is None or j.kind == kind)]:
            cb = job.callbacks
            result, error = None, None
            if not job.stop.is_set():
                try:
                    result = job.fn(cb.get("on_progress") or (lambda p: None), job.stop.is_set)
                except BaseException as exc:  # noqa: BLE001 - delivered like the Qt runner does
                    error = exc
            job.done = True
            if not job.stop.is_set() and not job.delivered:
                job.delivered = True
                if error is None and cb.get("on_result"):
                    cb["on_result"](result)
                elif error is not None and not isinstance(error, Cancelled) and cb.get("on_error"):
                    cb["on_error"](error)
            if cb.get("on_finished"):
                cb["on_finished"]()
        self.jobs = [j for j in self.jobs if not j.done]


class Recorder(Hooks):
    def __init__(self):
        self.calls: list[tuple] = []

    def __getattribute__(self, name):
        if name in ("show", "classes_changed", "history_changed", "opened", "closed", "status", "progress", "info",
                    "error", "job_changed"):
            return lambda *args, **kw: self.calls.append((name, *args))
        return super().__getattribute__(name)

    def said(self, hook: str) -> list:
        return [c[1:] for c in self.calls if c[0] == hook]


@pytest.fixture
def ctl():
    runner, hooks = SerialRunner(), Recorder()
    controller = Controller(runner, hooks)
    controller.device = "cpu"
    yield controller, runner, hooks
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
    runner.run()
    assert s.cycle == 1 and s.phase is Phase.LABELING and not controller.training
    assert any(text.startswith("Cycle 0 trained on") for (text,) in hooks.said("status"))
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
