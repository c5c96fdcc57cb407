"""Batched inference over a :class:`~napari_ktal.core.data.VolumeSource` (the pool, or arrays).

The data path keeps the device fed: a background thread reads batch k+1 (``pread`` from the
pool file, see :mod:`napari_ktal.core.data.pool`) while batch k runs; on CUDA the batch is
copied into pinned memory in that thread and sent as the source's stored dtype (float16 for
the pool: half the bytes), converted on the GPU. Results stay on the device until the end: no
host sync per batch. Out of GPU memory, the batch is split in halves (a warning says so) down
to one volume.

What a pass keeps of each model's output is asked for by name (``"logits"``, ``"embedding"``,
``"pooled_stages"``: see :data:`napari_ktal.core.models.OUTPUTS`). Under ``torchrun``
(:mod:`.distributed`), a pass asked with ``shard=True``, which every rank makes with the same
models and indices, is split across the ranks: each runs a contiguous shard of the indices and
all outputs are gathered on every rank (all_gather), so every rank holds the whole result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from ..data import VolumeSource
from ..errors import KtalError
from ..models import output as model_output
from ..progress import QUIET, Progress, RunContext
from ..recipe import SpeedSpec
from . import distributed as dist
from .speed import Speed, cuda_speedups, memory_format, resolve_speed


@torch.no_grad()
def forward_outputs(
    models: Sequence[nn.Module],
    source: VolumeSource,
    indices: np.ndarray,
    device: torch.device,
    *,
    output: str = "logits",
    batch_size: int = 256,
    run: RunContext = QUIET,
    phase: str = "score",
    speed: SpeedSpec | None = None,
    shard: bool = False,
) -> list[torch.Tensor]:
    """Run every model on volumes ``indices`` of ``source``; one CPU float32 tensor per model.

    ``output``: what to keep of each forward pass (a name of ``models.OUTPUTS``).
    ``speed``: the recipe's ``[speed]`` (None: "auto"), resolved for scoring on ``device``.
    ``shard``: under torchrun, every rank calls this with the same models (weights) and
    indices; each runs its shard and all get the whole result. One process: no effect.
    """
    indices = np.asarray(indices, dtype=np.int64)
    pass_ = _Pass(output, batch_size, phase, resolve_speed(speed, device, "score"))
    with memory_format(models, pass_.speed.channels_last):
        if shard and dist.active():
            return _forward_ranks(models, source, indices, device, pass_, run)
        return _forward_local(models, source, indices, device, pass_, run)


def predict(model: nn.Module, source: VolumeSource, indices, device: torch.device, *, batch_size: int = 256,
            **kw) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class index and its softmax probability for each volume."""
    (logits,) = forward_outputs([model], source, indices, device, batch_size=batch_size, phase="predict", **kw)
    if logits.numel() == 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    conf, pred = logits.softmax(1).max(1)
    return pred.numpy(), conf.numpy()


@dataclasses.dataclass(frozen=True)
class _Pass:
    output: str
    batch_size: int
    phase: str
    speed: Speed = Speed()


def _forward_ranks(models, source, indices, device, pass_: _Pass, run: RunContext):
    """This rank's contiguous share of ``indices``, then every rank's outputs, in order, on every rank.

    The ranks first check that they were asked for the same pass over the same indices: slices of
    different lists would be joined into wrong scores without a word."""
    n = len(indices)
    asked = (n, hashlib.sha1(indices.tobytes()).hexdigest(), pass_.output, len(models))
    if len(set(dist.all_gather_object(asked))) > 1:
        raise KtalError(f"{pass_.phase}: the processes were asked for different passes (rank {dist.rank()}: "
                        f"{n} volumes, '{pass_.output}'); a sharded pass needs the same models and indices on "
                        "every rank")
    lo, hi = dist.shard_bounds(n)
    share = max(1, hi - lo)

    def scaled(p: Progress) -> None:
        run.emit(dataclasses.replace(p, done=min(n, round(p.done * n / share)), total=n))

    mine = _forward_local(models, source, indices[lo:hi], device, pass_,
                          dataclasses.replace(run, on_progress=scaled) if run.on_progress is not None else run)
    parts = dist.all_gather_object(mine)
    return [torch.cat([p[k] for p in parts if p[k].numel()]) if any(p[k].numel() for p in parts)
            else torch.empty(0) for k in range(len(models))]


def _forward_local(models, source: VolumeSource, indices, device, pass_: _Pass, run: RunContext):
    for m in models:
        m.eval()
    outs: list[list[torch.Tensor]] = [[] for _ in models]
    n = len(indices)
    size = max(1, pass_.batch_size)  # shrinks on out-of-memory
    done = 0
    t0 = time.perf_counter()
    with cuda_speedups(device):
        for x in _prefetched(source, indices, pass_.batch_size, device, run):
            start = 0
            while start < len(x):
                xb = x[start : start + size].to(device, non_blocking=True).float()
                xb = pass_.speed.batch(xb)
                try:
                    with pass_.speed.autocast(device):
                        results = [model_output(m(xb), pass_.output).float() for m in models]
                except torch.OutOfMemoryError:
                    del xb
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    if size == 1:
                        raise KtalError(f"out of {device.type.upper()} memory even for one volume at a time; "
                                        "use a narrower model or another device") from None
                    size = max(1, size // 2)
                    warnings.warn(f"{pass_.phase}: out of GPU memory; continuing with batches of {size} volumes",
                                  RuntimeWarning, stacklevel=3)
                    continue
                for k, r in enumerate(results):
                    outs[k].append(r)
                start += len(xb)
            done += len(x)
            run.emit(Progress(pass_.phase, done, n, elapsed=time.perf_counter() - t0))
    return [torch.cat(o).cpu() if o else torch.empty(0) for o in outs]


def _prefetched(source: VolumeSource, indices: np.ndarray, batch_size: int, device: torch.device,
                run: RunContext) -> Iterator[torch.Tensor]:
    """Batches of ``indices`` as (b, 1, box, box, box) CPU tensors, the next one read in a thread.

    On CUDA each batch is read in the source's stored dtype (converted on the GPU) and lands in
    pinned memory (torch's caching host allocator reuses the blocks), so the copy is asynchronous.
    """
    chunks = [indices[s : s + batch_size] for s in range(0, len(indices), max(1, batch_size))]
    if not chunks:
        return
    pin = device.type == "cuda"

    def load(chunk: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(source.read(chunk, dtype=None if pin else np.float32)))
        t = t.unsqueeze(1)
        return t.pin_memory() if pin else t

    # the reader thread must use this rank's GPU: pinning from a fresh thread would otherwise
    # create a CUDA context on GPU 0 (every rank of a multi-GPU run on one GPU's memory)
    init = (lambda: torch.cuda.set_device(device)) if pin and device.index is not None else None
    with ThreadPoolExecutor(1, thread_name_prefix="ktal-read", initializer=init) as pool:
        future = pool.submit(load, chunks[0])
        for k in range(len(chunks)):
            run.check_cancel()
            x = future.result()
            if k + 1 < len(chunks):
                future = pool.submit(load, chunks[k + 1])
            yield x
