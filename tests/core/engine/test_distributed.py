"""Several processes: `ktal-cryo train --gpus 2 --device cpu` (torchrun, gloo) against one process.

With BatchNorm over the global batch, a DDP step computes what the single-process step
computes up to the order of floating-point sums, so the two runs must agree closely: same
queries, losses and weights equal to ~1e-4. The mechanics (rank 0 writes the project alone,
followers train and score their shard) are checked on 2 CPU processes; NCCL on GPUs is the
same code with another backend (docs/performance.md).
"""

import csv
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from napari_ktal.cli import main
from napari_ktal.core.engine.distributed import shard_bounds
from napari_ktal.core.simulate import SimulationConfig, simulate_dataset

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.distributed
TINY_TOML = """
name = "tiny-ddp"
[model]
teacher_depth = 18
student_depth = 10
width = 4
stem = "strided"
[train]
epochs = 3
lr = 0.02
lr_milestones = [2]
batch_size = 6
eval_batch_size = 8
[active]
final_fraction = 0.2
"""


@pytest.fixture(scope="module")
def ddp_data(tmp_path_factory):
    """4 classes x 10 volumes of 16^3 (pool schedule 4, 6, 8: 3 cycles) and a small test set."""
    out = tmp_path_factory.mktemp("ddp")
    simulate_dataset(out / "data", SimulationConfig(classes=4, per_class=10, test_per_class=2, snr=1.0, box=16,
                                                    seed=3))
    (out / "tiny.toml").write_text(TINY_TOML)
    return out


def _train(ddp_data, project: Path, extra=()):
    d = ddp_data / "data"
    cmd = [sys.executable, "-m", "napari_ktal.cli", "train", str(d / "train"), "--project", str(project),
           "--recipe", str(ddp_data / "tiny.toml"), "--oracle", str(d / "train" / "labels.csv"),
           "--test", str(d / "test" / "labels.csv"), "--device", "cpu", "--seed", "5", *extra]
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)


def _history(project: Path) -> list[dict]:
    with open(project / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def _queries(project: Path) -> dict[str, list[int]]:
    out = {}
    for p in sorted((project / "queries").glob("cycle_*.csv")):
        with open(p, newline="") as f:
            out[p.name] = [int(r["index"]) for r in csv.DictReader(f)]
    return out


def test_two_cpu_processes_train_like_one(ddp_data):
    one = _train(ddp_data, ddp_data / "one")
    assert one.returncode == 0, one.stderr
    two = _train(ddp_data, ddp_data / "two", ["--gpus", "2"])
    assert two.returncode == 0, two.stderr + two.stdout
    assert "starting 2 processes" in two.stdout
    assert two.stdout.count("created project") == 1 and two.stdout.count("cycle    labeled") == 1  # rank 0 speaks

    h1, h2 = _history(ddp_data / "one"), _history(ddp_data / "two")
    assert [r["n_labeled"] for r in h1] == [r["n_labeled"] for r in h2] == ["4", "6", "8"]
    for a, b in zip(h1, h2):
        for key in ("teacher_loss", "student_loss", "transfer_loss"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-3, abs=1e-4), (key, a, b)
        assert a["test_accuracy"] == b["test_accuracy"]
    assert _queries(ddp_data / "one") == _queries(ddp_data / "two")  # the same volumes asked, in the same order

    two_dir = ddp_data / "two"
    for c in range(3):
        ck = two_dir / "checkpoints" / f"cycle_{c:03d}"
        assert {"teacher.pt", "student.pt", "meta.json"} <= {p.name for p in ck.iterdir()}
        assert json.loads((ck / "meta.json").read_text())["cycle"] == c
    labels = [json.loads(line) for line in (two_dir / "labels.jsonl").read_text().splitlines()]
    assert len({r["index"] for r in labels if r["op"] == "set"}) == 8  # each answer journaled once
    for name in ("teacher", "student"):
        w1 = torch.load(ddp_data / "one" / "checkpoints" / "cycle_002" / f"{name}.pt", weights_only=True)
        w2 = torch.load(two_dir / "checkpoints" / "cycle_002" / f"{name}.pt", weights_only=True)
        assert w1.keys() == w2.keys()  # plain BatchNorm3d again: checkpoints open anywhere
        floats = [k for k in w1 if w1[k].is_floating_point()]
        diff = torch.cat([(w2[k] - w1[k]).flatten() for k in floats])
        norm = torch.cat([w1[k].flatten() for k in floats])
        assert float(diff.norm() / norm.norm()) < 1e-3  # measured ~4e-5: floating-point noise
        assert float(diff.abs().max()) < 2e-2
        assert all(torch.equal(w1[k], w2[k]) for k in w1 if k not in floats)  # num_batches_tracked


def test_gpus_must_be_positive(tmp_path, capsys):
    assert main(["train", "--project", str(tmp_path / "p"), "--gpus", "0"]) == 2
    assert "--gpus must be at least 1" in capsys.readouterr().err


def test_shards_cover_every_index_once(monkeypatch):
    from napari_ktal.core.engine import distributed
    for n in (0, 1, 5, 16, 17):
        for world in (1, 2, 3, 8):
            parts = []
            for r in range(world):
                monkeypatch.setattr(distributed, "rank", lambda r=r: r)
                monkeypatch.setattr(distributed, "world_size", lambda w=world: w)
                parts.append(shard_bounds(n))
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))
            assert max(h - lo for lo, h in parts) - min(h - lo for lo, h in parts) <= 1


def test_shard_bounds_of_another_rank_and_world():
    assert [shard_bounds(5, 2, r) for r in (0, 1)] == [(0, 3), (3, 5)]
    assert [shard_bounds(2, 3, r) for r in (0, 1, 2)] == [(0, 1), (1, 2), (2, 2)]


# -- two ranks in-process (spawn): global BatchNorm and a sharded forward pass ------------------------
def _rank_main(rank: int, world: int, store: str, out_dir: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    from napari_ktal.core.data.pool import Pool
    from napari_ktal.core.engine import distributed, inference
    from napari_ktal.core.engine.distributed import GlobalBatchNorm3d
    from napari_ktal.core.models.resnet3d import ResNet3D
    distributed.init_from_env("cpu")
    out = Path(out_dir)
    # 1. BatchNorm over the global batch: each rank holds half, the result is the full-batch BatchNorm's
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 4, 4, 4, generator=gen)
    w = torch.randn(6, 3, 4, 4, 4, generator=gen)  # a fixed upstream gradient
    ref = torch.nn.BatchNorm3d(3)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5, generator=gen)
        ref.bias.uniform_(-1, 1, generator=gen)
    glob = GlobalBatchNorm3d(3, group=distributed._session.bn_groups[0])
    glob.load_state_dict(ref.state_dict())
    xr = x.clone().requires_grad_()
    ref_out = ref(xr)
    (ref_out * w).sum().backward()
    lo, hi = (0, 3) if rank == 0 else (3, 6)
    xl = x[lo:hi].clone().requires_grad_()
    y = glob(xl)
    (y * w[lo:hi]).sum().backward()
    torch.testing.assert_close(y, ref_out[lo:hi].detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xl.grad, xr.grad[lo:hi], rtol=1e-5, atol=1e-5)
    weight_grad = glob.weight.grad.clone()
    tdist.all_reduce(weight_grad)  # DDP sums (averages) the local parameter gradients
    torch.testing.assert_close(weight_grad, ref.weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(glob.running_var, ref.running_var, rtol=1e-5, atol=1e-6)

    # 2. a forward pass over the pool, sharded: rank 0 leads, rank 1 follows
    torch.manual_seed(0)
    teacher, student = ResNet3D(18, 3, width=2, stem="strided"), ResNet3D(10, 3, width=2, stem="strided")
    distributed.remember_models(teacher=teacher, student=student)
    pool = Pool.open(out / "pool")
    calls = []
    original = inference._forward_local

    def counting(models, source, indices, *a, **k):
        calls.append(len(indices))
        return original(models, source, indices, *a, **k)

    inference._forward_local = counting
    if rank == 0:
        with distributed.leading():
            t_logits, s_emb = (
                inference.forward_outputs([teacher], pool, np.arange(11), torch.device("cpu"), batch_size=4)[0],
                inference.forward_outputs([student], pool, np.arange(11), torch.device("cpu"), batch_size=4,
                                          output="embedding")[0])
        alone_t, alone_s = (original([m], pool, np.arange(11), torch.device("cpu"), inference._Pass(name, 4, "score"),
                                     None, None)[0] for m, name in ((teacher, "logits"), (student, "embedding")))
        torch.testing.assert_close(t_logits, alone_t)
        torch.testing.assert_close(s_emb, alone_s)
        (out / "rank0.json").write_text(json.dumps(calls))
    else:
        from napari_ktal.core.engine.follower import follow

        follow(torch.device("cpu"))
        (out / "rank1.json").write_text(json.dumps(calls))


def _write_pool(directory: Path, n: int, box: int) -> None:
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(directory / "volumes.npy", rng.standard_normal((n, box, box, box)).astype(np.float16))
    with open(directory / "index.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "key", "path", "frame"])
        w.writerows([i, f"v{i}.mrc", f"/data/v{i}.mrc", ""] for i in range(n))
    (directory / "info.json").write_text(json.dumps({"n": n, "box": box, "dtype": "float16", "voxel_size": 1.0}))


def test_two_ranks_global_batchnorm_and_sharded_forward(tmp_path):
    _write_pool(tmp_path / "pool", 11, 16)
    mp.spawn(_rank_main, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    assert json.loads((tmp_path / "rank0.json").read_text()) == [6, 6]  # its shard of 11, twice
    assert json.loads((tmp_path / "rank1.json").read_text()) == [5, 5]
