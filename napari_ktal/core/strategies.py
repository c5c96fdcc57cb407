"""Query strategies: one interface, one registry.

A strategy gets a :class:`QueryContext` (the trained models and how to read volumes), the
unlabeled candidate indices (already the random subset R_U) and M, and returns the chosen
indices with their scores, most informative first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .inference import VolumeReader, forward_outputs
from .progress import ProgressCallback, StopFlag
from .selection import top_m
from .uncertainty import DISTANCES


@dataclass
class QueryContext:
    teacher: nn.Module
    student: nn.Module
    read: VolumeReader
    labeled: np.ndarray
    device: torch.device
    rng: np.random.Generator
    score_distance: str = "kl"
    batch_size: int = 256
    on_progress: ProgressCallback | None = None
    should_stop: StopFlag | None = None


@dataclass(frozen=True)
class Selection:
    indices: np.ndarray  # chosen pool indices, most informative first
    scores: np.ndarray  # their scores (higher = more informative)


Strategy = Callable[[QueryContext, np.ndarray, int], Selection]


def knowledge_transfer(ctx: QueryContext, candidates: np.ndarray, m: int) -> Selection:
    """The paper's method: the teacher-student distance of the posteriors (KL by default)."""
    t_logits, s_logits = forward_outputs(
        [ctx.teacher, ctx.student], ctx.read, candidates, ctx.device, ctx.batch_size,
        on_progress=ctx.on_progress, should_stop=ctx.should_stop,
    )
    scores = DISTANCES[ctx.score_distance](t_logits, s_logits).numpy()
    return Selection(*top_m(candidates, scores, m))


def random_query(ctx: QueryContext, candidates: np.ndarray, m: int) -> Selection:
    """Uniformly random; scores are NaN (no model is consulted)."""
    chosen = ctx.rng.choice(np.asarray(candidates), size=min(m, len(candidates)), replace=False)
    return Selection(chosen, np.full(len(chosen), np.nan))


STRATEGIES: dict[str, Strategy] = {
    "kt": knowledge_transfer,
    "random": random_query,
}
