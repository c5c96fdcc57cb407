"""One cycle of training: teacher and student together, on the same batches.

Teacher: cross-entropy. Student: cross-entropy + lambda * transfer loss, with the teacher's
stage activations as detached targets. Because the transfer loss detaches the teacher, the
two graphs are disjoint and one backward of (L_T + L_S) gives each model exactly its own
gradient. On CUDA the step runs under bf16 autocast; the labeled set is moved to the GPU
once and batches are drawn there, so there is no host sync inside an epoch (one per epoch,
for the loss means).

Out of GPU memory: the cycle's training restarts from its initial weights with half the
batch size (a warning and a progress message say so), down to 2; below that it stops with
a :class:`~.errors.KtalError`. A restarted run is the run that batch size gives from the
start, so it is as reproducible as any other.

Several processes (``torchrun``, see :mod:`.distributed`): teacher and student are wrapped
in DistributedDataParallel and every rank takes its slice of the same seeded global batch,
so one optimizer step sees the same samples, flips and (with the loss scaled by the local
share) the same mean gradient as the single-process step. BatchNorm statistics are per rank
on the CPU (gloo); on CUDA the models use SyncBatchNorm by default, which makes the batch
statistics those of the global batch too.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import KtalError
from ..models.transfer import TRANSFER_LOSSES
from ..progress import Progress, ProgressCallback, StopFlag, check_cancel, emit
from ..recipe import TrainSpec, TransferSpec
from ..strategies.lloss import LossLearning, LossPredictionModule
from . import distributed as dist
from .inference import autocast, channels_last_default, cuda_speedups, memory_format

MIN_BATCH = 2  # BatchNorm needs two samples


@dataclass(frozen=True)
class TrainResult:
    epochs: int
    teacher_loss: float  # mean over the last epoch
    student_loss: float
    transfer_loss: float
    seconds: float
    samples_per_second: float
    batch_size: int = 0  # the batch size the cycle finished with (smaller than the recipe's after an OOM)


@dataclass(frozen=True)
class SpeedOptions:
    """How a step runs; none of these change what is computed beyond floating-point noise.

    ``channels_last``: models and inputs in channels_last_3d memory format; None: off unless
    ``KTAL_CHANNELS_LAST=1`` (see :func:`inference.channels_last_default`).
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

    def resolved(self, device: torch.device) -> SpeedOptions:
        env = os.environ.get("KTAL_COMPILE", "").strip().lower() in ("1", "true", "yes", "on")
        return replace(self, channels_last=channels_last_default(device, training=True) if self.channels_last is None
                       else self.channels_last, compile=env if self.compile is None else self.compile)


def make_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    if spec.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)


def random_flips(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each sample independently along z, y and x with probability 1/2.

    Flips map the missing wedge (about the y tilt axis) onto itself, so augmented volumes
    look like real ones; arbitrary rotations would not.
    """
    return apply_flips(x, flip_masks(x.shape[0], generator, x.device))


def flip_masks(n: int, generator: torch.Generator | None, device: torch.device) -> list[torch.Tensor]:
    """The three flip masks (z, y, x) of ``n`` samples, drawn as :func:`random_flips` draws them."""
    return [torch.rand(n, device=device, generator=generator) < 0.5 for _ in range(3)]


def apply_flips(x: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
    for dim, mask in zip((2, 3, 4), masks):
        x = torch.where(mask.view(-1, 1, 1, 1, 1), x.flip(dim), x)
    return x


def _batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device,
             min_size: int = MIN_BATCH) -> list[torch.Tensor]:
    """A seeded (CPU) permutation of ``range(n)``, moved to ``device`` once, cut into batches."""
    perm = torch.randperm(n, generator=generator).to(device)
    batches = list(perm.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < min_size:  # BatchNorm needs 2 samples; fold a lone one in
        last = batches.pop()
        batches[-1] = torch.cat([batches[-1], last])
    return batches


def train_pair(
    teacher: nn.Module,
    student: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    train: TrainSpec,
    transfer: TransferSpec,
    device: torch.device,
    seed: int = 0,
    cycle: int | None = None,
    on_progress: ProgressCallback | None = None,
    should_stop: StopFlag | None = None,
    loss_learning: LossLearning | None = None,
    speed: SpeedOptions | None = None,
) -> TrainResult:
    """Train ``teacher`` and ``student`` in place on volumes ``x`` (n, b, b, b) with labels ``y``.

    ``loss_learning`` (the ``lloss`` strategy): a loss-prediction module trained jointly with
    the teacher, its ranking loss added to the teacher's (see :mod:`.lloss`); it gets its own
    optimizer with the same settings and schedule. ``teacher_loss`` stays the cross-entropy.
    """
    if len(x) < 2:
        raise ValueError("training needs at least 2 labeled volumes")
    speed = (speed if speed is not None else SpeedOptions()).resolved(device)
    if dist.active():
        return _train_distributed(teacher, student, x, y, train, transfer, device, seed, cycle, on_progress,
                                  should_stop, loss_learning, speed)
    teacher.to(device)
    student.to(device)
    if loss_learning is not None:
        loss_learning.module.to(device)
    xs, ys = _stage(x, y, device)
    modules = [teacher, student] + ([loss_learning.module] if loss_learning is not None else [])
    initial = [_snapshot(m) for m in modules]
    batch_size = train.batch_size
    while True:
        try:
            return _fit(teacher, student, xs, ys, train, transfer, device, seed, batch_size, cycle, on_progress,
                        should_stop, loss_learning, speed)
        except torch.OutOfMemoryError:
            if batch_size <= MIN_BATCH:
                _release_memory(modules, device)
                raise KtalError(f"out of {device.type.upper()} memory even with a batch of {batch_size} volumes; "
                                "use a narrower model ([model] width), a smaller box or another device") from None
        _release_memory(modules, device)
        new = max(MIN_BATCH, batch_size // 2)
        message = (f"cycle {cycle if cycle is not None else '-'}: out of GPU memory at batch size {batch_size}; "
                   f"restarting this cycle's training with batch size {new}")
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        emit(on_progress, Progress("train", 0, 1, cycle, 1, train.epochs, message=message))
        for m, state in zip(modules, initial):
            m.load_state_dict(state)
        batch_size = new


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _release_memory(modules, device: torch.device) -> None:
    for m in modules:
        for p in m.parameters():
            p.grad = None
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _stage(x: np.ndarray, y: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The labeled set on the device (small: <= a few GB even at 40% of 10^5 volumes).

    Where it does not fit, it stays in pinned host memory and each batch is copied over.
    """
    xs = torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1)
    ys = torch.from_numpy(np.asarray(y, dtype=np.int64))
    if device.type == "cpu":
        return xs, ys
    try:
        return xs.to(device), ys.to(device)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        warnings.warn(f"the labeled set ({xs.nbytes / 2**30:.1f} GiB) does not fit in GPU memory; "
                      "batches are copied from host memory", RuntimeWarning, stacklevel=3)
        return xs.pin_memory(), ys.pin_memory()


def _fit(
    teacher: nn.Module,
    student: nn.Module,
    xs: torch.Tensor,
    ys: torch.Tensor,
    train: TrainSpec,
    transfer: TransferSpec,
    device: torch.device,
    seed: int,
    batch_size: int,
    cycle: int | None,
    on_progress: ProgressCallback | None,
    should_stop: StopFlag | None,
    loss_learning: LossLearning | None,
    speed: SpeedOptions,
    ddp: dist.DDPContext | None = None,
) -> TrainResult:
    """The epochs of one cycle. Under DDP (``ddp``), the models passed are the wrapped ones."""
    n = len(xs)
    transfer_fn = TRANSFER_LOSSES[transfer.loss]
    gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator(device=device).manual_seed(seed + 1) if device.type == "cuda" else gen
    raw = [_unwrap(teacher), _unwrap(student)] + ([_unwrap(loss_learning.module)] if loss_learning else [])
    for m in raw:
        m.train()
    opts = [make_optimizer(m, train) for m in raw]
    scheds = [torch.optim.lr_scheduler.MultiStepLR(o, train.lr_milestones, train.lr_gamma) for o in opts]
    run_t, run_s = teacher, student
    if speed.compile:
        run_t, run_s = torch.compile(teacher), torch.compile(student)
    world, rank = (ddp.world, ddp.rank) if ddp else (1, 0)
    # BatchNorm needs 2 samples per batch: over the global batch (synchronised, which then cuts
    # batches exactly as one process does), or on each rank; and every rank needs one sample
    min_size = max(MIN_BATCH if ddp is None or ddp.sync_bn else MIN_BATCH * world, world)
    if n < min_size:
        raise KtalError(f"training on {world} processes needs at least {min_size} labeled volumes, not {n}")
    t0 = time.perf_counter()
    seen = 0
    sums = torch.zeros(3, device=device)
    means = [float("nan")] * 3
    with memory_format(raw, speed.channels_last), cuda_speedups(device, speed.cudnn_benchmark):
        for epoch in range(train.epochs):
            sums.zero_()
            batches = _batches(n, batch_size, gen, xs.device, min_size)
            for step, idx in enumerate(batches):
                check_cancel(should_stop)
                n_global = len(idx)
                masks = flip_masks(n_global, aug_gen, device) if train.augment == "flips" else None
                share = 1.0
                if world > 1:  # this rank's slice of the global batch; masks drawn for the global batch
                    lo, hi = _slice(n_global, world, rank)
                    idx, share = idx[lo:hi], (hi - lo) * world / n_global
                    masks = [mk[lo:hi] for mk in masks] if masks is not None else None
                xb = xs[idx].to(device, non_blocking=True).float()
                if masks is not None:
                    xb = apply_flips(xb, masks)
                if speed.channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last_3d)
                yb = ys[idx].to(device, non_blocking=True)
                with autocast(device):
                    out_t = run_t(xb)
                    out_s = run_s(xb)
                    if loss_learning is None:
                        loss_t = F.cross_entropy(out_t.logits.float(), yb)
                        extra = 0.0
                    else:
                        ce = F.cross_entropy(out_t.logits.float(), yb, reduction="none")
                        loss_t = ce.mean()
                        extra = loss_learning.loss(out_t.stages, ce, epoch)
                    l_trans = transfer_fn(out_s, out_t)
                    loss_s = F.cross_entropy(out_s.logits.float(), yb) + transfer.weight * l_trans
                for o in opts:
                    o.zero_grad(set_to_none=True)
                # DDP averages gradients over ranks: scaling by the local share makes that the global mean
                ((loss_t + loss_s + extra) * share).backward()
                for o in opts:
                    o.step()
                sums += torch.stack([loss_t.detach(), loss_s.detach(), l_trans.detach()]) * len(idx)
                seen += n_global
                emit(on_progress, Progress("train", step + 1, len(batches), cycle, epoch + 1, train.epochs))
            for s in scheds:
                s.step()
            if ddp is not None:
                ddp.all_reduce_sum(sums)
            means = (sums / n).tolist()  # one host sync per epoch
            emit(
                on_progress,
                Progress("train", len(batches), len(batches), cycle, epoch + 1, train.epochs,
                         metrics={"teacher_loss": means[0], "student_loss": means[1], "transfer_loss": means[2]}),
            )
    seconds = time.perf_counter() - t0
    return TrainResult(train.epochs, means[0], means[1], means[2], seconds, seen / max(seconds, 1e-9), batch_size)


def _slice(n: int, world: int, rank: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous part of ``n`` items split ``world`` ways (sizes differ by <= 1)."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


# -- several processes ------------------------------------------------------------------------
def _train_distributed(teacher, student, x, y, train, transfer, device, seed, cycle, on_progress, should_stop,
                       loss_learning, speed) -> TrainResult:
    """Rank 0 (the leader) tells the followers to train with it, then all ranks run :func:`_fit`."""
    if dist.is_main():
        dist.leader_call("train", {
            "teacher": dist.architecture(teacher), "student": dist.architecture(student),
            "train": train, "transfer": transfer, "seed": seed, "cycle": cycle, "speed": speed,
            "lloss": None if loss_learning is None else
            {"weight": loss_learning.weight, "margin": loss_learning.margin,
             "detach_epoch": loss_learning.detach_epoch},
            "x": (tuple(x.shape), str(np.asarray(x).dtype)),
        })
    return _train_ranks(teacher, student, x, y, train, transfer, device, seed, cycle, on_progress, should_stop,
                        loss_learning, speed)


def _train_ranks(teacher, student, x, y, train, transfer, device, seed, cycle, on_progress, should_stop,
                 loss_learning, speed) -> TrainResult:
    for m in (teacher, student) + ((loss_learning.module,) if loss_learning is not None else ()):
        m.to(device)
    xs, ys = dist.broadcast_arrays(x, y, device)
    ddp = dist.DDPContext(device, speed.sync_batchnorm)
    try:
        wrapped_t, wrapped_s, ll = ddp.wrap(teacher, student, loss_learning)
        result = _fit(wrapped_t, wrapped_s, xs, ys, train, transfer, device, seed, train.batch_size,
                      cycle, on_progress if dist.is_main() else None, should_stop if dist.is_main() else None, ll,
                      speed, ddp)
    except torch.OutOfMemoryError:
        raise KtalError(f"out of GPU memory on rank {dist.rank()} at batch size {train.batch_size} "
                        f"({train.batch_size // dist.world_size()} per GPU); lower [train] batch_size "
                        "(several processes cannot lower it on their own)") from None
    finally:
        with contextlib.suppress(Exception):
            ddp.unwrap()
    ddp.sync_buffers(teacher, student, loss_learning.module if loss_learning is not None else None)
    dist.remember_models(teacher, student, loss_learning.module if loss_learning is not None else None)
    return result


@dist.handler("train")
def _follow_train(payload: dict, device: torch.device) -> None:
    """A follower's side of :func:`_train_distributed`: same models (weights come from rank 0)."""
    teacher = dist.build_architecture(payload["teacher"])
    student = dist.build_architecture(payload["student"])
    loss_learning = None
    if payload["lloss"] is not None:
        from ..strategies.lloss import stage_channels

        ll = payload["lloss"]
        loss_learning = LossLearning(LossPredictionModule(stage_channels(teacher)), ll["weight"], ll["margin"],
                                     ll["detach_epoch"])
    shape, dtype = payload["x"]
    x = np.empty(shape, dtype=dtype)  # filled by the broadcast
    y = np.empty(shape[0], dtype=np.int64)
    _train_ranks(teacher, student, x, y, payload["train"], payload["transfer"], device, payload["seed"],
                 payload["cycle"], None, None, loss_learning, payload["speed"])
