"""The task runner: jobs off the GUI thread, progress and results on it, cancel, supersede."""

import threading
import time

import pytest

from napari_ktal._napari._qt.worker import TaskRunner
from napari_ktal.core.errors import Cancelled, KtalError
from napari_ktal.core.progress import Progress


def counting_job(n=5, pause=0.01):
    def job(run):
        for k in range(n):
            run.check_cancel()
            time.sleep(pause)
            run.emit(Progress("train", k + 1, n))
        return threading.get_ident()

    return job


@pytest.fixture
def runner(qtbot):
    r = TaskRunner()
    yield r
    r.shutdown(timeout=5)


def test_progress_and_result_arrive_on_the_gui_thread(runner, qtbot):
    gui = threading.get_ident()
    seen, results = [], []
    task = runner.start("train", counting_job(),
                        on_progress=lambda p: seen.append((p.done, threading.get_ident())),
                        on_result=lambda r: results.append((r, threading.get_ident())))
    assert runner.running("train") is task
    qtbot.waitUntil(lambda: bool(results), timeout=5000)
    worker_thread, delivered_on = results[0]
    assert worker_thread != gui and delivered_on == gui
    assert [d for d, _ in seen] == [1, 2, 3, 4, 5] and {t for _, t in seen} == {gui}
    assert runner.running() is None


def test_cancel_stops_the_job_and_drops_its_result(runner, qtbot):
    results, cancelled = [], []
    task = runner.start("train", counting_job(n=1000), on_result=results.append,
                        on_cancelled=lambda: cancelled.append(True))
    qtbot.wait(50)
    assert runner.cancel("train") and cancelled == [True]
    assert task.done.wait(2)  # the job saw the flag at its next check
    qtbot.wait(50)
    assert results == [] and runner.running() is None


def test_a_new_job_supersedes_the_old_one_of_the_same_kind(runner, qtbot):
    results = []
    first = runner.start("export", counting_job(n=1000), on_result=lambda r: results.append("first"))
    runner.start("export", counting_job(n=3), on_result=lambda r: results.append("second"))
    qtbot.waitUntil(lambda: bool(results), timeout=5000)
    assert first.cancelled and first.done.wait(2)
    qtbot.wait(50)
    assert results == ["second"]


def test_errors_are_reported_but_cancellation_is_not(runner, qtbot):
    errors = []

    def bad(run):
        raise KtalError("no trained models yet")

    def cancelled(run):
        raise Cancelled("stopped on request")

    runner.start("a", bad, on_error=errors.append)
    runner.start("b", cancelled, on_error=errors.append)
    qtbot.waitUntil(lambda: runner.running() is None, timeout=5000)
    qtbot.wait(50)
    assert [str(e) for e in errors] == ["no trained models yet"]


def test_shutdown_waits_for_running_jobs(runner, qtbot):
    task = runner.start("train", counting_job(n=1000))
    t0 = time.perf_counter()
    assert runner.shutdown(timeout=5)
    assert task.done.is_set() and time.perf_counter() - t0 < 1
