"""The paper's recipe on a GPU, in one prepared run of at most ~8 minutes.

    python benchmarks/gpu_protocol.py --out $OUT          # on the GPU machine
    python benchmarks/gpu_protocol.py --dry --out /tmp/x  # seconds on a CPU: the same steps, tiny sizes

Steps, each timed and saved to ``OUT/gpu_protocol.json`` (and printed):

1. throughput: teacher + student training steps and scoring passes of the ``paper-simulated``
   pair (ResNet-18/10, width 64, 32^3, bf16 autocast on CUDA) on random volumes: samples/s,
   FLOPs per sample (torch.utils.flop_counter) and the share of the GPU's bf16 peak (``--peak-tflops``);
2. one paper-simulated cycle at the 40% budget through the real code path (a project, its pool
   file, ``train_cycle``: 100 epochs, lr x0.1 at 80, scoring 10 x M candidates, the query written):
   the labeled set is 40% of a 24,000-volume pool of random volumes with random labels, since
   timing does not depend on what the volumes show. If the first epochs project past
   ``--budget-s``, the cycle runs fewer epochs (the milestone at 80%) and says so;
3. with 2 or more GPUs: the same cycle's training on 2 processes (DDP over NCCL, ``--gpus 2``),
   timed against step 2.

The dry mode runs every step with a width-2 pair on 16^3 volumes, a 40-volume pool and 2 epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _sizes(dry: bool) -> dict:
    if dry:
        return {"box": 16, "pool": 40, "width": 2, "epochs": 2, "batch": 8, "stem": "strided", "steps": 3}
    return {"box": 32, "pool": 24_000, "width": 64, "epochs": 100, "batch": 128, "stem": "cifar", "steps": 30}


def throughput(device: torch.device, s: dict, peak_tflops: float) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from napari_ktal.core.engine import resolve_speed
    from napari_ktal.core.engine.training import make_optimizer
    from napari_ktal.core.loop import load_recipe
    from napari_ktal.core.models import TRANSFER_LOSSES, build_pair

    recipe = load_recipe("paper-simulated").replace(model={"width": s["width"], "stem": s["stem"]})
    t, st = (m.to(device) for m in build_pair(recipe.model, 50))
    opts = [make_optimizer(m, recipe.train) for m in (t, st)]
    x = torch.randn(s["batch"], 1, s["box"], s["box"], s["box"], device=device)
    y = torch.randint(0, 50, (s["batch"],), device=device)
    train_speed = resolve_speed(recipe.speed, device, "train")
    score_speed = resolve_speed(recipe.speed, device, "score")

    def step():
        with train_speed.autocast(device):
            ot, os_ = t(x), st(x)
        loss = (torch.nn.functional.cross_entropy(ot.logits.float(), y)
                + torch.nn.functional.cross_entropy(os_.logits.float(), y)
                + 100 * TRANSFER_LOSSES["at"](os_, ot))
        for o in opts:
            o.zero_grad(set_to_none=True)
        loss.backward()
        for o in opts:
            o.step()

    with FlopCounterMode(display=False) as fc:
        step()
    flops_per_sample = fc.get_total_flops() / s["batch"]
    for _ in range(3):  # warm-up (cuDNN autotuning)
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(s["steps"]):
        step()
    _sync(device)
    train_sps = s["steps"] * s["batch"] / (time.perf_counter() - t0)
    with torch.no_grad():
        for m in (t, st):
            m.eval()
        t0 = time.perf_counter()
        for _ in range(s["steps"]):
            with score_speed.autocast(device):
                t(x), st(x)
        _sync(device)
        score_sps = s["steps"] * s["batch"] / (time.perf_counter() - t0)
    achieved = train_sps * flops_per_sample / 1e12
    return {"train_samples_per_s": round(train_sps, 1), "score_samples_per_s": round(score_sps, 1),
            "train_gflop_per_sample": round(flops_per_sample / 1e9, 2), "achieved_tflops": round(achieved, 2),
            "mfu_vs_peak": round(achieved / peak_tflops, 4) if peak_tflops else None, "batch": s["batch"]}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_project(root: Path, s: dict, seed: int = 0):
    """A project over ``s['pool']`` random volumes (written as one MRC stack), 40% of them labeled."""
    import mrcfile

    from napari_ktal.core.loop import budget_schedule, load_recipe
    from napari_ktal.core.project import Project

    rng = np.random.default_rng(seed)
    stack = root / "volumes.mrcs"
    with mrcfile.new_mmap(stack, shape=(s["pool"], s["box"], s["box"], s["box"]), mrc_mode=2) as mrc:
        for start in range(0, s["pool"], 1000):
            n = min(1000, s["pool"] - start)
            mrc.data[start : start + n] = rng.standard_normal((n, s["box"], s["box"], s["box"]), dtype=np.float32)
    recipe = load_recipe("paper-simulated").replace(
        model={"width": s["width"], "stem": s["stem"]},
        train={"min_steps": 0, "epochs": s["epochs"], "lr_milestones": [max(1, int(0.8 * s["epochs"]))] if s["epochs"] > 1 else [],
               "batch_size": s["batch"]})
    classes = [f"class_{k:02d}" for k in range(50)]
    project = Project.create(root / "project", stack, recipe, classes)
    labeled = budget_schedule(s["pool"], recipe.active)[-2]  # train at the last size that still queries
    pick = rng.choice(s["pool"], size=labeled, replace=False)
    project.label_many({int(i): classes[int(rng.integers(50))] for i in pick}, by="oracle")
    return project, recipe


def one_cycle(root: Path, s: dict, device: torch.device, budget_s: float) -> dict:
    from napari_ktal.core.loop import train_cycle

    t0 = time.perf_counter()
    project, recipe = make_project(root, s)
    setup = time.perf_counter() - t0
    # time two epochs first: project the full cycle, shorten it if it would not fit
    probe = recipe.replace(train={"min_steps": 0, "epochs": 2, "lr_milestones": [1]})
    t0 = time.perf_counter()
    report = train_cycle(project, probe, device, select=False)
    per_epoch = report.train_seconds / 2
    epochs = recipe.train.epochs
    if per_epoch * epochs > budget_s:
        epochs = max(2, int(budget_s / per_epoch))
    run = recipe.replace(train={"min_steps": 0, "epochs": epochs, "lr_milestones": [max(1, int(0.8 * epochs))]})
    report = train_cycle(project, run, device)
    return {"pool": s["pool"], "labeled": report.n_labeled, "setup_s": round(setup, 1),
            "epoch_s": round(per_epoch, 2), "epochs_run": epochs, "epochs_recipe": recipe.train.epochs,
            "projected_full_cycle_train_s": round(per_epoch * recipe.train.epochs, 1),
            "train_s": round(report.train_seconds, 1), "select_s": round(report.select_seconds, 1),
            "queried": report.n_queried, "samples_per_s": round(report.samples_per_second, 1),
            "probe_wall_s": round(time.perf_counter() - t0, 1)}


def ddp_cycle(root: Path, s: dict, epochs: int) -> dict:
    """The cycle's training on 2 processes through ``ktal-cryo train --gpus 2``, timed end to end."""
    from napari_ktal.core.loop import load_recipe

    project = root / "project"
    recipe = load_recipe("paper-simulated").replace(
        model={"width": s["width"], "stem": s["stem"]},
        train={"min_steps": 0, "epochs": epochs, "lr_milestones": [max(1, int(0.8 * epochs))], "batch_size": s["batch"]})
    path = root / "ddp.toml"
    path.write_text(recipe.to_toml())
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "napari_ktal.cli", "train", "--project", str(project), "--recipe",
                           str(path), "--gpus", "2"], capture_output=True, text=True)
    return {"returncode": done.returncode, "wall_s": round(time.perf_counter() - t0, 1),
            "output_tail": (done.stdout + done.stderr)[-1500:]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    p.add_argument("--dry", action="store_true", help="tiny sizes on any device (a CPU test of the protocol)")
    p.add_argument("--device", default="auto")
    p.add_argument("--budget-s", type=float, default=300.0, help="training seconds the 40%% cycle may take")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100/H200: 989)")
    args = p.parse_args(argv)

    from napari_ktal.core.engine import resolve_device

    device = resolve_device("cpu" if args.dry and args.device == "auto" else args.device)
    s = _sizes(args.dry)
    result = {"device": str(device), "dry": args.dry, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "sizes": s}
    t0 = time.perf_counter()
    result["throughput"] = throughput(device, s, args.peak_tflops)
    print(json.dumps({"throughput": result["throughput"]}), flush=True)
    with tempfile.TemporaryDirectory(prefix="ktal-gpu-") as tmp:
        result["cycle_40pct"] = one_cycle(Path(tmp), s, device, args.budget_s)
        print(json.dumps({"cycle_40pct": result["cycle_40pct"]}), flush=True)
        if device.type == "cuda" and torch.cuda.device_count() >= 2:
            result["ddp_2gpu"] = ddp_cycle(Path(tmp), s, result["cycle_40pct"]["epochs_run"])
            print(json.dumps({"ddp_2gpu": result["ddp_2gpu"]}), flush=True)
        else:
            result["ddp_2gpu"] = "skipped: fewer than 2 GPUs"
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_protocol.json").write_text(json.dumps(result, indent=2))
    print(f"saved {args.out / 'gpu_protocol.json'} ({result['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
