"""The rules by which the controller's long jobs are started, cancelled and heard from, without Qt.

A job is a callable taking one argument, a :class:`~napari_ktal.core.progress.RunContext`: the
runner calls ``job(RunContext(on_progress=<relay>, should_stop=<the task's stop flag>))``. What a
job's callbacks get is decided here, once, for both runners:

- ``on_progress(event)`` for each event, until the task is cancelled;
- then exactly one of ``on_result(result)`` or ``on_error(exc)``, unless the task was cancelled
  (or superseded by a job of the same kind) first; a job that ends with ``Cancelled`` reports nothing;
- ``on_cancelled()`` at once when :meth:`TaskBook.cancel` stops it;
- ``on_finished()`` last, always (also after a cancel), unless the runner was shut down.

:class:`TaskBook` keeps that bookkeeping; :class:`~._qt.worker.TaskRunner` runs jobs in napari's
thread pool and delivers on the GUI thread, :class:`SerialRunner` runs them in the calling thread
(tests, scripts), so a test of the controller exercises the same rules the widget lives by.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import Cancelled
from ..core.progress import Progress, RunContext

Job = Callable[[RunContext], Any]


@dataclass
class Task:
    """One start of a job: its kind, its stop flag, its callbacks and how far its delivery got."""

    id: int
    kind: str
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)  # set when the job's call has returned
    on_progress: Callable[[Progress], None] | None = None
    on_result: Callable[[Any], None] | None = None
    on_error: Callable[[BaseException], None] | None = None
    on_cancelled: Callable[[], None] | None = None
    on_finished: Callable[[], None] | None = None  # always, last, also after a cancel
    delivered: bool = False  # its result or error was handed over
    worker: Any = None  # the runner's handle on the thread that runs it, if any

    @property
    def cancelled(self) -> bool:
        return self.stop.is_set()

    def call(self, job: Job, relay: Callable[[Progress], None]) -> Any:
        """Run ``job`` with this task's run context (progress through ``relay``); mark the task done after."""
        try:
            return job(RunContext(on_progress=relay, should_stop=self.stop.is_set))
        finally:
            self.done.set()


class TaskBook:
    """The tasks started and not finished yet, and who hears what of them (see the module docstring)."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._tasks: dict[int, Task] = {}

    def open(self, kind: str, **callbacks) -> Task:
        """A new task of ``kind``; a live task of the same kind is cancelled (superseded) first."""
        self.cancel(kind)
        task = Task(next(self._ids), kind, **callbacks)
        self._tasks[task.id] = task
        return task

    def tasks(self) -> list[Task]:
        return list(self._tasks.values())

    def running(self, kind: str | None = None) -> Task | None:
        """The task of ``kind`` (any kind if None) whose result is still to come (not cancelled)."""
        for task in self._tasks.values():
            if (kind is None or task.kind == kind) and not task.cancelled and not task.delivered:
                return task
        return None

    def busy(self, kind: str | None = None) -> bool:
        """Whether a job of ``kind`` still runs, cancelled ones included."""
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

    def stop_all(self) -> list[Task]:
        """Set every task's stop flag and forget them all: nothing is delivered afterwards."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.stop.set()
        self._tasks.clear()
        return tasks

    # -- delivery ---------------------------------------------------------------------------------
    def _take(self, task_id: int) -> Task | None:
        """The task, to deliver its outcome once: None if cancelled, delivered or forgotten."""
        task = self._tasks.get(task_id)
        if task is None or task.cancelled or task.delivered:
            return None
        task.delivered = True
        return task

    def deliver_progress(self, task_id: int, event: Progress) -> None:
        task = self._tasks.get(task_id)
        if task is not None and not task.cancelled and task.on_progress is not None:
            task.on_progress(event)

    def deliver_result(self, task_id: int, result: Any) -> None:
        task = self._take(task_id)
        if task is not None and task.on_result is not None:
            task.on_result(result)

    def deliver_error(self, task_id: int, exc: BaseException) -> None:
        task = self._take(task_id)
        if task is None or isinstance(exc, Cancelled):
            return  # a cancelled job ends with Cancelled: nothing to report
        if task.on_error is not None:
            task.on_error(exc)

    def finished(self, task_id: int) -> None:
        task = self._tasks.pop(task_id, None)
        if task is not None and task.on_finished is not None:
            task.on_finished()


class BookedRunner:
    """What every runner answers from its :class:`TaskBook` (``self._book``): which task runs,
    whether one is busy, and cancelling. The runners differ only in where a job runs."""

    _book: TaskBook

    def running(self, kind: str | None = None) -> Task | None:
        """The task of ``kind`` (any kind if None) whose result is still to come (not cancelled)."""
        return self._book.running(kind)

    def busy(self, kind: str | None = None) -> bool:
        """Whether a job of ``kind`` still runs (or waits to), cancelled ones included."""
        return self._book.busy(kind)

    def cancel(self, kind: str | None = None) -> bool:
        """Ask the tasks of ``kind`` (all if None) to stop; their results will be dropped."""
        return self._book.cancel(kind)


class SerialRunner(BookedRunner):
    """The controller's runner in the calling thread, by :class:`TaskBook`'s rules.

    ``eager=False`` (the default): a started job waits until :meth:`run` runs it, so a test can
    look at the controller while a cycle "trains", cancel it, or start another. ``eager=True``:
    each job runs inside :meth:`start`, before it returns.
    """

    def __init__(self, eager: bool = False):
        self.eager = eager
        self._book = TaskBook()
        self._jobs: dict[int, Job] = {}  # the tasks' jobs, until they are run

    def start(self, kind: str, job: Job, *, on_progress=None, on_result=None, on_error=None, on_cancelled=None,
              on_finished=None) -> Task:
        task = self._book.open(kind, on_progress=on_progress, on_result=on_result, on_error=on_error,
                               on_cancelled=on_cancelled, on_finished=on_finished)
        self._jobs[task.id] = job
        if self.eager:
            self._run_one(task)
        return task

    def shutdown(self, timeout: float = 30.0) -> bool:
        """Stop and forget every task (none is running: they run only inside :meth:`run`)."""
        self._book.stop_all()
        self._jobs.clear()
        return True

    def run(self, kind: str | None = None) -> None:
        """Run every waiting job (of ``kind``), in start order; a cancelled one is not called, only finished.

        Jobs started meanwhile (a callback may start one) wait for the next call.
        """
        for task in [t for t in self._book.tasks() if not t.done.is_set() and (kind is None or t.kind == kind)]:
            if task.id in self._jobs:  # not forgotten by a shutdown from an earlier task's callback
                self._run_one(task)

    def _run_one(self, task: Task) -> None:
        job = self._jobs.pop(task.id)
        if task.cancelled:
            task.done.set()  # cancelled before it ran: never called, only finished
        else:
            try:
                result = task.call(job, lambda event: self._book.deliver_progress(task.id, event))
            except BaseException as exc:  # noqa: BLE001 - handed to on_error, as the threaded runner does
                self._book.deliver_error(task.id, exc)
            else:
                self._book.deliver_result(task.id, result)
        self._book.finished(task.id)
