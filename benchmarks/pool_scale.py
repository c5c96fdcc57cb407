"""A pool of 10^5 subtomograms in bounded memory: import, score and predict, with peak RSS.

    nice python benchmarks/pool_scale.py --n 100000 --dir /tmp/ktal_pool_scale
    python benchmarks/pool_scale.py --n 2000 --dir /tmp/ps --quick     # a smoke run
    python benchmarks/pool_scale.py --tiny                             # seconds: what a test runs

Phases, each in its own process so that each peak resident set size is its own:

1. ``generate``: N random 32^3 float32 volumes as MRC volume stacks of ``--per-stack``
   volumes (100 stacks of 1000 for 10^5: 13.1 GB), fsync'ed, then evicted from the page cache.
2. ``dd``: the disk's own speed, dd-style: read every stack (cold) in 16 MiB blocks, and
   write + fsync as many bytes as the pool will take.
3. ``import``: ``Project.create`` (``pool.import_pool``): read, check, normalise and write
   the float16 pool (6.5 GB for 10^5). Cold: the stacks are evicted first.
4. ``score``: the paper's knowledge-transfer query (teacher + student forward, KL) on a
   random subset (``--score-fraction``, 0.5 by default: the paper scores ~10 M = 50% of the
   pool per cycle) with a tiny model, from a cold pool file.
5. ``predict``: ``core.export.write_predictions`` over the whole pool (teacher forward,
   the predictions CSV), from a cold pool file.

Each phase samples /proc/self/status (VmRSS, RssAnon, RssFile) every 0.1 s and reports the
peaks, its wall and CPU time and its MB/s; the parent also records ru_maxrss from wait4.
Results go to ``DIR/pool_scale.json`` and a table. Linux only (RSS and page-cache eviction).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BOX = 32
MiB = 1 << 20


# -- measuring -------------------------------------------------------------------------------------
def _status_kb() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(rest.split()[0])
    return out


class RssSampler:
    """Peak of VmRSS / RssAnon / RssFile, sampled every ``interval`` s in a thread."""

    def __init__(self, interval: float = 0.1):
        self.interval, self.peak, self.samples = interval, {}, []
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            s = _status_kb()
            for k, v in s.items():
                self.peak[k] = max(self.peak.get(k, 0), v)
            self.samples.append((round(time.perf_counter() - self._t0, 2), s.get("VmRSS", 0)))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def report(self) -> dict:
        thin = self.samples[:: max(1, len(self.samples) // 40)]  # ~40 points of the VmRSS curve
        return {f"peak_{k}_MB": v / 1024 for k, v in self.peak.items()} | {"rss_curve_s_MB": [
            (t, round(kb / 1024, 1)) for t, kb in thin]}


def evict(paths) -> None:
    """Drop these files' pages from the page cache (after fsync), so the next read is from disk."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def stacks_of(d: Path) -> list[Path]:
    return sorted((d / "stacks").glob("stack_*.mrcs"))


# -- phases (each runs in a child process) ------------------------------------------------------------
def phase_generate(args) -> dict:
    import mrcfile

    out = Path(args.dir) / "stacks"
    out.mkdir(parents=True, exist_ok=True)
    n_stacks = -(-args.n // args.per_stack)
    rng = np.random.default_rng(0)
    base = rng.standard_normal((args.per_stack, BOX, BOX, BOX), dtype=np.float32)
    written = 0
    for k in range(n_stacks):
        count = min(args.per_stack, args.n - k * args.per_stack)
        path = out / f"stack_{k:04d}.mrcs"
        # distinct volumes everywhere (the import refuses exact duplicates): scale and shift per stack
        with mrcfile.new_mmap(path, shape=(count, BOX, BOX, BOX), mrc_mode=2, overwrite=True) as m:
            for s in range(0, count, 250):
                e = min(count, s + 250)
                m.data[s:e] = base[s:e] * np.float32(1 + 1e-3 * k) + np.float32(0.01 * k)
        evict([path])
        written += path.stat().st_size
    return {"stacks": n_stacks, "bytes": written}


def phase_dd(args) -> dict:
    paths = stacks_of(Path(args.dir))
    evict(paths)
    buf = bytearray(16 * MiB)
    view = memoryview(buf)
    t0 = time.perf_counter()
    total = 0
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while True:
                got = f.readinto(view)
                if not got:
                    break
                total += got
    read_s = time.perf_counter() - t0
    evict(paths)
    pool_bytes = args.n * BOX**3 * 2
    target = Path(args.dir) / "dd_write.tmp"
    block = np.random.default_rng(1).integers(0, 255, 16 * MiB, dtype=np.uint8).tobytes()
    t0 = time.perf_counter()
    with open(target, "wb", buffering=0) as f:
        left = pool_bytes
        while left > 0:
            left -= f.write(block[: min(left, len(block))])
        os.fsync(f.fileno())
    write_s = time.perf_counter() - t0
    target.unlink()
    return {"read_bytes": total, "read_s": read_s, "read_MBps": total / MiB / read_s,
            "write_bytes": pool_bytes, "write_s": write_s, "write_MBps": pool_bytes / MiB / write_s}


def tiny_recipe():
    from napari_ktal.core.loop import load_recipe
    return load_recipe("quick").replace(model={"width": 2}, train={"eval_batch_size": 256})


def phase_import(args) -> dict:
    import shutil

    from napari_ktal.core.project import Project
    if args.no_duplicate_check:  # diagnostic only: what volumes.iter_volumes's duplicate hash costs
        import itertools

        from napari_ktal.core.data import mrc as volumes
        counter = itertools.count()

        class _NoHash:
            def __init__(self, *a, **k):
                pass

            def digest(self):
                return next(counter).to_bytes(8, "little")

        volumes.hashlib = type("hashlib", (), {"blake2b": _NoHash})
    d = Path(args.dir)
    project_dir = d / "project"
    shutil.rmtree(project_dir, ignore_errors=True)
    paths = stacks_of(d)
    evict(paths)
    src_bytes = sum(p.stat().st_size for p in paths)
    t0 = time.perf_counter()
    project = Project.create(project_dir, d / "stacks", tiny_recipe())
    wall = time.perf_counter() - t0
    pool_file = project_dir / "pool" / "volumes.npy"
    pool_bytes = pool_file.stat().st_size
    evict([pool_file])
    return {"volumes": len(project.pool), "source_bytes": src_bytes, "pool_bytes": pool_bytes, "wall_s": wall,
            "source_MBps": src_bytes / MiB / wall, "pool_MBps": pool_bytes / MiB / wall,
            "us_per_volume": wall / len(project.pool) * 1e6, "duplicate_check": not args.no_duplicate_check}


def _models(project):
    import torch

    from napari_ktal.core.models.resnet3d import build_pair
    torch.manual_seed(0)
    recipe = project.recipe()
    classes = [f"class_{k}" for k in range(4)]
    if not project.checkpoint_cycles():
        with project.locked("pool_scale benchmark"):
            project.add_classes(classes)
            t, s = build_pair(recipe.model, len(classes))
            project.save_models(0, t, s, recipe)  # untrained weights: the cost is the same
            project.record_cycle({"cycle": 0, "n_labeled": 0, "strategy": "kt", "device": "cpu"})
    t, s, _ = project.load_models()
    return t, s, recipe


def phase_score(args) -> dict:
    import torch

    from napari_ktal.core.project import Project
    from napari_ktal.core.strategies import STRATEGIES, QueryContext
    project = Project(Path(args.dir) / "project")
    evict([project.root / "pool" / "volumes.npy"])
    t, s, recipe = _models(project)
    n = len(project.pool)
    rng = np.random.default_rng(0)
    subset = np.sort(rng.choice(n, size=max(1, int(n * args.score_fraction)), replace=False))
    m = max(1, int(0.05 * n))
    ctx = QueryContext(t, s, project.pool, np.empty(0, np.int64), torch.device("cpu"), rng, "kl",
                       recipe.train.eval_batch_size)
    t0 = time.perf_counter()
    sel = STRATEGIES["kt"](ctx, subset, m)
    wall = time.perf_counter() - t0
    return {"scored": len(subset), "selected": len(sel.indices), "wall_s": wall,
            "volumes_per_s": len(subset) / wall, "read_MBps": len(subset) * BOX**3 * 2 / MiB / wall}


def phase_predict(args) -> dict:
    import torch

    from napari_ktal.core.loop.export import write_predictions
    from napari_ktal.core.project import Project
    project = Project(Path(args.dir) / "project")
    evict([project.root / "pool" / "volumes.npy"])
    _models(project)
    t0 = time.perf_counter()
    res = write_predictions(project, Path(args.dir) / "predictions.csv", torch.device("cpu"))
    wall = time.perf_counter() - t0
    return {"predicted": res.n_volumes, "wall_s": wall, "volumes_per_s": res.n_volumes / wall,
            "read_MBps": res.n_volumes * BOX**3 * 2 / MiB / wall}


PHASES = {"generate": phase_generate, "dd": phase_dd, "import": phase_import, "score": phase_score,
          "predict": phase_predict}


def run_child(args) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    c0 = time.process_time()
    with RssSampler() as sampler:
        result = PHASES[args.phase](args)
    result["cpu_s"] = time.process_time() - c0
    result |= sampler.report()
    result["ru_maxrss_MB_self"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["threads"] = torch.get_num_threads()
    Path(args.result).write_text(json.dumps(result))
    return 0


# -- orchestration ----------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="volumes in the pool (default 100000)")
    p.add_argument("--per-stack", type=int, default=1000, help="volumes per MRC stack (default 1000)")
    p.add_argument("--dir", help="work folder (needs ~2 x 131 kB x N of disk); required but with --tiny")
    p.add_argument("--phases", default="generate,dd,import,score,predict")
    p.add_argument("--score-fraction", type=float, default=0.5)
    p.add_argument("--threads", type=int, help="torch threads in the phases (default: torch's)")
    p.add_argument("--no-duplicate-check", action="store_true",
                   help="diagnostic: import without volumes.iter_volumes's per-volume duplicate hash")
    p.add_argument("--quick", action="store_true", help="smoke run: implies --n 2000 unless --n is given")
    p.add_argument("--tiny", action="store_true",
                   help="seconds: 48 volumes in stacks of 16, one thread, in a temporary folder unless --dir")
    p.add_argument("--phase", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.phase:
        return run_child(args)
    if args.quick and "--n" not in (argv or sys.argv[1:]):
        args.n = 2000
    if args.tiny:
        args.n, args.per_stack, args.threads = 48, 16, 1
        if args.dir is None:
            import tempfile
            args.dir = tempfile.mkdtemp(prefix="ktal_pool_scale_")
    if args.dir is None:
        p.error("--dir is required (but with --tiny)")
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    out_path = d / "pool_scale.json"
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    results |= {"n": args.n, "box": BOX, "per_stack": args.per_stack, "cpu_count": os.cpu_count(),
                "argv": sys.argv[1:] if argv is None else argv}
    for phase in [x.strip() for x in args.phases.split(",") if x.strip()]:
        result_file = d / f"phase_{phase}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--result", str(result_file),
               "--n", str(args.n), "--per-stack", str(args.per_stack), "--dir", str(d),
               "--score-fraction", str(args.score_fraction)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.no_duplicate_check:
            cmd.append("--no-duplicate-check")
        load = os.getloadavg()
        print(f"{phase} ... (load {load[0]:.2f})", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=os.environ | {"PYTHONPATH": str(ROOT)})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            print(f"{phase} failed with exit code {proc.returncode}", file=sys.stderr)
            return proc.returncode
        r = json.loads(result_file.read_text())
        r["child_wall_s"] = time.perf_counter() - t0
        r["ru_maxrss_MB"] = usage.ru_maxrss / 1024
        r["load_before"] = list(load)
        key = phase + ("_no_duplicate_check" if args.no_duplicate_check and phase == "import" else "")
        results[key] = r
        out_path.write_text(json.dumps(results, indent=2))
        print(f"  {summary(phase, r)}", flush=True)
    print()
    for phase in PHASES:
        for key in (phase, phase + "_no_duplicate_check"):
            if key in results:
                print(f"{key:28s} {summary(phase, results[key])}")
    print(f"\nwrote {out_path}")
    return 0


def summary(phase: str, r: dict) -> str:
    rss = f"peak RSS {r.get('peak_VmRSS_MB', 0):.0f} MB (anon {r.get('peak_RssAnon_MB', 0):.0f}, " \
          f"file {r.get('peak_RssFile_MB', 0):.0f}), cpu {r.get('cpu_s', 0):.1f} s"
    if phase == "generate":
        return f"{r['stacks']} stacks, {r['bytes'] / 2**30:.2f} GiB; {rss}"
    if phase == "dd":
        return f"read {r['read_MBps']:.0f} MB/s (cold), write+fsync {r['write_MBps']:.0f} MB/s"
    if phase == "import":
        return (f"{r['volumes']} volumes in {r['wall_s']:.1f} s = {r['us_per_volume']:.0f} us/volume: "
                f"source {r['source_MBps']:.0f} MB/s read, pool {r['pool_MBps']:.0f} MB/s written; {rss}")
    if phase == "score":
        return f"{r['scored']} volumes in {r['wall_s']:.1f} s ({r['volumes_per_s']:.0f}/s, " \
               f"{r['read_MBps']:.0f} MB/s); {rss}"
    return f"{r['predicted']} volumes in {r['wall_s']:.1f} s ({r['volumes_per_s']:.0f}/s, " \
           f"{r['read_MBps']:.0f} MB/s); {rss}"


if __name__ == "__main__":
    sys.exit(main())
