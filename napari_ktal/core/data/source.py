"""Where the engine reads volumes from: a small protocol, met by the pool and by plain arrays.

The engine (inference, training, the strategies' passes) only ever asks a source for the
volumes of some indices. A source that lives in a file can also say how another process
opens the same volumes (:meth:`VolumeSource.reopen`): under torchrun, rank 0 sends the
pool's to the other ranks, which open it read-only; an in-memory source says None.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

#: a picklable recipe for opening a source in another process: ``opener(*args)``
Reopen = tuple[Callable[..., "VolumeSource"], tuple[Any, ...]]


@runtime_checkable
class VolumeSource(Protocol):
    """Volumes (n, box, box, box) addressed by index."""

    def __len__(self) -> int: ...

    def read(self, indices, dtype=np.float32) -> np.ndarray:
        """Volumes of ``indices`` (any order, repeats allowed) as ``dtype`` (None: as stored)."""
        ...

    def reopen(self) -> Reopen | None:
        """How another process opens the same volumes; None if they live only in this one."""
        ...


class ArraySource:
    """A :class:`VolumeSource` over an in-memory (or memory-mapped) array."""

    def __init__(self, volumes: np.ndarray):
        self.volumes = volumes

    def __len__(self) -> int:
        return len(self.volumes)

    def read(self, indices, dtype=np.float32) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        order = np.argsort(idx, kind="stable")
        out = np.empty((len(idx), *self.volumes.shape[1:]), dtype=self.volumes.dtype if dtype is None else dtype)
        out[order] = self.volumes[idx[order]]  # rows read in sorted order (a memory map reads forward)
        return out

    def reopen(self) -> None:
        return None
