"""Ladder runs side by side on one machine (a GPU node), under a deadline, merged per rung.

    python benchmarks/ladder_jobs.py --root benchmarks/results/verdict-h200 --device cuda --parallel 14 \\
        --deadline 420 10c-snr005:kt,random,margin,entropy:3-5 10c-snr01@warm:kt:0-2
    python benchmarks/ladder_jobs.py --root /tmp/lj --device cpu --parallel 2 tiny:kt,random:0-1   # CI

A job is ``RUNG[@VARIANT]:STRATEGIES:SEEDS`` (seeds ``3-5`` or ``0,2``); it expands to one
process per (strategy, seed), seed by seed, so that whole pairs finish first. Each process is
``ladder.py`` with one strategy and one seed in a folder of its own (one thread each), whose
data folder links to the rung's, simulated once under ``--root``: its ``benchmark.json``
therefore names the same data as a run made in ``--root`` itself. No process starts after
``--stop-starting`` seconds (default: 80% of the deadline) and any still running at
``--deadline`` is stopped (called again, it continues from its last finished cycle; ``--fresh``
starts over); the runs that finished every cycle are merged into
``<root>/<rung>[/variant-<name>]/benchmark/`` (results.csv, with the runs it held before;
summary.csv and benchmark.png rewritten), a run stopped early is left out (rerun it). A
summary of what ran, with each process's wall time, goes to ``<root>/ladder_jobs.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import ladder  # noqa: E402


@dataclass(frozen=True)
class Job:
    rung: str
    variant: str | None
    strategy: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.rung}{'@' + self.variant if self.variant else ''}-{self.strategy}-{self.seed}"


def parse_jobs(spec: str) -> list[Job]:
    """``RUNG[@VARIANT]:STRATEGIES:SEEDS`` -> one job per (strategy, seed), seed-major."""
    try:
        target, strategies, seeds = spec.split(":")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{spec!r}: write RUNG[@VARIANT]:STRATEGIES:SEEDS") from None
    rung, _, variant = target.partition("@")
    if rung not in ladder.LADDER:
        raise argparse.ArgumentTypeError(f"no rung {rung!r}: choose one of {', '.join(ladder.LADDER)}")
    if variant:
        ladder.variant_spec(variant)
    if "-" in seeds:
        lo, hi = (int(s) for s in seeds.split("-"))
        seed_list = list(range(lo, hi + 1))
    else:
        seed_list = [int(s) for s in seeds.split(",")]
    return [Job(rung, variant or None, s, seed) for seed in seed_list for s in strategies.split(",")]


def _command(job: Job, root: Path, device: str) -> list[str]:
    cmd = [sys.executable, str(HERE / "ladder.py"), job.rung, "--root", str(root), "--strategies", job.strategy,
           "--seeds", "1", "--first-seed", str(job.seed), "--device", device]
    return cmd + (["--variant", job.variant] if job.variant else [])


def run_jobs(jobs: list[Job], root: Path, work: Path, device: str, parallel: int, deadline: float,
             stop_starting: float, threads: int = 1, fresh: bool = False) -> list[dict]:
    """Every job as its own process, ``parallel`` at a time; what each did. A job whose folder is
    there from an earlier call continues where it stopped (the benchmark resumes by cycle), unless
    ``fresh``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    for rung in {j.rung for j in jobs}:
        ladder.simulate(rung, root)
    queue, running, done = list(jobs), {}, []
    t0 = time.monotonic()
    while queue or running:
        elapsed = time.monotonic() - t0
        while queue and len(running) < parallel and elapsed < stop_starting:
            job = queue.pop(0)
            folder = work / job.name
            if fresh:
                shutil.rmtree(folder, ignore_errors=True)
            (folder / job.rung).mkdir(parents=True, exist_ok=True)
            link = folder / job.rung / "data"
            if not link.is_symlink():
                link.symlink_to((root / job.rung / "data").resolve(), target_is_directory=True)
            log = open(work / f"{job.name}.log", "a")
            running[job] = (subprocess.Popen(_command(job, folder, device), stdout=log, stderr=subprocess.STDOUT,
                                             env=env), time.monotonic(), log)
            print(f"{elapsed:6.0f} s  start {job.name}", flush=True)
        if elapsed >= stop_starting and queue:
            done += [{"job": j.name, "status": "not started"} for j in queue]
            queue = []
        for job, (proc, started, log) in list(running.items()):
            if proc.poll() is None and elapsed < deadline:
                continue
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
            status = "finished" if proc.returncode == 0 else f"stopped at the deadline" if elapsed >= deadline \
                else f"failed (exit {proc.returncode})"
            done.append({"job": job.name, "status": status, "seconds": round(time.monotonic() - started, 1)})
            print(f"{time.monotonic() - t0:6.0f} s  {status}: {job.name}", flush=True)
            del running[job]
        time.sleep(0.5)
    return done


def _complete_rows(out: Path, cycles: int) -> dict[tuple[str, int], list[dict]]:
    from napari_ktal.core.loop.benchmark import recorded_runs

    return {k: rows for k, rows in recorded_runs(out).items() if len(rows) >= cycles}


def merge(jobs: list[Job], root: Path, work: Path) -> list[str]:
    """The finished runs into ``<root>/<rung>[/variant-<name>]/benchmark``; the folders merged."""
    from napari_ktal.core.data.mrc import read_labels_csv
    from napari_ktal.core.loop import budget_schedule, load_recipe
    from napari_ktal.core.loop.benchmark import CONFIG_FILE, RESULT_COLUMNS, write_outputs

    merged = []
    for rung, variant in dict.fromkeys((j.rung, j.variant) for j in jobs):
        target_dir = ladder.rung_folder(rung, root, variant)
        recipe_path = ladder.recipe_file(rung, root, variant)
        recipe = load_recipe(recipe_path)
        data = root / rung / "data"
        n_pool = len(read_labels_csv(data / "train" / "labels.csv"))
        cycles = len(budget_schedule(n_pool, recipe.active))
        out = target_dir / "benchmark"
        runs = _complete_rows(out, cycles) if out.exists() else {}
        group = [j for j in jobs if (j.rung, j.variant) == (rung, variant)]
        config = None
        for job in group:
            src = ladder.rung_folder(rung, work / job.name, variant) / "benchmark"
            new = _complete_rows(src, cycles) if (src / CONFIG_FILE).exists() else {}
            if not new:  # stopped early or failed: nothing of it is merged
                continue
            job_config = json.loads((src / CONFIG_FILE).read_text())
            if (out / CONFIG_FILE).exists() and json.loads((out / CONFIG_FILE).read_text()) != job_config:
                raise SystemExit(f"{job.name}: its benchmark.json differs from {out / CONFIG_FILE}")
            config = job_config
            runs.update(new)
        if not runs:
            continue
        if config is not None and not (out / CONFIG_FILE).exists():
            out.mkdir(parents=True, exist_ok=True)
            (out / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        with open(out / "results.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, RESULT_COLUMNS)
            w.writeheader()
            for key in sorted(runs):  # write_outputs below reads them back, in the order of `strategies`
                w.writerows({k: r.get(k, "") for k in RESULT_COLUMNS} for r in runs[key])
        # the strategies in the order the jobs named them (a benchmark's tables follow it), then any others
        strategies = list(dict.fromkeys([j.strategy for j in group] + [k[0] for k in sorted(runs)]))
        strategies = [s for s in strategies if any(k[0] == s for k in runs)]
        seeds = sorted({k[1] for k in runs})
        write_outputs(out, strategies, seeds, n_pool, f"{recipe.name}: {n_pool} volumes, {len(seeds)} seed(s)",
                      ladder.LADDER[rung].metric, cycles=cycles)
        merged.append(str(out))
    return merged


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("jobs", nargs="+", type=parse_jobs, metavar="RUNG[@VARIANT]:STRATEGIES:SEEDS")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--work", type=Path, help="the processes' own folders (default <root>/jobs)")
    p.add_argument("--device", default="auto")
    p.add_argument("--parallel", type=int, default=os.cpu_count() or 1)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--deadline", type=float, default=float("inf"), help="seconds; running processes are stopped")
    p.add_argument("--stop-starting", type=float, help="seconds after which no process starts (default 80%% "
                   "of the deadline)")
    p.add_argument("--fresh", action="store_true", help="start every job over (default: a job stopped "
                   "before, e.g. at a deadline, continues from its last finished cycle)")
    args = p.parse_args(argv)
    jobs = [j for group in args.jobs for j in group]
    stop = args.stop_starting if args.stop_starting is not None else 0.8 * args.deadline
    work = args.work or args.root / "jobs"
    args.root.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    done = run_jobs(jobs, args.root, work, args.device, args.parallel, args.deadline, stop, args.threads,
                    args.fresh)
    merged = merge(jobs, args.root, work)
    report = {"device": args.device, "parallel": args.parallel, "threads": args.threads,
              "wall_s": round(time.monotonic() - t0, 1), "jobs": done, "merged": merged}
    (args.root / "ladder_jobs.json").write_text(json.dumps(report, indent=2))
    print(f"{sum(d['status'] == 'finished' for d in done)} of {len(jobs)} runs finished in {report['wall_s']:.0f} s; "
          f"merged into {', '.join(merged) or 'nothing'}")
    return 0 if all(d["status"] == "finished" for d in done) else 1


if __name__ == "__main__":
    sys.exit(main())
