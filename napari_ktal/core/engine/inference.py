"""Batched inference over volumes that live on disk (the pool file) or in memory.

The data path keeps the device fed: a background thread reads batch k+1 (``pread`` from the
pool file, see :mod:`.pool`) while batch k runs; on CUDA the batch is copied into pinned
memory in that thread and sent as the pool's float16 (half the bytes), converted on the GPU.
Results stay on the device until the end: no host sync per batch. Out of GPU memory, the
batch is split in halves (a warning says so) down to one volume.

Under ``torchrun`` (:mod:`.distributed`), a pass over the pool with the models of the last
training is split across the ranks and the outputs gathered on rank 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from ..errors import KtalError
from ..progress import Progress, ProgressCallback, StopFlag, check_cancel, emit
from . import distributed as dist

#: reads volumes (n, box, box, box) for an index array (float32, or float16 from the pool)
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


def channels_last_default(device: torch.device, training: bool) -> bool:
    """Whether convolutions run in channels_last_3d: ``KTAL_CHANNELS_LAST`` (1/0) if set, else off.

    On a shared 2-core CPU it trained the quick recipe's pair 1.5-1.7x faster but scored it
    0-30% slower (docs/performance.md); it also changes results in the last digits, and the
    README's demo table was recorded without it. Off by default until measured on a quiet
    machine and on CUDA; ``KTAL_CHANNELS_LAST=1`` turns it on."""
    env = os.environ.get("KTAL_CHANNELS_LAST", "").strip().lower()
    if env in ("1", "true", "yes", "on"):
        return True
    if env in ("0", "false", "no", "off"):
        return False
    return False


@contextlib.contextmanager
def memory_format(models: Sequence[nn.Module], channels_last: bool) -> Iterator[None]:
    """Models in channels_last_3d inside the block (those it converted go back afterwards)."""
    changed = []
    if channels_last:
        for m in models:
            if not _is_channels_last([m]):
                m.to(memory_format=torch.channels_last_3d)
                changed.append(m)
    try:
        yield
    finally:
        for m in changed:
            m.to(memory_format=torch.contiguous_format)


def logits_of(out) -> torch.Tensor:
    return out.logits


def embedding_of(out) -> torch.Tensor:
    return out.embedding


@torch.no_grad()
def forward_outputs(
    models: Sequence[nn.Module],
    read: VolumeReader,
    indices: np.ndarray,
    device: torch.device,
    batch_size: int = 256,
    collect: Callable = logits_of,
    on_progress: ProgressCallback | None = None,
    should_stop: StopFlag | None = None,
    phase: str = "score",
    channels_last: bool | None = None,
) -> list[torch.Tensor]:
    """Run every model on ``indices`` in batches; returns one CPU float32 tensor per model.

    ``collect(ModelOutput) -> Tensor`` picks what to keep (logits by default, or the embedding).
    ``channels_last``: the convolutions' memory format (None: :func:`channels_last_default`, off).
    """
    indices = np.asarray(indices, dtype=np.int64)
    cl = channels_last_default(device, training=False) if channels_last is None else channels_last
    with memory_format(models, cl):
        if dist.active() and dist.is_main():
            plan = dist.forward_plan(models, read, collect)
            if plan is not None:
                dist.leader_call("forward", {**plan, "indices": indices, "batch_size": batch_size, "phase": phase,
                                             "channels_last": cl})
                return _forward_ranks(models, read, indices, device, batch_size, collect, on_progress, should_stop,
                                      phase)
        return _forward_local(models, read, indices, device, batch_size, collect, on_progress, should_stop, phase)


def _forward_ranks(models, read, indices, device, batch_size, collect, on_progress, should_stop, phase):
    """This rank's contiguous share of ``indices``, then every rank's outputs gathered in order."""
    n = len(indices)
    lo, hi = dist.shard_bounds(n)
    share = max(1, hi - lo)

    def scaled(p: Progress) -> None:
        emit(on_progress, dataclasses.replace(p, done=min(n, round(p.done * n / share)), total=n))

    mine = _forward_local(models, read, indices[lo:hi], device, batch_size, collect,
                          scaled if on_progress is not None else None, should_stop, phase)
    parts = dist.gather_objects(mine)
    return [torch.cat([p[k] for p in parts if p[k].numel()]) if any(p[k].numel() for p in parts)
            else torch.empty(0) for k in range(len(models))]


@dist.handler("forward")
def _follow_forward(payload: dict, device: torch.device) -> None:
    models, read, collect = dist.resolve_plan(payload)
    with memory_format(models, payload["channels_last"]):
        _forward_ranks(models, read, payload["indices"], device, payload["batch_size"], collect, None, None,
                       payload["phase"])


def _forward_local(models, read, indices, device, batch_size, collect, on_progress, should_stop, phase):
    for m in models:
        m.eval()
    outs: list[list[torch.Tensor]] = [[] for _ in models]
    n = len(indices)
    size = max(1, batch_size)  # shrinks on out-of-memory
    channels_last = _is_channels_last(models)
    done = 0
    with cuda_speedups(device):
        for x in _prefetched(_device_reader(read, device), indices, batch_size, device, should_stop):
            start = 0
            while start < len(x):
                xb = x[start : start + size].to(device, non_blocking=True).float()
                if channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last_3d)
                try:
                    with autocast(device):
                        results = [collect(m(xb)).float() for m in models]
                except torch.OutOfMemoryError:
                    del xb
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    if size == 1:
                        raise KtalError(f"out of {device.type.upper()} memory even for one volume at a time; "
                                        "use a narrower model or another device") from None
                    size = max(1, size // 2)
                    warnings.warn(f"{phase}: out of GPU memory; continuing with batches of {size} volumes",
                                  RuntimeWarning, stacklevel=3)
                    continue
                for k, r in enumerate(results):
                    outs[k].append(r)
                start += len(xb)
            done += len(x)
            emit(on_progress, Progress(phase, done, n))
    return [torch.cat(o).cpu() if o else torch.empty(0) for o in outs]


def _is_channels_last(models) -> bool:
    """Whether the first convolution weight with several input channels is in channels_last_3d."""
    for m in models:
        for p in m.parameters():
            if p.dim() == 5 and p.shape[1] > 1:
                return p.is_contiguous(memory_format=torch.channels_last_3d) and not p.is_contiguous()
    return False


def _device_reader(read: VolumeReader, device: torch.device) -> VolumeReader:
    """On CUDA, read the pool's stored float16 (half the bytes to copy; converted on the GPU)."""
    from ..data.pool import Pool

    owner = getattr(read, "__self__", None)
    if device.type == "cuda" and isinstance(owner, Pool) and getattr(read, "__func__", None) is Pool.read:
        return functools.partial(owner.read, dtype=None)
    return read


def _prefetched(read: VolumeReader, indices: np.ndarray, batch_size: int, device: torch.device,
                should_stop: StopFlag | None) -> Iterator[torch.Tensor]:
    """Batches of ``indices`` as (b, 1, box, box, box) CPU tensors, the next one read in a thread.

    On CUDA each batch lands in pinned memory (torch's caching host allocator reuses the
    blocks), so the copy to the GPU is asynchronous.
    """
    chunks = [indices[s : s + batch_size] for s in range(0, len(indices), max(1, batch_size))]
    if not chunks:
        return
    pin = device.type == "cuda"

    def load(chunk: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(read(chunk))).unsqueeze(1)
        return t.pin_memory() if pin else t

    # the reader thread must use this rank's GPU: pinning from a fresh thread would otherwise
    # create a CUDA context on GPU 0 (every rank of a multi-GPU run on one GPU's memory)
    init = (lambda: torch.cuda.set_device(device)) if pin and device.index is not None else None
    with ThreadPoolExecutor(1, thread_name_prefix="ktal-read", initializer=init) as pool:
        future = pool.submit(load, chunks[0])
        for k in range(len(chunks)):
            check_cancel(should_stop)
            x = future.result()
            if k + 1 < len(chunks):
                future = pool.submit(load, chunks[k + 1])
            yield x


def predict(model: nn.Module, read: VolumeReader, indices, device, batch_size=256, **kw) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class index and its softmax probability for each volume."""
    (logits,) = forward_outputs([model], read, indices, device, batch_size, phase="predict", **kw)
    if logits.numel() == 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    prob = logits.softmax(1)
    conf, pred = prob.max(1)
    return pred.numpy(), conf.numpy()
