"""An advisory lock on a project folder: one writer at a time (a CLI run, a napari window).

The lock is ``flock`` on ``P/.lock``, taken without waiting: a second writer is told at
once who holds it, from the pid, host, purpose and time the holder wrote into the file::

    project /data/p is in use by ktal-cryo train (pid 1234 on gpu-node-3) since 2025-05-01 14:02:11

The operating system releases the lock when its holder exits, however it exits (a crash,
SIGKILL, a closed laptop lid that killed the process), so a lock is never stale; the file
itself stays behind and only says who held it last. Readers (``ktal-cryo predict``, a
script that only looks) need no lock: every file of a project is written atomically or
appended to a journal, so a reader never sees half a write.

What it guards against: two writers interleaving their writes to one project (the journal, the
checkpoints, a cycle's query), e.g. ``ktal-cryo train`` in a terminal while a napari window
imports labels. It is advisory: it stops every writer of this package, which all take it, and
nothing else (a script that writes into the folder without a ``ProjectLock``, ``rm``). On
Windows it is ``msvcrt.locking`` on one byte far past the text, mandatory for that byte only,
so the holder's line stays readable; the system releases it at exit as well. On NFS, Linux
implements ``flock`` with the protocol's byte-range locks, so it excludes writers on other
machines when the server supports locks; a mount with ``nolock`` keeps locks local to each
machine (two machines can both hold it), and a file system that refuses locks (ENOLCK,
EOPNOTSUPP: some FUSE or SMB mounts) degrades the lock to a warning.

Why the two system calls and not the ``filelock`` package (torch installs it, but it is not a
dependency of ours): it wraps the same ``flock`` and ``msvcrt.locking``, and what it adds,
waiting with a timeout and soft-lock fallbacks, is what a project must not do: a second
writer is refused at once, with the holder's name that this module writes into the file.
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
