"""Benchmark query strategies against each other on a labeled data set (``ktal-cryo benchmark``).

Every (strategy, seed) pair is one simulated run (:func:`.oracle.run_with_oracle`)
in its own project folder, all under one benchmark folder::

    DIR/benchmark.json              what was benchmarked: data, oracle, test set, recipe
    DIR/base/                       a project holding the pool, imported once (never trained)
    DIR/runs/<strategy>-seed<k>/    one project per run; its pool/ links to DIR/base/pool
    DIR/results.csv                 one row per (strategy, seed, cycle); junk_share: the share of the
                                    batch that cycle queried whose true label is junk
    DIR/summary.csv                 one row per strategy (mean +- std accuracy per budget, AUBC, ...)
    DIR/benchmark.png               accuracy vs labeled fraction, mean +- std bands

Fairness: for a given seed every strategy starts from the same random initial set
(:func:`.cycle.initial_query` draws it from the seed and the pool size only), gets
the same network initialisation and training order per cycle (seeded from seed and cycle),
the same budget schedule and the same random subset R_U draw per cycle.

Resumable: a run whose every cycle is in its history.csv is not touched again; an
interrupted run continues at its first untrained cycle. The tables and the figure are
rewritten from the runs' history files after every run. A finished run whose project folder
is gone (a benchmark carried to another machine as its small files: benchmark.json and
results.csv) counts as done from its rows in results.csv, so a long benchmark can be moved
or committed as it goes and continued elsewhere with the same data.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_open, atomic_write_text
from ..errors import KtalError
from ..progress import QUIET, RunContext
from ..project import JUNK_CLASS, Project
from ..recipe import Recipe
from ..strategies import STRATEGIES
from .labels import load_labeled_set
from .oracle import oracle_for_pool, run_with_oracle
from .schedule import budget_schedule
from ..evaluation.stats import PairedComparison, bootstrap_ci, min_wilcoxon_p, paired_comparison, ratio_ci

RESULT_COLUMNS = ["strategy", "seed", "cycle", "n_labeled", "test_accuracy", "test_balanced_accuracy",
                  "query_seconds", "train_seconds", "test_particle_accuracy", "junk_share", "epochs"]
REFERENCE = "random"  # labels_to_match_random: labels a strategy needs to reach this one's final accuracy
COMPARE_TO = ("random", "kt")  # every strategy is tested, paired by seed, against these
METRICS = {"accuracy": "test_accuracy", "balanced": "test_balanced_accuracy", "particle": "test_particle_accuracy"}
METRIC_NAMES = {"accuracy": "accuracy", "balanced": "balanced accuracy", "particle": "particle-class accuracy"}
CONFIG_FILE = "benchmark.json"


# -- the pure part: curves and their summaries ---------------------------------------------------
def aubc(fractions: Sequence[float], accuracies: Sequence[float]) -> float:
    """Area under the budget-accuracy curve (trapezoids), divided by the budget range: a mean accuracy.

    A single point gives its own accuracy; NaN accuracies are left out.
    """
    x, y = np.asarray(fractions, float), np.asarray(accuracies, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) == 0:
        return float("nan")
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if x[-1] == x[0]:
        return float(y.mean())
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / (x[-1] - x[0]))


def labels_to_reach(n_labeled: Sequence[float], accuracies: Sequence[float], target: float) -> float:
    """Labeled-set size at which the curve first reaches ``target``, linearly interpolated; NaN if never.

    A curve that starts at or above the target needs its first budget (no extrapolation).
    """
    n, acc = np.asarray(n_labeled, float), np.asarray(accuracies, float)
    if not math.isfinite(target):
        return float("nan")
    for i in range(len(n)):
        if np.isfinite(acc[i]) and acc[i] >= target:
            if i == 0 or not np.isfinite(acc[i - 1]) or acc[i] == acc[i - 1]:
                return float(n[i])
            t = (target - acc[i - 1]) / (acc[i] - acc[i - 1])
            return float(n[i - 1] + t * (n[i] - n[i - 1]))
    return float("nan")


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if math.isfinite(x)], float)
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")


@dataclass(frozen=True)
class StrategyCurve:
    strategy: str
    n_runs: int
    n_labeled: list[int]  # budgets, increasing
    acc_mean: list[float]
    acc_std: list[float]  # sample std over seeds (NaN with one seed)
    aubc_mean: float
    aubc_std: float
    query_seconds: float  # mean over the cycles that queried
    train_seconds: float  # mean over cycles
    labels_to_match_reference: float = float("nan")
    aubc_by_seed: dict[int, float] = field(default_factory=dict)
    aubc_ci: tuple[float, float] = (float("nan"), float("nan"))  # 95% bootstrap interval of the mean AUBC
    versus: dict[str, PairedComparison] = field(default_factory=dict)  # reference -> paired test of the AUBC
    junk_by_seed: dict[int, float] = field(default_factory=dict)  # share of the queried volumes that were junk
    junk_share: float = float("nan")  # mean over seeds of junk_by_seed (NaN: the pool has no junk)
    junk_ci: tuple[float, float] = (float("nan"), float("nan"))  # its 95% bootstrap interval over seeds
    junk_vs_kt: tuple[float, float, float] = (float("nan"),) * 3  # junk share / kt's, and its paired interval


def summarize(rows: Sequence[dict], n_pool: int, strategies: Sequence[str] | None = None,
              reference: str = REFERENCE, metric: str = "accuracy", cycles: int | None = None) -> list[StrategyCurve]:
    """Per-strategy curves from result rows (``RESULT_COLUMNS``; numbers or numeric strings).

    ``cycles``: the cycles a finished run has; a run with fewer rows (interrupted, or still running)
    is left out of the curves and the tests, since its area would cover fewer budgets than the others'.

    ``metric``: "accuracy", "balanced" (mean recall over classes) or "particle" (accuracy on the
    test volumes that are not junk). Each curve carries its AUBC per seed, a bootstrap interval of
    the mean AUBC, and paired tests against random and kt; where rows have a ``junk_share``, the
    share of the queried volumes that were junk (per seed: the mean over the cycles that queried),
    with its bootstrap interval over seeds and its ratio to kt's, paired by seed.
    """
    column = METRICS[metric]

    def num(v):
        try:
            return float(v)
        except (TypeError, ValueError):
            return float("nan")

    order = list(strategies) if strategies is not None else list(dict.fromkeys(r["strategy"] for r in rows))
    if cycles is not None:
        n_rows = Counter((r["strategy"], int(r["seed"])) for r in rows)
        rows = [r for r in rows if n_rows[(r["strategy"], int(r["seed"]))] >= cycles]
    curves = []
    for name in order:
        mine = [r for r in rows if r["strategy"] == name]
        if not mine:
            continue
        seeds = sorted({int(r["seed"]) for r in mine})
        budgets = sorted({int(num(r["n_labeled"])) for r in mine})
        by_seed = {s: {int(num(r["n_labeled"])): num(r.get(column)) for r in mine if int(r["seed"]) == s}
                   for s in seeds}
        stats = [_mean_std([by_seed[s][n] for s in seeds if n in by_seed[s]]) for n in budgets]
        per_seed_aubc = {s: aubc([n / n_pool for n in sorted(c)], [c[n] for n in sorted(c)]) for s, c in by_seed.items()}
        a_mean, a_std = _mean_std(list(per_seed_aubc.values()))
        q = [num(r["query_seconds"]) for r in mine]
        t = [num(r["train_seconds"]) for r in mine]
        junk = {s: _mean_std([num(r.get("junk_share")) for r in mine if int(r["seed"]) == s])[0] for s in seeds}
        junk = {s: v for s, v in junk.items() if math.isfinite(v)}
        curves.append(StrategyCurve(name, len(seeds), budgets, [m for m, _ in stats], [s for _, s in stats],
                                    a_mean, a_std, _mean_std(q)[0], _mean_std(t)[0], aubc_by_seed=per_seed_aubc,
                                    aubc_ci=bootstrap_ci(list(per_seed_aubc.values())), junk_by_seed=junk,
                                    junk_share=_mean_std(list(junk.values()))[0],
                                    junk_ci=bootstrap_ci(list(junk.values()))))
    by_name = {c.strategy: c for c in curves}
    ref = by_name.get(reference)
    target = ref.acc_mean[-1] if ref is not None else float("nan")
    kt_junk = by_name["kt"].junk_by_seed if "kt" in by_name else {}
    return [dataclasses.replace(
        c, labels_to_match_reference=labels_to_reach(c.n_labeled, c.acc_mean, target),
        versus={other: paired_comparison(c.aubc_by_seed, by_name[other].aubc_by_seed)
                for other in COMPARE_TO if other in by_name and other != c.strategy},
        junk_vs_kt=ratio_ci(c.junk_by_seed, kt_junk))
        for c in curves]


def _fmt(v: float, digits: int = 4) -> str:
    return "" if not math.isfinite(v) else f"{v:.{digits}f}"


def summary_rows(curves: Sequence[StrategyCurve]) -> tuple[list[str], list[dict]]:
    """summary.csv's columns and rows: one row per strategy, two columns per budget."""
    budgets = sorted({n for c in curves for n in c.n_labeled})
    columns = ["strategy", "n_runs"]
    for n in budgets:
        columns += [f"acc_mean@{n}", f"acc_std@{n}"]
    columns += ["aubc", "aubc_std", "aubc_ci_low", "aubc_ci_high"]
    for other in COMPARE_TO:
        columns += [f"vs_{other}_aubc_diff", f"vs_{other}_ci_low", f"vs_{other}_ci_high", f"vs_{other}_wins",
                    f"vs_{other}_seeds", f"vs_{other}_wilcoxon_p"]
    columns += [f"labels_to_match_{REFERENCE}", "query_seconds_mean", "train_seconds_mean",
                "junk_share", "junk_share_ci_low", "junk_share_ci_high", "junk_vs_kt", "junk_vs_kt_ci_low",
                "junk_vs_kt_ci_high"]
    rows = []
    for c in curves:
        row = {"strategy": c.strategy, "n_runs": c.n_runs}
        for n, m, s in zip(c.n_labeled, c.acc_mean, c.acc_std):
            row[f"acc_mean@{n}"], row[f"acc_std@{n}"] = _fmt(m), _fmt(s)
        row.update(aubc=_fmt(c.aubc_mean), aubc_std=_fmt(c.aubc_std), aubc_ci_low=_fmt(c.aubc_ci[0]),
                   aubc_ci_high=_fmt(c.aubc_ci[1]), query_seconds_mean=_fmt(c.query_seconds, 3),
                   train_seconds_mean=_fmt(c.train_seconds, 3))
        for other, cmp in c.versus.items():
            row.update({f"vs_{other}_aubc_diff": _fmt(cmp.mean_difference), f"vs_{other}_ci_low": _fmt(cmp.ci[0]),
                        f"vs_{other}_ci_high": _fmt(cmp.ci[1]), f"vs_{other}_wins": cmp.wins,
                        f"vs_{other}_seeds": cmp.n, f"vs_{other}_wilcoxon_p": _fmt(cmp.p_value)})
        row[f"labels_to_match_{REFERENCE}"] = _fmt(c.labels_to_match_reference, 1)
        row.update(junk_share=_fmt(c.junk_share), junk_share_ci_low=_fmt(c.junk_ci[0]),
                   junk_share_ci_high=_fmt(c.junk_ci[1]), junk_vs_kt=_fmt(c.junk_vs_kt[0]),
                   junk_vs_kt_ci_low=_fmt(c.junk_vs_kt[1]), junk_vs_kt_ci_high=_fmt(c.junk_vs_kt[2]))
        rows.append(row)
    return columns, rows


def summary_table(curves: Sequence[StrategyCurve], n_pool: int) -> str:
    """The summary as a fixed-width text table: final accuracy, AUBC with its 95% bootstrap interval,
    the paired AUBC difference to random and to kt (interval, Wilcoxon p, seeds won), labels to
    match random, query time; and where the pool has junk, the share of the queried volumes that
    were junk (interval over seeds) and its ratio to kt's."""
    def pct(v):
        return "-" if not math.isfinite(v) else f"{100 * v:.1f}"

    junk = any(math.isfinite(c.junk_share) for c in curves)
    head = (f"{'strategy':<18} {'runs':>4} {'final acc %':>13} {'AUBC % [95% CI]':>20} "
            + " ".join(f"{'vs ' + o + ': dAUBC [CI] p (wins)':>36}" for o in COMPARE_TO)
            + f" {'labels to ' + REFERENCE:>17} {'query s':>8}"
            + (f" {'junk % [95% CI]':>20} {'junk / kt [CI]':>20}" if junk else ""))
    lines = [head]
    for c in curves:
        final = f"{pct(c.acc_mean[-1])}" + (f" ±{pct(c.acc_std[-1])}" if math.isfinite(c.acc_std[-1]) else "")
        auc = pct(c.aubc_mean) + (f" [{pct(c.aubc_ci[0])}, {pct(c.aubc_ci[1])}]" if math.isfinite(c.aubc_ci[0]) else "")
        vs = " ".join(f"{c.versus[o].describe() if o in c.versus else '-':>36}" for o in COMPARE_TO)
        need = c.labels_to_match_reference
        need_s = "-" if not math.isfinite(need) else f"{need:.0f} ({100 * need / n_pool:.0f}%)"
        q = "-" if not math.isfinite(c.query_seconds) else f"{c.query_seconds:.2f}"
        line = f"{c.strategy:<18} {c.n_runs:>4} {final:>13} {auc:>20} {vs} {need_s:>17} {q:>8}"
        if junk:
            share = pct(c.junk_share) + (f" [{pct(c.junk_ci[0])}, {pct(c.junk_ci[1])}]"
                                         if math.isfinite(c.junk_ci[0]) else "")
            r, lo, hi = c.junk_vs_kt
            ratio = "-" if not math.isfinite(r) else f"{r:.2f}" + (f" [{lo:.2f}, {hi:.2f}]" if math.isfinite(lo) else "")
            line += f" {share:>20} {ratio:>20}"
        lines.append(line)
    n_seeds = max((c.n_runs for c in curves), default=0)
    lines.append(f"dAUBC: paired by seed, in accuracy points; p: exact two-sided Wilcoxon signed-rank over "
                 f"{n_seeds} seeds (its floor with {n_seeds} seeds: {min_wilcoxon_p(n_seeds):.3g}).")
    return "\n".join(lines)


def benchmark_png(curves: Sequence[StrategyCurve], path: str | Path, n_pool: int, title: str = "",
                  metric: str = "accuracy") -> Path:
    """Test accuracy against the labeled fraction, one line per strategy with a mean +- std band."""
    from matplotlib.figure import Figure  # imported here: keeps `import napari_ktal.core` light

    fig = Figure(figsize=(7, 4.5), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    for i, c in enumerate(curves):
        x = 100 * np.asarray(c.n_labeled, float) / n_pool
        m, s = 100 * np.asarray(c.acc_mean), 100 * np.asarray(c.acc_std)
        style = dict(color=f"C{i % 10}", ls=("-", "--", ":")[(i // 10) % 3], marker="osD"[(i // 10) % 3])
        ci = f" [{_fmt(100 * c.aubc_ci[0], 1)}, {_fmt(100 * c.aubc_ci[1], 1)}]" if math.isfinite(c.aubc_ci[0]) else ""
        p = f", vs random p={c.versus['random'].p_value:.2g}" if "random" in c.versus else ""
        (line,) = ax.plot(x, m, ms=3, **style, label=f"{c.strategy}: AUBC {_fmt(100 * c.aubc_mean, 1) or '-'}%{ci}{p}")
        band = np.isfinite(s)
        if band.any():
            ax.fill_between(x[band], (m - s)[band], (m + s)[band], color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel(f"labeled fraction of the pool (%) — {n_pool} volumes")
    ax.set_ylabel(f"teacher test {METRIC_NAMES[metric]} (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(title or "napari-ktal benchmark")
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    return path


# -- runs -----------------------------------------------------------------------------------------
def run_name(strategy: str, seed: int) -> str:
    return f"{strategy}-seed{seed}"


@dataclass(frozen=True)
class RunOutcome:
    strategy: str
    seed: int
    status: str  # "ran", "resumed" (continued an interrupted run) or "done" (finished before; not touched)
    history: list[dict]
    n_pool: int

    @property
    def final_accuracy(self) -> float:
        return float(self.history[-1]["test_accuracy"] or "nan") if self.history else float("nan")

    def line(self) -> str:
        n_cycles = len(self.history)
        acc = self.final_accuracy
        curve = [(int(r["n_labeled"]), float(r["test_accuracy"] or "nan")) for r in self.history]
        area = aubc([n / self.n_pool for n, _ in curve], [a for _, a in curve])
        q = [float(r["select_seconds"] or "nan") for r in self.history if int(r["n_queried"] or 0) > 0]
        t = sum(float(r["train_seconds"] or 0) for r in self.history)
        what = {"done": "done before, skipped", "ran": "ran", "resumed": "resumed"}[self.status]
        acc_s = "-" if not math.isfinite(acc) else f"{100 * acc:.1f}%"
        area_s = "-" if not math.isfinite(area) else f"{100 * area:.1f}%"
        q_s = f"{np.mean(q):.2f}" if q else "-"
        return (f"{run_name(self.strategy, self.seed):<28} {what:<20} {n_cycles} cycles  final acc {acc_s}  "
                f"AUBC {area_s}  query {q_s} s/cycle  train {t:.1f} s")


def _config(data, oracle, test, recipe: Recipe) -> dict:
    rec = recipe.to_dict()
    rec["active"] = {k: v for k, v in rec["active"].items() if k != "strategy"}
    rec.pop("name", None)
    rec.pop("description", None)
    return {"data": str(Path(data).resolve()), "oracle": str(Path(oracle).resolve()),
            "test": str(Path(test).resolve()) if test else None, "recipe": rec}


def _check_or_write_config(out: Path, config: dict) -> None:
    path = out / CONFIG_FILE
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        changed = [k for k in ("data", "oracle", "test", "recipe") if old.get(k) != config[k]]
        if changed:
            raise KtalError(f"{out} holds a benchmark with a different {', '.join(changed)}; "
                            "continue it with the same arguments, or choose a new --out folder")
        return
    out.mkdir(parents=True, exist_ok=True)
    if any(p.name not in (CONFIG_FILE, ".lock") for p in out.iterdir()):  # .lock: ktal-cryo's folder lock
        raise KtalError(f"{out}: folder is not empty and is not a benchmark; choose a new --out folder")
    atomic_write_text(path, json.dumps(config, indent=2))


def _link_pool(target: Path, link: Path) -> None:
    """``link`` -> the shared pool folder: a relative symlink, or hard links where symlinks are refused."""
    try:
        link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=True)
    except OSError:
        link.mkdir()
        for f in target.iterdir():
            os.link(f, link / f.name)


def _run_project(base: Project, root: Path, recipe: Recipe) -> Project:
    """A project at ``root`` that shares ``base``'s pool (no import): its small files are copied."""
    if Project.is_project(root):
        return Project(root)
    partial = root.with_name(root.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    for f in base.root.iterdir():
        if f.is_file():
            shutil.copy2(f, partial / f.name)
    _link_pool(base.root / "pool", partial / "pool")
    os.replace(partial, root)
    project = Project(root)
    project.set_recipe(recipe)
    return project


def parse_strategies(text: str) -> list[str]:
    """``kt,random`` -> names, checked against the registry; ``all`` -> every registered strategy."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    if names == ["all"]:
        return list(STRATEGIES)
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown or not names:
        raise KtalError(f"unknown strateg{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown) or '(none given)'}; "
                        f"choose from {', '.join(STRATEGIES)} (or all)")
    return list(dict.fromkeys(names))


def junk_share(project: Project, cycle: int, truth: dict[int, str]) -> float:
    """Share of the batch cycle ``cycle`` queried (``queries/cycle_{cycle+1}``) that is junk in ``truth``
    (NaN when that cycle queried nothing, or when ``truth`` has no junk: a pool without junk)."""
    if cycle + 1 not in project.query_cycles() or JUNK_CLASS not in truth.values():
        return float("nan")
    batch = [q.index for q in project.read_query(cycle + 1)]
    return sum(truth.get(i) == JUNK_CLASS for i in batch) / len(batch) if batch else float("nan")


def recorded_runs(out: Path) -> dict[tuple[str, int], list[dict]]:
    """The rows results.csv holds, per (strategy, seed), in cycle order (empty without the file)."""
    path = out / "results.csv"
    if not path.exists():
        return {}
    runs: dict[tuple[str, int], list[dict]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            runs.setdefault((row["strategy"], int(row["seed"])), []).append(row)
    for rows in runs.values():
        rows.sort(key=lambda r: int(r["cycle"]))
    return runs


def _history_of_recorded(rows: Sequence[dict]) -> list[dict]:
    """A run's history as :class:`RunOutcome` reads it, rebuilt from its results.csv rows."""
    return [{"cycle": r["cycle"], "n_labeled": r["n_labeled"], "test_accuracy": r["test_accuracy"],
             "select_seconds": r["query_seconds"], "n_queried": 1 if r["query_seconds"] else 0,
             "train_seconds": r["train_seconds"]} for r in rows]


def collect_results(out: Path, strategies: Sequence[str], seeds: Sequence[int],
                    oracle: dict[int, str] | None = None) -> list[dict]:
    """results.csv rows from the runs' history files (query_seconds empty where a cycle made no query;
    junk_share from ``oracle``, or each run's own labels when it is not given). A run without its
    project folder keeps the rows results.csv already holds for it."""
    rows = []
    recorded = recorded_runs(out)
    for strategy in strategies:
        for seed in seeds:
            root = out / "runs" / run_name(strategy, seed)
            if not Project.is_project(root):
                rows += [{k: r.get(k, "") for k in RESULT_COLUMNS} for r in recorded.get((strategy, seed), [])]
                continue
            project = Project(root)
            truth = oracle if oracle is not None else project.labels()
            for h in project.history():
                queried = int(h.get("n_queried") or 0) > 0
                rows.append({"strategy": strategy, "seed": seed, "cycle": int(h["cycle"]),
                             "n_labeled": int(h["n_labeled"]), "test_accuracy": h["test_accuracy"],
                             "test_balanced_accuracy": h.get("test_balanced_accuracy", ""),
                             "query_seconds": h["select_seconds"] if queried else "",
                             "train_seconds": h["train_seconds"],
                             "test_particle_accuracy": h.get("test_particle_accuracy", ""),
                             "junk_share": _fmt(junk_share(project, int(h["cycle"]), truth)) if queried else "",
                             "epochs": h.get("epochs", "")})
    return rows


def write_outputs(out: Path, strategies: Sequence[str], seeds: Sequence[int], n_pool: int, title: str = "",
                  metric: str = "accuracy", oracle: dict[int, str] | None = None,
                  cycles: int | None = None) -> list[StrategyCurve]:
    """results.csv with every run's rows (unfinished ones too: a rerun continues them); summary.csv and
    the plot of the runs that have all ``cycles``."""
    rows = collect_results(out, strategies, seeds, oracle)
    with atomic_open(out / "results.csv", "w") as f:
        w = csv.DictWriter(f, RESULT_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    curves = summarize(rows, n_pool, strategies, metric=metric, cycles=cycles)
    columns, srows = summary_rows(curves)
    with atomic_open(out / "summary.csv", "w") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(srows)
    benchmark_png(curves, out / "benchmark.png", n_pool, title, metric)
    return curves


@dataclass(frozen=True)
class BenchmarkResult:
    curves: list[StrategyCurve]
    n_pool: int
    out: Path


@dataclass(frozen=True)
class BenchmarkSpec:
    """What a benchmark compares, and where: one simulated run per (strategy, seed) on the pool of
    ``data``, every query answered from ``oracle``, each cycle's teacher tested on ``test``."""

    data: Path  # the pool's volumes: a folder, a volume stack or a labels CSV
    oracle: Path  # a labels CSV that labels every pool volume
    test: Path | None  # a labels CSV of separate test volumes; None: no test accuracy
    strategies: tuple[str, ...]
    seeds: tuple[int, ...]
    recipe: Recipe  # every run's recipe, its strategy replaced by the run's
    out: Path  # the benchmark folder (see the module's docstring)
    device: torch.device
    metric: str = "accuracy"  # what the summary's curves, AUBC and tests use: a key of METRICS

    def __post_init__(self):  # paths and lists as callers have them, stored as Paths and tuples
        object.__setattr__(self, "data", Path(self.data))
        object.__setattr__(self, "oracle", Path(self.oracle))
        object.__setattr__(self, "test", Path(self.test) if self.test else None)
        object.__setattr__(self, "strategies", tuple(self.strategies))
        object.__setattr__(self, "seeds", tuple(self.seeds))
        object.__setattr__(self, "out", Path(self.out))


def run_benchmark(
    spec: BenchmarkSpec,
    *,
    on_run: Callable[[RunOutcome], None] | None = None,
    on_start: Callable[[str, int], None] | None = None,
    on_cycle: Callable | None = None,
    run: RunContext = QUIET,
) -> BenchmarkResult:
    """Run (or continue) every (strategy, seed) run, then write results.csv, summary.csv, benchmark.png.

    ``on_start(strategy, seed)`` before a run trains, ``on_cycle(report)`` after each of its cycles,
    ``on_run(outcome)`` after each run (also one done before).
    """
    out, recipe, strategies, seeds, metric = spec.out, spec.recipe, spec.strategies, spec.seeds, spec.metric
    for s in strategies:
        if s not in STRATEGIES:
            raise KtalError(f"unknown strategy '{s}'; choose from {', '.join(STRATEGIES)}")
    _check_or_write_config(out, _config(spec.data, spec.oracle, spec.test, recipe))
    base_root = out / "base"
    if Project.is_project(base_root):
        base = Project(base_root)
    else:
        if base_root.exists():  # an import that was interrupted hard (not cleaned up)
            shutil.rmtree(base_root)
        base = Project.create(base_root, spec.data, recipe, run=run)
    oracle = oracle_for_pool(base.pool, spec.oracle)
    base.add_classes(sorted(set(oracle.values())))
    test = load_labeled_set(spec.test, base.classes) if spec.test else None
    n_pool = len(base.pool)
    n_cycles = len(budget_schedule(n_pool, recipe.active))
    title = f"{recipe.name}: {n_pool} volumes, {len(seeds)} seed(s)"
    recorded = recorded_runs(out)
    for strategy in strategies:
        run_recipe = recipe.replace(active={"strategy": strategy})
        for seed in seeds:
            run.check_cancel()
            root = out / "runs" / run_name(strategy, seed)
            rows = recorded.get((strategy, seed), [])
            if not Project.is_project(root) and len(rows) >= n_cycles:  # finished elsewhere; its rows kept
                if on_run is not None:
                    on_run(RunOutcome(strategy, seed, "done", _history_of_recorded(rows), n_pool))
                continue
            project = _run_project(base, root, run_recipe)
            before = project.trained_cycles
            if before < n_cycles:
                if on_start is not None:
                    on_start(strategy, seed)
                run_with_oracle(project, run_recipe, oracle, spec.device, seed=seed, test=test, on_cycle=on_cycle,
                                run=run)
            status = "done" if before >= n_cycles else ("resumed" if before else "ran")
            outcome = RunOutcome(strategy, seed, status, project.history(), n_pool)
            if status != "done":  # keep the tables current while a long benchmark runs
                write_outputs(out, strategies, seeds, n_pool, title, metric, oracle, n_cycles)
            if on_run is not None:
                on_run(outcome)
    return BenchmarkResult(write_outputs(out, strategies, seeds, n_pool, title, metric, oracle, n_cycles), n_pool, out)
