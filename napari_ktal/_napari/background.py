"""Long work that must not slow the GUI down: a thread of its own, at a lower OS priority.

On Linux a nice value belongs to a thread, so the training thread can step back for the GUI
thread (and for the user's other programs) without slowing the GUI itself. It gets a thread
of its own because the threads of a pool are reused (by napari and other plugins) and a
lowered priority cannot be raised again without privileges.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

TRAIN_NICE = 10  # how much lower the training thread's OS priority is than the GUI's


def worker_threads() -> int:
    """Torch threads for a job started from the GUI: all cores but one, which the GUI keeps."""
    return max(1, (os.cpu_count() or 2) - 1)


def lower_thread_priority(nice: int | None = None) -> bool:
    """Lower the OS priority of the calling thread only (Linux, where nice values are per thread) by
    ``nice`` (default :data:`TRAIN_NICE`).

    Elsewhere nice values are per process and would slow the GUI down too: nothing is done.
    """
    nice = TRAIN_NICE if nice is None else nice
    if not sys.platform.startswith("linux") or nice <= 0:
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
        return True
    except (OSError, AttributeError):
        return False


def run_in_background_thread(fn, *args, nice: int | None = None, **kwargs):
    """``fn(*args, **kwargs)`` in a new thread of lowered priority; waits for it, returns or raises as fn.

    A thread of its own, because a thread pool's threads are reused (by napari and other
    plugins) and a lowered priority cannot be raised again without privileges.
    """
    out: dict[str, Any] = {}

    def target() -> None:
        lower_thread_priority(nice)
        try:
            out["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            out["error"] = exc

    thread = threading.Thread(target=target, name="napari-ktal training", daemon=True)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["result"]
