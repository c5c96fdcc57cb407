"""An advisory lock on a project folder: one writer at a time (a CLI run, a napari window).

The lock is ``flock`` on ``P/.lock``, taken without waiting: a second writer is told at
once who holds it, from the pid, host, purpose and time the holder wrote into the file::

    project /data/p is in use by ktal-cryo train (pid 1234 on gpu-node-3) since 2025-05-01 14:02:11

The operating system releases the lock when its holder exits, however it exits (a crash,
SIGKILL, a closed laptop lid that killed the process), so a lock is never stale; the file
itself stays behind and only says who held it last. Readers (``ktal-cryo predict``, a
script that only looks) need no lock: every file of a project is written atomically or
appended to a journal, so a reader never sees half a write.

Where the file system cannot lock (some network mounts), the lock degrades to a warning.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from ..errors import ProjectError

LOCK_FILE = ".lock"

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None
    import msvcrt

_WIN_LOCK_OFFSET = 1 << 30  # Windows locks are mandatory: lock a byte far from the text we read


@dataclass(frozen=True)
class LockInfo:
    """Who holds (or last held) a project's lock."""

    pid: int | None
    host: str
    purpose: str
    since: str

    def describe(self) -> str:
        pid = f"pid {self.pid} on {self.host}" if self.pid is not None else f"on {self.host}"
        return f"{self.purpose or 'another program'} ({pid}) since {self.since or 'an unknown time'}"


class ProjectLocked(ProjectError):
    """Another process (or another window of this one) has the project open for writing."""

    def __init__(self, folder: Path, holder: LockInfo | None):
        self.folder = folder
        self.holder = holder
        who = holder.describe() if holder is not None else "another program"
        super().__init__(
            f"project {folder} is in use by {who}; close it there or wait until it finishes, then try again"
        )


def read_lock_info(folder: str | Path) -> LockInfo | None:
    """What the lock file of ``folder`` says (the holder, or the last one); None if unreadable."""
    try:
        data = json.loads((Path(folder) / LOCK_FILE).read_text(encoding="utf-8"))
        return LockInfo(
            int(data["pid"]) if data.get("pid") is not None else None,
            str(data.get("host", "")),
            str(data.get("purpose", "")),
            str(data.get("since", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _try_lock(fd: int) -> bool:
    """Take the lock on ``fd`` without waiting; False if another holds it."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # pragma: no cover - Windows
            os.lseek(fd, _WIN_LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, errno.EDEADLK):
            return False
        raise


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        else:  # pragma: no cover - Windows
            os.lseek(fd, _WIN_LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


class ProjectLock:
    """The write lock of one folder. ``with ProjectLock(folder, "ktal-cryo train"): ...``.

    Not re-entrant: a second ``ProjectLock`` on the same folder is refused even in the
    same process (two napari windows on one project are as bad as two processes).
    """

    def __init__(self, folder: str | Path, purpose: str):
        self.folder = Path(folder).resolve()
        self.purpose = purpose
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.folder / LOCK_FILE

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> Self:
        if self._fd is not None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise ProjectError(
                f"{self.path}: cannot create the project's lock file ({exc.strerror or exc}); "
                "is the project folder writable?"
            ) from None
        try:
            locked = _try_lock(fd)
        except OSError as exc:  # a file system without locks (some network mounts)
            warnings.warn(
                f"{self.folder}: this file system cannot lock files ({exc.strerror or exc}); make sure no other "
                "ktal-cryo run or napari window writes to this project at the same time",
                RuntimeWarning,
                stacklevel=2,
            )
            locked = True
        if not locked:
            os.close(fd)
            raise ProjectLocked(self.folder, read_lock_info(self.folder))
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "purpose": self.purpose,
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        with contextlib.suppress(OSError):  # who holds it is a courtesy for the message
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(info) + "\n").encode("utf-8"))
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _unlock(fd)
        with contextlib.suppress(OSError):
            os.close(fd)

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):  # a lock object dropped without release() must not hold the folder
        with contextlib.suppress(Exception):
            self.release()
