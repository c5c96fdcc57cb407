"""Fixtures of the strategy tests: a tiny network, a tiny recipe, a project after one cycle."""

import numpy as np
import pytest
import torch

from napari_ktal.core import loop
from napari_ktal.core.data import ArraySource
from napari_ktal.core.models import ResNet3D
from napari_ktal.core.project import Project
from napari_ktal.core.strategies import QueryContext

# 30 volumes: 6 labeled, then M = 6 from all 24 unlabeled
TINY = loop.load_recipe("quick").replace(
    model={"width": 2},
    train={"min_steps": 0, "epochs": 2, "lr_milestones": [], "batch_size": 8, "eval_batch_size": 16},
    active={"initial_fraction": 0.2, "step_fraction": 0.2, "final_fraction": 0.6,
            "options": {"bald": {"mc_passes": 4}, "variation-ratio": {"mc_passes": 4},
                        "noise-stability": {"passes": 3}, "gradnorm-entropy": {"batch_size": 8},
                        "gradnorm-expected": {"batch_size": 8}, "autoal": {"fit_steps": 6, "search_steps": 6}}},
)


@pytest.fixture(scope="session")
def tiny():
    """The quick recipe at width 2 and 2 epochs, on 30 volumes: 6 labeled, then 6 queried."""
    return TINY


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """2 shared cores: no OpenMP barrier stalls."""


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    net = ResNet3D(18, 3, width=2, stem="strided")
    with torch.no_grad():
        net.train()
        net(torch.randn(6, 1, 16, 16, 16))  # non-trivial BatchNorm running statistics
    return net.eval()


@pytest.fixture
def query_context(tiny_net):
    """12 random volumes, 0 and 1 labeled: a context for calling strategies directly."""
    vols = np.random.default_rng(1).normal(size=(12, 16, 16, 16)).astype(np.float32)
    return QueryContext(tiny_net, tiny_net, ArraySource(vols), np.array([0, 1]), torch.device("cpu"),
                        np.random.default_rng(0))


@pytest.fixture
def first_cycle(tmp_path, sim_train_dir):
    """``first_cycle(recipe)``: a project of the 30 simulated volumes after its first cycle."""

    def run(recipe, name="p"):
        project = Project.create(tmp_path / name, sim_train_dir, recipe)
        oracle = loop.oracle_for_pool(project.pool, sim_train_dir / "labels.csv")
        project.add_classes(sorted(set(oracle.values())))
        batch = loop.initial_query(project, recipe, seed=0)
        project.label_many({q.index: oracle[q.index] for q in batch}, by="oracle")
        report = loop.train_cycle(project, recipe, torch.device("cpu"), seed=0)
        return project, report

    return run
