"""Seeded oracle runs on one process whose history.csv and queries/*.csv must not change when the
code is restructured (issue 20: the SPMD rewrite of several processes must leave one process as it was).

``python tests/core/loop/same_history/run.py OUT``             run kt, margin, coreset (seed 0) into OUT
``python tests/core/loop/same_history/run.py OUT --compare``   ... and compare with the reference files here

The reference files (``reference/<strategy>/``) were recorded with the code before the rewrite
(commit df7901f) on this project's 2-core CPU machine, OMP_NUM_THREADS=1. Compared byte for byte,
except history.csv's three clock columns (train_seconds, select_seconds, samples_per_second),
which are blanked on both sides, and, for a strategy that does not read the student (margin,
coreset), the student's two loss columns: since issue 18 such a run trains no student (NaN
there), and its teacher, test accuracy and queries must be what they were. Columns added since the references were recorded (issue 21:
history's estimate and stop rule, the queries' ``audit`` flag) are left out of the comparison;
every column the references have must be the same. The tiny recipe sets ``[trust] audit = 0``:
without an audit slice a run must be what it was before the slice existed. Float results depend on the CPU's kernels and torch's version:
``reference/machine.json`` names the machine the files were recorded on (:func:`machine`), and the
test compares only on such a machine; elsewhere, record afresh at the old commit before comparing.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "reference"
STRATEGIES = ("kt", "margin", "coreset")
SEED = 0
CLOCKS = ("train_seconds", "select_seconds", "samples_per_second")
STUDENT_COLUMNS = ("student_loss", "transfer_loss")
TINY_TOML = """
name = "tiny-same-history"
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
[trust]
audit = 0
"""


def machine() -> dict[str, str]:
    """What float results depend on: torch's version, the CPU kernels it picks, the CPU."""
    import torch

    model = platform.processor()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu": model,
            "machine": platform.machine()}


def recorded_machine() -> dict[str, str]:
    return json.loads((REFERENCE / "machine.json").read_text())


def make_data(out: Path) -> Path:
    from napari_ktal.core.simulate import SimulationConfig, simulate_dataset

    data = out / "data"
    if not (data / "train" / "labels.csv").exists():
        simulate_dataset(data, SimulationConfig(classes=4, per_class=10, test_per_class=2, snr=1.0, box=16, seed=3))
    (out / "tiny.toml").write_text(TINY_TOML)
    return data


def run(out: Path) -> dict[str, Path]:
    """One project per strategy under ``out``; their folders."""
    from napari_ktal.cli import main

    data = make_data(out)
    projects = {}
    for strategy in STRATEGIES:
        project = out / strategy
        if project.exists():
            shutil.rmtree(project)
        rc = main(["train", str(data / "train"), "--project", str(project), "--recipe", str(out / "tiny.toml"),
                   "--oracle", str(data / "train" / "labels.csv"), "--test", str(data / "test" / "labels.csv"),
                   "--device", "cpu", "--seed", str(SEED), "--strategy", strategy])
        if rc != 0:
            raise SystemExit(f"{strategy}: train exited {rc}")
        projects[strategy] = project
    return projects


def blanked(strategy: str) -> tuple[str, ...]:
    """The history columns not compared for ``strategy``: the clocks, and the student's where it trains none."""
    from napari_ktal.core.strategies import get_strategy

    return CLOCKS if get_strategy(strategy).needs_student() else CLOCKS + STUDENT_COLUMNS


def without_clocks(text: str, columns: list[str] | None = None, blank: tuple[str, ...] = CLOCKS) -> str:
    """A CSV's text with the ``blank`` columns blanked, and only ``columns`` (default: all), in that order."""
    rows = list(csv.DictReader(io.StringIO(text)))
    f = io.StringIO()
    if rows:
        w = csv.DictWriter(f, fieldnames=columns or list(rows[0]), lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if k in blank else v) for k, v in r.items()})
    return f.getvalue()


def header(text: str) -> list[str]:
    return next(csv.reader(io.StringIO(text)), [])


def files_of(project: Path) -> dict[str, str]:
    files = {"history.csv": without_clocks((project / "history.csv").read_text())}
    for p in sorted((project / "queries").glob("*.csv")):
        files[f"queries/{p.name}"] = p.read_text()
    return files


def record(projects: dict[str, Path]) -> None:
    REFERENCE.mkdir(parents=True, exist_ok=True)
    (REFERENCE / "machine.json").write_text(json.dumps(machine(), indent=2) + "\n")
    for strategy, project in projects.items():
        for name, text in files_of(project).items():
            dest = REFERENCE / strategy / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)


def differences(projects: dict[str, Path]) -> list[str]:
    bad = []
    for strategy, project in projects.items():
        got = files_of(project)
        want = {str(p.relative_to(REFERENCE / strategy)): p.read_text()
                        for p in sorted((REFERENCE / strategy).rglob("*.csv"))}
        if got.keys() != want.keys():
            bad.append(f"{strategy}: files {sorted(got)} != reference {sorted(want)}")
        for name in want:  # only the reference's columns: those added since are new, not changed
            blank = blanked(strategy)
            if name in got and (without_clocks(got[name], header(want[name]), blank)
                                != without_clocks(want[name], blank=blank)):
                bad.append(f"{strategy}/{name} differs from the reference")
    return bad


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--record", action="store_true", help="write the reference files from this run")
    p.add_argument("--compare", action="store_true")
    a = p.parse_args()
    done = run(a.out)
    if a.record:
        record(done)
    if a.compare:
        problems = differences(done)
        print("\n".join(problems) if problems else "identical to the reference")
        sys.exit(1 if problems else 0)
