import os

import pytest

from napari_ktal.core.errors import InputWarning
from napari_ktal.core.project.journal import LabelJournal


def test_set_unset_rename_replay(tmp_path):
    j = LabelJournal(tmp_path / "labels.jsonl")
    j.set(3, "a.mrc", "ribo")
    j.set_many([(4, "b.mrc", "proteasome"), (5, "c.mrc", "ribo")], by="oracle", cycle=1)
    j.set(3, "a.mrc", "proteasome")  # relabel
    j.unset(5, "c.mrc")  # undo
    j.rename("proteasome", "26S")
    assert j.labels() == {3: "26S", 4: "26S"}
    assert j.state().renames == {"proteasome": "26S"}


def test_torn_last_line_is_skipped_and_healed(tmp_path):
    j = LabelJournal(tmp_path / "labels.jsonl")
    j.set(1, "a.mrc", "x")
    with open(j.path, "ab") as f:  # a writer killed mid-line
        f.write(b'{"op": "set", "index": 2, "ke')
    with pytest.warns(InputWarning, match="incomplete"):
        assert j.labels() == {1: "x"}
    j.set(7, "g.mrc", "y")  # the next append starts on a fresh line
    with pytest.warns(InputWarning):
        assert j.labels() == {1: "x", 7: "y"}


def test_each_append_reaches_the_file_before_returning(tmp_path):
    j = LabelJournal(tmp_path / "labels.jsonl")
    for i in range(5):
        j.set(i, f"{i}.mrc", "c")
        # another process reading now (e.g. after this one is killed) sees the label
        assert LabelJournal(j.path).labels()[i] == "c"
    assert os.path.getsize(j.path) > 0


def test_background_fsync_writes_at_once_and_syncs_soon(tmp_path, monkeypatch):
    """The widget's mode: a line is in the file when the call returns (a kill loses nothing);
    the fsync follows in a thread, several lines share one; stopping waits for the disk."""
    import threading

    from napari_ktal.core.errors import ProjectError
    from napari_ktal.core.project import journal as journal_module

    j = LabelJournal(tmp_path / "labels.jsonl")
    j.set(0, "a.mrc", "x")  # the first line creates the file, synchronously fsync'ed
    gate = threading.Event()
    synced = []
    real_fsync = os.fsync

    def slow_fsync(fd):
        gate.wait(5)  # a slow disk
        synced.append(fd)
        real_fsync(fd)

    j.fsync_in_background()
    monkeypatch.setattr(journal_module.os, "fsync", slow_fsync)
    for i in range(1, 6):
        j.set(i, f"{i}.mrc", "y", was="x" if i == 1 else None)  # returns while the disk is busy
    assert LabelJournal(j.path).labels() == {0: "x", 1: "y", 2: "y", 3: "y", 4: "y", 5: "y"}  # in the file
    assert [r.get("was") for r in j.records()][:2] == [None, "x"]
    gate.set()
    j.flush(5)
    assert 1 <= len(synced) <= 2  # five writes, at most two fsyncs
    j.fsync_in_foreground()
    j.set(6, "6.mrc", "z")  # synchronous again
    assert len(synced) >= 2

    def failing(fd):
        raise OSError(5, "I/O error")

    j.fsync_in_background()
    monkeypatch.setattr(journal_module.os, "fsync", failing)
    j.set(7, "7.mrc", "z")
    with pytest.raises(ProjectError, match="could not be saved to disk"):
        j.flush(5)
    monkeypatch.setattr(journal_module.os, "fsync", real_fsync)
    j.set(8, "8.mrc", "z")  # the error was reported once; writing goes on
    j.fsync_in_foreground()
    assert LabelJournal(j.path).labels()[8] == "z"
