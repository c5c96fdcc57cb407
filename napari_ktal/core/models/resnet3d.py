"""3D ResNets for 32^3 subtomograms: the teacher (ResNet-18) and the student (ResNet-10).

Both have four stages of BasicBlocks with the same strides (1, 2, 2, 2), so stage l of
the teacher and stage l of the student have the same spatial size, which attention
transfer needs. The stem is a recipe choice: ``cifar`` (3x3x3, stride 1, no max-pool)
keeps 32^3 resolution in stage 1; ``strided`` (3x3x3, stride 2) is 8x cheaper.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import nn

#: blocks per stage for each supported depth (the recipe's DEPTHS)
BLOCKS_PER_STAGE: dict[int, tuple[int, int, int, int]] = {
    10: (1, 1, 1, 1),
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
}
STAGE_STRIDES = (1, 2, 2, 2)
STEM_STRIDES = {"cifar": 1, "strided": 2}


class ModelOutput(NamedTuple):
    logits: torch.Tensor  # (B, n_classes)
    stages: tuple[torch.Tensor, ...]  # the 4 stage activations, (B, C_l, D_l, H_l, W_l)
    embedding: torch.Tensor  # (B, C_4) pooled features before the classifier


def pooled_stages(out: ModelOutput) -> torch.Tensor:
    """Each stage's activation averaged over space, concatenated: (B, C_1 + ... + C_4)."""
    return torch.cat([s.float().mean(dim=(2, 3, 4)) for s in out.stages], dim=1)


#: what a pass over many volumes can keep of each output, by name (small per-volume tensors)
OUTPUTS = {
    "logits": lambda out: out.logits,
    "embedding": lambda out: out.embedding,
    "pooled_stages": pooled_stages,
}


def output(out: ModelOutput, name: str) -> torch.Tensor:
    """The output called ``name`` (a key of :data:`OUTPUTS`) of a forward pass."""
    try:
        return OUTPUTS[name](out)
    except KeyError:
        raise ValueError(f"unknown model output {name!r}; known: {', '.join(OUTPUTS)}") from None


@dataclass(frozen=True)
class ResNetConfig:
    """Everything a :class:`ResNet3D` is built from (its weights aside)."""

    depth: int
    n_classes: int
    width: int = 64
    stem: str = "cifar"
    dropout: float = 0.0
    in_channels: int = 1


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that runs in float32 under CPU bf16 autocast where its input is smaller than
    its kernel (the same weights and state dict).

    On a CPU with native bf16 (AVX512-BF16: a 2-core AMD EPYC, torch 2.13's oneDNN) the bf16
    weight gradient of a 3x3x3 convolution over a 2x2x2 input with 16 or more channels comes back
    non-finite or wrong by orders of magnitude, while every larger input measured was right to
    0.5% (tests/core/models/test_bf16_cpu.py). The quick pair's last stage is exactly that case,
    and its training ended in NaN. Such a layer is a sliver of the pair's FLOPs: float32 there
    keeps bf16's speed-up elsewhere.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and any(
                s < k for s, k in zip(x.shape[2:], self.kernel_size)):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = Conv3d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(c_out)
        self.conv2 = Conv3d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                Conv3d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm3d(c_out)
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
        if depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"depth must be one of {sorted(BLOCKS_PER_STAGE)}, got {depth}")
        if stem not in STEM_STRIDES:
            raise ValueError(f"stem must be 'cifar' or 'strided', got {stem!r}")
        self.config = ResNetConfig(depth, n_classes, width, stem, float(dropout), in_channels)
        self.depth, self.width, self.n_classes = depth, width, n_classes
        self.stem = nn.Sequential(
            Conv3d(in_channels, width, 3, stride=STEM_STRIDES[stem], padding=1, bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
        )
        stages, c_in = [], width
        for i, (n_blocks, stride) in enumerate(zip(BLOCKS_PER_STAGE[depth], STAGE_STRIDES)):
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

    @classmethod
    def from_config(cls, config: ResNetConfig) -> ResNet3D:
        return cls(**asdict(config))

    @property
    def embedding_dim(self) -> int:
        return self.fc.in_features

    @property
    def stage_channels(self) -> list[int]:
        """Channels of each stage's output."""
        return [self.width * 2**i for i in range(len(self.stages))]

    def forward(self, x: torch.Tensor) -> ModelOutput:
        h = self.stem(x)
        feats = []
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        emb = torch.flatten(self.pool(h), 1)
        return ModelOutput(self.fc(self.dropout(emb)), tuple(feats), emb)


def pair_configs(model_spec, n_classes: int) -> tuple[ResNetConfig, ResNetConfig]:
    """The (teacher, student) configurations a recipe's ``[model]`` table describes."""
    kw = dict(n_classes=n_classes, width=model_spec.width, stem=model_spec.stem, dropout=float(model_spec.dropout))
    return ResNetConfig(model_spec.teacher_depth, **kw), ResNetConfig(model_spec.student_depth, **kw)


def build_pair(model_spec, n_classes: int) -> tuple[ResNet3D, ResNet3D]:
    """The (teacher, student) pair a recipe's ``[model]`` table describes."""
    teacher, student = pair_configs(model_spec, n_classes)
    return ResNet3D.from_config(teacher), ResNet3D.from_config(student)
