"""Several processes, one project: ``torchrun --nproc-per-node N -m napari_ktal.cli train ...``.

Rank 0 (the *leader*) runs ``ktal-cryo train`` exactly as a single process does and is the
only process that opens the project: it reads the labels, writes checkpoints, queries,
history and journal, and holds the project's lock. The other ranks (*followers*, see
:mod:`.follower`) never open the project; they wait for the leader's commands and do their
part of the two heavy steps:

- ``train``: the leader broadcasts the labeled set and the models' configurations; all ranks
  train the same models with DistributedDataParallel (see :mod:`.training`), each on its
  slice of every global batch. DDP copies the leader's initial weights to every rank.
- ``forward``: a pass over a volume source (scoring, prediction) with the models of the last
  training; each rank runs a contiguous shard and the outputs are gathered on the leader.
  Passes the followers cannot repeat (a source held in the leader's memory, a strategy's
  own model copies) run on the leader alone.

Commands travel on a gloo group (CPU) with a long timeout, so followers can wait while the
leader imports a pool or labels; tensors travel on the main group (NCCL on CUDA, gloo on the
CPU). Followers open file-backed sources by the recipe the source gives (the pool: its folder),
so all ranks must see the same file system. If the leader fails, it exits and torchrun stops
the followers.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn

from ..errors import KtalError
from .device import parse_device

COMMAND_TIMEOUT = datetime.timedelta(hours=24)  # followers wait this long for the leader's next command


@dataclass
class _Session:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    backend: str
    commands: Any  # the gloo group commands and gathered objects travel on
    model_groups: list  # one group per DDP model (teacher, student, auxiliary head): its gradients
    bn_groups: list  # and one per model for its synchronised BatchNorm statistics
    models: dict[str, nn.Module] = field(default_factory=dict)  # the last trained models, by role
    sources: dict[Any, Any] = field(default_factory=dict)  # followers: sources opened, by their reopen recipe
    in_collective: bool = False  # leader: inside a command (the followers are in it too)


_session: _Session | None = None


# -- set-up -------------------------------------------------------------------------------------
def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device_name: str = "auto") -> torch.device:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).

    Returns this rank's device: ``cuda:LOCAL_RANK`` (NCCL) unless ``device_name`` is "cpu"
    or CUDA is missing, else the CPU (gloo).
    """
    global _session
    if _session is not None:
        return _session.device
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    name = parse_device(device_name)  # an unknown name is refused, not taken for "auto"
    if name != "cpu" and torch.cuda.is_available():
        if local >= torch.cuda.device_count():
            raise KtalError(f"rank {rank} wants GPU {local} but this node has {torch.cuda.device_count()}; "
                            "start at most one process per GPU")
        device, backend = torch.device("cuda", local), "nccl"
        torch.cuda.set_device(device)
    elif name.startswith("cuda"):
        raise KtalError(f"device '{device_name}' is not available here; use --device cpu")
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not tdist.is_initialized():
        tdist.init_process_group(backend, rank=rank, world_size=world)
    commands = tdist.new_group(backend="gloo", timeout=COMMAND_TIMEOUT)
    groups = [tdist.new_group(backend=backend) for _ in range(6)]
    _session = _Session(rank, world, local, device, backend, commands, groups[:3], groups[3:])
    return device


def shutdown() -> None:
    global _session
    if _session is not None:
        _session = None
        with contextlib.suppress(Exception):
            tdist.destroy_process_group()


def active() -> bool:
    return _session is not None and _session.world > 1


def rank() -> int:
    return _session.rank if _session is not None else 0


def world_size() -> int:
    return _session.world if _session is not None else 1


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


# -- leader and followers ---------------------------------------------------------------------
def leader_call(command: str, payload: dict) -> None:
    """Leader: start ``command`` on every follower (then take part in it yourself)."""
    assert _session is not None and _session.rank == 0
    _session.in_collective = True
    tdist.broadcast_object_list([(command, payload)], src=0, group=_session.commands)


def _done() -> None:
    if _session is not None:
        _session.in_collective = False


@contextlib.contextmanager
def leading() -> Iterator[None]:
    """Leader: on the way out, release the followers (or leave them to torchrun after a failure
    inside a command, when they may be waiting in a collective the leader left)."""
    try:
        yield
    except BaseException:
        if _session is not None and not _session.in_collective:
            with contextlib.suppress(Exception):
                tdist.broadcast_object_list([("stop", None)], src=0, group=_session.commands)
        raise
    else:
        tdist.broadcast_object_list([("stop", None)], src=0, group=_session.commands)
    finally:
        shutdown()


def next_command() -> tuple[str, Any]:
    """Follower: wait for the leader's next command ``(name, payload)``; ``("stop", None)`` ends."""
    assert _session is not None
    box: list[Any] = [None]
    tdist.broadcast_object_list(box, src=0, group=_session.commands)
    return box[0]



# -- data and models ------------------------------------------------------------------------------
def broadcast_arrays(x: np.ndarray, y: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The leader's labeled set on every rank's device: x as (n, 1, b, b, b), y as (n,)."""
    on = device if _session.backend == "nccl" else torch.device("cpu")
    xs = torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1).to(on)
    ys = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(on)
    tdist.broadcast(xs, src=0)
    tdist.broadcast(ys, src=0)
    return xs.to(device), ys.to(device)


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (through the gloo group)."""
    out: list[Any] = [None] * world_size()
    tdist.all_gather_object(out, obj, group=_session.commands)
    _done()
    return out


def remember_models(**models: nn.Module | None) -> None:
    """The models of the last training, by role: forward passes with them can be sharded."""
    _session.models = {name: m for name, m in models.items() if m is not None}


def model_roles(models) -> list[str] | None:
    """The roles of ``models`` among the last trained ones, or None if any is not one of them."""
    if _session is None:
        return None
    roles = [next((k for k, v in _session.models.items() if v is m), None) for m in models]
    return None if None in roles else roles


def models_of(roles: list[str]) -> list[nn.Module]:
    return [_session.models[r] for r in roles]


def open_source(reopen) -> Any:
    """Follower: the source a leader's reopen recipe ``(opener, args)`` describes, opened once."""
    source = _session.sources.get(reopen)
    if source is None:
        opener, args = reopen
        source = _session.sources[reopen] = opener(*args)
    return source


# -- DDP ---------------------------------------------------------------------------------------------
class DDPContext:
    """Teacher, student (and loss module) wrapped in DDP for one cycle's training.

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

    def wrap(self, modules: list[nn.Module]) -> list[nn.Module]:
        """Each module in DDP (teacher, student and an auxiliary head: at most three)."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        wrapped = []
        if len(modules) > len(_session.model_groups):
            raise KtalError(f"several processes train at most {len(_session.model_groups)} modules together")
        for m, group, bn_group in zip(modules, _session.model_groups, _session.bn_groups):
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

    def all_reduce_sum(self, t: torch.Tensor) -> None:
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)

    def sync_buffers(self, *models: nn.Module | None) -> None:
        """Rank 0's BatchNorm statistics everywhere (with per-rank statistics they drift apart)."""
        for m in models:
            if m is None:
                continue
            for b in m.buffers():
                tdist.broadcast(b.data, src=0)
        _done()


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
