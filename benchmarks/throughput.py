"""Training and scoring throughput of the teacher-student pair, and the model FLOP utilisation.

    python benchmarks/throughput.py                       # GPU: the paper's models at 32^3
    python benchmarks/throughput.py --device cpu --models quick --quick --batch-size 32 --threads 1 --cycle
    python benchmarks/throughput.py --tiny                # seconds: every path, for CI

For each model (``paper``: ResNet-18/10, cifar stem, width 64; ``quick``: width 8, strided
stem) and each speed variant of the recipe's ``[speed]`` table (``fp32``: float32,
contiguous; ``cl``: channels_last_3d; ``bf16``: bf16 autocast; ``bf16+cl``: both; ``auto``:
the shipped default as it resolves on this device), it measures

- train samples/s: ``training.train_pair`` (teacher + student, same batches, flips, attention
  transfer) on a synthetic labeled set, after a warm-up; and the teacher alone (``student=None``:
  what a strategy that does not read the student trains);
- score samples/s: ``inference.forward_outputs`` with teacher and student over a real pool
  file (pread, float16, pinned memory, a reader thread), after a warm-up pass;
- FLOPs per sample of one training step and one T+S inference (``torch.utils.flop_counter``),
  hence achieved GFLOP/s against the measured float32 and bf16 matrix-product ceilings (and
  the datasheet dense bf16 peak of a known GPU);
- with ``--cycle``: one active-learning cycle of the ``quick`` recipe on the README's demo
  size (600 volumes, 60 labeled), with ``[speed]`` as shipped and in plain float32.

Variants run in interleaved rounds (A, B, C, A, B, C, ...) and the median round is reported,
so a change of load on a shared machine hits all alike: compare them as ratios within one
run. It writes JSON (``--out``) and prints a table; the JSON records the load before and after.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_ktal.core.engine import TrainJob, forward_outputs, resolve_speed, train_pair
from napari_ktal.core.engine.speed import memory_format, native_bf16
from napari_ktal.core.loop import load_recipe
from napari_ktal.core.models.resnet3d import build_pair
from napari_ktal.core.models.transfer import TRANSFER_LOSSES
from napari_ktal.core.recipe import SpeedSpec

#: dense (no sparsity) bf16 tensor-core peak, FLOP/s, by a substring of the device name
DENSE_BF16_PEAK = [
    ("H200", 989.4e12),
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989.4e12),  # SXM
    ("A100", 312e12),
    ("L40S", 362.05e12),
    ("A10G", 70e12),
    ("RTX 4090", 165.2e12),
]

MODELS = {
    "paper": {"recipe": "paper-simulated", "n_classes": 50},
    "quick": {"recipe": "quick", "n_classes": 4},
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_average() -> list[float]:
    try:
        return list(os.getloadavg())
    except OSError:
        return []


def datasheet_peak(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return platform.processor() or platform.machine(), None
    name = torch.cuda.get_device_name(device)
    for key, peak in DENSE_BF16_PEAK:
        if key in name:
            return name, peak
    return name, None


def measured_ceiling(device: torch.device, dtype: torch.dtype, n: int) -> dict:
    """FLOP/s of a large matrix product in ``dtype`` (the median of a few, operands rotated)."""
    gen = torch.Generator(device=device).manual_seed(0)
    mats = [torch.randn(n, n, device=device, generator=gen).to(dtype) for _ in range(4)]  # rotate: no cache reuse
    out = torch.empty(n, n, device=device, dtype=dtype)
    for i in range(2):
        torch.matmul(mats[i], mats[i + 1], out=out)
    sync(device)
    reps = 20 if device.type == "cuda" else 3
    times = []
    for r in range(reps):
        t0 = time.perf_counter()
        torch.matmul(mats[r % 3], mats[(r + 1) % 3 + 1], out=out)
        sync(device)
        times.append(time.perf_counter() - t0)
    t = float(np.median(times))
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "flops_per_s": 2 * n**3 / t}


def count_flops(teacher, student, batch: int, box: int, n_classes: int, device: torch.device, train: bool) -> float:
    """FLOPs per sample of one training step (forward + backward of both) or one T+S inference."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(batch, 1, box, box, box, device=device)
    y = torch.randint(0, n_classes, (batch,), device=device)
    teacher.train(train)
    student.train(train)
    with FlopCounterMode(display=False) as counter:  # the count does not depend on the precision
        if train:
            out_t, out_s = teacher(x), student(x)
            loss = (F.cross_entropy(out_t.logits, y) + F.cross_entropy(out_s.logits, y)
                    + 100.0 * TRANSFER_LOSSES["at"](out_s, out_t))
            loss.backward()
        else:
            with torch.no_grad():
                teacher(x)
                student(x)
    teacher.zero_grad(set_to_none=True)
    student.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


def make_pool(directory: Path, n: int, box: int) -> object:
    """A real pool file of ``n`` random volumes (imported from one MRC stack)."""
    import mrcfile

    from napari_ktal.core.data.pool import import_pool
    src = directory / "stack.mrcs"
    rng = np.random.default_rng(0)
    with mrcfile.new_mmap(src, shape=(n, box, box, box), mrc_mode=2, overwrite=True) as m:
        for s in range(0, n, 256):
            k = min(256, n - s)
            m.data[s : s + k] = rng.standard_normal((k, box, box, box), dtype=np.float32)
    return import_pool(directory / "pool", src)


#: the speed variants measured: name -> the recipe's [speed] (auto = the shipped default)
VARIANTS = {
    "fp32": SpeedSpec(precision="fp32", channels_last=False),
    "cl": SpeedSpec(precision="fp32", channels_last=True),
    "bf16": SpeedSpec(precision="bf16", channels_last=False),
    "bf16+cl": SpeedSpec(precision="bf16", channels_last=True),
    "auto": SpeedSpec(),
}


def bench_model(name: str, args, device: torch.device, pool, variants: list[str]) -> list[dict]:
    """Training and scoring samples/s of each variant, rounds interleaved (variant A, B, ..., A, B, ...)
    so that a change in the machine's load hits every variant alike; the median round is reported."""
    cfg = MODELS[name]
    recipe = load_recipe(cfg["recipe"])
    model = recipe.model if args.width is None else dataclasses.replace(recipe.model, width=args.width)
    batch = args.batch_size or recipe.train.batch_size
    steps = args.steps or (3 if args.quick else 20)
    n = batch * steps
    train_spec = dataclasses.replace(recipe.train, epochs=args.epochs, lr_milestones=[], batch_size=batch, min_steps=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, args.box, args.box, args.box), dtype=np.float32)
    y = rng.integers(0, cfg["n_classes"], n)
    torch.manual_seed(0)
    t, s = build_pair(model, cfg["n_classes"])
    t.to(device)
    s.to(device)
    flops_train = count_flops(t, s, min(batch, 8), args.box, cfg["n_classes"], device, train=True)
    flops_score = count_flops(t, s, min(batch, 8), args.box, cfg["n_classes"], device, train=False)
    idx = np.arange(min(len(pool), args.score_n or (4 * batch if args.quick else len(pool))))
    eval_bs = args.eval_batch_size or recipe.train.eval_batch_size
    rows = {}
    for v in variants:
        spec = dataclasses.replace(VARIANTS[v], compile=args.compile)
        rows[v] = {"model": name, "variant": v, "teacher_depth": model.teacher_depth,
                   "student_depth": model.student_depth, "width": model.width, "stem": model.stem,
                   "box": args.box, "batch": batch, "compile": args.compile, "score_n": len(idx),
                   "train_speed": resolve_speed(spec, device, "train").describe(),
                   "score_speed": resolve_speed(spec, device, "score").describe(),
                   "train_flops_per_sample": flops_train, "score_flops_per_sample": flops_score,
                   "train_rounds": [], "teacher_rounds": [], "score_rounds": [], "resident_rounds": []}
        # warm-up (allocator, oneDNN primitive caches, cuDNN benchmark, compilation)
        train_pair(t, s, x[: 2 * batch], y[: 2 * batch], TrainJob(dataclasses.replace(train_spec, epochs=1),
                   recipe.transfer, 0, speed=spec), device=device)
        forward_outputs([t, s], pool, idx[:eval_bs], device, batch_size=eval_bs, speed=spec)
    for _ in range(args.rounds):
        for v in variants:
            spec, row = dataclasses.replace(VARIANTS[v], compile=args.compile), rows[v]
            sync(device)
            t0 = time.perf_counter()
            train_pair(t, s, x, y, TrainJob(train_spec, recipe.transfer, 1, speed=spec), device=device)
            sync(device)
            row["train_rounds"].append(n * args.epochs / (time.perf_counter() - t0))
            # the teacher alone: what a strategy that does not read the student trains
            t0 = time.perf_counter()
            train_pair(t, None, x, y, TrainJob(train_spec, recipe.transfer, 1, speed=spec), device=device)
            sync(device)
            row["teacher_rounds"].append(n * args.epochs / (time.perf_counter() - t0))
            # scoring: the pool file through the real data path; the models as training left them
            t0 = time.perf_counter()
            forward_outputs([t, s], pool, idx, device, batch_size=eval_bs, speed=spec)
            sync(device)
            row["score_rounds"].append(len(idx) / (time.perf_counter() - t0))
            # the same passes on volumes already on the device: the data path's cost is the difference
            row["resident_rounds"].append(resident_score_rate([t, s], pool, idx, device, eval_bs,
                                                              resolve_speed(spec, device, "score")))
    for v in variants:
        row = rows[v]
        for what, key in (("train", "train_samples_per_s"), ("teacher", "train_teacher_alone_samples_per_s"),
                          ("score", "score_samples_per_s"), ("resident", "score_resident_samples_per_s")):
            row[key] = float(np.median(row[f"{what}_rounds"]))
        print(f"  {name} {v:8s} (train {row['train_speed']}, score {row['score_speed']}): "
              f"train {row['train_samples_per_s']:.1f}/s (teacher alone {row['train_teacher_alone_samples_per_s']:.1f}/s), score {row['score_samples_per_s']:.1f}/s", flush=True)
    return list(rows.values())


@torch.no_grad()
def resident_score_rate(models, pool, idx, device, batch: int, speed) -> float:
    """T+S forward passes over volumes held on the device as float16 (no reading, no copying)."""
    x = torch.from_numpy(pool.read(idx, dtype=None)).unsqueeze(1).to(device)
    with memory_format(models, speed.channels_last):
        for m in models:
            m.eval()
        with speed.autocast(device):
            for m in models:  # warm-up
                m(speed.batch(x[:batch].float()))
        sync(device)
        t0 = time.perf_counter()
        for s in range(0, len(x), batch):
            xb = speed.batch(x[s : s + batch].float())
            with speed.autocast(device):
                for m in models:
                    m(xb).logits.float()
        sync(device)
    return len(idx) / (time.perf_counter() - t0)


def bench_cycle(device: torch.device, directory: Path, speed: SpeedSpec, tiny: bool = False) -> dict:
    """One cycle (cycle 0) of the quick recipe on the README's demo size (600 volumes, 60 labeled);
    ``tiny``: 40 volumes of 16^3 and a width-2 pair for 2 epochs (a smoke run)."""
    import mrcfile

    from napari_ktal.core import loop as al
    from napari_ktal.core.project import Project
    n, box = (40, 16) if tiny else (600, 32)
    src = directory / "demo"
    src.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    with mrcfile.new(src / "stack.mrcs", overwrite=True) as m:
        m.set_data(rng.standard_normal((n, box, box, box), dtype=np.float32))
    recipe = dataclasses.replace(load_recipe("quick"), speed=speed)
    if tiny:
        recipe = recipe.replace(model={"width": 2}, train={"epochs": 2, "lr_milestones": [], "min_steps": 0})
    project = Project.create(directory / f"demo_project_{time.monotonic_ns()}", src / "stack.mrcs", recipe)
    oracle = {i: f"class_{i % 4}" for i in range(n)}
    t0 = time.perf_counter()
    reports = []

    def on_cycle(r):
        reports.append(r)
        raise StopIteration  # one cycle is enough

    try:
        al.run_with_oracle(project, recipe, oracle, device, seed=0, on_cycle=on_cycle)
    except StopIteration:
        pass
    wall = time.perf_counter() - t0
    r = reports[0]
    return {"recipe": recipe.name, "epochs": recipe.train.epochs, "n_pool": n, "n_labeled": r.n_labeled,
            "train_s": r.train_seconds, "select_s": r.select_seconds, "cycle_wall_s": wall,
            "train_samples_per_s": r.samples_per_second, "threads": torch.get_num_threads(),
            "train_speed": resolve_speed(speed, device, "train").describe()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto, cpu or cuda:N")
    p.add_argument("--models", default="paper,quick", help="comma-separated: paper, quick")
    p.add_argument("--width", type=int, help="override the models' width (e.g. 8 for the paper model on a CPU)")
    p.add_argument("--box", type=int, default=32)
    p.add_argument("--batch-size", type=int, help="training batch (default: the recipe's)")
    p.add_argument("--eval-batch-size", type=int, help="scoring batch (default: the recipe's)")
    p.add_argument("--steps", type=int, help="training steps per epoch (default 20; 3 with --quick)")
    p.add_argument("--epochs", type=int, default=1, help="timed epochs per round (default 1)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every variant (median reported)")
    p.add_argument("--pool-size", type=int, help="volumes in the scoring pool (default 8192; 512 with --quick)")
    p.add_argument("--score-n", type=int, help="volumes scored per pass (default the pool; 4 batches with --quick)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated, of {', '.join(VARIANTS)} (auto: the shipped [speed], as resolved here)")
    p.add_argument("--compile", action="store_true", help="torch.compile the models for training")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="few steps: a CPU measurement")
    p.add_argument("--tiny", action="store_true", help="a seconds-long smoke run of every code path (CI)")
    p.add_argument("--cycle", action="store_true", help="also time one cycle of the quick recipe (600 volumes)")
    p.add_argument("--out", default="throughput.json")
    args = p.parse_args(argv)
    if args.tiny:  # every variant and both models, on almost nothing
        args.quick, args.width, args.box, args.batch_size, args.steps = True, 2, 16, 4, 2
        args.eval_batch_size, args.pool_size, args.score_n, args.rounds = 8, 16, 8, 1
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")

    from napari_ktal.core.engine.device import resolve_device
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    name, peak = datasheet_peak(device)
    info = {"device": str(device), "device_name": name, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": native_bf16(device), "load_before": load_average(), "datasheet_dense_bf16_peak": peak,
            "argv": sys.argv[1:] if argv is None else argv}
    print(f"device {device} ({name}, {info['cpu_capability']}, native bf16: {info['native_bf16']}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {info['load_before']}", flush=True)
    n = 256 if args.tiny else 8192 if device.type == "cuda" else 1024 if args.quick else 2048
    info["ceilings"] = {k: measured_ceiling(device, dt, n) for k, dt in (("fp32", torch.float32),
                                                                          ("bf16", torch.bfloat16))}
    for k, c in info["ceilings"].items():
        print(f"measured matmul ceiling {k}: {c['flops_per_s'] / 1e9:.1f} GFLOP/s (n={c['n']})", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ktal-throughput-") as tmp:
        pool = make_pool(Path(tmp), args.pool_size or (512 if args.quick else 8192), args.box)
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            rows += bench_model(model, args, device, pool, variants)
        pool.close()
        if args.cycle:
            info["cycle"] = {v: bench_cycle(device, Path(tmp), VARIANTS[v], args.tiny) for v in ("fp32", "auto")}
    for r in rows:
        for what in ("train", "score"):
            achieved = r[f"{what}_samples_per_s"] * r[f"{what}_flops_per_sample"]
            r[f"{what}_gflops"] = achieved / 1e9
            r[f"{what}_mfu_vs_datasheet"] = achieved / peak if peak else None
            for k, c in info["ceilings"].items():
                r[f"{what}_share_of_{k}_ceiling"] = achieved / c["flops_per_s"]
    info["load_after"] = load_average()
    info["results"] = rows
    Path(args.out).write_text(json.dumps(info, indent=2))
    print()
    print(table(rows))
    for v, c in info.get("cycle", {}).items():
        print(f"\nquick recipe cycle, [speed] {v} ({c['train_speed']}; {c['n_pool']} volumes, {c['n_labeled']} "
              f"labeled, {c['threads']} threads): train {c['train_s']:.1f} s, select {c['select_s']:.1f} s, "
              f"cycle {c['cycle_wall_s']:.1f} s")
    print(f"\nwrote {args.out}")
    return 0


def table(rows) -> str:
    """One line per model and variant; speed-ups against the same model's fp32 variant where measured."""
    head = ["model", "variant", "train as", "score as", "train/s", "x fp32", "teacher alone/s", "score/s", "x fp32", "resident/s",
            "train GFLOP/s", "% fp32 ceil", "% bf16 ceil"]
    base = {r["model"]: r for r in rows if r["variant"] == "fp32"}
    lines = []
    for r in rows:
        ref = base.get(r["model"])

        def ratio(k, r=r, ref=ref):
            return f"{r[k] / ref[k]:.2f}" if ref else "-"

        lines.append([r["model"], r["variant"], r["train_speed"], r["score_speed"],
                      f"{r['train_samples_per_s']:.1f}", ratio("train_samples_per_s"),
                      f"{r['train_teacher_alone_samples_per_s']:.1f}",
                      f"{r['score_samples_per_s']:.1f}", ratio("score_samples_per_s"),
                      f"{r['score_resident_samples_per_s']:.1f}", f"{r['train_gflops']:.1f}",
                      f"{r['train_share_of_fp32_ceiling']:.0%}", f"{r['train_share_of_bf16_ceiling']:.0%}"])
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(head)]
    out = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    out += ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
