"""How fast a pass runs: precision, memory format, cuDNN, compile.

The recipe's ``[speed]`` table (:class:`~napari_ktal.core.recipe.SpeedSpec`) says what a user
wants; :func:`resolve_speed` turns it into what one phase (``"train"`` or ``"score"``) on one
device does (:class:`Speed`). ``"auto"`` follows the measurements in docs/performance.md
(benchmarks/throughput.py):

================  =====================================  ==========================================
                  precision "auto"                       channels_last "auto"
================  =====================================  ==========================================
CPU, training     bf16 where the CPU has it natively     on: 1.2-1.7x the float32 step on the three
                  (AVX512-BF16 or AMX, asked of torch),  2-core CPUs measured; with native bf16
                  float32 elsewhere (bf16 emulated in    2.1x in all (1.4x for bf16 alone), and
                  software is slower than float32)       1.85-1.91x for a whole quick training
CPU, scoring      as training                            off: mixed (0.71-1.3x), and scoring is ~1%
                                                         of a quick cycle
CUDA              bf16 (tensor cores)                    off (not measured on a GPU yet)
================  =====================================  ==========================================

None of it changes what is computed beyond the precision asked for: logits are cast to
float32 before any loss, score or metric. On the CPU a convolution whose input is smaller than its
kernel stays float32 under bf16 autocast (:class:`~napari_ktal.core.models.resnet3d.Conv3d`: oneDNN's
bf16 weight gradient is wrong there), and a training whose loss goes non-finite stops.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..recipe import SpeedSpec

Phase = Literal["train", "score"]

#: channels_last_3d under "auto", by (device type, phase): see the table above
CHANNELS_LAST_AUTO: dict[tuple[str, str], bool] = {
    ("cpu", "train"): True,
    ("cpu", "score"): False,
    ("cuda", "train"): False,
    ("cuda", "score"): False,
}


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware.

    CUDA: compute capability 8.0 or newer (Ampere); torch's ``is_bf16_supported()`` also says yes
    where bf16 is only emulated (V100, T4). CPU: AVX512-BF16 or AMX tiles, as torch's own CPU
    feature detection (cpuinfo) reports them; AVX-512 without BF16 converts in software.
    """
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.get_device_capability(device) >= (8, 0))
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(torch.cpu, p, lambda: False)()) for p in probes)
    return False


@dataclass(frozen=True)
class Speed:
    """What one phase on one device does (every choice decided)."""

    bf16: bool = False
    channels_last: bool = False
    compile: bool = False

    def autocast(self, device: torch.device):
        """bf16 autocast on ``device`` when this speed asks for it, else a no-op context."""
        kind = device.type if device.type in ("cuda", "cpu") else "cpu"
        return torch.autocast(device_type=kind, dtype=torch.bfloat16, enabled=self.bf16)

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """A batch in the memory format the models are in."""
        return x.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else x

    def describe(self) -> str:
        return f"{'bf16' if self.bf16 else 'fp32'}{', channels_last' if self.channels_last else ''}"



def describe_speed(spec: SpeedSpec | None, device: torch.device) -> str:
    """What ``spec`` does on ``device``, for a status line: ``training fp32, channels_last; scoring fp32``."""
    train, score = (resolve_speed(spec, device, phase) for phase in ("train", "score"))
    return f"training {train.describe()}; scoring {score.describe()}"


def resolve_speed(spec: SpeedSpec | None, device: torch.device, phase: Phase) -> Speed:
    """What ``spec`` (None: all "auto") means for ``phase`` on ``device``."""
    spec = spec or SpeedSpec()
    if spec.precision == "auto":
        bf16 = native_bf16(device)
    else:
        bf16 = spec.precision == "bf16"
    if spec.channels_last == "auto":
        channels_last = CHANNELS_LAST_AUTO.get((device.type, phase), False)
    else:
        channels_last = bool(spec.channels_last)
    return Speed(bf16=bf16, channels_last=channels_last, compile=bool(spec.compile) and phase == "train")


@contextlib.contextmanager
def cuda_speedups(device: torch.device) -> Iterator[None]:
    """cuDNN benchmark mode (it times the convolution algorithms once per input shape) on CUDA."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


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
