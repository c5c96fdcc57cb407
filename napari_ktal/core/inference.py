"""Batched inference over volumes that live on disk (the pool memmap) or in memory."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .progress import Progress, ProgressCallback, StopFlag, check_cancel, emit

#: reads float32 volumes (n, box, box, box) for an index array
VolumeReader = Callable[[np.ndarray], np.ndarray]


def array_reader(volumes: np.ndarray) -> VolumeReader:
    """A reader over an in-memory or memory-mapped array (rows read in sorted order)."""

    def read(idx: np.ndarray) -> np.ndarray:
        order = np.argsort(idx, kind="stable")
        out = np.empty((len(idx), *volumes.shape[1:]), dtype=np.float32)
        out[order] = volumes[idx[order]]
        return out

    return read


def autocast(device: torch.device):
    """bf16 autocast on CUDA (tensor cores), a no-op on the CPU."""
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def forward_outputs(
    models: Sequence[nn.Module],
    read: VolumeReader,
    indices: np.ndarray,
    device: torch.device,
    batch_size: int = 256,
    collect: Callable = lambda out: out.logits,
    on_progress: ProgressCallback | None = None,
    should_stop: StopFlag | None = None,
    phase: str = "score",
) -> list[torch.Tensor]:
    """Run every model on ``indices`` in batches; returns one CPU float32 tensor per model.

    ``collect(ModelOutput) -> Tensor`` picks what to keep (logits by default, or the embedding).
    Results stay on the device until the end: no host sync per batch.
    """
    indices = np.asarray(indices, dtype=np.int64)
    for m in models:
        m.eval()
    outs: list[list[torch.Tensor]] = [[] for _ in models]
    n = len(indices)
    for start in range(0, n, batch_size):
        check_cancel(should_stop)
        chunk = indices[start : start + batch_size]
        x = torch.from_numpy(read(chunk)).unsqueeze(1)
        x = x.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else x
        with autocast(device):
            for k, m in enumerate(models):
                outs[k].append(collect(m(x)).float())
        emit(on_progress, Progress(phase, min(start + batch_size, n), n))
    return [torch.cat(o).cpu() if o else torch.empty(0) for o in outs]


def predict(model: nn.Module, read: VolumeReader, indices, device, batch_size=256, **kw) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class index and its softmax probability for each volume."""
    (logits,) = forward_outputs([model], read, indices, device, batch_size, phase="predict", **kw)
    if logits.numel() == 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    prob = logits.softmax(1)
    conf, pred = prob.max(1)
    return pred.numpy(), conf.numpy()
