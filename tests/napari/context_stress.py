"""Key C (a particle in its tomogram), then C, N or a class key, many times, in a real napari window.

Run as a script (``xvfb-run -a python tests/napari/context_stress.py ROUNDS``), in a process of its
own: napari 0.9 / vispy crashed the whole process (SIGSEGV in glDrawArrays) when the context view
added and removed a Shapes layer and the canvas was drawn. ``test_context.py`` runs it in a
subprocess, so that a crash fails one test, with its output, instead of killing the test run.
Prints one line per round and ``ok`` at the end; exits 1 if the view is wrong, -11 if it crashed.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch  # noqa: F401  (imported before Qt, which main() imports: as in the tests' conftest)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: pickfiles, mrcfiles

SHAPES = {"TS_01": (32, 96, 96), "TS_02": (32, 80, 96)}
PICKS_PER_TOMOGRAM = 15
CLASSES = ["a", "b", "c"]
IMPORT_WAIT_S = 120


def make_scene(folder: Path) -> tuple[Path, Path]:
    """Two tomograms with 15 blobs each and a RELION 5 picks file of them (a first batch of 3)."""
    from pickfiles import blob_tomogram, random_positions, relion5_star, write_tomograms

    rng = np.random.default_rng(5)
    names, positions, volumes = [], [], {}
    for k, (name, shape) in enumerate(SHAPES.items()):
        pos = random_positions(shape, PICKS_PER_TOMOGRAM, rng, margin=8)
        volumes[name] = blob_tomogram(shape, pos, seed=k, noise=0.3)
        names += [name] * len(pos)
        positions.append(pos)
    write_tomograms(folder / "tomograms", volumes)
    return relion5_star(folder / "picks.star", names, np.concatenate(positions), SHAPES), folder / "tomograms"


def main(rounds: int) -> int:
    import napari
    from qtpy.QtCore import QCoreApplication
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    from napari_ktal._napari._qt.widget import ActiveLearningWidget
    from napari_ktal.core.loop.session import key_of_class

    with tempfile.TemporaryDirectory() as tmp:
        picks, tomograms = make_scene(Path(tmp))
        viewer = napari.Viewer(show=True)
        viewer.window._qt_window.resize(1280, 800)
        widget = ActiveLearningWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Active learning", area="right")
        widget.panel.auto_train.setChecked(False)  # a done batch must not start training: keys only
        widget.create_project(Path(tmp) / "project", source=picks, tomograms=tomograms, classes=CLASSES)
        for _ in range(IMPORT_WAIT_S * 50):  # the boxes are cut in a worker
            if widget.session is not None:
                break
            QCoreApplication.processEvents()
            QTest.qWait(20)
        else:
            print(f"no project after {IMPORT_WAIT_S} s", flush=True)
            return 1
        canvas = viewer.window._qt_viewer.canvas.native
        canvas.setFocus()

        def draw() -> None:
            QApplication.processEvents()
            canvas.repaint()  # draw now: the crash came in the first frame after the layers changed
            QApplication.processEvents()

        def press(key: str) -> None:
            QTest.keyClick(canvas, key)
            draw()

        problems = []
        # most rounds in the default view (projection + slices), the rest in the 3D view: its five
        # layers go when the view switches back (and crashed napari too, before remove_layers)
        modes = ["panels"] * (rounds - rounds // 4) + ["3d"] * (rounds // 4)
        for r, mode in enumerate(modes):
            if widget.panel.view_mode.currentData() != mode:
                widget.panel.view_mode.setCurrentIndex(widget.panel.view_mode.findData(mode))
                draw()
            second = ("c", "n", key_of_class(r % len(CLASSES)).lower())[r % 3]
            press("c")
            if not widget.context_view.visible:
                problems.append(f"round {r + 1}: C did not show the context")
            press(second)
            if widget.context_view.visible:
                problems.append(f"round {r + 1}: {second.upper()} did not go back to the volume")
            print(f"round {r + 1}/{rounds} ({mode}): C then {second.upper()}", flush=True)
            if widget.session.n_open == 0:  # every volume labeled: take one back, to keep a volume to label
                widget.undo()
                draw()
        widget.panel.view_mode.setCurrentIndex(widget.panel.view_mode.findData("panels"))
        draw()
        press("c")
        widget.controller.close_project()  # the context and the view go at once
        draw()
        widget.teardown()
        viewer.close()
    for p in problems:
        print(p, flush=True)
    print("ok" if not problems else "FAILED", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
