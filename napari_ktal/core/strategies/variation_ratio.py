"""Variation ratio (Freeman 1965; Gal et al. 2017): how often MC-dropout passes disagree with their mode."""

from __future__ import annotations

import numpy as np

from .bald import Options, dropout_rate, mc_dropout_probs
from .base import QueryContext, Selection, register
from .selection import top_m


def variation_ratio(mc_probs) -> np.ndarray:
    """1 - f_mode / K for K passes (K, N, C): 0 when every pass predicts the same class."""
    p = np.asarray(mc_probs)
    if p.ndim != 3:
        raise ValueError(f"expected (passes, N, C) class probabilities, got shape {p.shape}")
    votes = p.argmax(axis=2)  # (K, N)
    counts = np.stack([(votes == c).sum(axis=0) for c in range(p.shape[2])], axis=1)  # (N, C)
    return 1.0 - counts.max(axis=1) / p.shape[0]


@register("variation-ratio", summary="share of MC-dropout passes that disagree with their most frequent class",
          cost="one pass of the teacher, then mc_passes passes of its classifier", options=Options)
def variation_ratio_query(ctx: QueryContext, candidates: np.ndarray, m: int, opts: Options) -> Selection:
    (emb,) = ctx.forward([ctx.teacher], candidates, output="embedding")
    p = dropout_rate(ctx.teacher, opts.mc_dropout)
    probs = mc_dropout_probs(ctx.teacher.fc, emb.to(ctx.device), p, opts.mc_passes, ctx.torch_generator())
    return Selection(*top_m(candidates, variation_ratio(probs.cpu().numpy()), m))
