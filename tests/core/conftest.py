"""Fixtures of the core tests: a small simulated data set with a test set, a small recipe, projects."""

import pytest

from napari_ktal.core.loop import load_recipe
from napari_ktal.core.project import Project
from napari_ktal.core.simulate import SimulationConfig, simulate_dataset


@pytest.fixture(scope="session")
def small_recipe():
    """The quick recipe at width 4, 2 epochs, batch 8: a cycle on 30 volumes takes a second."""
    return load_recipe("quick").replace(model={"width": 4}, train={"min_steps": 0, "epochs": 2, "lr_milestones": [], "batch_size": 8})


@pytest.fixture(scope="session")
def sim_with_test(tmp_path_factory):
    """(folder, train labels CSV, test labels CSV): 3 classes x 10 training and 2 test volumes, SNR 1."""
    out = tmp_path_factory.mktemp("sim")
    train, test = simulate_dataset(out, SimulationConfig(classes=3, per_class=10, test_per_class=2, snr=1, seed=2))
    return out, train, test


@pytest.fixture
def new_project(tmp_path, sim_with_test, small_recipe):
    """``new_project(name="p")``: a project of the 30 training volumes, with the small recipe."""

    def make(name: str = "p") -> Project:
        return Project.create(tmp_path / name, sim_with_test[0] / "train", small_recipe)

    return make
