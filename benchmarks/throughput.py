"""Training and scoring throughput of the teacher-student pair, and the model FLOP utilisation.

    python benchmarks/throughput.py                       # GPU: the paper's models at 32^3
    python benchmarks/throughput.py --device cpu --width 8 --quick --cycle

For each model (``paper``: ResNet-18/10, cifar stem, width 64; ``quick``: width 8, strided
stem) and each speed variant (channels_last_3d, torch.compile), it measures

- train samples/s: ``training.train_pair`` (teacher + student, same batches, bf16 autocast on
  CUDA) on a synthetic labeled set held on the device, after a warm-up epoch;
- score samples/s: ``inference.forward_outputs`` with teacher and student over a real pool
  file (pread, float16, pinned memory, a reader thread), after a warm-up pass;
- FLOPs per sample of one training step and one T+S inference (``torch.utils.flop_counter``),
  hence achieved TFLOP/s and the model FLOP utilisation (MFU) against the device's dense
  bf16 peak (datasheet) and against a measured matrix-product ceiling;
- with ``--cycle``: one active-learning cycle of the ``quick`` recipe on the README's demo
  size (600 volumes, 60 labeled), wall time of training and selection.

It writes JSON (``--out``) and prints a table. Numbers on a shared CPU vary with the load:
the JSON records the load average before and after.
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

from napari_ktal.core.engine.inference import autocast, forward_outputs
from napari_ktal.core.engine.training import SpeedOptions, train_pair
from napari_ktal.core.loop import load_recipe
from napari_ktal.core.models.resnet3d import build_pair
from napari_ktal.core.models.transfer import TRANSFER_LOSSES

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


def measured_ceiling(device: torch.device, quick: bool) -> dict:
    """FLOP/s of a large matrix product: bf16 on CUDA, float32 on the CPU (what each path computes in)."""
    n = 8192 if device.type == "cuda" else (1024 if quick else 2048)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = torch.Generator(device=device).manual_seed(0)
    mats = [torch.randn(n, n, device=device, dtype=dtype, generator=gen) for _ in range(4)]  # rotate: no cache reuse
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
    with FlopCounterMode(display=False) as counter:
        if train:
            with autocast(device):
                out_t, out_s = teacher(x), student(x)
                loss = (F.cross_entropy(out_t.logits.float(), y) + F.cross_entropy(out_s.logits.float(), y)
                        + 100.0 * TRANSFER_LOSSES["at"](out_s, out_t))
            loss.backward()
        else:
            with torch.no_grad(), autocast(device):
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


def bench_model(name: str, args, device: torch.device, pool, variants) -> list[dict]:
    cfg = MODELS[name]
    recipe = load_recipe(cfg["recipe"])
    model = recipe.model if args.width is None else dataclasses.replace(recipe.model, width=args.width)
    batch = args.batch_size or recipe.train.batch_size
    steps = args.steps or (3 if args.quick else 20)
    n = batch * steps
    train_spec = dataclasses.replace(recipe.train, epochs=1, lr_milestones=[], batch_size=batch)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, args.box, args.box, args.box), dtype=np.float32)
    y = rng.integers(0, cfg["n_classes"], n)
    torch.manual_seed(0)
    t, s = build_pair(model, cfg["n_classes"])
    t.to(device)
    s.to(device)
    flops_train = count_flops(t, s, min(batch, 8), args.box, cfg["n_classes"], device, train=True)
    flops_score = count_flops(t, s, min(batch, 8), args.box, cfg["n_classes"], device, train=False)
    rows = []
    for channels_last, compile_ in variants:
        speed = SpeedOptions(channels_last=channels_last, compile=compile_)
        row = {"model": name, "teacher_depth": model.teacher_depth, "student_depth": model.student_depth,
               "width": model.width, "stem": model.stem, "box": args.box, "batch": batch,
               "channels_last": channels_last, "compile": compile_,
               "train_flops_per_sample": flops_train, "score_flops_per_sample": flops_score}
        try:
            # warm-up epoch (allocator, cuDNN benchmark, compilation), then the timed epochs
            t0 = time.perf_counter()
            train_pair(t, s, x, y, train_spec, recipe.transfer, device, seed=0, speed=speed)
            row["train_warmup_s"] = time.perf_counter() - t0
            sync(device)
            t0 = time.perf_counter()
            timed = dataclasses.replace(train_spec, epochs=args.epochs)
            train_pair(t, s, x, y, timed, recipe.transfer, device, seed=1, speed=speed)
            sync(device)
            row["train_samples_per_s"] = n * args.epochs / (time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 (a variant that cannot run is reported, not fatal)
            row["train_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        # scoring: the pool file through the real data path; the models as training left them
        idx = np.arange(min(len(pool), args.score_n or (4 * batch if args.quick else len(pool))))
        eval_bs = args.eval_batch_size or recipe.train.eval_batch_size
        models = [t, s]
        try:
            forward_outputs(models, pool.read, idx[: min(len(idx), eval_bs)], device, eval_bs,
                            channels_last=channels_last)
            sync(device)
            t0 = time.perf_counter()
            for _ in range(args.score_repeats):
                forward_outputs(models, pool.read, idx, device, eval_bs, channels_last=channels_last)
            sync(device)
            row["score_samples_per_s"] = len(idx) * args.score_repeats / (time.perf_counter() - t0)
            row["score_n"] = len(idx)
            # the same passes on volumes already on the device: the data path's cost is the difference
            row["score_resident_samples_per_s"] = resident_score_rate(models, pool, idx, device, eval_bs,
                                                                      channels_last, args.score_repeats)
        except Exception as exc:  # noqa: BLE001
            row["score_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        rows.append(row)
        print(f"  {name} channels_last={channels_last} compile={compile_}: "
              f"train {row.get('train_samples_per_s', float('nan')):.1f}/s, "
              f"score {row.get('score_samples_per_s', float('nan')):.1f}/s", flush=True)
    return rows


@torch.no_grad()
def resident_score_rate(models, pool, idx, device, batch: int, channels_last: bool, repeats: int) -> float:
    """T+S forward passes over volumes held on the device as float16 (no reading, no copying)."""
    from napari_ktal.core.engine.inference import memory_format
    x = torch.from_numpy(pool.read(idx, dtype=None)).unsqueeze(1).to(device)
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    with memory_format(models, channels_last):
        for m in models:
            m.eval()
        for _ in range(2):  # warm-up
            for m in models:
                m(x[:batch].float().contiguous(memory_format=fmt))
        sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            for s in range(0, len(x), batch):
                xb = x[s : s + batch].float().contiguous(memory_format=fmt)
                with autocast(device):
                    for m in models:
                        m(xb).logits.float()
        sync(device)
    return len(idx) * repeats / (time.perf_counter() - t0)


def bench_cycle(device: torch.device, directory: Path) -> dict:
    """One cycle (cycle 0) of the quick recipe on the README's demo size: 600 volumes, 60 labeled."""
    import mrcfile

    from napari_ktal.core import loop as al
    from napari_ktal.core.project import Project
    n, box = 600, 32
    src = directory / "demo"
    src.mkdir()
    rng = np.random.default_rng(0)
    with mrcfile.new(src / "stack.mrcs", overwrite=True) as m:
        m.set_data(rng.standard_normal((n, box, box, box), dtype=np.float32))
    recipe = load_recipe("quick")
    project = Project.create(directory / "demo_project", src / "stack.mrcs", recipe)
    oracle = {i: f"class_{i % 4}" for i in range(n)}
    t0 = time.perf_counter()
    reports = []

    def on_cycle(r):
        reports.append(r)
        raise StopIteration  # one cycle is enough

    try:
        al.run_with_oracle(project, recipe, oracle, device, 0, None, on_cycle=on_cycle)
    except StopIteration:
        pass
    wall = time.perf_counter() - t0
    r = reports[0]
    return {"recipe": recipe.name, "epochs": recipe.train.epochs, "n_pool": n, "n_labeled": r.n_labeled,
            "train_s": r.train_seconds, "select_s": r.select_seconds, "cycle_wall_s": wall,
            "train_samples_per_s": r.samples_per_second, "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto, cpu or cuda:N")
    p.add_argument("--models", default="paper,quick", help="comma-separated: paper, quick")
    p.add_argument("--width", type=int, help="override the models' width (e.g. 8 for the paper model on a CPU)")
    p.add_argument("--box", type=int, default=32)
    p.add_argument("--batch-size", type=int, help="training batch (default: the recipe's)")
    p.add_argument("--eval-batch-size", type=int, help="scoring batch (default: the recipe's)")
    p.add_argument("--steps", type=int, help="training steps per epoch (default 20; 3 with --quick)")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs after the warm-up epoch (default 2)")
    p.add_argument("--pool-size", type=int, help="volumes in the scoring pool (default 8192; 512 with --quick)")
    p.add_argument("--score-n", type=int, help="volumes scored per pass (default the pool; 4 batches with --quick)")
    p.add_argument("--score-repeats", type=int, default=2)
    p.add_argument("--channels-last", choices=["off", "on", "both"], default="both")
    p.add_argument("--compile", choices=["off", "on", "both"], default="off")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="few steps: a smoke run or a CPU measurement")
    p.add_argument("--cycle", action="store_true", help="also time one cycle of the quick recipe (600 volumes)")
    p.add_argument("--out", default="throughput.json")
    args = p.parse_args(argv)

    from napari_ktal.core.engine.device import resolve_device
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    choice = {"off": [False], "on": [True], "both": [False, True]}
    variants = [(cl, co) for co in choice[args.compile] for cl in choice[args.channels_last]]
    name, peak = datasheet_peak(device)
    info = {"device": str(device), "device_name": name, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "load_before": load_average(), "datasheet_dense_bf16_peak": peak,
            "argv": sys.argv[1:] if argv is None else argv}
    print(f"device {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load {info['load_before']}", flush=True)
    info["ceiling"] = measured_ceiling(device, args.quick)
    print(f"measured matmul ceiling: {info['ceiling']['flops_per_s'] / 1e12:.3f} TFLOP/s "
          f"({info['ceiling']['dtype']}, n={info['ceiling']['n']})", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ktal-throughput-") as tmp:
        pool = make_pool(Path(tmp), args.pool_size or (512 if args.quick else 8192), args.box)
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            rows += bench_model(model, args, device, pool, variants)
        pool.close()
        if args.cycle:
            info["cycle"] = bench_cycle(device, Path(tmp))
    for r in rows:
        for what in ("train", "score"):
            sps = r.get(f"{what}_samples_per_s")
            if sps is None:
                continue
            achieved = sps * r[f"{what}_flops_per_sample"]
            r[f"{what}_tflops"] = achieved / 1e12
            r[f"{what}_mfu_vs_datasheet"] = achieved / peak if peak else None
            r[f"{what}_mfu_vs_measured"] = achieved / info["ceiling"]["flops_per_s"]
    info["load_after"] = load_average()
    info["results"] = rows
    Path(args.out).write_text(json.dumps(info, indent=2))
    print()
    print(table(rows, peak is not None))
    if "cycle" in info:
        c = info["cycle"]
        print(f"\nquick recipe cycle ({c['n_pool']} volumes, {c['n_labeled']} labeled, {c['epochs']} epochs, "
              f"{c['threads']} threads): train {c['train_s']:.1f} s, select {c['select_s']:.1f} s, "
              f"cycle {c['cycle_wall_s']:.1f} s")
    print(f"\nwrote {args.out}")
    return 0


def table(rows, have_peak: bool) -> str:
    head = ["model", "width", "stem", "CL", "compile", "train/s", "score/s", "resident/s", "GFLOP/train-sample",
            "GFLOP/score-sample", "train TFLOP/s", "score TFLOP/s",
            "train MFU" if have_peak else "train %ceil", "score MFU" if have_peak else "score %ceil"]
    key = "mfu_vs_datasheet" if have_peak else "mfu_vs_measured"
    lines = []
    for r in rows:
        def f(k, fmt, r=r):
            v = r.get(k)
            return "-" if v is None else fmt.format(v)

        lines.append([r["model"], str(r["width"]), r["stem"], "y" if r["channels_last"] else "n",
                      "y" if r["compile"] else "n", f("train_samples_per_s", "{:.1f}"),
                      f("score_samples_per_s", "{:.1f}"), f("score_resident_samples_per_s", "{:.1f}"),
                      f"{r['train_flops_per_sample'] / 1e9:.3g}",
                      f"{r['score_flops_per_sample'] / 1e9:.3g}", f("train_tflops", "{:.4f}"),
                      f("score_tflops", "{:.4f}"), f(f"train_{key}", "{:.2%}"), f(f"score_{key}", "{:.2%}")])
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(head)]
    out = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    out += ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
