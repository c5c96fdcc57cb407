"""The labels journal: an append-only JSON-lines file, the single source of truth for labels.

Each accepted label is one line, written and fsync'ed before the call that gives it returns,
so a label survives a crash or a kill the moment it is accepted. Nothing is ever rewritten:
undo and relabel are new lines, and class renames are journal lines too. A torn last line
(the process died mid-write) is ignored on reading.

The napari widget turns on :meth:`LabelJournal.fsync_in_background`: each line is still
written to the file (the operating system) before the call returns, so it survives a crash
or a kill of napari at once, and a background thread fsyncs it to the disk a few
milliseconds later (several labels given meanwhile share one fsync). An fsync can take
10-60 ms on a busy disk: the key press that labels a volume does not wait for it, only a
power cut in those milliseconds could lose the label. :meth:`LabelJournal.flush` waits for
the disk; an fsync that failed is raised by the next write or flush.

Record kinds::

    {"op": "set",    "index": 12, "key": "sub_012.mrc", "label": "ribosome", "by": "user", "cycle": 0, "t": ...}
    {"op": "unset",  "index": 12, "key": "sub_012.mrc", "by": "user", "t": ...}   # undo / skip of a label
    {"op": "rename", "from": "class_1", "to": "ribosome", "t": ...}

A record that changes a label a volume already had (a correction in review, an undo) also
says what it replaced: ``"was": "proteasome"``; an ``unset`` may carry the ``cycle`` it was
given in. Both are optional: older journals without them read the same.
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import fsync_dir
from ..errors import InputWarning, ProjectError


@dataclass(frozen=True)
class LabelState:
    labels: dict[int, str]  # pool index -> class name
    renames: dict[str, str]  # old name -> current name (already applied to `labels`)
    by: dict[int, str] = field(default_factory=dict)  # pool index -> who gave its label (user, oracle, import)


class _BackgroundFsync:
    """fsyncs one file in a thread of its own after writes; writes made meanwhile share the next fsync."""

    def __init__(self, path: Path):
        self.path = path
        self._cond = threading.Condition()
        self._written = 0  # writes made so far
        self._synced = 0  # writes known to be on disk
        self._stop = False
        self.error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="napari-ktal journal fsync", daemon=True)
        self._thread.start()

    def wrote(self) -> None:
        with self._cond:
            self._written += 1
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._synced == self._written and not self._stop:
                    self._cond.wait()
                if self._synced == self._written:  # stopping, nothing left to sync
                    return
                target = self._written
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                self.error = exc
            with self._cond:
                self._synced = target
                self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every write so far is on disk; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._synced == self._written, timeout)

    def stop(self, timeout: float | None = 30.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)


class LabelJournal:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fsync: _BackgroundFsync | None = None

    # -- durability ------------------------------------------------------------------
    def fsync_in_background(self) -> None:
        """From now on, fsync written lines in a background thread (see the module's docstring)."""
        if self._fsync is None:
            self._fsync = _BackgroundFsync(self.path)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every line written so far is on disk; raise ProjectError if an fsync failed."""
        if self._fsync is not None:
            self._fsync.flush(timeout)
        self._raise_fsync_error()

    def fsync_in_foreground(self) -> None:
        """Wait for the background fsyncs, stop their thread; lines are fsync'ed as they are written again."""
        fsync, self._fsync = self._fsync, None
        if fsync is not None:
            fsync.flush()
            fsync.stop()
            if fsync.error is not None:
                raise ProjectError(f"{self.path}: labels could not be saved to disk ({fsync.error})")

    def _raise_fsync_error(self) -> None:
        if self._fsync is not None and self._fsync.error is not None:
            exc, self._fsync.error = self._fsync.error, None
            raise ProjectError(f"{self.path}: labels could not be saved to disk ({exc}); check the disk, "
                               "then give the last labels again")

    # -- writing ---------------------------------------------------------------------
    def _append_records(self, records: Iterable[dict]) -> None:
        lines = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        if not lines:
            return
        self._raise_fsync_error()
        new = not self.path.exists()
        self._heal_torn_tail()
        data = memoryview(lines.encode("utf-8"))
        background = self._fsync is not None and not new
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            while data:  # one write() almost always; a short write (network mounts) continues the line
                data = data[os.write(fd, data):]
            if not background:
                os.fsync(fd)
        finally:
            os.close(fd)
        if background:
            self._fsync.wrote()
        if new:
            fsync_dir(self.path.parent)

    def _heal_torn_tail(self) -> None:
        """If the last write was torn (no trailing newline), end that line so new records stay whole."""
        try:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                last = f.read(1)
        except (FileNotFoundError, OSError):
            return
        if last != b"\n":
            with open(self.path, "ab") as f:
                f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())

    def set(self, index: int, key: str, label: str, by: str = "user", cycle: int | None = None,
            was: str | None = None) -> None:
        self.set_many([(index, key, label)], by=by, cycle=cycle, was={index: was} if was is not None else None)

    def set_many(self, items: Iterable[tuple[int, str, str]], by: str = "user", cycle: int | None = None,
                 was: dict[int, str | None] | None = None) -> None:
        """One record per (index, key, label); ``was`` gives the label a record replaces, if any."""
        t = time.time()
        was = was or {}

        def record(i, k, lab) -> dict:
            rec = {"op": "set", "index": int(i), "key": k, "label": lab, "by": by, "cycle": cycle, "t": t}
            if was.get(i) is not None:
                rec["was"] = was[i]
            return rec

        self._append_records(record(i, k, lab) for i, k, lab in items)

    def unset(self, index: int, key: str, by: str = "user", cycle: int | None = None,
              was: str | None = None) -> None:
        rec = {"op": "unset", "index": int(index), "key": key, "by": by, "t": time.time()}
        if cycle is not None:
            rec["cycle"] = cycle
        if was is not None:
            rec["was"] = was
        self._append_records([rec])

    def rename(self, old: str, new: str) -> None:
        self._append_records([{"op": "rename", "from": old, "to": new, "t": time.time()}])

    # -- reading ---------------------------------------------------------------------
    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        raw = self.path.read_bytes().split(b"\n")
        out = []
        for n, line in enumerate(raw, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                _check_record(rec)
            except (ValueError, UnicodeDecodeError, TypeError, KeyError):
                # a torn line from a killed writer (or a damaged one): skip it, the labels before
                # and after are intact
                warnings.warn(f"{self.path}: line {n} is incomplete or damaged and was skipped", InputWarning,
                              stacklevel=2)
                continue
            out.append(rec)
        return out

    def last_record(self, tail_bytes: int = 4096) -> dict | None:
        """The last whole record, read from the end of the file only (cheap on a long journal)."""
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - tail_bytes))
                tail = f.read()
        except OSError:
            return None
        for line in reversed(tail.split(b"\n")):
            if line.strip():
                try:
                    rec = json.loads(line)
                    _check_record(rec)
                    return rec
                except (ValueError, UnicodeDecodeError, TypeError, KeyError):
                    continue  # a torn last line: the one before is the last whole record
        return None

    def state(self) -> LabelState:
        labels: dict[int, str] = {}
        renames: dict[str, str] = {}
        by: dict[int, str] = {}
        for rec in self.records():
            op = rec["op"]
            if op == "set":
                labels[int(rec["index"])] = rec["label"]
                by[int(rec["index"])] = str(rec.get("by", "user"))
            elif op == "unset":
                labels.pop(int(rec["index"]), None)
                by.pop(int(rec["index"]), None)
            elif op == "rename":
                old, new = rec["from"], rec["to"]
                labels = {i: (new if lab == old else lab) for i, lab in labels.items()}
                renames = {k: (new if v == old else v) for k, v in renames.items()}
                renames[old] = new
            else:
                raise ProjectError(f"{self.path}: unknown journal record {op!r} (written by a newer napari-ktal?)")
        return LabelState(labels, renames, by)

    def labels(self) -> dict[int, str]:
        return self.state().labels


def _check_record(rec) -> None:
    """Raise ValueError/TypeError/KeyError unless ``rec`` is a whole record of a known shape."""
    if not isinstance(rec, dict) or not isinstance(rec.get("op"), str):
        raise TypeError("not a journal record")
    op = rec["op"]
    if op in ("set", "unset"):
        index = rec["index"]
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise ValueError(f"bad index {index!r}")
        if op == "set" and not isinstance(rec["label"], str):
            raise TypeError("label is not text")
    elif op == "rename" and not (isinstance(rec["from"], str) and isinstance(rec["to"], str)):
        raise TypeError("rename needs two class names")
    # any other op is left to state(), which says a newer napari-ktal wrote it
