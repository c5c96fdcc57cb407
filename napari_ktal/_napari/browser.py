"""What the gallery, the review table and the per-class examples show, without Qt.

:class:`Browser` belongs to the :class:`~.controller.Controller` (which tells it when a project
opens or closes and when the batch changes) and runs two kinds of job on the controller's
runner, both off the GUI thread and both superseded when asked again (a stale result is dropped
by the runner):

- ``thumbnails``: thumbnails of the batch (and of the examples), computed once per volume and
  display setting, delivered in chunks (:mod:`.thumbnails`); what is asked for while one runs
  waits for it and follows it;
- ``teacher``: the latest teacher's softmax over the labeled volumes and the batch
  (:func:`~napari_ktal.core.loop.review.teacher_opinion`), after a project opens and after
  each cycle: the review table's "teacher says" and the examples' ranking;
- ``review``: the labels judged out of sample
  (:func:`~napari_ktal.core.loop.label_review.review_labels`, k cross-fitted teachers: a few
  trainings long), once the teacher's opinion is in and the stored judgement is not of the
  current labels; in a thread of lowered priority, never while a cycle trains (the controller
  stops it when training starts). The review table orders the labels by it once it is current.

Views read what to show from here (``review_rows``, ``examples``, ``thumbnail``) and learn
of news through the controller's signals (``events.thumbnails_ready``, ``events.teacher_changed``,
``events.review_changed``), which the browser emits; it knows the controller only through
callables (the session, the device, whether a cycle trains), not the controller itself.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from ..core.errors import KtalError
from ..core.loop import LabelingSession
from ..core.loop.label_review import LabelReview, load_review, review_blocker, review_labels
from ..core.loop.review import (
    ReviewRow,
    TeacherView,
    class_examples,
    filter_rows,
    provenance,
    review_rows,
    teacher_opinion,
)
from ..core.progress import QUIET, RunContext
from ..core.seeds import DEFAULT_SEED
from .background import run_in_background_thread, worker_threads
from .thumbnails import ThumbnailCache, ThumbnailChunk, ThumbSettings, thumbnail_job

THUMBNAILS, TEACHER, REVIEW = "thumbnails", "teacher", "review"
EXAMPLES_PER_CLASS = 6
JUDGING = "judging labels out of sample…"


def teacher_job(root: Path, indices: list[int], device_name: str, run: RunContext = QUIET):
    from ..core.engine import resolve_device
    from ..core.project import Project

    return teacher_opinion(Project(root), indices, resolve_device(device_name), run=run.quiet())


def review_job(root: Path, device_name: str, seed: int, threads: int | None, run: RunContext = QUIET) -> LabelReview:
    """Judge the project's labels out of sample (stored in the project), as ``ktal-cryo review`` does,
    with ``threads`` torch threads in a thread of lowered priority (the GUI goes first)."""
    import torch

    from ..core.engine import resolve_device
    from ..core.project import Project

    if threads:
        torch.set_num_threads(threads)
    return run_in_background_thread(review_labels, Project(root), resolve_device(device_name), seed=seed,
                                    run=run.quiet())


def reporting(events, fn, *args):
    """``fn(*args)``; a KtalError (a user's problem, worded for them) goes to ``events.error`` instead
    of up, and the call returns None."""
    try:
        return fn(*args)
    except KtalError as exc:
        events.error.emit(exc)
        return None


class Browser:
    """Thumbnails, the teacher's opinion of the labels, review rows and examples of one session."""

    def __init__(self, runner, events, session: Callable[[], LabelingSession | None], device: Callable[[], str],
                 seed: int = DEFAULT_SEED, training: Callable[[], bool] = lambda: False):
        """``runner``: the controller's :class:`~.controller.Runner`; ``events``: its
        :class:`~.controller.ControllerEvents`; ``session()`` and ``device()``: the open session
        (None if none) and where to run the teacher, now; ``seed``: the cross-fitting's;
        ``training()``: whether a cycle trains now (the labels are not judged meanwhile)."""
        self.runner = runner
        self.events = events
        self._session = session
        self._device = device
        self._seed = seed
        self._training = training
        self.judged: LabelReview | None = None  # the labels judged out of sample last (maybe other labels)
        self.settings = ThumbSettings()
        self.cache = ThumbnailCache()
        self.teacher: TeacherView | None = None
        self._pending: list[int] = []  # thumbnails asked for while a job runs
        self._running: set[int] = set()  # thumbnails the running job makes
        self._job = 0  # which thumbnail job is the current one (a cancelled one finishes later)
        self._teacher_next = False  # ask the teacher once the batch's thumbnails are made

    @property
    def session(self) -> LabelingSession | None:
        return self._session()

    # -- the project's life ------------------------------------------------------------------
    def opened(self) -> None:
        self.cache.clear()
        self.teacher = None
        self.judged = self._reporting(load_review, self.session.project) if self.session is not None else None
        self._job += 1
        self._pending, self._running = [], set()
        self.batch_changed()

    def closed(self) -> None:
        self.cache.clear()
        self.teacher = None
        self.judged = None
        self._job += 1
        self._pending, self._running = [], set()

    def batch_changed(self) -> None:
        """A new batch is on screen: its thumbnails first, then (when they are made) the teacher's opinion.

        One after the other: both want the CPU, and the gallery is what the user waits for.
        """
        s = self.session
        if s is None:
            return
        self._teacher_next = True
        self.request([q.index for q in s.batch])
        if self.runner.running(THUMBNAILS) is None:
            self._start_teacher_if_due()

    def _start_teacher_if_due(self) -> None:
        if self._teacher_next:
            self._teacher_next = False
            self.update_teacher()

    # -- thumbnails ------------------------------------------------------------------------------
    def thumbnail(self, index: int):
        return self.cache.get(self.settings, index)

    def set_settings(self, mode: str | None = None, smoothing: float | None = None,
                     invert: bool | None = None) -> None:
        """Another thumbnail kind or display setting: make the batch's (and examples') thumbnails again."""
        new = ThumbSettings(mode or self.settings.mode,
                            self.settings.smoothing if smoothing is None else float(smoothing),
                            self.settings.invert if invert is None else bool(invert))
        if new == self.settings:
            return
        self.settings = new
        self.runner.cancel(THUMBNAILS)
        self._job += 1
        self._pending, self._running = [], set()
        if self.session is not None:
            self.request([q.index for q in self.session.batch])
            self.request([i for idx in self.examples().values() for i in idx])
        self.events.thumbnails_ready.emit([])

    def request(self, indices) -> None:
        """Make the thumbnails of ``indices`` that are not made yet (in the background)."""
        if self.session is None:
            return
        missing = [i for i in self.cache.missing(self.settings, indices)
                   if i not in self._running and i not in self._pending]
        if not missing:
            return
        if self.runner.running(THUMBNAILS) is not None:
            self._pending.extend(missing)
            return
        self._start(missing)

    def _start(self, indices: list[int]) -> None:
        self._job += 1
        self._running = set(indices)
        job = partial(thumbnail_job, self.session.project.pool, indices, self.settings)
        self.runner.start(THUMBNAILS, job, on_progress=self._on_chunk, on_error=self.events.error.emit,
                            on_finished=partial(self._on_thumbnails_done, self._job))

    def _on_chunk(self, chunk: ThumbnailChunk) -> None:
        if not isinstance(chunk, ThumbnailChunk):
            return
        done = self.cache.add(chunk)
        self._running.difference_update(done)
        if chunk.settings == self.settings:
            self.events.thumbnails_ready.emit(done)

    def _on_thumbnails_done(self, job: int) -> None:
        if job != self._job:
            return  # a superseded job ended: the current one carries on
        self._running = set()
        pending, self._pending = self._pending, []
        if pending and self.session is not None:
            self.request(pending)
        if self.runner.running(THUMBNAILS) is None and self.session is not None:
            self._start_teacher_if_due()

    # -- the teacher's opinion -------------------------------------------------------------------
    def update_teacher(self) -> None:
        """Ask the latest trained teacher about every labeled volume and the batch (in the background)."""
        s = self.session
        if s is None or not s.project.checkpoint_cycles():
            return
        indices = sorted(set(s.labels) | {q.index for q in s.batch})
        job = partial(teacher_job, s.project.root, indices, self._device())
        self.runner.start(TEACHER, job, on_result=self._on_teacher, on_error=self.events.error.emit)

    def _on_teacher(self, view: TeacherView | None) -> None:
        self.teacher = view
        self.events.teacher_changed.emit()
        if self.session is not None:
            self.request([i for idx in self.examples().values() for i in idx])
            self.update_review()

    # -- the labels judged out of sample ---------------------------------------------------------
    @property
    def judged_now(self) -> LabelReview | None:
        """The out-of-sample judgement if it is of the current labels, else None."""
        s = self.session
        if s is None or self.judged is None or not self.judged.is_current(s.labels):
            return None
        return self.judged

    def update_review(self) -> None:
        """Judge the labels out of sample in the background, unless they are judged already, cannot be
        judged yet, or a cycle trains."""
        s = self.session
        if s is None or self.judged_now is not None or self._training() or self.runner.running(REVIEW):
            return
        if review_blocker(s.project, s.labels):
            return
        job = partial(review_job, s.project.root, self._device(), self._seed, worker_threads())
        self.runner.start(REVIEW, job, on_result=self._on_review, on_error=self._on_review_error,
                          on_cancelled=self.events.review_changed.emit)
        self.events.review_changed.emit()

    def stop_review(self) -> None:
        """Stop judging the labels (a cycle starts: it goes first); judged again after it."""
        if self.runner.cancel(REVIEW):
            self.events.review_changed.emit()

    def _on_review(self, review: LabelReview) -> None:
        self.judged = review
        self.events.review_changed.emit()

    def _on_review_error(self, exc: BaseException) -> None:
        self.events.review_changed.emit()
        self.events.error.emit(exc)

    def review_state(self) -> str:
        """What the review table says of its order: judged out of sample, being judged, or why not."""
        s = self.session
        if s is None:
            return ""
        judged = self.judged_now
        if judged is not None:
            cf = judged.crossfit
            return f"judged out of sample ({cf.n_folds} folds, after cycle {judged.cycle}): {judged.agreement_text()}"
        if self.runner.running(REVIEW) is not None:
            return JUDGING
        blocker = review_blocker(s.project, s.labels)
        if blocker:
            return f"not judged out of sample yet: {blocker}"
        if self.judged is not None:
            return "labels changed since they were judged out of sample: judged again after the next cycle"
        return "judged out of sample after the next cycle"

    def _reporting(self, fn, *args):
        return reporting(self.events, fn, *args)

    # -- what the views show -----------------------------------------------------------------------
    def review_rows(self, label: str | None = None, disagree_only: bool = False) -> list[ReviewRow]:
        s = self.session
        if s is None:
            return []
        rows = review_rows(s.project, s.labels, self.teacher, provenance(s.project), self.judged_now)
        return filter_rows(rows, label, disagree_only)

    def examples(self, per_class: int = EXAMPLES_PER_CLASS) -> dict[str, list[int]]:
        s = self.session
        if s is None:
            return {}
        return class_examples(s.labels, self.teacher, s.classes, per_class)

    def guess(self, index: int) -> tuple[str, float] | None:
        """The teacher's (class, probability) for a pool volume: from its latest opinion, or the batch's file."""
        if self.teacher is not None:
            g = self.teacher.guess(index)
            if g is not None:
                return g
        s = self.session
        pos = s.position_of(index) if s is not None else None
        if pos is not None and s.batch[pos].predicted:
            return s.batch[pos].predicted, s.batch[pos].confidence
        return None
