"""The engine's contracts: pool, project folder, checkpoints, seeding, progress, cancel."""

import json

import numpy as np
import pytest
import torch

from napari_ktal.core.data.mrc import read_volumes
from napari_ktal.core.engine.device import available_devices, resolve_device
from napari_ktal.core.errors import Cancelled, KtalError, ProjectError
from napari_ktal.core import loop as al
from napari_ktal.core.project import Project
from napari_ktal.core.recipe import ActiveSpec
from napari_ktal.core.loop import load_recipe
from napari_ktal.core.simulate import SimulationConfig, simulate_dataset

TINY = load_recipe("quick").replace(model={"width": 4}, train={"epochs": 2, "lr_milestones": [], "batch_size": 8})


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    train, test = simulate_dataset(out, SimulationConfig(classes=3, per_class=10, test_per_class=2, snr=1, seed=2))
    return out, train, test


def _project(tmp_path, sim, name="p"):
    return Project.create(tmp_path / name, sim[0] / "train", TINY)


def test_pool_is_normalised_float16_memmap_in_source_order(tmp_path, sim):
    p = _project(tmp_path, sim)
    pool = p.pool
    assert isinstance(pool.volumes, np.memmap) and pool.volumes.dtype == np.float16
    assert len(pool) == 30 and pool.box == 32 and pool.voxel_size == pytest.approx(10.0)
    v = pool.read([5, 1])
    assert v.dtype == np.float32 and v.shape == (2, 32, 32, 32)
    assert abs(v[0].mean()) < 1e-2 and v[0].std() == pytest.approx(1.0, abs=1e-2)
    raw = read_volumes(sim[0] / "train" / pool.keys[1])[0]
    np.testing.assert_allclose(v[1], (raw - raw.mean()) / raw.std(), atol=5e-3)


def test_budget_schedule_never_starts_below_two():
    assert al.budget_schedule(12, ActiveSpec(final_fraction=0.2)) == [2]
    assert al.budget_schedule(1, ActiveSpec()) == [1]


def test_budget_schedule_is_the_papers():
    assert al.budget_schedule(24_000, ActiveSpec()) == [2400, 3600, 4800, 6000, 7200, 8400, 9600]
    real = ActiveSpec(final_fraction=0.3)
    assert al.budget_schedule(4318, real) == [432, 648, 864, 1080, 1295]


def test_project_refuses_existing_and_non_empty_folders(tmp_path, sim):
    _project(tmp_path, sim)
    with pytest.raises(ProjectError, match="already exists"):
        _project(tmp_path, sim)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ProjectError, match="not empty"):
        _project(tmp_path, sim, "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("version,match", [(99, "newer"), (0, "not supported")])
def test_project_format_version_is_checked(tmp_path, sim, version, match):
    p = _project(tmp_path, sim)
    cfg = json.loads((p.root / "project.json").read_text())
    cfg["format_version"] = version
    (p.root / "project.json").write_text(json.dumps(cfg))
    with pytest.raises(ProjectError, match=match):
        Project(p.root)


def test_classes_rename_keeps_labels_and_remove_refuses_used(tmp_path, sim):
    p = _project(tmp_path, sim)
    p.add_classes(["a", "b", "junk"])
    p.label(0, "a")
    p.label(1, "b")
    p.rename_class("a", "ribosome")
    assert p.labels() == {0: "ribosome", 1: "b"} and p.classes == ["ribosome", "b", "junk"]
    with pytest.raises(KtalError, match="labels 1 volumes"):
        p.remove_class("b")
    p.remove_class("junk")
    with pytest.raises(KtalError, match="unknown class"):
        p.label(2, "junk")
    assert Project(p.root).classes == ["ribosome", "b"]  # persisted


def test_checkpoint_round_trip_and_mismatch(tmp_path, sim):
    p = _project(tmp_path, sim)
    oracle = al.oracle_for_pool(p.pool, sim[1])
    al.run_with_oracle(p, TINY.replace(active={"final_fraction": 0.1}), oracle, torch.device("cpu"), seed=0)
    t, s, meta = p.load_models()
    assert meta["cycle"] == 0 and t.depth == 18 and s.depth == 10
    x = torch.from_numpy(p.pool.read([0, 1])).unsqueeze(1)
    saved = torch.load(p.root / "checkpoints/cycle_000/teacher.pt", weights_only=True)
    assert torch.equal(saved["fc.weight"], t.fc.weight.detach())
    assert t(x).logits.shape == (2, 3)
    meta_path = p.root / "checkpoints/cycle_000/meta.json"
    m = json.loads(meta_path.read_text())
    m["model"]["width"] = 16  # does not match the saved weights
    meta_path.write_text(json.dumps(m))
    with pytest.raises(ProjectError, match="does not match"):
        p.load_models()


def test_same_seed_same_run_different_seed_different_queries(tmp_path, sim):
    recipe = TINY.replace(active={"final_fraction": 0.2})
    runs = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        p = _project(tmp_path, sim, name)
        test = al.load_labeled_set(sim[2], sorted(set(al.oracle_for_pool(p.pool, sim[1]).values())))
        reports = al.run_with_oracle(p, recipe, al.oracle_for_pool(p.pool, sim[1]), torch.device("cpu"), seed=seed, test=test)
        runs.append(([r.test_accuracy for r in reports], [r.teacher_loss for r in reports],
                     [[q.index for q in p.read_query(c)] for c in p.query_cycles()]))
    assert runs[0] == runs[1]
    assert runs[0][2] != runs[2][2]


def test_progress_reports_epochs_and_losses_and_cancel_stops(tmp_path, sim):
    p = _project(tmp_path, sim)
    oracle = al.oracle_for_pool(p.pool, sim[1])
    p.add_classes(sorted(set(oracle.values())))
    batch = al.initial_query(p, TINY, seed=0)
    p.label_many({q.index: oracle[q.index] for q in batch}, by="oracle")
    events = []
    al.train_cycle(p, TINY, torch.device("cpu"), on_progress=events.append)
    epochs = [e for e in events if e.phase == "train" and e.metrics]
    assert [e.epoch for e in epochs] == [1, 2] and all(np.isfinite(e.metrics["student_loss"]) for e in epochs)
    assert any(e.phase == "score" for e in events)
    # cancel at the first training step: nothing of the cycle is saved
    with pytest.raises(Cancelled):
        al.train_cycle(p, TINY, torch.device("cpu"), should_stop=lambda: True)
    assert p.trained_cycles == 1 and p.checkpoint_cycles() == [0]


def test_devices_offered_work():
    devices = available_devices()
    assert devices[0] == "auto" and devices[-1] == "cpu"
    for d in devices:
        torch.zeros(1, device=resolve_device(d))
    with pytest.raises(KtalError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(KtalError, match="not available"):
            resolve_device("cuda:0")


def test_other_box_sizes_and_a_labels_csv_as_data(tmp_path):
    train, _ = simulate_dataset(tmp_path / "d", SimulationConfig(classes=2, per_class=10, snr=2, box=16, seed=1))
    p = Project.create(tmp_path / "p", train, TINY)  # DATA may be the labels CSV itself
    assert len(p.pool) == 20 and p.pool.box == 16
    reports = al.run_with_oracle(p, TINY.replace(active={"final_fraction": 0.2}), al.oracle_for_pool(p.pool, train),
                                 torch.device("cpu"))
    assert [r.n_labeled for r in reports] == [2, 3, 4]
