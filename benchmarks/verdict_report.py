"""The verdict's tables (issue 18), from the benchmark files committed under benchmarks/results/verdict/.

    python benchmarks/verdict_report.py                   # every rung there: Markdown to stdout and report.md
    python benchmarks/verdict_report.py --root DIR --out DIR/report.md
    python benchmarks/verdict_report.py --docs docs/results.md   # also refresh the tables there

Each rung folder (``<rung>/recipe.toml``, ``<rung>/baseline.json``, ``<rung>/benchmark/results.csv``,
as ``benchmarks/ladder.py`` leaves them) gives one table: per strategy, the seeds it finished,
its final accuracy, its AUBC with a 95% bootstrap interval, the AUBC difference to random paired
by seed (bootstrap interval, exact two-sided Wilcoxon signed-rank p, seeds won), and the labels
it needed to reach random's mean final accuracy; beside it the nearest-class-mean floor. Only
finished runs count (all the recipe's cycles): a run still going or interrupted is left out and
named. The numbers come from the package's own summary (``core.loop.benchmark.summarize``), so
they are those ``ktal-cryo benchmark`` prints, restricted to finished runs.

A rung's recipe variants (``<rung>/variant-<name>/``, from ``ladder.py --variant``) get a second
table: each variant's strategy against the rung's own runs of that strategy, paired by seed
(AUBC difference, interval, p, wins), with the optimizer steps a run takes under each recipe
(counted from the recipes where they fix them, else from the epochs each cycle recorded: either
way not the clocks of a shared machine).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "results" / "verdict"
VERDICT_RUNGS = ("10c-snr01", "10c-snr005")  # the rungs of issue 18's verdict, in the order the docs show them
START, END = "<!-- verdict:start -->", "<!-- verdict:end -->"


def ladder_rung(name: str):
    """``ladder.py``'s definition of the rung of that name (None for a folder it does not name)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        from ladder import LADDER
    finally:
        sys.path.pop(0)
    return LADDER.get(name)


def rung_metric(name: str) -> str:
    """What the rung's benchmark compares (accuracy for a folder the ladder does not name)."""
    rung = ladder_rung(name)
    return rung.metric if rung is not None else "accuracy"


def pct(v: float, digits: int = 1) -> str:
    return "-" if not math.isfinite(v) else f"{100 * v:.{digits}f}"


@dataclass(frozen=True)
class Elsewhere:
    """Another root whose runs of a rung join this root's, whole seeds at a time (``--also``)."""

    root: Path
    label: str  # how the report names where they ran, e.g. "one H200 (bf16)"


def _rows(folder: Path) -> list[dict]:
    with open(folder / "benchmark" / "results.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _config_recipe(folder: Path) -> dict:
    return json.loads((folder / "benchmark" / "benchmark.json").read_text())["recipe"]


def same_recipe(a: dict, b: dict) -> bool:
    """Whether two benchmarks' recipes (their benchmark.json) agree on every key both have: a table
    or key added to the recipe after one of them ran (``[trust]``, say) is not compared."""
    for key in a.keys() & b.keys():
        x, y = a[key], b[key]
        if isinstance(x, dict) and isinstance(y, dict):
            if not same_recipe(x, y):
                return False
        elif x != y:
            return False
    return True


def pooled_rows(folder: Path, cycles: int, also: list[Elsewhere]) -> tuple[list[dict], dict[int, str], list[str]]:
    """The rung's rows with the seeds run elsewhere: (rows, seed -> label of where it ran, runs set aside).

    A seed counts whole from one place, so that every pair of strategies within it ran on one
    machine: from ``folder`` where every strategy compared there finished it, else from the first
    root of ``also`` where they all did (with the same recipe, on the same simulated rung). Runs of
    a seed taken from elsewhere, and finished here, are set aside and named."""
    rows = _rows(folder)
    done = _finished(rows, cycles)
    strategies = {s for s, _ in done}
    complete = {k for _, k in done if all((s, k) in done for s in strategies)}
    where, extra = {}, []
    for other in also:
        ofolder = other.root / folder.name
        if not (ofolder / "benchmark" / "results.csv").exists():
            continue
        if not same_recipe(_config_recipe(ofolder), _config_recipe(folder)):
            raise SystemExit(f"{ofolder}: its recipe differs from {folder}'s: its runs cannot join them")
        orows = _rows(ofolder)
        odone = _finished(orows, cycles)
        for seed in sorted({k for _, k in odone} - complete - set(where)):
            if strategies and all((s, seed) in odone for s in strategies):
                where[seed] = other.label
                extra += [r for r in orows if int(r["seed"]) == seed and r["strategy"] in strategies]
    aside = sorted(f"{s}-seed{k}" for s, k in done if k in where)
    return [r for r in rows if int(r["seed"]) not in where] + extra, where, aside


def write_pooled(folder: Path, rows: list[dict], where: dict[int, str], aside: list[str], n_pool: int, metric: str,
                 cycles: int, recipe_name: str) -> Path:
    """The rung's runs with the seeds taken from elsewhere (:func:`pooled_rows`) as one benchmark's
    files, ``<rung>/pooled/``: results.csv, and summary.csv and benchmark.png made by the package
    (``write_outputs``) from them, so that the table the report prints is a file too; pooled.json
    says where each seed ran and which runs were set aside."""
    from napari_ktal.core.loop.benchmark import RESULT_COLUMNS, write_outputs

    out = folder / "pooled"
    out.mkdir(exist_ok=True)
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, RESULT_COLUMNS)
        w.writeheader()
        w.writerows({k: r.get(k, "") for k in RESULT_COLUMNS}
                    for r in sorted(rows, key=lambda r: (r["strategy"], int(r["seed"]), int(r["cycle"]))))
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    seeds = sorted({int(r["seed"]) for r in rows})
    write_outputs(out, strategies, seeds, n_pool, f"{recipe_name}: {n_pool} volumes, {len(seeds)} seed(s), pooled",
                  metric, cycles=cycles)
    here = [k for k in seeds if k not in where]
    (out / "pooled.json").write_text(json.dumps(
        {"seeds": {**{str(k): f"{folder.name}/benchmark" for k in here}, **{str(k): where[k] for k in sorted(where)}},
         "set_aside": aside}, indent=2) + "\n", encoding="utf-8")
    return out


def _finished(rows: list[dict], cycles: int) -> set[tuple[str, int]]:
    counts = Counter((r["strategy"], int(r["seed"])) for r in rows)
    return {k for k, n in counts.items() if n >= cycles}


def _read(folder: Path, n_pool: int, metric: str, also: list[Elsewhere] = ()):
    """(recipe, budgets, finished curves, unfinished run names, rows, seed -> where it ran elsewhere,
    runs set aside) of the benchmark in ``folder``, with the seeds of ``also`` (:func:`pooled_rows`)."""
    from napari_ktal.core.loop import budget_schedule, load_recipe
    from napari_ktal.core.loop.benchmark import summarize

    recipe = load_recipe(folder / "recipe.toml")
    budgets = budget_schedule(n_pool, recipe.active)
    rows, where, aside = pooled_rows(folder, len(budgets), list(also))
    counts = Counter((r["strategy"], int(r["seed"])) for r in rows)
    unfinished = sorted(f"{s}-seed{k} ({n}/{len(budgets)} cycles)" for (s, k), n in counts.items() if n < len(budgets))
    return (recipe, budgets, summarize(rows, n_pool, metric=metric, cycles=len(budgets)), unfinished, rows,
            where, aside)


def curve_noise(rows: list[dict], metric: str, cycles: int, n_test: int | None, fall: float = 0.10) -> str:
    """How much single curves jump (a sentence for the caller to name): how many steps from one cycle to the next, over
    the finished runs, lost more than ``fall`` of the metric, and the worst, beside the test set's own
    sampling error (binomial, at 50%): falls far beyond it are the training's noise, not the test's."""
    from napari_ktal.core.loop.benchmark import METRICS

    runs: dict[tuple[str, int], dict[int, float]] = {}
    for r in rows:
        runs.setdefault((r["strategy"], int(r["seed"])), {})[int(r["cycle"])] = float(r[METRICS[metric]])
    steps = [curve[c + 1] - curve[c] for curve in runs.values() if len(curve) >= cycles
             for c in range(cycles - 1)]
    if not steps:
        return ""
    falls = [d for d in steps if d < -fall]
    worst = f" (the worst {100 * min(falls):+.1f} points)" if falls else ""
    test = (f"; the test set's sampling error is {100 * math.sqrt(0.25 / n_test):.1f} points (one SD at 50%, "
            f"{n_test} volumes)" if n_test else "")
    return (f"{len(falls)} of {len(steps)} steps from one cycle to the next lost more than "
            f"{100 * fall:.0f} points of {metric}{worst}{test}.")


def n_test_volumes(name: str) -> int | None:
    """The test volumes a ladder rung's accuracy is measured on (None where the ladder does not say)."""
    rung = ladder_rung(name)
    if rung is None:
        return None
    return rung.sim["classes"] * rung.sim.get("test_per_class", 0) or None


def network_lines(folder: Path) -> list[str]:
    """The teacher alone on the final number of random labels (``ladder.py --network``): the rung's
    recipe, and each variant's paired with it by seed (the same labeled sets)."""
    from napari_ktal.core.evaluation.stats import paired_comparison

    def read(path: Path) -> dict[int, dict]:
        return {r["seed"]: r for r in json.loads(path.read_text())["network"]["runs"]} if path.exists() else {}

    def describe(runs: dict[int, dict]) -> str:
        accs = ", ".join(f"{100 * runs[k]['accuracy']:.1f}" for k in sorted(runs))
        losses = [runs[k].get("teacher_loss", math.nan) for k in sorted(runs)]
        loss = (f"; training loss at the end {min(losses):.2f}-{max(losses):.2f}"
                if all(math.isfinite(v) for v in losses) else "")
        return (f"{pct(sum(r['accuracy'] for r in runs.values()) / len(runs))}% ({accs}; seeds "
                f"{','.join(map(str, sorted(runs)))}{loss}, {_span([r['epochs'] for r in runs.values()])} epochs)")

    base = read(folder / "network.json")
    if not base:
        return []
    n = next(iter(base.values()))["labeled"]
    lines = [f"Teacher alone on {n} random labels (`ladder.py --network`):", "",
             f"- the rung's recipe: {describe(base)}"]
    for path in sorted(folder.glob("variant-*/network.json")):
        runs = read(path)
        cmp = paired_comparison({k: r["accuracy"] for k, r in runs.items()}, {k: r["accuracy"] for k, r in base.items()})
        if not runs or cmp.n == 0:
            continue
        lo, hi = cmp.ci
        ci = f" [{100 * lo:+.1f}, {100 * hi:+.1f}]" if math.isfinite(lo) else ""
        lines.append(f"- variant {path.parent.name[len('variant-'):]}: {describe(runs)}; paired with the rung's: "
                     f"{100 * cmp.mean_difference:+.1f} points{ci}, {cmp.wins}/{cmp.n} seeds higher, p {cmp.p_value:.3g}")
    return ["", *lines]


def _span(values: list[int]) -> str:
    """``63`` or ``63-77``: the range of whole numbers, as a report prints it."""
    lo, hi = min(values), max(values)
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def run_steps(recipe, budgets: list[int], n_classes: int, rows: list[dict] = (),
              strategy: str | None = None, seeds=None) -> float | None:
    """Optimizer steps of one run under ``recipe`` (teacher; the student, where trained, takes the
    same): counted from the recipe where it fixes them, else (``[train] fit_loss`` trains on until
    the teacher fits) the mean over ``strategy``'s finished runs in ``rows`` (of ``seeds``, if given)
    of the epochs each cycle recorded times that cycle's steps per epoch; None where the rows do
    not record epochs."""
    warm = not recipe.active.reinit_each_cycle
    specs = [recipe.train.for_labeled(n, n_classes, warm=warm and cycle > 0) for cycle, n in enumerate(budgets)]
    if recipe.train.fit_loss <= 0 or not recipe.train.lr_milestones:
        return sum(spec.epochs * spec.steps_per_epoch(n) for spec, n in zip(specs, budgets))
    runs: dict[int, dict[int, str]] = {}
    for r in rows:
        if r["strategy"] == strategy and (seeds is None or int(r["seed"]) in seeds):
            runs.setdefault(int(r["seed"]), {})[int(r["cycle"])] = r.get("epochs") or ""
    totals = [sum(int(epochs[c]) * spec.steps_per_epoch(n) for c, (spec, n) in enumerate(zip(specs, budgets)))
              for epochs in runs.values()
              if len(epochs) >= len(budgets) and all(epochs[c] for c in range(len(budgets)))]
    return sum(totals) / len(totals) if totals else None


def _steps_cell(steps: float | None, base: float | None) -> str:
    """``1920 / 2225 (0.86x)``, with what is not known said so."""
    def fmt(x):
        return "not recorded" if x is None else f"{x:.0f}"
    ratio = f" ({steps / base:.2f}x)" if steps is not None and base else ""
    return f"{fmt(steps)} / {fmt(base)}{ratio}"


def pool_size(folder: Path) -> tuple[int, dict | None]:
    """The pool's size and the nearest-class-mean floor (baseline.json), or the size from the
    benchmark's imported pool where the rung has no baseline."""
    if (folder / "baseline.json").exists():
        baseline = json.loads((folder / "baseline.json").read_text())["baseline"]
        return int(baseline["pool"]), baseline
    info = json.loads((folder / "benchmark" / "base" / "pool" / "info.json").read_text())
    return int(info["n"]), None


def variants_report(folder: Path, n_pool: int, base_curves, base_recipe, budgets, n_classes: int,
                    metric: str, base_rows: list[dict] = ()) -> list[str]:
    """The table of the rung's recipe variants against its own runs, paired by seed."""
    from napari_ktal.core.evaluation.stats import paired_comparison

    lines, notes = [], []
    base = {c.strategy: c for c in base_curves}
    for vdir in sorted(folder.glob("variant-*")):
        if not (vdir / "benchmark" / "results.csv").exists():
            continue
        recipe, _, curves, unfinished, rows, _, _ = _read(vdir, n_pool, metric)
        if noise := curve_noise(rows, metric, len(budgets), None):
            notes.append(f"{vdir.name[len('variant-'):]}: curve noise: {noise}")
        for c in curves:
            if c.strategy not in base:
                continue
            cmp = paired_comparison(c.aubc_by_seed, base[c.strategy].aubc_by_seed)
            if cmp.n == 0:
                continue
            lo, hi = cmp.ci
            ci = f" [{100 * lo:+.1f}, {100 * hi:+.1f}]" if math.isfinite(lo) else ""
            paired = set(c.aubc_by_seed) & set(base[c.strategy].aubc_by_seed)
            steps = _steps_cell(run_steps(recipe, budgets, n_classes, rows, c.strategy, paired),
                                run_steps(base_recipe, budgets, n_classes, base_rows, c.strategy, paired))
            lines.append(f"| {vdir.name[len('variant-'):]} | {c.strategy} | {cmp.n} | {pct(c.aubc_mean)} | "
                         f"{100 * cmp.mean_difference:+.1f}{ci} | {cmp.p_value:.3g} | {cmp.wins}/{cmp.n} | "
                         f"{steps} |")
        if unfinished:
            lines.append(f"| {vdir.name[len('variant-'):]} | left out (not finished): {', '.join(unfinished)} "
                         "| | | | | | |")
    if not lines:
        return []
    return ["", "Recipe variants against the rung's own runs of the same strategy (AUBC paired by seed):", "",
            "| variant | strategy | paired seeds | AUBC % | dAUBC vs the rung's recipe [95% CI] | p | wins | "
            "optimizer steps per run, variant / rung |", "|---|---|---|---|---|---|---|---|", *lines,
            *(x for note in notes for x in ("", note))]


def rung_report(folder: Path, also: list[Elsewhere] = ()) -> str | None:
    """The Markdown section of one rung folder (None when it holds no benchmark results), with the
    seeds that ran elsewhere (``also``, :func:`pooled_rows`)."""
    from napari_ktal.core.evaluation.stats import min_wilcoxon_p

    if not (folder / "benchmark" / "results.csv").exists():
        return None
    n_pool, baseline = pool_size(folder)
    metric = rung_metric(folder.name)
    recipe, budgets, curves, unfinished, rows, where, aside = _read(folder, n_pool, metric, also)
    floor = ("no floor measured" if baseline is None else
             f"floor: nearest class mean with {baseline['labeled']} random labels "
             f"{pct(baseline['accuracy_mean'])} +- {pct(baseline['accuracy_std'])}% (chance {pct(baseline['chance'])}%)")
    lines = [f"### `{folder.name}`", "",
             f"Pool {n_pool}, {len(budgets)} cycles ({budgets[0]} -> {budgets[-1]} labels), recipe "
             f"`{recipe.name}`; compared on test {metric}; {floor}.", ""]
    lines += ["| strategy | seeds | final acc % | AUBC % [95% CI] | dAUBC vs random [95% CI] | p | wins | "
              "labels to reach random's final |", "|---|---|---|---|---|---|---|---|"]
    for c in curves:
        seeds = ",".join(f"{s}{'*' if s in where else ''}" for s in sorted(c.aubc_by_seed))
        final = pct(c.acc_mean[-1]) + (f" +- {pct(c.acc_std[-1])}" if math.isfinite(c.acc_std[-1]) else "")
        ci = f" [{pct(c.aubc_ci[0])}, {pct(c.aubc_ci[1])}]" if math.isfinite(c.aubc_ci[0]) else ""
        vs = c.versus.get("random")
        if vs is None or vs.n == 0:
            d = p = wins = "-"
        else:
            lo, hi = vs.ci
            d = f"{100 * vs.mean_difference:+.1f}" + (f" [{100 * lo:+.1f}, {100 * hi:+.1f}]" if math.isfinite(lo) else "")
            p, wins = f"{vs.p_value:.3g}", f"{vs.wins}/{vs.n}"
        need = c.labels_to_match_reference
        need_s = "not reached" if not math.isfinite(need) else f"{need:.0f}"
        lines.append(f"| {c.strategy} | {len(c.aubc_by_seed)} ({seeds}) | {final} | {pct(c.aubc_mean)}{ci} | "
                     f"{d} | {p} | {wins} | {need_s} |")
    n = max((c.versus["random"].n for c in curves if "random" in c.versus), default=0)
    lines += ["", f"AUBC: area under the {metric} curve over the labeled fraction, per seed, then the mean over "
              f"seeds. p: two-sided Wilcoxon signed-rank over the seeds paired with random, exact unless "
              f"differences tie (its floor with {n} pairs: {min_wilcoxon_p(n):.3g})."]
    for label in dict.fromkeys(where.values()):
        seeds = ", ".join(str(k) for k in sorted(where) if where[k] == label)
        lines += ["", f"Seeds marked * ({seeds}) ran on {label}, every strategy of a seed on the same machine"
                  + (f"; set aside for them: {', '.join(aside)} (finished here, the seed taken whole from there)"
                     if aside else "") + "."]
    if where:
        pooled = write_pooled(folder, rows, where, aside, n_pool, metric, len(budgets), recipe.name)
        lines += ["", f"These seeds together: `{pooled.relative_to(folder.parent)}/` (results.csv, summary.csv)."]
    if noise := curve_noise(rows, metric, len(budgets), n_test_volumes(folder.name)):
        lines += ["", f"Curve noise: {noise}"]
    if unfinished:
        lines += ["", f"Left out (not finished): {', '.join(unfinished)}."]
    lines += network_lines(folder)
    n_classes = round(1 / baseline["chance"]) if baseline else _classes(folder)
    lines += variants_report(folder, n_pool, curves, recipe, budgets, n_classes, metric, rows)
    return "\n".join(lines)


def _classes(folder: Path) -> int:
    """The number of classes of the rung's benchmark (its base project's classes)."""
    project = json.loads((folder / "benchmark" / "base" / "project.json").read_text())
    return len(project["classes"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=ROOT, help="the folder of the rung folders")
    p.add_argument("--out", type=Path, help="Markdown file to write (default ROOT/report.md)")
    p.add_argument("--docs", type=Path, help="a Markdown file whose <!-- verdict:start --> ... <!-- verdict:end --> "
                                               "block gets the verdict rungs' tables (VERDICT_RUNGS)")
    p.add_argument("--also", action="append", default=[], metavar="ROOT=LABEL",
                   help="another root of rung folders (e.g. runs on a GPU node) whose whole seeds join the rungs "
                        "of --root where those lack them; LABEL names where they ran")
    args = p.parse_args(argv)
    also = []
    for spec in args.also:
        root, sep, label = spec.partition("=")
        if not sep or not label:
            p.error(f"--also {spec!r}: write ROOT=LABEL")
        also.append(Elsewhere(Path(root), label))
    sections = {d.name: s for d in sorted(args.root.iterdir())
                if d.is_dir() and (s := rung_report(d, also)) is not None}
    if not sections:
        print(f"no benchmark results under {args.root}", file=sys.stderr)
        return 1
    text = "\n\n".join(sections.values()) + "\n"
    out = args.out or args.root / "report.md"
    out.write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {out}")
    if args.docs:
        doc = args.docs.read_text(encoding="utf-8")
        head, sep, rest = doc.partition(START)
        _, sep2, tail = rest.partition(END)
        if not (sep and sep2):
            print(f"{args.docs}: no {START} ... {END} block", file=sys.stderr)
            return 1
        block = "\n\n".join(sections[name] for name in VERDICT_RUNGS if name in sections)
        args.docs.write_text(f"{head}{START}\n{block}\n{END}{tail}", encoding="utf-8")
        print(f"updated {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
