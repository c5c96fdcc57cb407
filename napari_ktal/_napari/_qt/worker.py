"""Runs the widget's long jobs off the GUI thread and brings their news back to it.

A job is a plain function ``job(on_progress, should_stop) -> result`` (see ``tasks``). The
runner gives each start an id, runs the job in napari's thread pool, and delivers progress,
result and errors on the GUI thread through queued Qt signals, so only the GUI thread ever
touches widgets or the viewer. Cancelling sets the job's stop flag (the core checks it once
per batch and raises ``Cancelled``); the results of a cancelled or superseded job are
dropped. Jobs are registered with napari's task status, so closing napari while one runs
asks first and then stops it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from napari.qt.threading import FunctionWorker, create_worker
from qtpy.QtCore import QObject, QThread, QThreadPool, Signal

from ...core.errors import Cancelled
from ...core.progress import Progress, ProgressCallback, RunContext, StopFlag

Job = Callable[[ProgressCallback, StopFlag], Any]


def _room_in_thread_pool(ours: int) -> None:
    """Make sure ``ours`` jobs can run at once in napari's thread pool, besides everybody else's.

    The pool holds as many threads as the machine has cores (2 on a small laptop): a cycle
    training in one and another long job in the other would make the gallery's thumbnails
    wait for the end of the cycle. Our jobs mostly wait (training runs in a thread of its own,
    the rest is short), so each gets a thread of the pool on top of the usual number.
    """
    pool = QThreadPool.globalInstance()
    want = QThread.idealThreadCount() + ours
    if pool.maxThreadCount() < want:
        pool.setMaxThreadCount(want)


class _StoppableWorker(FunctionWorker):
    """A FunctionWorker whose ``quit()`` (napari calls it on close) also sets the job's stop flag."""

    stop_event: threading.Event | None = None

    def quit(self) -> None:
        if self.stop_event is not None:
            self.stop_event.set()
        super().quit()


@dataclass
class Task:
    id: int
    kind: str
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)  # set when the job's thread is done
    on_progress: Callable[[Progress], None] | None = None
    on_result: Callable[[Any], None] | None = None
    on_error: Callable[[BaseException], None] | None = None
    on_cancelled: Callable[[], None] | None = None
    on_finished: Callable[[], None] | None = None  # always, last, also after a cancel
    delivered: bool = False  # its result or error was handed over
    worker: Any = None

    @property
    def cancelled(self) -> bool:
        return self.stop.is_set()


class TaskRunner(QObject):
    """Starts jobs, relays their progress, cancels them, and waits for them on shutdown."""

    _progress = Signal(int, object)  # (task id, Progress), emitted from worker threads

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._ids = itertools.count(1)
        self._tasks: dict[int, Task] = {}  # started and whose worker has not finished yet
        self._progress.connect(self._deliver_progress)

    # -- starting and stopping ---------------------------------------------------------
    def start(self, kind: str, job: Job, *, on_progress=None, on_result=None, on_error=None,
              on_cancelled=None, on_finished=None) -> Task:
        """Run ``job`` in a worker thread; a running job of the same kind is superseded."""
        self.cancel(kind)
        task = Task(next(self._ids), kind, on_progress=on_progress, on_result=on_result, on_error=on_error,
                    on_cancelled=on_cancelled, on_finished=on_finished)

        def run() -> Any:
            try:
                return job(RunContext(lambda p: self._progress.emit(task.id, p), task.stop.is_set))
            finally:
                task.done.set()

        _room_in_thread_pool(len([t for t in self._tasks.values() if not t.done.is_set()]) + 1)
        worker = create_worker(run, _start_thread=False, _worker_class=_StoppableWorker, _ignore_errors=True)
        worker.stop_event = task.stop
        worker.returned.connect(partial(self._deliver_result, task.id))
        worker.errored.connect(partial(self._deliver_error, task.id))
        worker.finished.connect(partial(self._finished, task.id))
        task.worker = worker
        self._tasks[task.id] = task
        worker.start()
        return task

    def running(self, kind: str | None = None) -> Task | None:
        """The task of ``kind`` (any kind if None) whose result is still to come (not cancelled)."""
        for task in self._tasks.values():
            if (kind is None or task.kind == kind) and not task.cancelled and not task.delivered:
                return task
        return None

    def busy(self, kind: str | None = None) -> bool:
        """Whether a job of ``kind`` still runs in its thread, cancelled ones included."""
        return any((kind is None or t.kind == kind) and not t.done.is_set() for t in self._tasks.values())

    def cancel(self, kind: str | None = None) -> bool:
        """Ask the tasks of ``kind`` (all if None) to stop; their results will be dropped."""
        hit = False
        for task in list(self._tasks.values()):
            if (kind is None or task.kind == kind) and not task.cancelled and not task.delivered:
                task.stop.set()
                hit = True
                if task.on_cancelled is not None:
                    task.on_cancelled()
        return hit

    def shutdown(self, timeout: float = 30.0) -> bool:
        """Stop every task and wait (up to ``timeout`` s in all) until their threads are done.

        Nothing is delivered afterwards: no result, error or ``on_finished`` callback.
        """
        tasks = list(self._tasks.values())
        for task in tasks:
            task.stop.set()
        deadline = time.monotonic() + timeout
        finished = all(task.done.wait(max(0.0, deadline - time.monotonic())) for task in tasks)
        self._tasks.clear()
        return finished

    # -- delivery on the GUI thread ----------------------------------------------------
    def _take(self, task_id: int) -> Task | None:
        """The task, to deliver its outcome once: None if cancelled, delivered or forgotten."""
        task = self._tasks.get(task_id)
        if task is None or task.cancelled or task.delivered:
            return None
        task.delivered = True
        return task

    def _deliver_progress(self, task_id: int, event: Progress) -> None:
        task = self._tasks.get(task_id)
        if task is not None and not task.cancelled and task.on_progress is not None:
            task.on_progress(event)

    def _deliver_result(self, task_id: int, result: Any) -> None:
        task = self._take(task_id)
        if task is not None and task.on_result is not None:
            task.on_result(result)

    def _deliver_error(self, task_id: int, exc: BaseException) -> None:
        task = self._take(task_id)
        if task is None or isinstance(exc, Cancelled):
            return  # a cancelled job ends with Cancelled: nothing to report
        if task.on_error is not None:
            task.on_error(exc)

    def _finished(self, task_id: int) -> None:
        task = self._tasks.pop(task_id, None)
        if task is not None and task.on_finished is not None:
            task.on_finished()
