"""A project made from a particle list in the dock, and a particle shown in its tomogram.

The controller part runs without Qt (the serial runner, running each job at once); the widget part needs a display
(``xvfb-run -a``): the setup form's "Particle list + tomograms" choice, and the key C that
shows the current particle in a slab of its tomogram with the box outlined, and takes it away.
The key stress (C, then C, N or a class key, 20 times) runs ``context_stress.py`` in a process
of its own: it used to crash napari, and a crash must fail one test, not end the test run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pickfiles import blob_tomogram, random_positions, relion5_star, write_tomograms

from napari_ktal._napari.context_view import OUTLINE_SUBPIXELS, box_outline
from napari_ktal._napari.controller import Controller
from napari_ktal._napari.runner import SerialRunner
from napari_ktal.core.data.sites import site_context
from napari_ktal.core.errors import KtalError
from napari_ktal.core.progress import RunContext

SHAPES = {"TS_01": (32, 64, 64), "TS_02": (32, 56, 64)}
STRESS = Path(__file__).with_name("context_stress.py")
STRESS_ROUNDS = 20
STRESS_HANG_S = 900  # not a speed limit: only ends a run that hangs (20 rounds take ~1.5 min on 2 busy cores)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("context")
    rng = np.random.default_rng(11)
    names, positions, volumes = [], [], {}
    for k, (name, shape) in enumerate(SHAPES.items()):
        pos = random_positions(shape, 5, rng, margin=8)
        volumes[name] = blob_tomogram(shape, pos, seed=k, noise=0.3)
        names += [name] * len(pos)
        positions.append(pos)
    positions = np.concatenate(positions)
    write_tomograms(tmp / "tomograms", volumes)
    picks = relion5_star(tmp / "picks.star", names, positions, SHAPES)
    return tmp, picks, names, positions, volumes


def test_controller_creates_from_picks_and_reads_the_context_slab(scene, tmp_path):
    tmp, picks, names, positions, volumes = scene
    ctl = Controller(SerialRunner(eager=True))
    errors = []
    ctl.events.error.connect(errors.append)
    ctl.create_project(tmp_path / "p", source=picks, tomograms=tmp / "tomograms", classes=["a", "b"])
    assert not errors, errors
    project = ctl.session.project
    assert project.pool.box == 32 and project.pool.sites is not None
    index = ctl.session.item.index
    context = ctl.context()
    site = project.pool.sites[index]
    cx, cy, cz = site.centre
    oz, oy, ox = context.origin
    z0, y0, x0, side = context.box
    assert side == 32 and (z0 + oz, y0 + oy, x0 + ox) == (cz - 16, cy - 16, cx - 16)
    # only the slab is read: the box's depth, four boxes across (clipped to the tomogram)
    vol = volumes[site.tomogram]
    np.testing.assert_array_equal(context.slab, vol[oz: oz + context.slab.shape[0], oy: oy + context.slab.shape[1],
                                                    ox: ox + context.slab.shape[2]])
    assert context.slab.shape[0] <= 32 and context.slab.shape[1] <= 128
    corners = context.outline()
    assert np.allclose(corners.mean(axis=0) + 0.5, [y0 + 16, x0 + 16])


def test_no_context_for_a_project_of_subtomogram_files(project):
    with pytest.raises(KtalError, match="not cut from tomograms"):
        site_context(project.pool, project.source_record(), 0)


@pytest.mark.parametrize("box", [(0, 48, 48, 32), (0, 0, 0, 32), (0, 10, 90, 32), (0, -7, 100, 32)],
                         ids=["centred", "at the slab's corner", "at its right edge", "past the tomogram's edges"])
def test_box_outline_lies_just_outside_the_box(box):
    """Every outline pixel (placed as napari places it) is within a line's width outside the box, and the
    line closes around it: the box's voxels stay visible, and the whole box is outlined, even where it
    reaches past the slab (a pick near the tomogram's edge)."""
    shape, voxel = (128, 122), 10.0
    _, y0, x0, side = box
    origin = np.array([7, 3])  # the slab's first voxel in the tomogram
    image, first = box_outline(shape, box)
    f = OUTLINE_SUBPIXELS
    assert all(first[k] <= 0.5 / f - 0.5 and image.shape[k] >= shape[k] * f for k in (0, 1))  # the slab is covered
    iy, ix = np.nonzero(image)
    centres = (origin + np.array(first) + np.stack([iy, ix], axis=1) / f) * voxel  # world (y, x), as napari puts them
    lo = (origin + (y0, x0) - 0.5) * voxel  # the box's world corners (voxel j covers j +- 0.5)
    hi = lo + side * voxel
    half = voxel / f / 2
    assert ((centres < lo) | (centres > hi)).any(axis=1).all(), "an outline pixel covers a voxel of the box"
    assert (centres > lo - 2 * half).all() and (centres < hi + 2 * half).all(), "an outline pixel is off the box"
    for axis in (0, 1):  # a closed ring: each side of the box has its line, corner to corner
        for edge in (lo[axis] - half, hi[axis] + half):
            other = centres[np.isclose(centres[:, axis], edge), 1 - axis]
            assert other.size and other.min() <= lo[1 - axis] - half + 1e-9 and other.max() >= hi[1 - axis] + half - 1e-9


def _pixels_in_world(layer) -> tuple[np.ndarray, np.ndarray]:
    """The world (y, x) corners of a 2D image layer's pixels: pixel i's centre is translate + i * scale."""
    scale, translate = np.array(layer.scale), np.array(layer.translate)
    return translate - scale / 2, translate + (np.array(layer.data.shape) - 0.5) * scale


@pytest.mark.gui
def test_setup_form_and_key_c_show_the_particle_in_its_tomogram(make_napari_viewer, qtbot, scene, tmp_path,
                                                                 one_torch_thread):
    from napari_ktal._napari._qt.setup_panel import FROM_PICKS
    from napari_ktal._napari._qt.widget import ActiveLearningWidget

    tmp, picks, *_ = scene
    viewer = make_napari_viewer(show=True)
    widget = ActiveLearningWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Active learning", area="right")
    try:
        form = widget.setup
        assert not form.tomograms_path.isVisibleTo(form)
        form.source_kind.setCurrentIndex(form.source_kind.findText(FROM_PICKS))
        assert form.tomograms_path.isVisibleTo(form)
        form.source_path.set_path(picks)
        form.tomograms_path.set_path(tmp / "tomograms")
        form.project_path.set_path(tmp_path / "proj")
        form.classes.set_classes(["a", "b"])
        request = form.new_project()
        assert request.tomograms == str(tmp / "tomograms") and request.source == str(picks)
        form.create_button.click()
        qtbot.waitUntil(lambda: widget.session is not None, timeout=30_000)
        canvas = viewer.window._qt_viewer.canvas.native
        panel = widget.panel.view_mode
        panel.setCurrentIndex(panel.findData("3d"))  # the rotatable view: context must come back to it
        assert viewer.dims.ndisplay == 3
        camera = viewer.scene.camera
        before = (camera.center, camera.zoom, camera.angles)
        qtbot.keyClick(canvas, "c")
        names = [layer.name for layer in viewer.layers]
        assert "ktal context" in names and "ktal context box" in names
        assert viewer.dims.ndisplay == 2 and not any(layer.visible for layer in widget.view.layers)
        # the camera fits the slab and its outline, not the hidden volume view (elsewhere in the world)
        boxes = [_pixels_in_world(viewer.layers[name]) for name in ("ktal context", "ktal context box")]
        lo, hi = np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)
        np.testing.assert_allclose(camera.center[-2:], (lo + hi) / 2)
        canvas_hw = np.array(viewer.canvas.size, float)
        assert camera.zoom == pytest.approx(0.95 * np.min(canvas_hw / (hi - lo)))
        qtbot.keyClick(canvas, "c")
        assert "ktal context" not in [layer.name for layer in viewer.layers]
        assert viewer.dims.ndisplay == 3 and all(layer.visible for layer in widget.view.layers)
        np.testing.assert_allclose(camera.center, before[0])  # the view as it was
        assert camera.zoom == pytest.approx(before[1]) and np.allclose(camera.angles, before[2])
        qtbot.keyClick(canvas, "c")
        qtbot.keyClick(canvas, "n")  # another volume: back to the volume view
        assert "ktal context" not in [layer.name for layer in viewer.layers] and viewer.dims.ndisplay == 3
    finally:
        widget.teardown()


@pytest.mark.gui
def test_keys_c_then_c_n_or_a_class_key_20_times_do_not_crash_napari():
    """The issue's crash: C (the particle in its tomogram), then C, N or a class key; napari died in
    glDrawArrays 4 times of 4. Here 20 rounds (the last quarter in the 3D view, whose five layers go
    when the view switches back), then the project closes with the context shown."""
    env = dict(os.environ, PYTHONFAULTHANDLER="1", OMP_NUM_THREADS="1")  # a crash prints the Python stack
    run = subprocess.run([sys.executable, str(STRESS), str(STRESS_ROUNDS)], capture_output=True, text=True,
                         env=env, timeout=STRESS_HANG_S, check=False)
    output = run.stdout + run.stderr
    how = f"killed by {signal.Signals(-run.returncode).name}" if run.returncode < 0 else f"exit {run.returncode}"
    assert run.returncode == 0, f"{how}\n{output[-6000:]}"
    assert f"round {STRESS_ROUNDS}/{STRESS_ROUNDS}" in run.stdout and run.stdout.rstrip().endswith("ok"), output[-6000:]
