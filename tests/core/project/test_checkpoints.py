"""Cancel and half-written checkpoints: a cycle that did not finish is never loaded later.

A cycle is committed by its history.csv row, written last; its checkpoint folder counts
only with meta.json (written after the tensors) and that row. Cancel is checked once per
batch, so it returns within a batch's time.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch

from napari_ktal.core import loop as al
from napari_ktal.core.errors import Cancelled, ProjectError
from napari_ktal.core.loop import load_recipe
from napari_ktal.core.progress import RunContext
from napari_ktal.core.project import Project
from napari_ktal.core.simulate import SimulationConfig, simulate_dataset

# no audit slice: cycle 1's batch of 1 would be all audit, and the strategy (whose scoring is cancelled
# below) would not run
TINY = load_recipe("quick").replace(model={"width": 4}, train={"min_steps": 0, "epochs": 2, "lr_milestones": [], "batch_size": 8},
                                    trust={"audit": 0})
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt")
    labels, _ = simulate_dataset(out, SimulationConfig(classes=3, per_class=10, snr=1, box=16, seed=6))
    return labels


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data) -> tuple[Path, dict]:
    """A project with cycle 0 trained (and committed) and batch 1 labeled."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    p = Project.create(tmp_path_factory.mktemp("ckpt-project") / "P", data.parent, TINY)
    oracle = al.oracle_for_pool(p.pool, data)
    p.add_classes(sorted(set(oracle.values())))
    batch = al.initial_query(p, TINY, seed=0)
    p.label_many({q.index: oracle[q.index] for q in batch}, by="oracle")
    al.train_cycle(p, TINY, CPU)
    p.label_many({q.index: oracle[q.index] for q in p.read_query(1)}, by="oracle")
    torch.set_num_threads(threads)
    return p.root, oracle


@pytest.fixture
def project(tmp_path, trained, one_torch_thread) -> tuple[Project, dict]:
    root, oracle = trained
    shutil.copytree(root, tmp_path / "P")
    return Project(tmp_path / "P"), oracle


def _cancel_when(predicate):
    """(run context, times): its stop flag goes up at the first event matching ``predicate``."""
    flag = threading.Event()
    times = {}

    def on_progress(event):
        if not flag.is_set() and predicate(event):
            times["set"] = time.perf_counter()
            flag.set()

    return RunContext(on_progress, flag.is_set), times


def _state(p: Project):
    return p.history(), p.checkpoint_cycles(), p.query_cycles(), p.labels()


def test_cancel_during_training_returns_quickly_and_saves_nothing(project):
    p, _ = project
    before = _state(p)
    run, times = _cancel_when(lambda e: e.phase == "train")
    with pytest.raises(Cancelled):
        al.train_cycle(p, TINY, CPU, run=run)
    latency = time.perf_counter() - times["set"]
    assert latency < 5.0, latency
    assert _state(p) == before
    assert not (p.root / "checkpoints" / "cycle_001").exists()


def test_cancel_during_scoring_leaves_an_uncommitted_checkpoint_that_is_never_loaded(project):
    p, _ = project
    before = _state(p)
    teacher0 = torch.load(p.root / "checkpoints/cycle_000/teacher.pt", weights_only=True)
    run, times = _cancel_when(lambda e: e.phase == "score")
    with pytest.raises(Cancelled):
        al.train_cycle(p, TINY, CPU, run=run)
    assert time.perf_counter() - times["set"] < 5.0
    # the cycle's models were saved before scoring began, but the cycle was not committed
    assert (p.root / "checkpoints/cycle_001/meta.json").exists()
    assert _state(p) == before
    t, _, meta = p.load_models()  # the latest committed cycle, not the cancelled one
    assert meta["cycle"] == 0 and torch.equal(t.state_dict()["fc.weight"], teacher0["fc.weight"])
    with pytest.raises(ProjectError, match="no complete checkpoint of cycle 1"):
        p.load_models(1)
    # training again redoes cycle 1 and commits it
    report = al.train_cycle(p, TINY, CPU)
    assert report.cycle == 1 and p.checkpoint_cycles() == [0, 1] and p.load_models()[2]["cycle"] == 1


def test_a_checkpoint_folder_without_meta_json_is_ignored(project):
    p, _ = project
    d = p.root / "checkpoints" / "cycle_001"
    d.mkdir()
    (d / "teacher.pt").write_bytes(b"half a tensor")
    (p.root / "checkpoints" / "cycle_xyz").mkdir()  # and a folder that is no cycle at all
    assert p.checkpoint_cycles() == [0]
    assert p.load_models()[2]["cycle"] == 0
    with pytest.raises(ProjectError, match="no complete checkpoint"):
        p.load_models(1)


def test_a_save_killed_half_way_never_pairs_new_and_old_files(project, monkeypatch):
    """A cycle saved once (then not committed) and saved again, dying between the two tensors."""
    p, _ = project
    teacher, student = p.load_models()[:2]
    p.save_models(1, teacher, student, TINY)  # a complete checkpoint of an uncommitted cycle 1
    real_save = torch.save
    calls = []

    def dying_save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # student.pt: the process goes away between the two tensors
            raise KeyboardInterrupt
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        p.save_models(1, teacher, student, TINY)
    monkeypatch.setattr(torch, "save", real_save)
    assert not (p.root / "checkpoints/cycle_001/meta.json").exists()  # removed before the first tensor
    assert p.checkpoint_cycles() == [0]
    assert not list((p.root / "checkpoints/cycle_001").glob(".*.tmp"))  # no temp file left behind


@pytest.mark.parametrize("keep", [0, 1, 64, 500, -200, -1])
def test_a_truncated_checkpoint_is_a_clear_project_error(project, keep):
    p, _ = project
    path = p.root / "checkpoints/cycle_000/teacher.pt"
    raw = path.read_bytes()
    path.write_bytes(raw[:keep])  # the first bytes, or all but the last -keep
    with pytest.raises(ProjectError) as caught:
        p.load_models()
    message = str(caught.value)
    assert "teacher.pt" in message and "\n" not in message
    assert "delete the folder cycle_000" in message or "does not match" in message


def test_a_checkpoint_loads_back_the_weights_it_saved(project):
    p, _ = project
    t, s, meta = p.load_models()
    assert meta["cycle"] == 0 and t.depth == 18 and s.depth == 10
    saved = torch.load(p.paths.checkpoint(0) / "teacher.pt", weights_only=True)
    assert torch.equal(saved["fc.weight"], t.fc.weight.detach())
    assert t(torch.from_numpy(p.pool.read([0, 1])).unsqueeze(1)).logits.shape == (2, 3)


def test_meta_json_that_does_not_match_the_tensors(project):
    p, _ = project
    meta_path = p.root / "checkpoints/cycle_000/meta.json"
    meta = json.loads(meta_path.read_text())
    meta["model"]["teacher_depth"] = 34
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ProjectError, match="teacher.pt: does not match its meta.json"):
        p.load_models()


def test_warm_start_from_another_architecture_is_refused_before_training(project):
    p, _ = project
    warm = TINY.replace(model={"width": 8}, active={"reinit_each_cycle": False})
    with pytest.raises(ProjectError, match="width = 4.*width = 8.*reinit_each_cycle"):
        p.check_warm_start(warm)
    with pytest.raises(ProjectError, match="reinit_each_cycle"):
        al.train_cycle(p, warm, CPU)
    assert p.trained_cycles == 1
    p.check_warm_start(TINY.replace(active={"reinit_each_cycle": False}))  # same architecture: fine


def test_the_batch_of_an_uncommitted_cycle_is_not_offered_for_labeling(project):
    """Killed after cycle 1 wrote batch 2 but before its history row: batch 2 is not shown."""
    from napari_ktal.core.loop.session import LabelingSession, Phase
    p, _ = project
    real_record = p.record_cycle

    def die(row):
        raise KeyboardInterrupt  # the process goes away just before the commit

    p.record_cycle = die
    with pytest.raises(KeyboardInterrupt):
        al.train_cycle(p, TINY, CPU)
    p.record_cycle = real_record
    assert (p.root / "queries" / "cycle_002.csv").exists() and p.trained_cycles == 1
    assert p.query_cycles() == [0, 1]
    session = LabelingSession(Project(p.root))
    assert session.cycle == 1 and session.phase is Phase.READY  # train cycle 1 again, not label batch 2
    al.train_cycle(p, TINY, CPU)
    assert p.query_cycles() == [0, 1, 2] and p.trained_cycles == 2
