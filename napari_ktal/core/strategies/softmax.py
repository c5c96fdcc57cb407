"""Uncertainty of the teacher's softmax alone: entropy, margin, least confidence."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .base import QueryContext, Selection, register
from .heuristics import entropy, least_confidence, margin
from .selection import top_m

COST = "one pass of the teacher over the candidates"


def _by_softmax(ctx: QueryContext, candidates: np.ndarray, m: int, score: Callable) -> Selection:
    (logits,) = ctx.forward([ctx.teacher], candidates)
    return Selection(*top_m(candidates, score(logits.softmax(1).numpy()), m))


@register("entropy", summary="entropy of the teacher's softmax", cost=COST)
def entropy_query(ctx: QueryContext, candidates: np.ndarray, m: int, opts) -> Selection:
    return _by_softmax(ctx, candidates, m, entropy)


@register("margin", summary="smallest gap between the teacher's two most likely classes", cost=COST)
def margin_query(ctx: QueryContext, candidates: np.ndarray, m: int, opts) -> Selection:
    return _by_softmax(ctx, candidates, m, margin)


@register("least-confidence", summary="lowest top-class probability of the teacher", cost=COST)
def least_confidence_query(ctx: QueryContext, candidates: np.ndarray, m: int, opts) -> Selection:
    return _by_softmax(ctx, candidates, m, least_confidence)
