"""Cutting 10^5 picks out of 20 tomograms of 1k x 1k x 300: speed against a plain read, and peak RSS.

    nice python benchmarks/extract_scale.py --dir /tmp/ktal_extract_scale            # the issue's size
    python benchmarks/extract_scale.py --dir /tmp/es --tomograms 2 --shape 512x512x200 --picks 5000   # smaller
    python benchmarks/extract_scale.py --tiny     # seconds, every phase, a temporary folder: what a test runs

Phases, each in its own process so that each peak resident set size is its own (sampled from
/proc/self/status every 0.1 s, and ru_maxrss from wait4), the tomograms evicted from the page
cache (fsync + POSIX_FADV_DONTNEED) before each measured phase:

1. ``generate``: the tomograms (float32 MRC, written by slabs through ``mrcfile.new_mmap``) and
   the picks: a CSV ``tomogram,x,y,z`` of voxel positions on a jittered grid (no two picks of one
   particle), shuffled across tomograms.
2. ``read``: every tomogram read once from disk, sequentially, in 64 MiB blocks: the floor.
3. ``pool``: ``create_from_picks`` (what ``ktal-cryo train PICKS --tomograms`` does): plan (read
   the list, check every tomogram and pick, decide the contrast from 256 picks), then cut every
   box, normalise it and write the float16 pool (32^3: 6.5 GB for 10^5).
4. ``mrc`` (only when asked for in ``--phases``): ``extract_to_folder``, one MRC per pick.

The tomograms and the pool are deleted at the end (``--keep`` keeps them). Results go to
``benchmarks/results/extract-scale-LABEL.json`` (or ``--out``; with ``--tiny``, ``DIR/extract_scale.json``)
and a table. Linux only.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
from pool_scale import RssSampler, evict  # noqa: E402  (the same measuring as the pool benchmark)

MiB = 1 << 20


def tomogram_paths(d: Path) -> list[Path]:
    return sorted((d / "tomograms").glob("TS_*.mrc"))


def _shape(text: str) -> tuple[int, int, int]:
    x, y, z = (int(v) for v in text.lower().split("x"))
    return z, y, x


# -- phases (each runs in a child process) ------------------------------------------------------------
def phase_generate(args) -> dict:
    import mrcfile

    d = Path(args.dir)
    (d / "tomograms").mkdir(parents=True, exist_ok=True)
    nz, ny, nx = _shape(args.shape)
    rng = np.random.default_rng(0)
    slab = rng.standard_normal((8, ny, nx), dtype=np.float32)
    written = 0
    per = -(-args.picks // args.tomograms)
    rows = []
    spacing = max(4.0, (nz * ny * nx / (1.5 * per)) ** (1 / 3))
    for t in range(args.tomograms):
        path = d / "tomograms" / f"TS_{t + 1:02d}.mrc"
        with mrcfile.new_mmap(path, shape=(nz, ny, nx), mrc_mode=2, overwrite=True) as m:
            for z in range(0, nz, len(slab)):
                e = min(nz, z + len(slab))
                m.data[z:e] = np.roll(slab[: e - z], (z * 7 + t * 131) % nx, axis=2) * np.float32(1 + 0.01 * t)
            m.voxel_size = 10.0
        evict([path])
        written += path.stat().st_size
        grid = np.stack(np.meshgrid(*(np.arange(spacing / 2, n - spacing / 2, spacing) for n in (nx, ny, nz)),
                                    indexing="ij"), -1).reshape(-1, 3)
        count = min(len(grid), per, args.picks - len(rows))
        chosen = grid[rng.choice(len(grid), count, replace=False)]
        chosen += rng.uniform(-spacing / 4, spacing / 4, chosen.shape)
        rows += [(f"TS_{t + 1:02d}", *np.round(p, 2)) for p in chosen]
    order = rng.permutation(len(rows))
    with open(d / "picks.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tomogram", "x", "y", "z"])
        w.writerows(rows[i] for i in order)
    return {"tomograms": args.tomograms, "shape_zyx": [nz, ny, nx], "bytes": written, "picks": len(rows)}


def phase_read(args) -> dict:
    paths = tomogram_paths(Path(args.dir))
    evict(paths)
    buf = bytearray(64 * MiB)
    view = memoryview(buf)
    t0 = time.perf_counter()
    total = 0
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while got := f.readinto(view):
                total += got
    wall = time.perf_counter() - t0
    evict(paths)
    return {"bytes": total, "wall_s": wall, "MBps": total / MiB / wall}


def phase_pool(args) -> dict:
    from napari_ktal.core.data import PickOptions
    from napari_ktal.core.loop import PickSource, load_recipe
    from napari_ktal.core.loop.commands import create_from_picks

    d = Path(args.dir)
    project = d / "project"
    shutil.rmtree(project, ignore_errors=True)
    paths = tomogram_paths(d)
    evict(paths)
    planned = {}

    def on_plan(plan):
        planned["plan_s"] = time.perf_counter() - t0
        planned["contrast"] = plan.contrast.message

    t0 = time.perf_counter()
    p = create_from_picks(project, PickSource(d / "picks.csv", d / "tomograms", box=args.box,
                                              options=PickOptions(units="px")),
                          load_recipe("quick"), [], on_plan=on_plan)
    wall = time.perf_counter() - t0
    src = sum(x.stat().st_size for x in paths)
    pool_file = project / "pool" / "volumes.npy"
    evict([pool_file])
    return {"picks": len(p.pool), "wall_s": wall, **planned, "tomogram_bytes": src,
            "tomogram_MBps": src / MiB / wall, "picks_per_s": len(p.pool) / wall,
            "pool_bytes": pool_file.stat().st_size}


def phase_mrc(args) -> dict:
    from napari_ktal.core.data import PickOptions
    from napari_ktal.core.loop import PickSource, extract

    d = Path(args.dir)
    out = d / "extracted"
    shutil.rmtree(out, ignore_errors=True)
    paths = tomogram_paths(d)
    evict(paths)
    t0 = time.perf_counter()
    result = extract(PickSource(d / "picks.csv", d / "tomograms", box=args.box, options=PickOptions(units="px")),
                     out)
    wall = time.perf_counter() - t0
    src = sum(x.stat().st_size for x in paths)
    shutil.rmtree(out, ignore_errors=True)
    return {"picks": result.n, "wall_s": wall, "tomogram_bytes": src, "tomogram_MBps": src / MiB / wall,
            "picks_per_s": result.n / wall}


PHASES = {"generate": phase_generate, "read": phase_read, "pool": phase_pool, "mrc": phase_mrc}


def run_child(args) -> int:
    import torch

    torch.set_num_threads(args.threads)
    c0 = time.process_time()
    with RssSampler() as sampler:
        result = PHASES[args.phase](args)
    result["cpu_s"] = time.process_time() - c0
    result |= sampler.report()
    result["ru_maxrss_MB_self"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.result).write_text(json.dumps(result))
    return 0


def summary(phase: str, r: dict) -> str:
    rss = f"peak RSS {r.get('peak_VmRSS_MB', 0):.0f} MB (anon {r.get('peak_RssAnon_MB', 0):.0f}, file " \
          f"{r.get('peak_RssFile_MB', 0):.0f}; ru_maxrss {r.get('ru_maxrss_MB', 0):.0f} MB)"
    if phase == "generate":
        return f"{r['tomograms']} tomograms, {r['bytes'] / 1e9:.1f} GB, {r['picks']} picks in {r['child_wall_s']:.0f} s"
    if phase == "read":
        return f"{r['bytes'] / 1e9:.1f} GB in {r['wall_s']:.1f} s = {r['MBps']:.0f} MB/s; {rss}"
    return (f"{r['picks']} picks in {r['wall_s']:.1f} s ({r['picks_per_s']:.0f}/s, tomograms at "
            f"{r['tomogram_MBps']:.0f} MB/s{', plan ' + format(r['plan_s'], '.1f') + ' s' if 'plan_s' in r else ''}); "
            f"{rss}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", help="work folder (needs the tomograms' size + the pool's of disk); required but "
                   "with --tiny")
    p.add_argument("--tomograms", type=int, default=20)
    p.add_argument("--shape", default="1000x1000x300", help="x x y x z voxels (default 1000x1000x300)")
    p.add_argument("--picks", type=int, default=100_000)
    p.add_argument("--box", type=int, default=32)
    p.add_argument("--threads", type=int, default=2, help="torch threads in the phases (default 2)")
    p.add_argument("--phases", default="generate,read,pool", help="default generate,read,pool; add mrc for MRC files")
    p.add_argument("--label", help="name of the results file (default: from the sizes)")
    p.add_argument("--keep", action="store_true", help="keep the tomograms and the pool")
    p.add_argument("--out", help="results file (default: benchmarks/results/extract-scale-LABEL.json)")
    p.add_argument("--tiny", action="store_true", help="seconds: 2 tomograms of 96x96x64, 24 picks, every phase "
                   "(mrc too), one thread, in a temporary folder unless --dir; results in DIR/extract_scale.json")
    p.add_argument("--phase", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.phase:
        return run_child(args)
    if args.tiny:
        args.tomograms, args.shape, args.picks, args.threads = 2, "96x96x64", 24, 1
        args.phases = "generate,read,pool,mrc"
        if args.dir is None:
            import tempfile
            args.dir = tempfile.mkdtemp(prefix="ktal_extract_scale_")
    if args.dir is None:
        p.error("--dir is required (but with --tiny)")
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    label = args.label or f"{args.tomograms}x{args.shape}-{args.picks}"
    if args.out:
        out_path = Path(args.out)
    elif args.tiny:
        out_path = d / "extract_scale.json"
    else:
        out_path = HERE / "results" / f"extract-scale-{label}.json"
    results = {"tomograms": args.tomograms, "shape_xyz": args.shape, "picks": args.picks, "box": args.box,
               "cpu_count": os.cpu_count(), "argv": sys.argv[1:] if argv is None else argv,
               "machine": os.uname().machine, "mem_total_GB": os.sysconf("SC_PAGE_SIZE") *
               os.sysconf("SC_PHYS_PAGES") / 1e9}
    try:
        for phase in [x.strip() for x in args.phases.split(",") if x.strip()]:
            result_file = d / f"phase_{phase}.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--result", str(result_file),
                   "--dir", str(d), "--tomograms", str(args.tomograms), "--shape", args.shape,
                   "--picks", str(args.picks), "--box", str(args.box), "--threads", str(args.threads)]
            load = os.getloadavg()
            print(f"{phase} ... (load {load[0]:.2f})", flush=True)
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, env=os.environ | {"PYTHONPATH": str(ROOT)})
            _, status, usage = os.wait4(proc.pid, 0)
            if os.waitstatus_to_exitcode(status):
                print(f"{phase} failed", file=sys.stderr)
                return 1
            r = json.loads(result_file.read_text())
            r |= {"child_wall_s": time.perf_counter() - t0, "ru_maxrss_MB": usage.ru_maxrss / 1024,
                  "load_before": list(load), "load_after": list(os.getloadavg())}
            results[phase] = r
            print(f"  {summary(phase, r)}", flush=True)
        if "read" in results:
            for phase in ("pool", "mrc"):
                if phase in results:
                    results[f"{phase}_vs_read"] = results[phase]["wall_s"] / results["read"]["wall_s"]
        out_path.parent.mkdir(exist_ok=True)
        out_path.write_text(json.dumps(results, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(d / "tomograms", ignore_errors=True)
            shutil.rmtree(d / "project", ignore_errors=True)
            shutil.rmtree(d / "extracted", ignore_errors=True)
    print()
    for phase in PHASES:
        if phase in results:
            print(f"{phase:9s} {summary(phase, results[phase])}")
    for phase in ("pool", "mrc"):
        if f"{phase}_vs_read" in results:
            print(f"{phase} took {results[f'{phase}_vs_read']:.2f} x the plain read of the same tomograms")
    print(f"\nwrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
