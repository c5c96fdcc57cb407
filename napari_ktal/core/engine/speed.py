"""How fast a step runs: autocast, cuDNN, memory format, compile. None of it changes what
is computed beyond floating-point noise."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn


def autocast(device: torch.device):
    """bf16 autocast on CUDA (tensor cores), a no-op on the CPU."""
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


@contextlib.contextmanager
def cuda_speedups(device: torch.device, cudnn_benchmark: bool = True) -> Iterator[None]:
    """cuDNN benchmark mode (it times the convolution algorithms once per input shape) on CUDA."""
    if device.type != "cuda" or not cudnn_benchmark:
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(name, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return None


def channels_last_default() -> bool:
    """Whether convolutions run in channels_last_3d: ``KTAL_CHANNELS_LAST`` (1/0) if set, else off.

    On a shared 2-core CPU it trained the quick recipe's pair 1.5-1.7x faster but scored it
    0-30% slower (docs/performance.md); it also changes results in the last digits, and the
    README's demo table was recorded without it. Off by default until measured on a quiet
    machine and on CUDA; ``KTAL_CHANNELS_LAST=1`` turns it on."""
    return bool(_env_flag("KTAL_CHANNELS_LAST"))


def is_channels_last(models: Sequence[nn.Module]) -> bool:
    """Whether the first convolution weight with several input channels is in channels_last_3d."""
    for m in models:
        for p in m.parameters():
            if p.dim() == 5 and p.shape[1] > 1:
                return p.is_contiguous(memory_format=torch.channels_last_3d) and not p.is_contiguous()
    return False


@contextlib.contextmanager
def memory_format(models: Sequence[nn.Module], channels_last: bool) -> Iterator[None]:
    """Models in channels_last_3d inside the block (those it converted go back afterwards)."""
    changed = []
    if channels_last:
        for m in models:
            if not is_channels_last([m]):
                m.to(memory_format=torch.channels_last_3d)
                changed.append(m)
    try:
        yield
    finally:
        for m in changed:
            m.to(memory_format=torch.contiguous_format)


@dataclass(frozen=True)
class SpeedOptions:
    """How a training step runs.

    ``channels_last``: models and inputs in channels_last_3d memory format; None: off unless
    ``KTAL_CHANNELS_LAST=1`` (see :func:`channels_last_default`).
    ``compile``: ``torch.compile`` the models (first step compiles: seconds to minutes); None:
    ``KTAL_COMPILE=1`` in the environment, else off.
    ``cudnn_benchmark``: let cuDNN time its convolution algorithms (CUDA only).
    ``sync_batchnorm``: under DDP, BatchNorm over the global batch (None: on), as one process
    computes it; off, each rank uses its own slice's statistics.
    """

    channels_last: bool | None = None
    compile: bool | None = None
    cudnn_benchmark: bool = True
    sync_batchnorm: bool | None = None

    def resolved(self) -> SpeedOptions:
        """The options with every None decided (from the environment)."""
        return replace(self,
                       channels_last=channels_last_default() if self.channels_last is None else self.channels_last,
                       compile=bool(_env_flag("KTAL_COMPILE")) if self.compile is None else self.compile)
