"""Regenerate docs/screenshots/widget.png: napari at 1280x800 with the Active learning dock.

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/screenshots/make_screenshots.py

A small simulated data set (4 classes x 25 volumes, SNR 0.5) is made in a temporary folder;
two cycles are labeled from the simulator's truth and trained with the quick recipe (a few
epochs, so it takes about a minute on a laptop CPU), and napari is opened on cycle 2's batch,
as a user would find it.
"""

import torch  # noqa: I001  (before Qt)

import csv
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent
SIZE = (1280, 800)


def prepare(root: Path) -> Path:
    from napari_ktal.core import loop as al
    from napari_ktal.core.project import Project
    from napari_ktal.core.recipe import load_recipe
    from napari_ktal.core.simulate import SimulationConfig, simulate_dataset
    torch.set_num_threads(1)
    simulate_dataset(root / "sim", SimulationConfig(classes=4, per_class=25, snr=0.5, seed=3))
    with open(root / "sim" / "train" / "labels.csv", newline="") as f:
        truth = {row["path"]: row["label"] for row in csv.DictReader(f)}
    recipe = load_recipe("quick").replace(train={"epochs": 8, "lr_milestones": []})
    names = ["ribosome", "proteasome", "TRiC", "membrane protein"]
    project = Project.create(root / "tutorial_project", root / "sim" / "train", recipe, names)
    rename = {f"class_{k:02d}": n for k, n in enumerate(names)}
    al.initial_query(project, recipe, seed=0)
    for cycle in range(2):
        batch = project.read_query(cycle)
        project.label_many({q.index: rename[truth[q.key]] for q in batch}, cycle=cycle)
        al.train_cycle(project, recipe, torch.device("cpu"), seed=0)
    batch = project.read_query(2)  # label a few of cycle 2's batch, as if mid-way
    project.label_many({q.index: rename[truth[q.key]] for q in batch[:3]}, cycle=2)
    return project.root


def main() -> int:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_ktal._napari._qt.widget import ActiveLearningWidget
    with tempfile.TemporaryDirectory() as tmp:
        root = prepare(Path(tmp))
        viewer = napari.Viewer(show=True)
        viewer.window._qt_window.resize(*SIZE)
        # give the canvas the room napari's layer list and controls take by default
        # (View > Layer List / Layer Controls bring them back)
        viewer.window._qt_viewer.dockLayerList.hide()
        viewer.window._qt_viewer.dockLayerControls.hide()
        widget = ActiveLearningWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Active learning", area="right")
        widget.open_project(root)
        for _ in range(20):
            QApplication.processEvents()
        widget.view.fit()  # now that the dock has taken its width
        for _ in range(20):
            QApplication.processEvents()
        path = OUT / "widget.png"
        viewer.screenshot(str(path), canvas_only=False, flash=False)
        print(f"wrote {path}")
        widget._teardown()
        viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
