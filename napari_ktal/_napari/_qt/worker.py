"""Runs the widget's long jobs off the GUI thread and brings their news back to it.

A job is a callable ``job(run) -> result`` taking a :class:`~napari_ktal.core.progress.RunContext`
(see :mod:`..runner`, which also holds the delivery rules this runner shares with the serial one).
The runner gives each start an id, runs the job in napari's thread pool, and delivers progress,
result and errors on the GUI thread through queued Qt signals, so only the GUI thread ever
touches widgets or the viewer. Cancelling sets the job's stop flag (the core checks it once
per batch and raises ``Cancelled``); the results of a cancelled or superseded job are
dropped. Jobs are registered with napari's task status, so closing napari while one runs
asks first and then stops it.
"""

from __future__ import annotations

import threading
import time
from functools import partial
from typing import Any

from napari.qt.threading import FunctionWorker, create_worker
from qtpy.QtCore import QObject, QThread, QThreadPool, Signal

from ..runner import BookedRunner, Job, Task, TaskBook


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


class TaskRunner(BookedRunner, QObject):
    """Starts jobs, relays their progress, cancels them, and waits for them on shutdown."""

    _progress = Signal(int, object)  # (task id, Progress), emitted from worker threads

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._book = TaskBook()  # the tasks whose worker has not finished yet
        self._progress.connect(self._deliver_progress)  # a slot of ours: queued to the GUI thread

    # -- starting and stopping ---------------------------------------------------------
    def start(self, kind: str, job: Job, *, on_progress=None, on_result=None, on_error=None,
              on_cancelled=None, on_finished=None) -> Task:
        """Run ``job`` in a worker thread; a running job of the same kind is superseded."""
        ours = len([t for t in self._book.tasks() if not t.done.is_set()])
        task = self._book.open(kind, on_progress=on_progress, on_result=on_result, on_error=on_error,
                               on_cancelled=on_cancelled, on_finished=on_finished)

        def run() -> Any:
            return task.call(job, lambda p: self._progress.emit(task.id, p))

        _room_in_thread_pool(ours + 1)
        worker = create_worker(run, _start_thread=False, _worker_class=_StoppableWorker, _ignore_errors=True)
        worker.stop_event = task.stop
        worker.returned.connect(partial(self._book.deliver_result, task.id))
        worker.errored.connect(partial(self._book.deliver_error, task.id))
        worker.finished.connect(partial(self._book.finished, task.id))
        task.worker = worker
        worker.start()
        return task

    def shutdown(self, timeout: float = 30.0) -> bool:
        """Stop every task and wait (up to ``timeout`` s in all) until their threads are done.

        Nothing is delivered afterwards: no result, error or ``on_finished`` callback.
        """
        tasks = self._book.stop_all()
        deadline = time.monotonic() + timeout
        return all(task.done.wait(max(0.0, deadline - time.monotonic())) for task in tasks)

    def _deliver_progress(self, task_id: int, event) -> None:
        self._book.deliver_progress(task_id, event)
