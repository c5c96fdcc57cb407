"""Noise stability (Li et al., AAAI 2024): how much small weight noise moves each prediction.

K times: copy the trained model and add Gaussian noise to every layer's weight with
||noise|| = scale * ||W|| for that layer (every module that has a ``weight``: convolutions,
BatchNorm scales, the classifier; biases and BatchNorm statistics are left alone, as in the
reference code). For each sample, the change of the softmax output normalised by the clean
output's norm, (f_noisy(x) - f(x)) / ||f(x)||, is one block of its feature vector; the K
blocks are concatenated and the batch is chosen by greedy k-center on these vectors, starting
from the origin (a zero change = a perfectly stable sample), so magnitude acts as
uncertainty and direction as diversity.

The passes run in full float32 (no bf16 autocast, no TF32): a relative weight change of 1e-3
is below bf16's rounding (~4e-3) and close to TF32's. Candidate volumes are read once and
kept on the device (float16, as the pool stores them) for the K + 1 passes.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import VolumeSource
from ..progress import QUIET, Progress, RunContext
from ..recipe import check
from .base import QueryContext, Selection, register
from .kcenter import kcenter_greedy


@torch.no_grad()
def add_weight_noise(model: nn.Module, scale: float, generator: torch.Generator | None = None) -> None:
    """In place: W += n with n Gaussian, rescaled so that ||n||_2 = scale * ||W||_2, for each module's weight."""
    for module in model.modules():
        w = getattr(module, "weight", None)
        if isinstance(w, torch.Tensor) and w.numel():
            noise = torch.randn(w.shape, generator=generator, device=w.device, dtype=w.dtype)
            w.add_(noise * (scale * w.norm() / noise.norm().clamp_min(torch.finfo(w.dtype).tiny)))


@contextlib.contextmanager
def full_float32(device: torch.device):
    """Turn TF32 off for convolutions and matmuls on CUDA within the block (no-op on the CPU)."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@torch.no_grad()
def _softmax_outputs(model: nn.Module, volumes: torch.Tensor, batch_size: int, run: RunContext) -> torch.Tensor:
    out = []
    for start in range(0, len(volumes), batch_size):
        run.check_cancel()
        x = volumes[start : start + batch_size].unsqueeze(1).float()
        res = model(x)
        out.append(F.softmax((res.logits if hasattr(res, "logits") else res).float(), dim=1))
    return torch.cat(out)


def output_changes(
    model: nn.Module,
    source: VolumeSource,
    indices: np.ndarray,
    device: torch.device,
    passes: int = 30,
    scale: float = 1e-3,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
    *,
    run: RunContext = QUIET,
) -> torch.Tensor:
    """(N, passes * C) concatenated normalised output changes of volumes ``indices``, on ``device``."""
    indices = np.asarray(indices, dtype=np.int64)
    volumes = torch.from_numpy(source.read(indices)).to(device=device, dtype=torch.float16)
    was_training = model.training
    model.eval()
    noisy = copy.deepcopy(model).eval()
    clean_state = {k: v.clone() for k, v in model.state_dict().items()}
    blocks = []
    try:
        with full_float32(device):
            base = _softmax_outputs(model, volumes, batch_size, run)
            norm = base.norm(dim=1, keepdim=True)
            run.emit(Progress("score", 1, passes + 1))
            for k in range(passes):
                noisy.load_state_dict(clean_state)
                add_weight_noise(noisy, scale, generator)
                blocks.append((_softmax_outputs(noisy, volumes, batch_size, run) - base) / norm)
                run.emit(Progress("score", k + 2, passes + 1))
    finally:
        model.train(was_training)
    return torch.cat(blocks, dim=1) if blocks else torch.empty(len(indices), 0, device=device)


@dataclass(frozen=True)
class Options:
    passes: int = 30  # K noisy copies of the teacher (the paper uses 30-50)
    scale: float = 0.001  # ||noise|| = scale * ||W|| for each layer's weight

    def validate(self, section: str) -> None:
        check(1 <= self.passes <= 1000, f"{section}.passes", "must be between 1 and 1000")
        check(0 < self.scale <= 1, f"{section}.scale", "must be in (0, 1]")


@register("noise-stability", summary="k-center on output changes under small weight noise", options=Options,
          old_prefix="noise",
          cost="passes + 1 passes of the teacher over the candidates, then M k-center passes")
def noise_stability_query(ctx: QueryContext, candidates: np.ndarray, m: int, opts: Options) -> Selection:
    """Noise stability (Li et al. 2024): greedy k-center from the origin on the concatenated
    normalised softmax changes under ``passes`` weight-noise draws of relative size
    ``scale``."""
    feats = output_changes(ctx.teacher, ctx.source, candidates, ctx.device, opts.passes, opts.scale,
                           ctx.torch_generator(), ctx.batch_size, run=ctx.run)
    order, dist = kcenter_greedy(feats, m, centers=feats.new_zeros(1, feats.shape[1]))
    return Selection(candidates[order], dist)
