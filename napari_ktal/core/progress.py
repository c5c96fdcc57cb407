"""How the core reports progress and learns that it should stop: one :class:`RunContext`.

A shell builds ``RunContext(on_progress=..., should_stop=...)`` (plain callables: a progress bar's
update, ``threading.Event().is_set``) and passes it as ``run=`` to the core's long jobs, which hand
it down unchanged; the core never imports a shell. Long loops call ``run.check_cancel()`` once per
batch (it raises :class:`Cancelled` when asked to stop) and ``run.emit(Progress(...))`` as they go.
:func:`describe` is the one wording of an event that the CLI's bar and the widget's bar show,
with an estimate of the time left when the event says how long its phase has run (``elapsed``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import Cancelled

PHASES = {  # what each phase is called on screen
    "import": "importing",
    "extract": "extracting",
    "train": "training",
    "score": "scoring unlabeled volumes",
    "predict": "predicting",
    "simulate": "simulating",
    "pretrain": "pretraining on the pool",
    "crossfit": "cross-fitting",
}


@dataclass(frozen=True)
class Progress:
    phase: str  # a key of PHASES
    done: int
    total: int
    cycle: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""
    elapsed: float | None = None  # seconds since the phase began (training: since its first batch)

    @property
    def steps(self) -> tuple[int, int]:
        """(done, total) over the whole phase: a training's batches count across all its epochs."""
        if self.phase in ("train", "pretrain") and self.epochs:
            return ((self.epoch or 1) - 1) * self.total + self.done, self.total * self.epochs
        return self.done, self.total

    @property
    def remaining(self) -> float | None:
        """Seconds left in this phase at the rate so far; None before there is a rate to go by."""
        done, total = self.steps
        if self.elapsed is None or done <= 0 or total <= 0 or self.elapsed <= 0:
            return None
        return max(0.0, self.elapsed * (total - done) / done)


def clock(seconds: float) -> str:
    """A duration for people: ``8 s``, ``2 min 05 s``, ``1 h 04 min``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


ProgressCallback = Callable[[Progress], None]
StopFlag = Callable[[], bool]


def describe(p: Progress, with_counts: bool = True) -> str:
    """One line for a progress bar: ``cycle 3: epoch 5/30 · loss 0.412 · ~1 min 20 s left`` or
    ``predicting: 40/100``. The time left appears once the event carries ``elapsed``."""
    done, total = p.steps
    left = p.remaining
    eta = f" · ~{clock(left)} left" if left is not None and done < total else ""
    if p.phase == "pretrain" and p.epochs:
        loss = p.metrics.get("contrastive_loss")
        return f"pretraining: epoch {p.epoch}/{p.epochs}" + (f" · loss {loss:.3f}" if loss is not None else "") + eta
    if p.phase == "train" and p.epochs:
        text = f"cycle {p.cycle}: epoch {p.epoch}/{p.epochs}" if p.cycle is not None else \
            f"epoch {p.epoch}/{p.epochs}"
        loss = p.metrics.get("teacher_loss")
        return text + (f" · loss {loss:.3f}" if loss is not None else "") + eta
    what = PHASES.get(p.phase, p.phase)
    if p.phase == "train" and p.cycle is not None:
        what = f"cycle {p.cycle}: {what}"
    return (f"{what}: {p.done}/{p.total}" if with_counts else what) + eta


@dataclass(frozen=True)
class RunContext:
    """Where a long job's progress goes and how it learns it should stop; ``RunContext()`` is a
    quiet run that never stops (the default of every job)."""

    on_progress: ProgressCallback | None = None
    should_stop: StopFlag | None = None

    def emit(self, event: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(event)

    def check_cancel(self) -> None:
        """Raise :class:`Cancelled` if the shell asked to stop."""
        if self.should_stop is not None and self.should_stop():
            raise Cancelled("stopped on request")

    def quiet(self) -> RunContext:
        """The same cancel without progress: for inner work whose events would confuse the bar."""
        return RunContext(should_stop=self.should_stop)


QUIET = RunContext()

