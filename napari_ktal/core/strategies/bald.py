"""BALD (Houlsby et al. 2011; Gal et al. 2017) with MC dropout before the classifier."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..recipe import check
from .base import QueryContext, Selection, register
from .heuristics import bald
from .selection import top_m


@dataclass(frozen=True)
class Options:
    mc_passes: int = 20  # stochastic forward passes (dropout before the classifier)
    mc_dropout: float = 0.5  # dropout rate used when [model] dropout is 0 (test-time only)

    def validate(self, section: str) -> None:
        check(1 <= self.mc_passes <= 1000, f"{section}.mc_passes", "must be between 1 and 1000")
        check(0 < self.mc_dropout < 1, f"{section}.mc_dropout", "must be in (0, 1)")


@torch.no_grad()
def mc_dropout_probs(classifier: nn.Module, embedding: torch.Tensor, p: float, passes: int,
                     generator: torch.Generator | None = None, max_elements: int = 1 << 24) -> torch.Tensor:
    """Softmax of ``classifier(dropout(embedding))`` for ``passes`` dropout masks: (passes, N, C).

    The 3D ResNet's only dropout sits between the pooled embedding and the classifier, so the
    K stochastic forward passes share the backbone: one backbone pass, then K cheap masked
    classifier passes, all masks of a chunk drawn in one call (inverted dropout, like nn.Dropout).
    """
    n, d = embedding.shape
    chunk = max(1, max_elements // max(1, passes * d))
    out = []
    for start in range(0, n, chunk):
        e = embedding[start : start + chunk].float()
        keep = torch.rand((passes, *e.shape), generator=generator, device=e.device) >= p
        out.append(classifier(e.unsqueeze(0) * keep / (1.0 - p)).float().softmax(-1))
    return torch.cat(out, dim=1)


def dropout_rate(model: nn.Module, fallback: float) -> float:
    """The model's trained dropout rate, or ``fallback`` when it trained without dropout."""
    p = float(getattr(getattr(model, "dropout", None), "p", 0.0))
    return p if p > 0 else fallback


@register("bald", summary="BALD mutual information from MC-dropout passes", options=Options,
          cost="one pass of the teacher, then mc_passes passes of its classifier")
def bald_query(ctx: QueryContext, candidates: np.ndarray, m: int, opts: Options) -> Selection:
    """``mc_passes`` passes; the dropout rate is the teacher's ``[model] dropout`` when it trained
    with dropout (the proper MC-Dropout baseline), else ``mc_dropout`` at query time only."""
    (emb,) = ctx.forward([ctx.teacher], candidates, output="embedding")
    p = dropout_rate(ctx.teacher, opts.mc_dropout)
    probs = mc_dropout_probs(ctx.teacher.fc, emb.to(ctx.device), p, opts.mc_passes, ctx.torch_generator())
    return Selection(*top_m(candidates, bald(probs.cpu().numpy()), m))
