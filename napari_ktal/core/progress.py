"""How the core reports progress and learns that it should stop.

Shells pass ``on_progress(Progress)`` (a plain callable) and ``should_stop()`` (e.g.
``threading.Event().is_set``); the core never imports a shell. Long loops call
:func:`check_cancel` once per batch and raise :class:`Cancelled` when asked to stop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import Cancelled


@dataclass(frozen=True)
class Progress:
    phase: str  # "import", "train", "score", "predict", "simulate"
    done: int
    total: int
    cycle: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""


ProgressCallback = Callable[[Progress], None]
StopFlag = Callable[[], bool]


def emit(on_progress: ProgressCallback | None, event: Progress) -> None:
    if on_progress is not None:
        on_progress(event)


def check_cancel(should_stop: StopFlag | None) -> None:
    if should_stop is not None and should_stop():
        raise Cancelled("stopped on request")
