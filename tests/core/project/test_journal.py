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
