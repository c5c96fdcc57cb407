"""Shared fixtures: a small simulated data set, a tiny recipe, a fresh project.

torch is imported before anything imports Qt (as cellpose-napari and napari-convpaint do):
loading torch's OpenMP runtime after Qt's can crash on some Linux set-ups.
"""

import torch  # noqa: I001  (must come before anything imports Qt)

import csv
import os
import sys
from pathlib import Path

import pytest

from napari_ktal.core.project import Project
from napari_ktal.core.loop import load_recipe
from napari_ktal.core.simulate import SimulationConfig, class_name, simulate_dataset
SIM_CLASSES = 3
SIM_PER_CLASS = 10
HEADLESS = sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
if HEADLESS:  # Qt widget tests still run; tests marked gui (OpenGL canvas) are skipped below
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``gui`` where there is no display (run them under ``xvfb-run -a``)."""
    if HEADLESS:
        skip = pytest.mark.skip(reason="needs a display and OpenGL: run under xvfb-run -a")
        for item in items:
            if "gui" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def sim_train_dir(tmp_path_factory) -> Path:
    """3 classes x 10 simulated subtomograms (32^3, SNR 1): ``train/*.mrc`` and ``train/labels.csv``."""
    out = tmp_path_factory.mktemp("sim")
    simulate_dataset(out, SimulationConfig(classes=SIM_CLASSES, per_class=SIM_PER_CLASS, snr=1.0, seed=0))
    return out / "train"


@pytest.fixture(scope="session")
def sim_truth(sim_train_dir) -> dict[str, str]:
    """The simulator's class of every volume, by file name (the pool key)."""
    with open(sim_train_dir / "labels.csv", newline="") as f:
        return {row["path"]: row["label"] for row in csv.DictReader(f)}


@pytest.fixture(scope="session")
def sim_classes() -> list[str]:
    return [class_name(c, SIM_CLASSES) for c in range(SIM_CLASSES)]


@pytest.fixture
def tiny_recipe():
    """The quick recipe cut to 2 epochs: a cycle trains in a second or two on 2 CPU cores."""
    return load_recipe("quick").replace(train={"min_steps": 0, "epochs": 2, "lr_milestones": []})


@pytest.fixture
def project(tmp_path, sim_train_dir, sim_classes, tiny_recipe) -> Project:
    return Project.create(tmp_path / "project", sim_train_dir, tiny_recipe, sim_classes)


@pytest.fixture
def one_torch_thread():
    """Train with one torch thread, as the widget's worker does on a 2-core machine.

    With two threads on two cores shared with the GUI (or with another job), torch's
    OpenMP barriers wait on descheduled threads and a tiny cycle takes 10-25x longer.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
