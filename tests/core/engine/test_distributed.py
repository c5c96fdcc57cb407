"""Several processes: `ktal-cryo train --gpus 2 --device cpu` (torchrun, gloo) against one process.

Every rank runs the same program (SPMD). With BatchNorm over the global batch, a DDP step
computes what the single-process step computes up to the order of floating-point sums, so the
two runs must agree closely: same labeled counts, queries and test accuracy, losses and weights
equal to ~1e-4. The mechanics (rank 0 alone touches the project: the other rank only opens the
pool's files for reading; every rank trains and scores its shard) are checked on 2 CPU
processes; NCCL on GPUs is the same code with another backend (docs/performance.md).
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
from napari_ktal.core.recipe import SpeedSpec

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
[speed]
# the ranks' shards round bf16 differently from one process's batches; float32 agrees to 1e-3
precision = "fp32"
"""


@pytest.fixture(scope="module")
def ddp_data(tmp_path_factory):
    """4 classes x 10 volumes of 16^3 (pool schedule 4, 6, 8: 3 cycles) and a small test set."""
    out = tmp_path_factory.mktemp("ddp")
    simulate_dataset(out / "data", SimulationConfig(classes=4, per_class=10, test_per_class=2, snr=1.0, box=16,
                                                    seed=3))
    (out / "tiny.toml").write_text(TINY_TOML)
    return out


#: installed in every process of the run (sitecustomize): a rank other than 0 logs each file
#: event under the project (opens with their mode or flags, renames, removals, new folders)
AUDIT = """
import os, sys
_project, _log = os.environ.get("KTAL_TEST_PROJECT"), os.environ.get("KTAL_TEST_AUDIT")
_rank = os.environ.get("RANK")
if _project and _log and _rank not in (None, "0"):
    _project = os.path.realpath(_project)
    _out = open(os.path.join(_log, "rank%s.log" % _rank), "a", buffering=1)
    _WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _under(path):
        if isinstance(path, int):
            return False
        p = os.path.realpath(os.fsdecode(path))
        return p == _project or p.startswith(_project + os.sep)

    def _hook(event, args):
        if event == "open" and args and _under(args[0]):
            mode, flags = args[1], args[2]
            write = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & _WRITE)
            _out.write("%s %s %s\\n" % ("write" if write else "read", os.path.realpath(os.fsdecode(args[0])), mode))
        elif event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.truncate", "shutil.rmtree",
                       "os.chmod", "os.symlink", "os.link", "os.utime") and args and _under(args[0]):
            _out.write("%s %s\\n" % (event, os.fsdecode(args[0])))

    sys.addaudithook(_hook)
"""


def _train(ddp_data, project: Path, extra=(), audit: Path | None = None):
    d = ddp_data / "data"
    cmd = [sys.executable, "-m", "napari_ktal.cli", "train", str(d / "train"), "--project", str(project),
           "--recipe", str(ddp_data / "tiny.toml"), "--oracle", str(d / "train" / "labels.csv"),
           "--test", str(d / "test" / "labels.csv"), "--device", "cpu", "--seed", "5", *extra]
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if audit is not None:
        audit.mkdir()
        (audit / "sitecustomize.py").write_text(AUDIT)
        env |= {"PYTHONPATH": f"{audit}{os.pathsep}{ROOT}", "KTAL_TEST_PROJECT": str(project),
                "KTAL_TEST_AUDIT": str(audit)}
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
    two = _train(ddp_data, ddp_data / "two", ["--gpus", "2"], audit=ddp_data / "audit")
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

    # rank 1 touched the project only to read the pool's files (opened read-only); rank 0 did the rest
    events = (ddp_data / "audit" / "rank1.log").read_text().splitlines()
    pool = str((two_dir / "pool").resolve())
    assert events, "the audit hook saw nothing: is it installed?"
    assert all(e.startswith("read ") and e.split()[1].startswith(pool + os.sep) for e in events), events


def test_a_bad_input_on_rank0_stops_every_rank(ddp_data):
    """Rank 0 refuses the input (one line, its exit code); rank 1, waiting for rank 0's plan, stops too."""
    d = ddp_data / "data"
    cmd = [sys.executable, "-m", "napari_ktal.cli", "train", str(d / "train"), "--project", str(ddp_data / "bad"),
           "--recipe", str(ddp_data / "tiny.toml"), "--oracle", str(ddp_data / "missing.csv"), "--device", "cpu",
           "--gpus", "2"]
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert run.returncode == 2, run.stderr
    assert "missing.csv: does not exist" in run.stderr and "rank 1: stopped" in run.stderr
    assert "Traceback" not in run.stderr


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


# -- two ranks in-process (spawn): global BatchNorm, a sharded forward pass, the collectives ------------
def _rank_main(rank: int, world: int, store: str, out_dir: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    from napari_ktal.core.data.pool import Pool
    from napari_ktal.core.engine import distributed, inference
    from napari_ktal.core.engine.distributed import GlobalBatchNorm3d
    from napari_ktal.core.models.resnet3d import ResNet3D
    from napari_ktal.core.progress import QUIET
    assert distributed.init_from_env("cpu") == torch.device("cpu")  # joins the group already there
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (rank, world, rank == 0)
    out = Path(out_dir)
    # 1. BatchNorm over the global batch: each rank holds half, the result is the full-batch BatchNorm's
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 4, 4, 4, generator=gen)
    w = torch.randn(6, 3, 4, 4, 4, generator=gen)  # a fixed upstream gradient
    ref = torch.nn.BatchNorm3d(3)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5, generator=gen)
        ref.bias.uniform_(-1, 1, generator=gen)
    glob = GlobalBatchNorm3d(3, group=tdist.new_group())
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

    # 2. the collectives: rank 0's object everywhere, every rank's object on every rank
    assert distributed.broadcast_object({"from": rank}) == {"from": 0}
    assert distributed.all_gather_object(rank * 10) == [r * 10 for r in range(world)]

    # 3. a forward pass over the pool, sharded: every rank runs its shard and holds the whole result
    torch.manual_seed(0)  # the same models on every rank, as after a DDP training
    teacher, student = ResNet3D(18, 3, width=2, stem="strided"), ResNet3D(10, 3, width=2, stem="strided")
    pool = Pool.open(out / "pool")
    calls = []
    original = inference._forward_local

    def counting(models, source, indices, *a, **k):
        calls.append(len(indices))
        return original(models, source, indices, *a, **k)

    inference._forward_local = counting
    cpu = torch.device("cpu")
    fp32 = SpeedSpec(precision="fp32", channels_last=False)  # as the reference pass below computes
    t_logits = inference.forward_outputs([teacher], pool, np.arange(11), cpu, batch_size=4, shard=True,
                                         speed=fp32)[0]
    s_emb = inference.forward_outputs([student], pool, np.arange(11), cpu, batch_size=4, output="embedding",
                                      shard=True, speed=fp32)[0]
    alone_t, alone_s = (original([m], pool, np.arange(11), cpu, inference._Pass(name, 4, "score"), QUIET)[0]
                        for m, name in ((teacher, "logits"), (student, "embedding")))
    torch.testing.assert_close(t_logits, alone_t)
    torch.testing.assert_close(s_emb, alone_s)
    inference.forward_outputs([teacher], pool, np.arange(3), cpu, batch_size=4)  # not sharded: this rank alone
    (out / f"rank{rank}.json").write_text(json.dumps(calls))
    distributed.shutdown()


def _write_pool(directory: Path, n: int, box: int) -> None:
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(directory / "volumes.npy", rng.standard_normal((n, box, box, box)).astype(np.float16))
    with open(directory / "index.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "key", "path", "frame"])
        w.writerows([i, f"v{i}.mrc", f"/data/v{i}.mrc", ""] for i in range(n))
    (directory / "info.json").write_text(json.dumps({"n": n, "box": box, "dtype": "float16", "voxel_size": 1.0}))


def test_two_ranks_global_batchnorm_collectives_and_sharded_forward(tmp_path):
    _write_pool(tmp_path / "pool", 11, 16)
    mp.spawn(_rank_main, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    assert json.loads((tmp_path / "rank0.json").read_text()) == [6, 6, 3]  # its shard of 11, twice; 3 alone
    assert json.loads((tmp_path / "rank1.json").read_text()) == [5, 5, 3]


def test_one_process_collectives_need_no_group():
    from napari_ktal.core.engine import distributed
    assert not tdist.is_initialized()
    assert (distributed.rank(), distributed.world_size(), distributed.active()) == (0, 1, False)
    assert distributed.broadcast_object([1, 2]) == [1, 2]
    assert distributed.all_gather_object("x") == ["x"]
