"""Self-supervised pretraining of the teacher's encoder on the pool's unlabeled volumes.

Contrastive learning (SimCLR, Chen et al. 2020): two random views of each volume are pulled
together and pushed away from the other volumes of the batch (NT-Xent loss on a small
projection head). The views must look like real subtomograms, so the augmentations keep the
missing wedge where it is (it lies about the y tilt axis): flips of z, y and x (they map the
wedge onto itself; arbitrary rotations would not), a small shift, a random contrast scale and
added Gaussian noise. Rotations about other axes, which would move the wedge, are left out.

The pool is large from the first cycle on, while labels are few: features learned here
initialise the teacher (and the student: its one block per stage starts from the teacher's
first block of that stage) in every cycle, and give the cold-start batch its typical and
diverse picks (see :mod:`napari_ktal.core.loop.pretraining`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import VolumeSource
from ..models import ResNet3D
from ..progress import QUIET, Progress, RunContext
from ..recipe import PretrainSpec, SpeedSpec
from .speed import memory_format, resolve_speed
from .training import apply_flips, flip_masks


@dataclass(frozen=True)
class PretrainResult:
    epochs: int
    loss: float  # NT-Xent of the last epoch
    seconds: float
    volumes: int  # volumes per epoch


def augment(x: torch.Tensor, generator: torch.Generator, shift: int, noise: float) -> torch.Tensor:
    """A random view of each volume of ``x`` (B, 1, D, H, W): flips, a shift of up to ``shift``
    voxels per axis (circular), a contrast scale in [0.8, 1.25], Gaussian noise of std ``noise``."""
    b = x.shape[0]
    x = apply_flips(x, flip_masks(b, generator, x.device))
    if shift > 0:
        offsets = torch.randint(-shift, shift + 1, (b, 3), generator=generator, device=x.device).tolist()
        x = torch.stack([torch.roll(v, shifts=tuple(o), dims=(1, 2, 3)) for v, o in zip(x, offsets)])
    scale = torch.exp(torch.empty(b, 1, 1, 1, 1, device=x.device).uniform_(-0.22, 0.22, generator=generator))
    return x * scale + noise * torch.randn(x.shape, generator=generator, device=x.device)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: each view's positive is the other view of its volume, all 2B-2 others are negatives."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.T / temperature
    n = z1.shape[0]
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


class ProjectionHead(nn.Module):
    def __init__(self, dim: int, out: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def pretrain_encoder(
    encoder: ResNet3D,
    source: VolumeSource,
    spec: PretrainSpec,
    device: torch.device,
    *,
    seed: int,
    speed: SpeedSpec | None = None,
    run: RunContext = QUIET,
) -> PretrainResult:
    """Train ``encoder`` in place by contrast between views of ``source``'s volumes (``speed``: the
    recipe's ``[speed]``, resolved as for training, ``compile`` included; the contrastive loss is
    float32)."""
    n = len(source)
    if n < 4:
        raise ValueError("contrastive pretraining needs at least 4 volumes")
    # the views' random draws on the device that makes them (a CPU generator cannot feed CUDA draws)
    gen = torch.Generator(device=device if device.type == "cuda" else "cpu").manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = ProjectionHead(encoder.embedding_dim).to(device)
    encoder.to(device).train()
    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=1e-4)
    per_epoch = min(n, spec.max_volumes)
    batch = min(spec.batch_size, per_epoch)
    steps = max(1, per_epoch // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=spec.epochs * steps)
    fast = resolve_speed(speed, device, "train")
    net = torch.compile(encoder) if fast.compile else encoder  # shares the encoder's parameters
    t0, loss_mean = time.perf_counter(), float("nan")
    with memory_format([encoder], fast.channels_last):
        for epoch in range(spec.epochs):
            order = rng.permutation(n)[: steps * batch].reshape(steps, batch)
            total = torch.zeros((), device=device)
            for step, idx in enumerate(order):
                run.check_cancel()
                x = torch.from_numpy(source.read(np.sort(idx))).unsqueeze(1).to(device)
                v1, v2 = (fast.batch(augment(x, gen, spec.shift, spec.noise)) for _ in range(2))
                with fast.autocast(device):
                    z1, z2 = head(net(v1).embedding), head(net(v2).embedding)
                loss = nt_xent(z1.float(), z2.float(), spec.temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.detach()
                run.emit(Progress("pretrain", step + 1, steps, epoch=epoch + 1, epochs=spec.epochs))
            loss_mean = float(total / steps)
            run.emit(Progress("pretrain", steps, steps, epoch=epoch + 1, epochs=spec.epochs,
                              metrics={"contrastive_loss": loss_mean}))
    encoder.eval()
    return PretrainResult(spec.epochs, loss_mean, time.perf_counter() - t0, steps * batch)


def student_state_from_teacher(teacher_state: dict[str, torch.Tensor], student: ResNet3D) -> dict[str, torch.Tensor]:
    """The student's weights taken from a pretrained teacher: the same stem, and for each stage the
    teacher's first block (the student has one block per stage; shapes match block for block)."""
    own = student.state_dict()
    picked = {k: v for k, v in teacher_state.items() if k in own and own[k].shape == v.shape and not k.startswith("fc.")}
    stage_blocks = {k for k in own if k.startswith("stages.")}
    missing = stage_blocks - set(picked)
    if missing:
        raise ValueError(f"the pretrained teacher has no weights for {sorted(missing)[:3]} ...")
    return picked
