"""The baseline: uniformly random picks."""

from __future__ import annotations

import numpy as np

from .base import QueryContext, Selection, register


@register("random", summary="uniformly random (baseline)", cost="none: no model is consulted")
def random_query(ctx: QueryContext, candidates: np.ndarray, m: int, opts) -> Selection:
    """Uniformly random; scores are NaN."""
    chosen = ctx.rng.choice(np.asarray(candidates), size=min(m, len(candidates)), replace=False)
    return Selection(chosen, np.full(len(chosen), np.nan))
