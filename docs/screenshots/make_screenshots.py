"""Regenerate the screenshots in docs/screenshots/: napari with the Active learning dock.

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/screenshots/make_screenshots.py

- ``window-1280x800.png``: the whole napari window on a laptop screen, as napari opens (layer
  controls and layer list shown), with the project open: every text of the docks readable;
- ``widget.png``: the dock and the current volume (1280 x 800);
- ``gallery.png``: the batch gallery below the canvas, sorted by the teacher's class, three
  volumes selected for one key press (1280 x 900);
- ``review.png``: the review table once the labels are judged out of sample, likely mistakes
  first (1280 x 900).

A small simulated data set (4 classes x 60 volumes, SNR 1) is made in a temporary folder;
two cycles are labeled from the simulator's truth, with three labels deliberately wrong so
that the review has mistakes to show, and trained with the quick recipe (a minute or two on
a laptop CPU); napari is opened on cycle 2's batch of 30, as a user would find it.
"""

import torch  # noqa: I001  (before Qt)

import csv
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent
NAMES = ["ribosome", "proteasome", "TRiC", "membrane protein"]
MISTAKES = 3  # labels of batch 0 given the wrong class on purpose


def prepare(root: Path) -> Path:
    from napari_ktal.core import loop as al
    from napari_ktal.core.project import Project
    from napari_ktal.core.loop import load_recipe
    from napari_ktal.core.simulate import SimulationConfig, simulate_dataset
    torch.set_num_threads(1)
    simulate_dataset(root / "sim", SimulationConfig(classes=4, per_class=60, snr=1.0, seed=3))
    with open(root / "sim" / "train" / "labels.csv", newline="") as f:
        truth = {row["path"]: row["label"] for row in csv.DictReader(f)}
    # the review's out-of-sample judgement at 3 folds and one repeat (the recipe's 5 x 2 take ~13 min
    # of one core here): the table it fills is the same
    recipe = load_recipe("quick").replace(active={"initial_fraction": 0.1, "step_fraction": 0.125,
                                                  "final_fraction": 0.6}, trust={"folds": 3, "repeats": 1})
    project = Project.create(root / "tutorial_project", root / "sim" / "train", recipe, NAMES)
    rename = {f"class_{k:02d}": n for k, n in enumerate(NAMES)}
    al.initial_query(project, recipe, seed=0)
    for cycle in range(2):
        batch = project.read_query(cycle)
        labels = {q.index: rename[truth[q.key]] for q in batch}
        if cycle == 0:  # a few slips, for the review table to find
            for q in batch[:MISTAKES]:
                labels[q.index] = NAMES[(NAMES.index(labels[q.index]) + 1) % len(NAMES)]
        project.label_many(labels, cycle=cycle)
        al.train_cycle(project, recipe, torch.device("cpu"), seed=0)
    batch = project.read_query(2)  # label a few of cycle 2's batch, as if mid-way
    project.label_many({q.index: rename[truth[q.key]] for q in batch[:8]}, cycle=2)
    return project.root


def settle(app, viewer=None, rounds: int = 30) -> None:
    import time

    for _ in range(rounds):
        app.processEvents()
        time.sleep(0.02)


def main() -> int:
    import napari
    from qtpy.QtCore import QItemSelectionModel
    from qtpy.QtWidgets import QApplication

    from napari_ktal._napari._qt.widget import ActiveLearningWidget
    with tempfile.TemporaryDirectory() as tmp:
        root = prepare(Path(tmp))
        viewer = napari.Viewer(show=True)
        app = QApplication.instance()
        window = viewer.window._qt_window
        window.resize(1280, 800)
        widget = ActiveLearningWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Active learning", area="right")
        widget.panel.auto_train.setChecked(False)
        s = widget.open_project(root)
        browser = widget.controller.browser
        for _ in range(300):  # thumbnails and the teacher's opinion, made in the background
            settle(app, rounds=1)
            if browser.teacher is not None and all(browser.thumbnail(q.index) is not None for q in s.batch):
                break
        # four volumes labeled at once (a gallery selection) and taken back: the status line says what went
        widget.assign_to([q.index for q in s.batch[9:13]], NAMES[0])
        widget.undo()
        s.go_to(8)
        widget.show_current()
        settle(app)
        widget.view.fit()  # now that the docks have taken their room
        settle(app)
        shots = []
        path = OUT / "window-1280x800.png"
        viewer.screenshot(str(path), canvas_only=False, flash=False)
        shots.append(path)

        # give the canvas the room napari's layer list and controls take by default
        # (View > Layer List / Layer Controls bring them back)
        viewer.window._qt_viewer.dockLayerList.hide()
        viewer.window._qt_viewer.dockLayerControls.hide()
        settle(app)
        widget.view.fit()
        settle(app)
        path = OUT / "widget.png"
        viewer.screenshot(str(path), canvas_only=False, flash=False)
        shots.append(path)

        window.resize(1280, 900)
        g = widget.browser_panel.gallery
        g.order.setCurrentIndex(g.order.findData("teacher"))
        selection = g.list.selectionModel()
        for row in (1, 2, 3):
            selection.select(g.model.index(row), QItemSelectionModel.SelectionFlag.Select)
        settle(app)
        g.list.scrollToTop()
        widget.view.fit()
        settle(app)
        path = OUT / "gallery.png"
        viewer.screenshot(str(path), canvas_only=False, flash=False)
        shots.append(path)

        for _ in range(60_000):  # the labels judged out of sample in the background (a few minutes)
            settle(app, rounds=1)
            if browser.judged_now is not None:
                break
        widget.browser_panel.setCurrentWidget(widget.browser_panel.review)
        review = widget.browser_panel.review
        review.refresh()
        review.table.resizeColumnsToContents()
        review.table.selectRow(0)
        settle(app)
        path = OUT / "review.png"
        viewer.screenshot(str(path), canvas_only=False, flash=False)
        shots.append(path)
        for p in shots:
            print(f"wrote {p}")
        widget.teardown()
        viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
