"""3D ResNets for 32^3 subtomograms: the teacher (ResNet-18) and the student (ResNet-10).

Both have four stages of BasicBlocks with the same strides (1, 2, 2, 2), so stage l of
the teacher and stage l of the student have the same spatial size, which attention
transfer needs. The stem is a recipe choice: ``cifar`` (3x3x3, stride 1, no max-pool)
keeps 32^3 resolution in stage 1; ``strided`` (3x3x3, stride 2) is 8x cheaper.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

#: blocks per stage for each supported depth
DEPTHS: dict[int, tuple[int, int, int, int]] = {
    10: (1, 1, 1, 1),
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
}
STAGE_STRIDES = (1, 2, 2, 2)


class ModelOutput(NamedTuple):
    logits: torch.Tensor  # (B, n_classes)
    stages: tuple[torch.Tensor, ...]  # the 4 stage activations, (B, C_l, D_l, H_l, W_l)
    embedding: torch.Tensor  # (B, C_4) pooled features before the classifier


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(c_out)
        self.conv2 = nn.Conv3d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv3d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm3d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet3D(nn.Module):
    """A 3D ResNet whose forward returns logits, the 4 stage activations and the embedding."""

    def __init__(
        self,
        depth: int,
        n_classes: int,
        width: int = 64,
        stem: str = "cifar",
        dropout: float = 0.0,
        in_channels: int = 1,
    ):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {depth}")
        if stem not in ("cifar", "strided"):
            raise ValueError(f"stem must be 'cifar' or 'strided', got {stem!r}")
        self.depth, self.width, self.n_classes = depth, width, n_classes
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, width, 3, stride=1 if stem == "cifar" else 2, padding=1, bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
        )
        stages, c_in = [], width
        for i, (n_blocks, stride) in enumerate(zip(DEPTHS[depth], STAGE_STRIDES)):
            c_out = width * 2**i
            blocks = [BasicBlock(c_in, c_out, stride)]
            blocks += [BasicBlock(c_out, c_out, 1) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c_in, n_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # zero-init the last BN of each residual branch: each block starts as identity
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    @property
    def embedding_dim(self) -> int:
        return self.fc.in_features

    def forward(self, x: torch.Tensor) -> ModelOutput:
        h = self.stem(x)
        feats = []
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        emb = torch.flatten(self.pool(h), 1)
        return ModelOutput(self.fc(self.dropout(emb)), tuple(feats), emb)


def build_pair(model_spec, n_classes: int) -> tuple[ResNet3D, ResNet3D]:
    """The (teacher, student) pair a recipe's ``[model]`` table describes."""
    kw = dict(n_classes=n_classes, width=model_spec.width, stem=model_spec.stem, dropout=model_spec.dropout)
    return ResNet3D(model_spec.teacher_depth, **kw), ResNet3D(model_spec.student_depth, **kw)
