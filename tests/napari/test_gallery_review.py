"""The gallery, the review table, class keys past nine and undo across batches, driven in a real
napari window (run under ``xvfb-run -a``) with real mouse clicks and key presses."""

import itertools

import numpy as np
import pytest
import torch
from qtpy.QtCore import Qt

from napari_ktal.core import loop as al
from napari_ktal.core.loop.session import Phase
from napari_ktal.core.project import Project

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("one_torch_thread")]

TRAIN_TIMEOUT_MS = 90_000


def press(qtbot, target, key: str) -> None:
    qtbot.keyClick(target, key)


def canvas(viewer):
    return viewer.window._qt_viewer.canvas.native


def click_cell(qtbot, gallery, row: int, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    rect = gallery.list.visualRect(gallery.model.index(row))
    qtbot.mouseClick(gallery.list.viewport(), Qt.MouseButton.LeftButton, modifier, rect.center())


def _label_chip_is_readable_on_the_selection(gallery, label: str) -> None:
    """Below each selected cell's thumbnail the label is a chip of its class colour (a long run of exactly
    that colour), with black or white text on it: never class-coloured text on the grey selection."""
    from qtpy.QtGui import QColor

    from napari_ktal._napari._qt.gallery_cells import THUMB
    from napari_ktal._napari.palette import contrast_ratio

    image = gallery.list.viewport().grab().toImage()
    ratio = image.devicePixelRatio()
    color = gallery.colors[label]
    chip = QColor(color).rgb()
    for row in range(gallery.model.rowCount()):
        assert gallery.list.selectionModel().isSelected(gallery.model.index(row))
        cell = gallery.list.visualRect(gallery.model.index(row))
        x0, x1 = int(cell.left() * ratio), int(cell.right() * ratio)
        below = range(int((cell.top() + THUMB + 10) * ratio), int(cell.bottom() * ratio))  # under the frame
        rows = [[image.pixel(x, y) for x in range(x0, x1)] for y in below]
        runs = [max((len(list(g)) for v, g in itertools.groupby(r) if v == chip), default=0) for r in rows]
        assert max(runs) >= 20 * ratio, f"cell {row}: no chip of {color} under the thumbnail"
        on_chip = {v for r, n in zip(rows, runs) if n >= 20 * ratio for v in r}
        best = max(contrast_ratio(QColor(v).name(), color) for v in on_chip)
        assert best >= 4.5, f"cell {row}: the label's text contrasts {best:.1f}:1 with its chip"


def trained_once(project, sim_truth, tiny_recipe):
    """Batch 0 labeled from the truth and cycle 0 trained, as ``ktal-cryo train`` would."""
    batch = al.initial_query(project, tiny_recipe, seed=0)
    project.label_many({q.index: sim_truth[q.key] for q in batch}, cycle=0)
    al.train_cycle(project, tiny_recipe, torch.device("cpu"), seed=0)
    return batch


def test_gallery_multi_select_bulk_assign_sort_and_thumbnails(make_widget, qtbot, project, sim_truth,
                                                              tiny_recipe):
    trained_once(project, sim_truth, tiny_recipe)
    viewer, widget = make_widget()
    widget.panel.auto_train.setChecked(False)
    s = widget.open_project(project.root)
    g = widget.browser_panel.gallery
    assert widget.browser_panel.parent() is not None  # docked below the canvas
    assert g.model.rowCount() == len(s) == 2
    qtbot.waitUntil(lambda: all(g.pixmap(q.index) is not None for q in s.batch), timeout=20_000)
    # batch 1 has an audit slice: the dock hides the scores in a row short enough to read, the reason in its tooltip
    from napari_ktal._napari._qt.session_panel import AUDIT_TIP

    assert any(q.audit for q in s.batch)
    score = widget.panel.score
    assert score.full_text() == "hidden in an audited batch" and not score.elided
    assert AUDIT_TIP in score.toolTip()

    # a click shows a volume; Ctrl-click selects a second; a class key labels both
    click_cell(qtbot, g, 1)
    assert s.position == g.model.position[g.model.rows[1].index]
    click_cell(qtbot, g, 0, Qt.KeyboardModifier.ControlModifier)
    assert len(g.selected()) == 2
    records = len(project.journal.records())
    press(qtbot, g.list, "3")
    assert all(s.label_of(q.index) == s.classes[2] for q in s.batch)
    new = project.journal.records()[records:]
    assert [(r["op"], r["label"], r["cycle"]) for r in new] == [("set", s.classes[2], 1)] * 2
    assert s.phase is Phase.READY
    _label_chip_is_readable_on_the_selection(g, s.classes[2])
    assert g.model.data(g.model.index(0), Qt.ItemDataRole.ToolTipRole).endswith(f"your label: {s.classes[2]}")
    press(qtbot, g.list, "u")  # one undo takes both back
    assert all(s.label_of(q.index) is None for q in s.batch)

    # sort by the teacher's class: grouped by class, in the class order
    g.order.setCurrentIndex(g.order.findData("teacher"))
    ranks = [s.classes.index(q.predicted) for q in g.model.rows]
    assert ranks == sorted(ranks)
    # the other kind of thumbnail: made again in the background
    before = g.pixmap(s.batch[0].index).toImage()
    g.mode.setCurrentIndex(g.mode.findData("slice"))
    qtbot.waitUntil(lambda: all(g.pixmap(q.index) is not None for q in s.batch), timeout=20_000)
    assert g.pixmap(s.batch[0].index).toImage() != before


def test_review_relabels_an_old_label_in_the_journal_and_the_next_training_set(make_widget, qtbot, project,
                                                                              sim_truth, tiny_recipe, monkeypatch):
    batch0 = trained_once(project, sim_truth, tiny_recipe)
    viewer, widget = make_widget()
    widget.panel.auto_train.setChecked(False)
    s = widget.open_project(project.root)
    review = widget.browser_panel.review
    qtbot.waitUntil(lambda: widget.controller.browser.teacher is not None, timeout=30_000)
    widget.browser_panel.setCurrentWidget(review)
    qtbot.waitUntil(lambda: review.model.rowCount() == len(batch0), timeout=5_000)
    assert all(r.predicted and r.cycle == 0 for r in review.model.rows)  # the teacher's guess, the cycle

    # select the row of an old label (cycle 0's batch) and press another class's key
    old = batch0[0]
    row = next(r for r, x in enumerate(review.model.rows) if x.index == old.index)
    review.table.selectRow(review.proxy.mapFromSource(review.model.index(row, 0)).row())
    wrong = next(k for k, c in enumerate(s.classes) if c != sim_truth[old.key])
    press(qtbot, review.table, str(wrong + 1))
    rec = project.journal.records()[-1]
    assert (rec["op"], rec["index"], rec["label"], rec["was"], rec["cycle"]) == (
        "set", old.index, s.classes[wrong], sim_truth[old.key], 1)
    qtbot.waitUntil(lambda: any(x.index == old.index and x.label == s.classes[wrong] for x in review.model.rows),
                    timeout=5_000)
    # double-click: the volume is shown in the viewer
    row = next(r for r, x in enumerate(review.model.rows) if x.index == old.index)  # the table was rebuilt
    index = review.proxy.mapFromSource(review.model.index(row, 0))
    review.table.scrollTo(index)
    where = review.table.visualRect(index).center()
    qtbot.mouseClick(review.table.viewport(), Qt.MouseButton.LeftButton, pos=where)  # Qt wants the press first
    qtbot.mouseDClick(review.table.viewport(), Qt.MouseButton.LeftButton, pos=where)
    assert s.visiting == old.index and widget.panel.position.text() == "review"
    widget.panel.canvas_text.setChecked(True)
    assert "reviewing" in viewer.canvas.overlays.text.text

    # the next cycle trains on the corrected label
    used = []
    original = Project.labeled_arrays

    def spy(self):
        out = original(self)
        used.append(dict(zip(out[0].tolist(), out[1].tolist())))
        return out

    monkeypatch.setattr(Project, "labeled_arrays", spy)
    press(qtbot, canvas(viewer), "n")  # back to the batch
    for q in s.batch:
        s.go_to(s.batch.index(q))
        widget.assign(sim_truth[q.key])
    widget.start_training()
    qtbot.waitUntil(lambda: s.cycle == 2, timeout=TRAIN_TIMEOUT_MS)
    assert used and used[-1][old.index] == wrong


def test_a_tenth_and_eleventh_class_by_key_with_their_keys_and_colours_on_the_buttons(make_widget, qtbot,
                                                                                       project):
    viewer, widget = make_widget()
    widget.panel.auto_train.setChecked(False)
    s = widget.open_project(project.root)
    for k in range(3, 11):
        widget.add_class(f"kind_{k}")
    buttons = widget.panel.class_buttons
    assert buttons[8].text().startswith("9  ") and buttons[9].text() == "0  kind_9"
    assert buttons[10].text() == "Q  kind_10" and not buttons[9].icon().isNull()
    first, second = s.batch[0], s.batch[1]
    press(qtbot, canvas(viewer), "0")
    press(qtbot, canvas(viewer), "q")
    assert s.label_of(first.index) == "kind_9" and s.label_of(second.index) == "kind_10"
    g = widget.browser_panel.gallery
    assert g.colors["kind_9"] != g.colors["kind_10"]
    # a key with no class labels nothing, and says so (in the viewer and in the gallery)
    labels = dict(s.labels)
    press(qtbot, canvas(viewer), "w")
    assert s.labels == labels
    assert widget.panel.status.text() == "No class on key W: this project has 11 classes (keys 1-9, 0, Q)."
    widget.panel.status.clear()
    click_cell(qtbot, g, 0)
    press(qtbot, g.list, "e")
    assert s.labels == labels and widget.panel.status.text().startswith("No class on key E:")


def test_undo_across_a_batch_boundary_by_key(make_widget, qtbot, project, sim_truth):
    viewer, widget = make_widget()
    s = widget.open_project(project.root)
    *rest, last = s.batch
    for q in rest:
        press(qtbot, canvas(viewer), str(s.classes.index(sim_truth[q.key]) + 1))
    wrong = next(k for k, c in enumerate(s.classes) if c != sim_truth[last.key])
    press(qtbot, canvas(viewer), str(wrong + 1))  # a slip on the batch's last volume: the cycle trains
    qtbot.waitUntil(lambda: s.cycle == 1, timeout=TRAIN_TIMEOUT_MS)
    shown = widget.view.layers[0].data.copy()
    press(qtbot, canvas(viewer), "u")  # the undo stack reaches into cycle 0's batch
    assert s.label_of(last.index) is None and s.visiting == last.index
    assert not np.array_equal(widget.view.layers[0].data, shown)  # that volume is on screen again
    assert "batch of cycle 0" in widget.panel.status.text()
    press(qtbot, canvas(viewer), str(s.classes.index(sim_truth[last.key]) + 1))
    assert Project(project.root).labels()[last.index] == sim_truth[last.key]
    press(qtbot, canvas(viewer), "n")
    assert s.visiting is None and widget.panel.position.text() == f"{s.position + 1} / {len(s)}"


def test_the_3d_view_is_a_choice(make_widget, qtbot, project):
    viewer, widget = make_widget()
    widget.panel.auto_train.setChecked(False)
    s = widget.open_project(project.root)
    modes = widget.panel.view_mode
    modes.setCurrentIndex(modes.findData("3d"))
    assert [layer.name for layer in widget.view.layers] == ["ktal 3D", "ktal XY", "ktal XZ", "ktal YZ"]
    assert viewer.dims.ndisplay == 3
    press(qtbot, canvas(viewer), "1")  # the keys are bound on the new layers
    assert s.label_of(s.batch[0].index) == s.classes[0]
    modes.setCurrentIndex(modes.findData("panels"))
    assert [layer.name for layer in widget.view.layers] == ["ktal panels"] and viewer.dims.ndisplay == 2


def test_held_keys_keep_moving_but_never_label_twice(make_widget, qtbot, project):
    from qtpy.QtCore import QEvent
    from qtpy.QtGui import QKeyEvent
    from qtpy.QtWidgets import QApplication

    viewer, widget = make_widget()
    widget.panel.auto_train.setChecked(False)
    s = widget.open_project(project.root)

    def held(key, text):  # the repeats a held key sends
        QApplication.sendEvent(canvas(viewer), QKeyEvent(QEvent.Type.KeyPress, key, Qt.KeyboardModifier.NoModifier,
                                                         text, True))

    held(Qt.Key.Key_1, "1")
    assert s.labels == {}  # a repeat of a class key does nothing
    held(Qt.Key.Key_N, "n")
    held(Qt.Key.Key_N, "n")
    assert s.position == 2  # N held down skims through the batch
    press(qtbot, canvas(viewer), "1")
    assert s.label_of(s.batch[2].index) == s.classes[0]


def test_a_batch_with_an_audit_slice_shows_no_scores_in_its_cells():
    """The audit volumes have no strategy score: a cell showing the others' scores would tell them apart."""
    from napari_ktal._napari._qt.gallery_cells import caption
    from napari_ktal.core.project import QueryItem

    plain = [QueryItem(r, 10 + r, f"v{r}", s, "", float("nan")) for r, s in enumerate((2.5, 1.25, 0.5))]
    assert [caption(r, q, plain) for r, q in enumerate(plain)] == ["1 · 2.5", "2 · 1.25", "3 · 0.5"]
    audited = plain[:2] + [QueryItem(2, 12, "v2", float("nan"), "", float("nan"), audit=True)]
    assert [caption(r, q, audited) for r, q in enumerate(audited)] == ["1", "2", "3"]
