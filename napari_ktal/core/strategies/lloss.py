"""Learning loss for active learning (LL4AL, Yoo & Kweon, CVPR 2019), adapted to 3D ResNet stages.

A small module predicts the teacher's per-sample task loss from its intermediate features:
for each of the 4 stage activations, global average pooling -> FC -> ReLU; the 4 vectors are
concatenated -> FC to one scalar. It is trained jointly with the teacher, on the same batches
(an :class:`~napari_ktal.core.engine.AuxiliaryHead`):

    L_teacher = mean CE  +  weight * L_rank(predicted loss, true CE)

L_rank is the original's margin ranking loss over the batch split into pairs (i, B-1-i): for
each pair, with d = l_i - l_j of the true losses (detached) and s = +1 if d > 0 else -1,
max(0, margin - s * (l^_i - l^_j)), averaged over the pairs (an odd batch leaves its middle
sample out). As in the original code, the gradient of L_rank flows into the teacher's
features only for the first part of training: from ``detach_epoch`` on, the module sees
detached features (the original detaches after 120 of 200 epochs, i.e. at 60%), so late in
training it no longer pulls the backbone away from the task.

Query: the volumes with the largest predicted loss, from the teacher's pooled stage features.
The module lives only within a cycle: the cycle builds it fresh next to the teacher, trains it
with the teacher and scores with it before returning; it is not saved in the checkpoint (a
warm-started teacher gets a fresh module each cycle).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..engine import AuxiliaryHead
from ..errors import KtalError
from ..models import ModelOutput
from ..recipe import TrainSpec, check
from .base import QueryContext, Selection, register
from .selection import top_m


def loss_ranking_loss(predicted: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """LL4AL's pairwise margin ranking loss; ``target`` (the true per-sample losses) is detached."""
    if predicted.shape != target.shape or predicted.ndim != 1:
        raise ValueError(f"predicted {tuple(predicted.shape)} and target {tuple(target.shape)} must be equal 1-d")
    half = len(predicted) // 2
    if half == 0:
        return predicted.sum() * 0.0
    d_pred = (predicted - predicted.flip(0))[:half]
    d_true = (target - target.flip(0))[:half].detach()
    sign = torch.where(d_true > 0, 1.0, -1.0).to(d_pred.dtype)
    return torch.clamp(margin - sign * d_pred, min=0).sum() / half


class LossPredictionHead(AuxiliaryHead):
    """GAP -> FC(C_l, hidden) -> ReLU for each stage l; concat -> FC(n_stages * hidden, 1).

    ``weight``: lambda of L_rank in the teacher's loss (the original's WEIGHT); ``margin``: the
    original's MARGIN; ``detach_epoch``: the 0-based epoch from which the head sees detached features.
    """

    def __init__(self, stage_channels: Sequence[int], hidden: int = 128, weight: float = 1.0, margin: float = 1.0,
                 detach_epoch: int = 0):
        super().__init__(stage_channels=list(stage_channels), hidden=hidden, weight=weight, margin=margin,
                         detach_epoch=detach_epoch)
        self.stage_channels = list(stage_channels)
        self.weight, self.margin, self.detach_epoch = weight, margin, detach_epoch
        self.heads = nn.ModuleList(nn.Linear(c, hidden) for c in stage_channels)
        self.out = nn.Linear(hidden * len(stage_channels), 1)

    def forward(self, stages: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(stages) != len(self.heads):
            raise ValueError(f"{len(stages)} stage activations for {len(self.heads)} heads")
        pooled = [torch.flatten(F.adaptive_avg_pool3d(s, 1), 1) for s in stages]
        return self._predict(pooled)

    def from_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """The prediction from the stages' pooled features, concatenated (``models.pooled_stages``)."""
        return self._predict(list(pooled.split(self.stage_channels, dim=1)))

    def _predict(self, pooled: list[torch.Tensor]) -> torch.Tensor:
        feats = [F.relu(head(p)) for head, p in zip(self.heads, pooled)]
        return self.out(torch.cat(feats, dim=1)).squeeze(1)

    def inputs(self, teacher_out: ModelOutput, epoch: int) -> tuple:
        stages = teacher_out.stages
        if epoch >= self.detach_epoch:
            stages = tuple(s.detach() for s in stages)
        return (stages,)

    def loss(self, prediction: torch.Tensor, per_sample_ce: torch.Tensor) -> torch.Tensor:
        return self.weight * loss_ranking_loss(prediction.float(), per_sample_ce.float(), self.margin)


@dataclass(frozen=True)
class Options:
    weight: float = 1.0  # lambda of the loss-prediction ranking loss
    margin: float = 1.0  # margin of the ranking loss
    detach_fraction: float = 0.6  # features are detached after this fraction of epochs

    def validate(self, section: str) -> None:
        check(self.weight >= 0, f"{section}.weight", "must be >= 0")
        check(self.margin >= 0, f"{section}.margin", "must be >= 0")
        check(0 <= self.detach_fraction <= 1, f"{section}.detach_fraction", "must be in [0, 1]")


def build_head(teacher: nn.Module, train: TrainSpec, opts: Options) -> LossPredictionHead:
    """A fresh head for ``teacher``; features are detached from epoch round(detach_fraction * epochs)."""
    return LossPredictionHead(teacher.stage_channels, weight=opts.weight, margin=opts.margin,
                              detach_epoch=int(round(opts.detach_fraction * train.epochs)))


@register("lloss", summary="learning loss: a module trained to predict the teacher's loss (LL4AL)",
          cost="a small head trained with the teacher; one pass of the teacher over the candidates",
          options=Options, old_prefix="lloss", head=build_head)
def lloss_query(ctx: QueryContext, candidates: np.ndarray, m: int, opts: Options) -> Selection:
    """Top M by the loss the head predicts from the teacher's pooled stage features."""
    if not isinstance(ctx.head, LossPredictionHead):
        raise KtalError("strategy 'lloss' needs the loss-prediction head trained with the teacher")
    (pooled,) = ctx.forward([ctx.teacher], candidates, output="pooled_stages")
    head = ctx.head.to(ctx.device).eval()
    with torch.no_grad():
        pred = head.from_pooled(pooled.to(ctx.device)).float().cpu()
    return Selection(*top_m(candidates, pred.numpy(), m))
