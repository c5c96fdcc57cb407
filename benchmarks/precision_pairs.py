"""The shipped ``[speed]`` against plain float32, paired: same data, labels, seed and steps.

    python benchmarks/precision_pairs.py --out pairs.json                   # 3 seeds x 2 sets, all cores
    python benchmarks/precision_pairs.py --tiny --out /tmp/pairs.json       # seconds: every path, for CI

For each simulated set and seed it trains the ``quick`` pair once (one cycle, no query) on the
same labeled volumes from the same initial weights, twice: with the recipe's ``[speed]`` as
shipped (``auto``, as it resolves on this device) and with ``precision = "fp32",
channels_last = false``. The order alternates with the seed, so that a drift in the machine's
load falls on both alike. It reports per pair the training seconds, samples/s, epochs, the
teacher's test accuracy and loss; and over the pairs the speed ratio (fp32 seconds / auto
seconds) and the accuracy difference. What auto resolves to is recorded: on a CPU without
native bf16 both sides differ only in channels_last.

Seeds run side by side as separate processes (``--threads`` torch threads each), so that a
16-core machine runs 6 trainings at once; the pair's two trainings run one after the other in
the same process. The simulated sets are written once under ``--work``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_ktal.core.engine import describe_speed  # noqa: E402
from napari_ktal.core.engine.speed import native_bf16  # noqa: E402
from napari_ktal.core.loop import load_labeled_set, load_recipe, oracle_for_pool, train_cycle  # noqa: E402
from napari_ktal.core.project import Project  # noqa: E402
from napari_ktal.core.recipe import SpeedSpec  # noqa: E402
from napari_ktal.core.simulate import SimulationConfig, simulate_dataset  # noqa: E402

#: the sets, named like the ladder's rungs: (classes, per class, test per class, SNR, labeled volumes)
SETS = {
    "4c-snr1-240": (4, 60, 100, 1.0, 240),
    "10c-snr01-400": (10, 40, 30, 0.1, 400),
}
TINY_SETS = {"tiny": (2, 6, 4, 1.0, 12)}
SPEEDS = {"auto": SpeedSpec(), "fp32": SpeedSpec(precision="fp32", channels_last=False)}


def make_set(work: Path, name: str, spec: tuple, box: int) -> Path:
    """The simulated set ``name`` under ``work`` (simulated once; the simulation is seeded)."""
    classes, per_class, test_per_class, snr, _ = spec
    out = work / name
    if not (out / "test" / "labels.csv").exists():
        simulate_dataset(out, SimulationConfig(classes=classes, per_class=per_class, test_per_class=test_per_class,
                                               snr=snr, box=box, seed=1))
    return out


def one_training(data: Path, n_labeled: int, seed: int, speed: SpeedSpec, tiny: bool, root: Path) -> dict:
    """One cycle of the quick recipe on ``n_labeled`` volumes drawn with ``seed``, with ``speed``."""
    recipe = dataclasses.replace(load_recipe("quick"), speed=speed)
    if tiny:
        recipe = recipe.replace(model={"width": 2}, train={"epochs": 2, "lr_milestones": [], "min_steps": 0})
    project = Project.create(root / f"project-{time.monotonic_ns()}", data / "train", recipe)
    oracle = oracle_for_pool(project.pool, data / "train" / "labels.csv")
    project.add_classes(sorted(set(oracle.values())))
    pick = np.random.default_rng(seed).choice(len(project.pool), size=n_labeled, replace=False)
    project.label_many({int(i): oracle[int(i)] for i in pick}, by="oracle")
    test = load_labeled_set(data / "test" / "labels.csv", project.classes)
    device = torch.device("cpu")
    r = train_cycle(project, recipe, device, seed=seed, test=test, select=False)
    return {"train_s": r.train_seconds, "samples_per_s": r.samples_per_second, "epochs": r.epochs,
            "test_accuracy": r.test_accuracy, "teacher_loss": r.teacher_loss, "student_loss": r.student_loss,
            "speed": describe_speed(speed, device)}


def one_pair(data: Path, n_labeled: int, seed: int, tiny: bool) -> dict:
    """Both trainings of one pair, in the order the seed says."""
    order = ["auto", "fp32"] if seed % 2 == 0 else ["fp32", "auto"]
    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: one_training(data, n_labeled, seed, SPEEDS[name], tiny, Path(tmp)) for name in order}
    return {"seed": seed, "order": order, **runs,
            "speedup": runs["fp32"]["train_s"] / runs["auto"]["train_s"],
            "accuracy_diff": runs["auto"]["test_accuracy"] - runs["fp32"]["test_accuracy"]}


def summarize(pairs: list[dict]) -> dict:
    ratios = np.array([p["speedup"] for p in pairs])
    diffs = np.array([p["accuracy_diff"] for p in pairs]) * 100
    return {"pairs": len(pairs), "speedup_geomean": float(np.exp(np.log(ratios).mean())),
            "speedup_min": float(ratios.min()), "speedup_max": float(ratios.max()),
            "accuracy_diff_points_mean": float(diffs.mean()), "accuracy_diff_points_min": float(diffs.min()),
            "accuracy_diff_points_max": float(diffs.max())}


def machine() -> dict:
    flags = ""
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line
                break
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": model, "cores": os.cpu_count(), "torch": torch.__version__,
            "native_bf16": native_bf16(torch.device("cpu")),
            "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default=None, help=f"comma-separated, of {', '.join(SETS)} (default: all)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--parallel", type=int, help="processes at a time (default: one per pair)")
    p.add_argument("--threads", type=int, help="torch threads per process (default: cores / processes at a time)")
    p.add_argument("--work", type=Path, help="where the simulated sets go (default: a temporary folder)")
    p.add_argument("--tiny", action="store_true", help="a seconds-long smoke run of every path (CI)")
    p.add_argument("--out", type=Path, default=Path("precision_pairs.json"))
    p.add_argument("--one", nargs=3, metavar=("SET", "DATA", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sets = TINY_SETS if args.tiny else SETS
    box = 16 if args.tiny else 32

    if args.one:  # a child: one pair, its JSON on stdout's last line
        name, data, seed = args.one
        torch.set_num_threads(args.threads or 1)
        print(json.dumps(one_pair(Path(data), sets[name][4], int(seed), args.tiny)))
        return 0

    names = args.sets.split(",") if args.sets else list(sets)
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        data = {name: make_set(work, name, sets[name], box) for name in names}
        jobs = [(name, seed) for name in names for seed in seeds]
        parallel = min(args.parallel or len(jobs), len(jobs))
        threads = args.threads or max(1, (os.cpu_count() or 1) // parallel)
        t0 = time.perf_counter()
        results: dict[str, list[dict]] = {name: [] for name in names}
        failed = []
        for start in range(0, len(jobs), parallel):  # in waves of `parallel` processes
            procs = {job: subprocess.Popen(
                [sys.executable, __file__, "--one", job[0], str(data[job[0]]), str(job[1]), "--threads", str(threads)]
                + (["--tiny"] if args.tiny else []), stdout=subprocess.PIPE, text=True)
                for job in jobs[start:start + parallel]}
            for (name, seed), proc in procs.items():
                out, _ = proc.communicate()
                if proc.returncode:
                    failed.append(f"{name} seed {seed}: exit {proc.returncode}")
                    continue
                results[name].append(json.loads(out.strip().splitlines()[-1]))
        wall = time.perf_counter() - t0
    report = {"machine": machine(), "threads_per_process": threads, "processes": len(jobs),
              "processes_at_a_time": parallel, "wall_s": wall,
              "sets": {name: {"spec": dict(zip(("classes", "per_class", "test_per_class", "snr", "labeled"),
                                               sets[name])),
                              "pairs": results[name], "summary": summarize(results[name]) if results[name] else None}
                       for name in names},
              "failed": failed}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"{report['machine']['cpu']}, {report['machine']['cores']} cores, native bf16: "
          f"{report['machine']['native_bf16']}; {len(jobs)} processes, {parallel} at a time x {threads} threads, "
          f"{wall:.0f} s")
    for name in names:
        for r in results[name]:
            print(f"{name} seed {r['seed']}: auto ({r['auto']['speed']}) {r['auto']['train_s']:.1f} s, "
                  f"{100 * r['auto']['test_accuracy']:.1f}%; fp32 {r['fp32']['train_s']:.1f} s, "
                  f"{100 * r['fp32']['test_accuracy']:.1f}%; {r['speedup']:.2f}x")
        s = report["sets"][name]["summary"]
        if s:
            print(f"{name}: {s['speedup_geomean']:.2f}x ({s['speedup_min']:.2f}-{s['speedup_max']:.2f}), accuracy "
                  f"{s['accuracy_diff_points_mean']:+.1f} points ({s['accuracy_diff_points_min']:+.1f} to "
                  f"{s['accuracy_diff_points_max']:+.1f})")
    for f in failed:
        print("FAILED:", f)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
