"""One cycle of training: teacher and student together, on the same batches.

Teacher: cross-entropy. Student: cross-entropy + lambda * transfer loss, with the teacher's
stage activations as detached targets. Because the transfer loss detaches the teacher, the
two graphs are disjoint and one backward of (L_T + L_S) gives each model exactly its own
gradient. On CUDA the step runs under bf16 autocast; the labeled set is moved to the GPU
once and batches are drawn there, so there is no host sync inside an epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .inference import autocast
from .lloss import LossLearning
from .losses import TRANSFER_LOSSES
from .progress import Progress, ProgressCallback, StopFlag, check_cancel, emit
from .recipe import TrainSpec, TransferSpec


@dataclass(frozen=True)
class TrainResult:
    epochs: int
    teacher_loss: float  # mean over the last epoch
    student_loss: float
    transfer_loss: float
    seconds: float
    samples_per_second: float


def make_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    if spec.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)


def random_flips(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each sample independently along z, y and x with probability 1/2.

    Flips map the missing wedge (about the y tilt axis) onto itself, so augmented volumes
    look like real ones; arbitrary rotations would not.
    """
    for dim in (2, 3, 4):
        mask = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
        x = torch.where(mask.view(-1, 1, 1, 1, 1), x.flip(dim), x)
    return x


def _batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> list[torch.Tensor]:
    perm = torch.randperm(n, generator=generator).to(device)
    batches = list(perm.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < 2:  # BatchNorm needs 2 samples; fold a lone one in
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
) -> TrainResult:
    """Train ``teacher`` and ``student`` in place on volumes ``x`` (n, b, b, b) with labels ``y``.

    ``loss_learning`` (the ``lloss`` strategy): a loss-prediction module trained jointly with
    the teacher, its ranking loss added to the teacher's (see :mod:`.lloss`); it gets its own
    optimizer with the same settings and schedule. ``teacher_loss`` stays the cross-entropy.
    """
    if len(x) < 2:
        raise ValueError("training needs at least 2 labeled volumes")
    transfer_fn = TRANSFER_LOSSES[transfer.loss]
    gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator(device=device).manual_seed(seed + 1) if device.type == "cuda" else gen
    teacher.to(device).train()
    student.to(device).train()
    # The labeled set is small (<= a few GB even at 40% of 10^5); keep it on the device.
    xs = torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1).to(device)
    ys = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)
    opts = [make_optimizer(teacher, train), make_optimizer(student, train)]
    if loss_learning is not None:
        loss_learning.module.to(device).train()
        opts.append(make_optimizer(loss_learning.module, train))
    scheds = [torch.optim.lr_scheduler.MultiStepLR(o, train.lr_milestones, train.lr_gamma) for o in opts]
    n_steps = -(-len(x) // train.batch_size)
    t0 = time.perf_counter()
    seen = 0
    sums = torch.zeros(3, device=device)
    for epoch in range(train.epochs):
        sums.zero_()
        batches = _batches(len(x), train.batch_size, gen, device)
        for step, idx in enumerate(batches):
            check_cancel(should_stop)
            xb = xs[idx].float()
            if train.augment == "flips":
                xb = random_flips(xb, aug_gen)
            yb = ys[idx]
            with autocast(device):
                out_t = teacher(xb)
                out_s = student(xb)
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
            (loss_t + loss_s + extra).backward()
            for o in opts:
                o.step()
            sums += torch.stack([loss_t.detach(), loss_s.detach(), l_trans.detach()]) * len(idx)
            seen += len(idx)
            emit(on_progress, Progress("train", step + 1, len(batches), cycle, epoch + 1, train.epochs))
        for s in scheds:
            s.step()
        means = (sums / len(x)).tolist()  # one host sync per epoch
        emit(
            on_progress,
            Progress("train", n_steps, n_steps, cycle, epoch + 1, train.epochs,
                     metrics={"teacher_loss": means[0], "student_loss": means[1], "transfer_loss": means[2]}),
        )
    seconds = time.perf_counter() - t0
    return TrainResult(train.epochs, means[0], means[1], means[2], seconds, seen / max(seconds, 1e-9))
