"""The pool's own volumes: an encoder pretrained once per project, and TypiClust's cold start."""

import numpy as np
import pytest
import torch

from napari_ktal.core import loop
from napari_ktal.core.loop.pretraining import pretrained_state, typiclust

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_typiclust_takes_the_most_typical_point_of_each_cluster_and_no_outlier():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = np.concatenate([c + rng.normal(0, 1, (n, 2)) for c, n in zip(centres, (40, 30, 20))])
    picks = typiclust(x, 3, np.random.default_rng(1))
    for c in centres:  # one pick per blob, close to its centre
        assert min(np.linalg.norm(x[picks] - c, axis=1)) < 1.0
    with_outlier = np.concatenate([x, [[30.0, 30.0]]])
    picks = typiclust(with_outlier, 3, np.random.default_rng(1))
    assert len(set(picks.tolist())) == 3 and len(with_outlier) - 1 not in picks  # never the outlier
    assert len(typiclust(x, 200, np.random.default_rng(1))) == len(x)  # more picks than volumes: all of them


def test_pretraining_runs_once_per_project_and_starts_every_cycle(new_project, sim_with_test, small_recipe):
    recipe = small_recipe.replace(pretrain={"method": "simclr", "epochs": 1, "batch_size": 8},
                                  active={"initial": "typiclust", "final_fraction": 0.15})
    p = new_project()
    oracle = loop.oracle_for_pool(p.pool, sim_with_test[1])
    batch = loop.initial_query(p, recipe, seed=0)  # pretrains first, then picks by typicality
    assert len(batch) == 3 and (p.paths.pretrained / "encoder.pt").exists()
    stamp = (p.paths.pretrained / "encoder.pt").stat().st_mtime_ns
    state = pretrained_state(p, recipe, torch.device("cpu"), seed=0)  # found, not trained again
    assert (p.paths.pretrained / "encoder.pt").stat().st_mtime_ns == stamp
    reports = loop.run_with_oracle(p, recipe, oracle, torch.device("cpu"), seed=0)
    assert [r.n_labeled for r in reports] == [3, 5]
    assert (p.paths.pretrained / "encoder.pt").stat().st_mtime_ns == stamp
    teacher, _, _ = p.load_models(0)
    assert not torch.equal(teacher.stem[0].weight, state["stem.0.weight"])  # trained on from there
    other = recipe.replace(pretrain={"epochs": 2})  # another pretraining: trained anew
    pretrained_state(p, other, torch.device("cpu"), seed=0)
    assert (p.paths.pretrained / "encoder.pt").stat().st_mtime_ns != stamp


def test_a_run_pretrains_typiclusts_encoder_on_its_own_device(new_project, sim_with_test, small_recipe, monkeypatch):
    """Not on the CPU by default: on a GPU node the run's device is the GPU."""
    from napari_ktal.core.loop import cycle

    recipe = small_recipe.replace(pretrain={"method": "simclr", "epochs": 1, "batch_size": 8},
                                  active={"initial": "typiclust", "final_fraction": 0.15})
    p = new_project()
    oracle = loop.oracle_for_pool(p.pool, sim_with_test[1])
    seen = []

    def record(project, recipe, device, **kwargs):
        seen.append(device)
        raise RuntimeError("recorded")

    monkeypatch.setattr(cycle, "pretrained_state", record)
    run_device = torch.device("cpu", 0)  # the default would be plain "cpu"
    with pytest.raises(RuntimeError, match="recorded"):
        loop.run_with_oracle(p, recipe, oracle, run_device, seed=0)
    assert seen == [run_device]
