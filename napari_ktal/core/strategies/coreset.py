"""Core-Set (Sener & Savarese 2018): greedy k-center on the teacher's penultimate features."""

from __future__ import annotations

import numpy as np

from .base import QueryContext, Selection, register
from .kcenter import kcenter_greedy


@register("coreset", summary="core-set: greedy k-center on the teacher's penultimate features",
          cost="one pass of the teacher over labeled + candidates, then M passes over the distances")
def coreset_query(ctx: QueryContext, candidates: np.ndarray, m: int, opts) -> Selection:
    """The labeled volumes are the initial centers; each pick is the candidate farthest from
    every center so far (labeled and already picked), scored by that distance."""
    labeled = np.asarray(ctx.labeled, dtype=np.int64)
    (emb,) = ctx.forward([ctx.teacher], np.concatenate([labeled, candidates]), output="embedding")
    order, dist = kcenter_greedy(emb[len(labeled):], m, centers=emb[: len(labeled)], device=ctx.device)
    return Selection(candidates[order], dist)
