"""The KL score is a sane number after the first cycle of the shipped quick recipe.

Checked on a small seeded set (120 volumes, 12 labels): the score stays in single nats (a few
dozen steps of training gave maxima of 10^2-10^4), and a volume's score does not depend on which
other volumes it is scored with (eval-mode BatchNorm: a re-score ranks alike). The issue's
target of a median below 1 nat is NOT met here: this set gives a median of 1.9 nats (with 24
labels on a pool of 240 it was 0.5-1.1; [train] label_smoothing = 0.05 gives 0.53 here, at an
accuracy cost, so quick keeps it off); see docs/results.md.
"""

import numpy as np
import pytest
import torch

from napari_ktal.core import loop
from napari_ktal.core.engine import forward_outputs
from napari_ktal.core.models import DISTANCES
from napari_ktal.core.project import Project
from napari_ktal.core.simulate import SimulationConfig, simulate_dataset

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
CPU = torch.device("cpu")


def _kl(project: Project, indices: np.ndarray, batch_size: int) -> np.ndarray:
    teacher, student, _ = project.load_models()
    t, s = forward_outputs([teacher, student], project.pool, indices, CPU, batch_size=batch_size)
    return DISTANCES["kl"](t, s).numpy()


def test_first_quick_cycle_gives_a_bounded_kl_and_a_batch_independent_ranking(tmp_path):
    data = tmp_path / "data"
    simulate_dataset(data, SimulationConfig(classes=4, per_class=30, snr=1.0, seed=1))
    recipe = loop.load_recipe("quick")
    assert recipe.train.min_steps >= 300  # the floor this claim rests on
    project = Project.create(tmp_path / "p", data / "train", recipe)
    oracle = loop.oracle_for_pool(project.pool, data / "train" / "labels.csv")
    project.add_classes(sorted(set(oracle.values())))
    batch = loop.initial_query(project, recipe, seed=0)
    project.label_many({q.index: oracle[q.index] for q in batch})

    report = loop.train_cycle(project, recipe, CPU, seed=0, select=False)
    assert report.epochs >= 300 // recipe.train.steps_per_epoch(report.n_labeled)  # the floor applied

    unlabeled = np.setdiff1d(np.arange(len(project.pool)), [q.index for q in batch])
    kl = _kl(project, unlabeled, batch_size=128)
    print(f"\nKL after the first quick cycle over {len(kl)} unlabeled volumes: median {np.median(kl):.3f}, "
          f"90th percentile {np.quantile(kl, 0.9):.3f}, max {kl.max():.3f} nats")
    assert np.isfinite(kl).all() and (kl >= -1e-6).all()
    assert np.median(kl) < 2.5 and kl.max() < 30.0  # measured: median 1.88, max 9.6

    # a re-score in other batches and another order ranks the same volumes the same way
    order = np.random.default_rng(0).permutation(len(unlabeled))
    again = np.empty_like(kl)
    again[order] = _kl(project, unlabeled[order], batch_size=7)
    np.testing.assert_allclose(again, kl, rtol=1e-4, atol=1e-5)
    assert (np.argsort(-again, kind="stable")[:10] == np.argsort(-kl, kind="stable")[:10]).all()
