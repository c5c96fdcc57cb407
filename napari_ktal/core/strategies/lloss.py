"""Learning loss for active learning (LL4AL, Yoo & Kweon, CVPR 2019), adapted to 3D ResNet stages.

A small module predicts the teacher's per-sample task loss from its intermediate features:
for each of the 4 stage activations, global average pooling -> FC -> ReLU; the 4 vectors are
concatenated -> FC to one scalar. It is trained jointly with the teacher, on the same batches:

    L_teacher = mean CE  +  weight * L_rank(predicted loss, true CE)

L_rank is the original's margin ranking loss over the batch split into pairs (i, B-1-i): for
each pair, with d = l_i - l_j of the true losses (detached) and s = +1 if d > 0 else -1,
max(0, margin - s * (l^_i - l^_j)), averaged over the pairs (an odd batch leaves its middle
sample out). As in the original code, the gradient of L_rank flows into the teacher's
features only for the first part of training: from ``detach_epoch`` on, the module sees
detached features (the original detaches after 120 of 200 epochs, i.e. at 60%), so late in
training it no longer pulls the backbone away from the task.

Query: the volumes with the largest predicted loss. The module lives only within a cycle:
``train_cycle`` builds it fresh next to the teacher, trains it with the teacher and scores
with it before returning; it is not saved in the checkpoint (a warm-started teacher gets a
fresh module each cycle).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class LossPredictionModule(nn.Module):
    """GAP -> FC(C_l, hidden) -> ReLU for each stage l; concat -> FC(n_stages * hidden, 1)."""

    def __init__(self, stage_channels: Sequence[int], hidden: int = 128):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(c, hidden) for c in stage_channels)
        self.out = nn.Linear(hidden * len(stage_channels), 1)

    def forward(self, stages: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(stages) != len(self.heads):
            raise ValueError(f"{len(stages)} stage activations for {len(self.heads)} heads")
        feats = [F.relu(head(torch.flatten(F.adaptive_avg_pool3d(s, 1), 1))) for head, s in zip(self.heads, stages)]
        return self.out(torch.cat(feats, dim=1)).squeeze(1)


def stage_channels(model: nn.Module) -> list[int]:
    """Channels of each stage's output of a :class:`~napari_ktal.core.models.resnet3d.ResNet3D`."""
    return [stage[-1].bn2.num_features for stage in model.stages]


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


@dataclass
class LossLearning:
    """A loss-prediction module and how train_pair trains it with the teacher."""

    module: LossPredictionModule
    weight: float = 1.0  # lambda of L_rank in the teacher's loss (the original's WEIGHT)
    margin: float = 1.0  # the original's MARGIN
    detach_epoch: int = 0  # 0-based epoch from which the module sees detached features

    def loss(self, stages: Sequence[torch.Tensor], per_sample_ce: torch.Tensor, epoch: int) -> torch.Tensor:
        if epoch >= self.detach_epoch:
            stages = [s.detach() for s in stages]
        predicted = self.module(stages).float()
        return self.weight * loss_ranking_loss(predicted, per_sample_ce.float(), self.margin)


def build_loss_learning(teacher: nn.Module, epochs: int, weight: float = 1.0, margin: float = 1.0,
                        detach_fraction: float = 0.6) -> LossLearning:
    """A fresh module for ``teacher``; features are detached from epoch round(detach_fraction * epochs)."""
    return LossLearning(LossPredictionModule(stage_channels(teacher)), weight, margin,
                        int(round(detach_fraction * epochs)))
