"""Several processes (torchrun): rank 0 alone touches the project folder.

Every rank runs the same cycle code (:mod:`.cycle`, :mod:`.oracle`, :mod:`.commands`). What
the other ranks need of the project (the cycle number, the classes, the labeled indices and
their labels, how to open the pool read-only, the training plan) rank 0 reads and
:func:`from_rank0` / :func:`rank0s` send to all; what a cycle writes (checkpoints, queries, history, the
journal) only rank 0 writes, in blocks guarded by ``project is not None``: on the other ranks
the loop's functions get ``project=None``. One process is rank 0 of 1: nothing is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ..engine import distributed as dist

T = TypeVar("T")


def from_rank0(read: Callable[[], T]) -> T:
    """``read()`` on rank 0, its result on every rank (``read`` is not called elsewhere)."""
    return dist.broadcast_object(read() if dist.is_main() else None)


def rank0s(value: T) -> T:
    """Rank 0's ``value`` on every rank (what the others pass is ignored)."""
    return dist.broadcast_object(value)


def check_owner(project: object | None) -> None:
    """Rank 0 passes the project, every other rank None: anything else is a caller's mistake (a
    single process with no project would fail later, far from the cause)."""
    if (project is None) == dist.is_main():
        raise RuntimeError(f"rank {dist.rank()} of {dist.world_size()} was given "
                           f"{'no project' if project is None else 'the project'}; rank 0 alone owns it")


def is_main() -> bool:
    """Whether this process is rank 0, the one that owns the project (one process: always)."""
    return dist.is_main()
