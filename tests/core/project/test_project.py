"""The project folder: creation, format version, classes."""

import json

import pytest

from napari_ktal.core.errors import KtalError, ProjectError
from napari_ktal.core.project import Project


def test_project_refuses_existing_and_non_empty_folders(tmp_path, new_project):
    new_project()
    with pytest.raises(ProjectError, match="already exists"):
        new_project()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ProjectError, match="not empty"):
        new_project("other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("version,match", [(99, "newer"), (0, "not supported")])
def test_project_format_version_is_checked(new_project, version, match):
    p = new_project()
    cfg = json.loads((p.root / "project.json").read_text())
    cfg["format_version"] = version
    (p.root / "project.json").write_text(json.dumps(cfg))
    with pytest.raises(ProjectError, match=match):
        Project(p.root)


def test_classes_rename_keeps_labels_and_remove_refuses_used(new_project):
    p = new_project()
    p.add_classes(["a", "b", "junk"])
    p.label(0, "a")
    p.label(1, "b")
    p.rename_class("a", "ribosome")
    assert p.labels() == {0: "ribosome", 1: "b"} and p.classes == ["ribosome", "b", "junk"]
    with pytest.raises(KtalError, match="labels 1 volumes"):
        p.remove_class("b")
    p.remove_class("junk")
    with pytest.raises(KtalError, match="unknown class"):
        p.label(2, "junk")
    assert Project(p.root).classes == ["ribosome", "b"]  # persisted
