"""Several processes, one program (SPMD): ``torchrun --nproc-per-node N -m napari_ktal.cli train ...``.

Every rank runs the same code: the same cycle, the same training, the same scoring. Where
their work meets, they use torch's collectives, and nothing else: no commands, no session.
This module is the thin layer over ``torch.distributed`` that the engine and the loop share:

- :func:`init_from_env` joins the process group torchrun describes; :func:`rank`,
  :func:`world_size`, :func:`is_main` read it (one process: rank 0 of 1, no group needed);
- :func:`broadcast_object` (rank 0's value everywhere) and :func:`all_gather_object`;
- :func:`shard_bounds`: a rank's contiguous part of n items;
- :class:`DDPContext`: modules wrapped in DistributedDataParallel for one training, with
  BatchNorm over the global batch (SyncBatchNorm on CUDA, :class:`GlobalBatchNorm3d` on the CPU).

Who reads and writes the project is the loop's business (rank 0 alone, :mod:`napari_ktal.core.loop.ranks`);
the engine never sees a project.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn

from ..errors import KtalError
from .device import parse_device

#: how long a collective may wait: ranks wait at a broadcast while rank 0 alone imports a pool,
#: pretrains or writes; a rank that fails ends the run through torchrun, not through this timeout
WAIT_TIMEOUT = datetime.timedelta(hours=24)


# -- set-up -------------------------------------------------------------------------------------
def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device_name: str = "auto") -> torch.device:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).

    Returns this rank's device: ``cuda:LOCAL_RANK`` (NCCL) unless ``device_name`` is "cpu"
    or CUDA is missing, else the CPU (gloo).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank_ = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank_)))
    name = parse_device(device_name)  # an unknown name is refused, not taken for "auto"
    if name != "cpu" and torch.cuda.is_available():
        if local >= torch.cuda.device_count():
            raise KtalError(f"rank {rank_} wants GPU {local} but this node has {torch.cuda.device_count()}; "
                            "start at most one process per GPU")
        device, backend = torch.device("cuda", local), "nccl"
        torch.cuda.set_device(device)
    elif name.startswith("cuda"):
        raise KtalError(f"device '{device_name}' is not available here; use --device cpu")
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not tdist.is_initialized():
        tdist.init_process_group(backend, rank=rank_, world_size=world, timeout=WAIT_TIMEOUT)
    return device


def shutdown() -> None:
    if tdist.is_initialized():
        with contextlib.suppress(Exception):
            tdist.destroy_process_group()


def active() -> bool:
    """Whether this process is one of several (a process group of more than one rank)."""
    return world_size() > 1


def rank() -> int:
    return tdist.get_rank() if tdist.is_initialized() else 0


def world_size() -> int:
    return tdist.get_world_size() if tdist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def shard_bounds(n: int, world: int | None = None, rank_: int | None = None) -> tuple[int, int]:
    """Rank ``rank_``'s contiguous part ``[lo, hi)`` of ``n`` items split ``world`` ways (sizes
    differ by at most one); by default this process's part in this run."""
    world = world_size() if world is None else world
    r = rank() if rank_ is None else rank_
    base, extra = divmod(n, world)
    lo = r * base + min(r, extra)
    return lo, lo + base + (r < extra)


# -- collectives ----------------------------------------------------------------------------------
def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (pickled; the others' ``obj`` is ignored). One process: ``obj``."""
    if not active():
        return obj
    box = [obj if is_main() else None]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank. One process: ``[obj]``."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    tdist.all_gather_object(out, obj)
    return out


# -- DDP ---------------------------------------------------------------------------------------------
class DDPContext:
    """Teacher, student (and an auxiliary head) wrapped in DDP for one cycle's training.

    Each module gets a process group of its own for its gradients and one for its
    synchronised BatchNorm statistics, made here (every rank makes them, in the same order)
    and released by :meth:`unwrap`: their all-reduces never interleave.

    ``sync_batchnorm`` (default on): BatchNorm normalises with the statistics of the global
    batch, as the single process does; then a step on N ranks computes what the
    single-process step computes, up to the order of floating-point sums. On CUDA that is
    torch's SyncBatchNorm (NCCL); on the CPU (gloo, which SyncBatchNorm does not support)
    :class:`GlobalBatchNorm3d`. Off: each rank normalises with its own slice's statistics
    (the usual DDP default; cheaper, but not the single-process result).
    """

    def __init__(self, device: torch.device, sync_batchnorm: bool | None):
        self.device = device
        self.world, self.rank = world_size(), rank()
        self.sync_bn = True if sync_batchnorm is None else bool(sync_batchnorm)
        self._converted: list[nn.Module] = []
        self._groups: list = []

    def wrap(self, modules: list[nn.Module]) -> list[nn.Module]:
        """Each module in DDP; DDP copies rank 0's weights and buffers to every rank."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        wrapped = []
        for m in modules:
            # the long wait of the default group: a rank may wait here while rank 0 pretrains or writes
            group, bn_group = tdist.new_group(timeout=WAIT_TIMEOUT), tdist.new_group(timeout=WAIT_TIMEOUT)
            self._groups += [group, bn_group]
            if self.sync_bn:
                if self.device.type == "cuda":
                    nn.SyncBatchNorm.convert_sync_batchnorm(m, process_group=bn_group)
                else:
                    _convert_to_global_bn(m, bn_group)
                self._converted.append(m)
            wrapped.append(DDP(m, device_ids=ids, process_group=group))
        return wrapped

    def unwrap(self) -> None:
        """Put plain BatchNorm3d back where a synchronised one was (same weights and statistics)."""
        for m in self._converted:
            _revert_batchnorm(m)
        self._converted = []
        for g in self._groups:
            with contextlib.suppress(Exception):
                tdist.destroy_process_group(g)
        self._groups = []

    def all_reduce_sum(self, t: torch.Tensor) -> None:
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)

    def sync_buffers(self, *models: nn.Module | None) -> None:
        """Rank 0's BatchNorm statistics everywhere (with per-rank statistics they drift apart)."""
        for m in models:
            if m is None:
                continue
            for b in m.buffers():
                tdist.broadcast(b.data, src=0)


class _GlobalBatchNormFn(torch.autograd.Function):
    """Training-mode batch norm over the batch of all ranks (forward and backward), any backend."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum, group):
        dims = [0, *range(2, x.dim())]
        xf = x.double()
        count = torch.tensor([x.numel() // x.shape[1]], dtype=torch.float64, device=x.device)
        stats = torch.cat([xf.sum(dims), (xf * xf).sum(dims), count])
        tdist.all_reduce(stats, group=group)
        c = x.shape[1]
        total = stats[-1]
        mean = stats[:c] / total
        var = (stats[c : 2 * c] / total - mean * mean).clamp_min(0)
        invstd = (var + eps).rsqrt()
        shape = [1, c] + [1] * (x.dim() - 2)
        xhat = ((xf - mean.view(shape)) * invstd.view(shape)).to(x.dtype)
        if running_mean is not None:
            with torch.no_grad():
                unbiased = var * total / (total - 1).clamp_min(1)
                running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
                running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
        ctx.save_for_backward(xhat, weight, invstd.to(x.dtype))
        ctx.group, ctx.total, ctx.shape, ctx.dims = group, float(total), shape, dims
        return xhat * weight.view(shape) + bias.view(shape)

    @staticmethod
    def backward(ctx, dy):
        xhat, weight, invstd = ctx.saved_tensors
        shape, dims = ctx.shape, ctx.dims
        sum_dy = dy.sum(dims)
        sum_dy_xhat = (dy * xhat).sum(dims)
        sums = torch.cat([sum_dy, sum_dy_xhat]).double()
        tdist.all_reduce(sums, group=ctx.group)
        c = dy.shape[1]
        mean_dy = (sums[:c] / ctx.total).to(dy.dtype).view(shape)
        mean_dy_xhat = (sums[c:] / ctx.total).to(dy.dtype).view(shape)
        dx = (dy - mean_dy - xhat * mean_dy_xhat) * (invstd * weight).view(shape)
        # the parameters' gradients stay local: DDP averages them over the ranks
        return dx, sum_dy_xhat, sum_dy, None, None, None, None, None


class GlobalBatchNorm3d(nn.BatchNorm3d):
    """BatchNorm3d whose training statistics are those of the global batch (all ranks of ``group``)."""

    def __init__(self, *args, group=None, **kw):
        super().__init__(*args, **kw)
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.affine or not self.track_running_stats:
            return super().forward(x)
        self.num_batches_tracked.add_(1)
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        return _GlobalBatchNormFn.apply(x, self.weight, self.bias, self.running_mean, self.running_var,
                                        self.eps, momentum, self.group)


def _convert_to_global_bn(module: nn.Module, group) -> None:
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm3d:
            bn = GlobalBatchNorm3d(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats, group=group)
            bn.load_state_dict(child.state_dict())
            bn.to(next(iter(child.state_dict().values())).device)
            bn.train(child.training)
            setattr(module, name, bn)
        else:
            _convert_to_global_bn(child, group)


def _revert_batchnorm(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, (nn.SyncBatchNorm, GlobalBatchNorm3d)):
            bn = nn.BatchNorm3d(child.num_features, child.eps, child.momentum, child.affine,
                                child.track_running_stats)
            bn.load_state_dict(child.state_dict())
            bn.to(next(iter(child.state_dict().values())).device)
            bn.train(child.training)
            setattr(module, name, bn)
        else:
            _revert_batchnorm(child)
