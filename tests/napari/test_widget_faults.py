"""The dock widget under bad input and a busy project: a napari notification, and it stays usable.

The widget gets a ``ViewerModel`` (no OpenGL canvas), so these tests run headless with the
rest of the suite (``QT_QPA_PLATFORM=offscreen``); notifications are recorded by replacing
the widget module's ``show_error`` / ``show_warning``.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from mrcfiles import noise, write_mrc
from napari.components import ViewerModel

from napari_ktal._napari._qt import widget as widget_module
from napari_ktal._napari._qt.widget import ActiveLearningWidget
from napari_ktal._napari.controller import LOCK_PURPOSE
from napari_ktal.cli import main
from napari_ktal.core.engine import device
from napari_ktal.core.project import Project
from napari_ktal.core.project.lock import ProjectLock


@pytest.fixture
def notes(monkeypatch):
    """Every notification the widget shows: [(level, text)]."""
    seen: list[tuple[str, str]] = []
    for level in ("error", "warning", "info"):
        monkeypatch.setattr(widget_module, f"show_{level}", lambda text, lv=level: seen.append((lv, str(text))))
    return seen


@pytest.fixture
def make_widget(qtbot):
    made = []

    def make() -> ActiveLearningWidget:
        w = ActiveLearningWidget(ViewerModel())
        qtbot.addWidget(w)
        made.append(w)
        return w

    yield make
    for w in made:
        w.teardown()


def errors(notes) -> list[str]:
    return [text for level, text in notes if level == "error"]


def _usable(widget, project_root) -> None:
    """The widget opens a good project and labels a volume after the error."""
    session = widget.open_project(project_root)
    assert session is not None and widget.session is session
    if len(session.classes) < 1:
        widget.add_class("ribosome")
    item = session.item
    widget.assign(session.classes[0])
    assert Project(project_root).labels()[item.index] == session.classes[0]


def test_a_project_from_a_newer_version_is_a_notification(make_widget, notes, project, tmp_path):
    newer = tmp_path / "newer"
    shutil.copytree(project.root, newer)
    cfg = json.loads((newer / "project.json").read_text())
    cfg["format_version"] = 99
    (newer / "project.json").write_text(json.dumps(cfg))
    w = make_widget()
    assert w.open_project(newer) is None
    (message,) = errors(notes)
    assert "project.json" in message and "newer" in message
    assert w.session is None
    ProjectLock(newer, "check").acquire().release()  # the failed open holds no lock
    _usable(w, project.root)


def test_bad_data_for_a_new_project_is_a_notification(make_widget, notes, tmp_path, qtbot, sim_train_dir):
    data = tmp_path / "data"
    write_mrc(data / "a.mrc", noise(16, 16, 16))
    bad = noise(16, 16, 16)
    bad[3, 3, 3] = np.nan
    write_mrc(data / "bad.mrc", bad)
    w = make_widget()
    w.create_project(tmp_path / "p", source=data, classes=["a", "b"])
    qtbot.waitUntil(lambda: bool(errors(notes)), timeout=30_000)
    (message,) = errors(notes)
    assert "bad.mrc" in message and "NaN" in message
    assert w.setup.create_button.isEnabled() and not (tmp_path / "p").exists()
    w.create_project(tmp_path / "q", source=sim_train_dir, classes=["a", "b"])  # still usable
    qtbot.waitUntil(lambda: w.session is not None, timeout=60_000)
    assert Project.is_project(tmp_path / "q")


def test_a_recipe_with_a_typo_is_a_notification_and_the_recipe_is_kept(make_widget, notes, project, tmp_path):
    w = make_widget()
    w.open_project(project.root)
    before = (project.root / "recipe.toml").read_bytes()
    bad = tmp_path / "mine.toml"
    bad.write_text("[train]\nepoch = 3\n")
    w.set_recipe(str(bad))
    (message,) = errors(notes)
    assert "mine.toml" in message and "train.epoch" in message and "epochs" in message
    assert (project.root / "recipe.toml").read_bytes() == before
    w.assign(w.session.classes[0])  # still usable


def test_the_widget_holds_the_project_lock_while_it_is_open(make_widget, notes, project, capsys, sim_train_dir,
                                                             sim_truth):
    first, second = make_widget(), make_widget()
    first.open_project(project.root)
    first.open_project(project.root)  # opening it again in the same window is fine
    assert not errors(notes)
    # a CLI run is refused with one line naming the window
    answers = sim_train_dir / "gui_lock.csv"
    answers.write_text("path,label\n" + "".join(f"{k},{sim_truth[k]}\n" for k in sorted(sim_truth)[:2]))
    assert main(["import-labels", str(answers), "--project", str(project.root)]) == 2
    err = capsys.readouterr().err
    assert f"is in use by {LOCK_PURPOSE}" in err and len(err.strip().splitlines()) == 1
    # a second window: a notification, and it stays usable
    assert second.open_project(project.root) is None
    (message,) = errors(notes)
    assert "in use by napari" in message and "close it there" in message
    # closing the project in the first window lets the second one (and the CLI) have it
    first.close_project()
    _usable(second, project.root)
    second.close_project()
    assert main(["import-labels", str(answers), "--project", str(project.root)]) == 0


def test_a_broken_cuda_is_a_visible_warning(make_widget, notes, project, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(device, "_cuda_works", lambda index: False)
    w = make_widget()
    w.open_project(project.root)
    assert ("warning", device.CUDA_BROKEN) in notes
    items = [w.panel.device.itemText(i) for i in range(w.panel.device.count())]
    assert items == ["auto", "cpu"]


def test_a_damaged_checkpoint_at_export_is_a_notification(make_widget, notes, project, tmp_path, qtbot,
                                                          one_torch_thread):
    from napari_ktal._napari import controller as tasks
    session_widget = make_widget()
    session = session_widget.open_project(project.root)
    session_widget.controller.auto_train = False  # the cycle is trained below, directly
    for k in range(len(session)):
        session_widget.assign(session.classes[k % 2])
    # opening starts the thumbnails, then the teacher's opinion if a checkpoint exists by then: let
    # them end first, or the gallery reads the damaged checkpoint too and rightly says so a second time
    from napari_ktal._napari.browser import TEACHER, THUMBNAILS
    runner = session_widget.controller.runner
    qtbot.waitUntil(lambda: runner.running(THUMBNAILS) is None and runner.running(TEACHER) is None, timeout=30_000)
    tasks.train_job(project.root, "cpu", 0, threads=1)  # what the widget's training job runs
    teacher = project.root / "checkpoints" / "cycle_000" / "teacher.pt"
    teacher.write_bytes(teacher.read_bytes()[:300])
    session_widget.export_predictions(tmp_path / "pred.csv")
    qtbot.waitUntil(lambda: bool(errors(notes)), timeout=30_000)
    (message,) = errors(notes)
    assert "teacher.pt" in message and "damaged" in message
    assert session_widget.panel.export_button.isEnabled() and not (tmp_path / "pred.csv").exists()


def test_a_volume_that_cannot_be_shown_is_a_notification(make_widget, notes, project, monkeypatch):
    """A KtalError raised by a view while it follows the controller's news (psygnal hands it on
    wrapped in an EmitLoopError) is a notification, as one from the controller itself is."""
    from napari_ktal.core.errors import KtalError

    w = make_widget()
    s = w.open_project(project.root)
    position = s.position

    def unreadable(*args, **kwargs):
        raise KtalError("sub_000001.mrc is truncated")

    monkeypatch.setattr(w.view, "show", unreadable)
    w.next()
    assert errors(notes) == ["sub_000001.mrc is truncated"] and s.position == position + 1
    monkeypatch.undo()
    _usable(w, project.root)
