"""One cycle of training: teacher and student together, on the same batches.

Teacher: cross-entropy. Student: cross-entropy + lambda * transfer loss, with the teacher's
stage activations as detached targets. Because the transfer loss detaches the teacher, the
two graphs are disjoint and one backward of (L_T + L_S) gives each model exactly its own
gradient. The recipe's ``[speed]`` decides the precision (bf16 autocast where the device has
it natively) and memory format of the step (:mod:`.speed`); losses are float32 whatever it
decides. On CUDA the labeled set is moved to the GPU
once and batches are drawn there, so there is no host sync inside an epoch (one per epoch,
for the loss means).

Without a student (``student=None``: the strategy's query does not read one) the teacher trains
alone, on the same batches and flips, and ends with the same weights it has beside a student
(without dropout: the student's dropout masks are drawn from torch's global generator between
the teacher's, so with dropout on they shift); the student's losses are then NaN.

A query strategy may bring an :class:`~.heads.AuxiliaryHead` (learning loss does): it is
trained with the teacher, its loss added to the teacher's, without training knowing which
strategy it serves.

Out of GPU memory: the cycle's training restarts from its initial weights with half the
batch size (a warning and a progress message say so), down to 2; below that it stops with
a :class:`~napari_ktal.core.errors.KtalError`. A restarted run is the run that batch size
gives from the start, so it is as reproducible as any other.

Several processes (``torchrun``, see :mod:`.distributed`): every rank calls
:func:`train_pair` with the whole labeled set (the same program on every rank); the modules
are wrapped in DistributedDataParallel (rank 0's initial weights go to every rank) and every
rank takes its slice of the same seeded global batch, so
one optimizer step sees the same samples, flips and (with the loss scaled by the local
share) the same mean gradient as the single-process step. BatchNorm statistics are those of
the global batch by default (SyncBatchNorm on CUDA, :class:`.distributed.GlobalBatchNorm3d`
on the CPU).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import KtalError, TrainingDiverged
from ..models import TRANSFER_LOSSES, ResNet3D
from ..progress import QUIET, Progress, RunContext
from ..recipe import SpeedSpec, TrainSpec, TransferSpec
from ..seeds import DEFAULT_SEED
from . import distributed as dist
from .heads import AuxiliaryHead
from .speed import Speed, cuda_speedups, memory_format, resolve_speed

MIN_BATCH = 2  # BatchNorm needs two samples


@dataclass(frozen=True)
class TrainJob:
    """What one cycle's training does (the models and data aside)."""

    train: TrainSpec
    transfer: TransferSpec
    seed: int = DEFAULT_SEED
    cycle: int | None = None  # for progress and messages
    speed: SpeedSpec = field(default_factory=SpeedSpec)  # the recipe's [speed], resolved per device
    #: under DDP, BatchNorm over the global batch (as one process computes it); off, each rank
    #: normalises with its own slice's statistics
    sync_batchnorm: bool = True


@dataclass(frozen=True)
class TrainResult:
    epochs: int
    teacher_loss: float  # mean over the last epoch
    student_loss: float
    transfer_loss: float
    seconds: float
    samples_per_second: float
    batch_size: int = 0  # the batch size the cycle finished with (smaller than the recipe's after an OOM)


class _Modules(NamedTuple):
    """What a step runs: teacher, an optional student and an optional head (DDP-wrapped under torchrun)."""

    teacher: nn.Module
    student: nn.Module | None
    head: nn.Module | None

    def all(self) -> list[nn.Module]:
        return [m for m in self if m is not None]


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


def class_weights(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Cross-entropy weights n / (K * n_k) for the K classes present (absent classes: 1)."""
    counts = torch.bincount(y, minlength=n_classes).float()
    present = counts > 0
    w = torch.ones(n_classes, device=y.device)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return w


@torch.no_grad()
def recalibrate_batchnorm(models: list[nn.Module], xs: torch.Tensor, device: torch.device, batch_size: int) -> None:
    """BatchNorm running statistics recomputed as the plain average over the labeled set (torch's
    ``swa_utils.update_bn``: train mode, no gradient, each batch weighted alike)."""
    batches = [x.to(device, non_blocking=True).float() for x in xs.split(max(2, batch_size))]
    if len(batches) > 1 and len(batches[-1]) < 2:  # BatchNorm needs two samples in a batch
        batches[-2] = torch.cat([batches[-2], batches.pop()])
    for m in models:
        torch.optim.swa_utils.update_bn(batches, m)


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
    teacher: ResNet3D,
    student: ResNet3D | None,
    x: np.ndarray,
    y: np.ndarray,
    job: TrainJob,
    *,
    head: AuxiliaryHead | None = None,
    device: torch.device,
    run: RunContext = QUIET,
) -> TrainResult:
    """Train ``teacher`` and ``student`` (and ``head``) in place on volumes ``x`` (n, b, b, b), labels ``y``.

    ``student`` None: the teacher (and head) alone, as it trains beside a student."""
    if len(x) < 2:
        raise ValueError("training needs at least 2 labeled volumes")
    modules = _Modules(teacher, student, head)
    for m in modules.all():
        m.to(device)
    xs, ys = _stage(x, y, device)
    ddp = dist.DDPContext(device, job.sync_batchnorm) if dist.active() else None
    speed = resolve_speed(job.speed, device, "train")
    # the memory format is set before DDP wraps the models: its gradient buckets take their layout
    with memory_format(modules.all(), speed.channels_last):
        if ddp is None:
            result = _train_local(modules, xs, ys, job, device, speed, run)
        else:
            result = _train_ranks(modules, xs, ys, job, device, speed, ddp, run)
    if job.train.recalibrate_bn:  # every rank holds the whole labeled set: the same statistics everywhere
        recalibrate_batchnorm([m for m in (teacher, student) if m is not None], xs, device,
                              job.train.eval_batch_size)
    if ddp is not None:
        ddp.sync_buffers(*modules.all())
    return result


def _train_local(modules: _Modules, xs, ys, job: TrainJob, device, speed: Speed, run: RunContext) -> TrainResult:
    """One process: out of GPU memory, the cycle restarts from its initial weights at half the batch."""
    initial = [_snapshot(m) for m in modules.all()]
    batch_size = job.train.batch_size
    while True:
        try:
            return _fit(modules, xs, ys, job, device, batch_size, speed, run=run)
        except torch.OutOfMemoryError:
            if batch_size <= MIN_BATCH:
                _release_memory(modules.all(), device)
                raise KtalError(f"out of {device.type.upper()} memory even with a batch of {batch_size} volumes; "
                                "use a narrower model ([model] width), a smaller box or another device") from None
        _release_memory(modules.all(), device)
        new = max(MIN_BATCH, batch_size // 2)
        cycle = job.cycle if job.cycle is not None else "-"
        message = (f"cycle {cycle}: out of GPU memory at batch size {batch_size}; "
                   f"restarting this cycle's training with batch size {new}")
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        run.emit(Progress("train", 0, 1, job.cycle, 1, job.train.epochs, message=message))
        for m, state in zip(modules.all(), initial):
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


class _Step:
    """One optimizer step of teacher, student (and head) on a batch, as the job's recipe sets it:
    the forward passes in the speed's precision, the losses in float32 (the teacher's
    cross-entropy; the student's plus lambda * transfer loss; the head's on the teacher's plain
    per-sample loss), one backward of their sum scaled by this rank's share of the batch."""

    def __init__(self, modules: _Modules, ys: torch.Tensor, job: TrainJob, device: torch.device, speed: Speed):
        train = job.train
        self.raw = _Modules(*(None if m is None else _unwrap(m) for m in modules))
        self.head = modules.head
        n_classes = self.raw.teacher.fc.out_features
        self.weight = class_weights(ys.to(device), n_classes) if train.class_balance == "loss" else None
        self.smooth_s = train.label_smoothing
        self.smooth_t = self.smooth_s if train.label_smoothing_for == "both" else 0.0
        # the teacher's loss is the mean of the head's per-sample loss
        self.plain = self.weight is None and not self.smooth_t
        self.transfer_fn = TRANSFER_LOSSES[job.transfer.loss]
        self.transfer_weight = job.transfer.weight
        self.speed, self.device = speed, device
        for m in self.raw.all():
            m.train()
        self.opts = [make_optimizer(m, train) for m in self.raw.all()]
        self.scheds = [torch.optim.lr_scheduler.MultiStepLR(o, train.lr_milestones, train.lr_gamma)
                       for o in self.opts]
        self.teacher, self.student = modules.teacher, modules.student
        if speed.compile:
            self.teacher = torch.compile(self.teacher)
            self.student = None if self.student is None else torch.compile(self.student)

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor, epoch: int, share: float) -> torch.Tensor:
        """Step on batch ``xb``, ``yb``; the (teacher, student, transfer) losses, detached."""
        with self.speed.autocast(self.device):  # the forward passes; the losses below in float32
            out_t = self.teacher(xb)
            out_s = None if self.student is None else self.student(xb)
            predicted_loss = None if self.head is None else self.head(*self.raw.head.inputs(out_t, epoch))
        logits_t = out_t.logits.float()
        if self.head is None or not self.plain:
            loss_t = F.cross_entropy(logits_t, yb, weight=self.weight, label_smoothing=self.smooth_t)
        if self.head is None:
            extra = 0.0
        else:  # the head learns the plain per-sample loss
            ce = F.cross_entropy(logits_t, yb, reduction="none")
            if self.plain:
                loss_t = ce.mean()
            extra = self.raw.head.loss(predicted_loss.float(), ce)
        if out_s is None:  # the teacher alone: its gradient is the one it gets beside a student
            loss_s = l_trans = torch.full((), float("nan"), device=logits_t.device)
            total = loss_t + extra
        else:
            l_trans = self.transfer_fn(out_s, out_t)  # float32 (the transfer losses cast their inputs)
            loss_s = (F.cross_entropy(out_s.logits.float(), yb, weight=self.weight, label_smoothing=self.smooth_s)
                      + self.transfer_weight * l_trans)
            total = loss_t + loss_s + extra
        for o in self.opts:
            o.zero_grad(set_to_none=True)
        # DDP averages gradients over ranks: scaling by the local share makes that the global mean
        (total * share).backward()
        for o in self.opts:
            o.step()
        return torch.stack([loss_t.detach(), loss_s.detach(), l_trans.detach()])

    def end_epoch(self) -> None:
        for s in self.scheds:
            s.step()


def _fit(
    modules: _Modules,
    xs: torch.Tensor,
    ys: torch.Tensor,
    job: TrainJob,
    device: torch.device,
    batch_size: int,
    speed: Speed,
    *,
    run: RunContext,
    ddp: dist.DDPContext | None = None,
) -> TrainResult:
    """The epochs of one cycle. Under DDP (``ddp``), ``modules`` holds the wrapped modules, which
    are already in the speed's memory format (:func:`train_pair`)."""
    train, n = job.train, len(xs)
    step_on = _Step(modules, ys, job, device, speed)
    gen = torch.Generator().manual_seed(job.seed)
    aug_gen = torch.Generator(device=device).manual_seed(job.seed + 1) if device.type == "cuda" else gen
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
    extension = _Extension(train, n)
    epoch = 0
    with cuda_speedups(device):
        while epoch < train.epochs + extension.epochs:
            total_epochs = train.epochs + extension.epochs
            sums.zero_()
            batches = _batches(n, batch_size, gen, xs.device, min_size)
            for step, idx in enumerate(batches):
                run.check_cancel()
                n_global = len(idx)
                masks = flip_masks(n_global, aug_gen, device) if train.augment == "flips" else None
                share = 1.0
                if world > 1:  # this rank's slice of the global batch; masks drawn for the global batch
                    lo, hi = dist.shard_bounds(n_global, world, rank)
                    idx, share = idx[lo:hi], (hi - lo) * world / n_global
                    masks = [mk[lo:hi] for mk in masks] if masks is not None else None
                xb = xs[idx].to(device, non_blocking=True).float()
                if masks is not None:
                    xb = apply_flips(xb, masks)
                sums += step_on(speed.batch(xb), ys[idx].to(device, non_blocking=True), epoch, share) * len(idx)
                seen += n_global
                run.emit(Progress("train", step + 1, len(batches), job.cycle, epoch + 1, total_epochs,
                                  elapsed=time.perf_counter() - t0))
            if ddp is not None:
                ddp.all_reduce_sum(sums)
            means = (sums / n).tolist()  # one host sync per epoch
            _check_finite(means, modules.student is not None, epoch, speed)
            if not extension.extend(epoch, means[0]):  # the schedule moves on (an extension holds the lr)
                step_on.end_epoch()
            run.emit(Progress("train", len(batches), len(batches), job.cycle, epoch + 1,
                              train.epochs + extension.epochs,
                              metrics={"teacher_loss": means[0], "student_loss": means[1], "transfer_loss": means[2]},
                              elapsed=time.perf_counter() - t0))
            epoch += 1
    seconds = time.perf_counter() - t0
    return TrainResult(epoch, means[0], means[1], means[2], seconds, seen / max(seconds, 1e-9), batch_size)


class _Extension:
    """``[train] fit_loss``: epochs added at the first lr milestone while the teacher has not fit.

    At the end of the epoch before the first milestone, while the teacher's mean training loss
    over that epoch is above ``fit_loss``, one more epoch runs at the same learning rate, as long
    as the whole training (with the epochs after the milestone, unchanged) stays within
    ``max_steps``. A set the teacher fits in time trains exactly as without it, and so does a
    schedule without an lr drop (nothing to hold). The loss is the epoch mean every rank agrees on
    (all-reduced under DDP), so all ranks decide alike."""

    def __init__(self, train: TrainSpec, n: int):
        self.target = train.fit_loss if train.lr_milestones else 0.0
        self.cap = train.max_steps
        self.milestone = train.lr_milestones[0] if train.lr_milestones else train.epochs
        self.after = train.epochs - self.milestone  # epochs from the first milestone to the end
        self.steps = train.steps_per_epoch(n)
        self.epochs = 0  # added so far

    def extend(self, epoch: int, teacher_loss: float) -> bool:
        """Whether the epoch just ended (0-based ``epoch``) is followed by one more at this lr."""
        if self.target <= 0 or epoch + 1 != self.milestone + self.epochs or teacher_loss <= self.target:
            return False
        if (epoch + 2 + self.after) * self.steps > self.cap:
            return False
        self.epochs += 1
        return True


def _check_finite(means: list[float], with_student: bool, epoch: int, speed: Speed) -> None:
    """Stop a training whose loss went non-finite (every later step would only spread the NaN,
    and the cycle would end with a teacher at chance), saying what to change."""
    names = ["teacher", "student", "transfer"] if with_student else ["teacher"]
    bad = [name for name, m in zip(names, means) if not math.isfinite(m)]
    if bad:
        hint = ('; [speed] precision = "fp32" in the recipe trains in float32' if speed.bf16 else
                "; a smaller [train] lr may help")
        raise TrainingDiverged(f"training diverged: the {' and '.join(bad)} loss is not finite in epoch {epoch + 1} "
                               f"({speed.describe()}){hint}")


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


# -- several processes ------------------------------------------------------------------------
def _train_ranks(modules: _Modules, xs, ys, job: TrainJob, device, speed: Speed, ddp: dist.DDPContext,
                 run: RunContext) -> TrainResult:
    """Every rank's side of one training: DDP over the ranks, each on its slice of every batch."""
    batch = job.train.batch_size
    try:
        wrapped = iter(ddp.wrap(modules.all()))
        ranked = _Modules(*(None if m is None else next(wrapped) for m in modules))
        return _fit(ranked, xs, ys, job, device, batch, speed, run=run, ddp=ddp)
    except torch.OutOfMemoryError:
        raise KtalError(f"out of GPU memory on rank {dist.rank()} at batch size {batch} "
                        f"({batch // dist.world_size()} per GPU); lower [train] batch_size "
                        "(several processes cannot lower it on their own)") from None
    finally:
        with contextlib.suppress(Exception):
            ddp.unwrap()
