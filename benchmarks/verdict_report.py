"""The verdict's tables (issue 18), from the benchmark files committed under benchmarks/results/verdict/.

    python benchmarks/verdict_report.py                   # every rung there: Markdown to stdout and report.md
    python benchmarks/verdict_report.py --root DIR --out DIR/report.md

Each rung folder (``<rung>/recipe.toml``, ``<rung>/baseline.json``, ``<rung>/benchmark/results.csv``,
as ``benchmarks/ladder.py`` leaves them) gives one table: per strategy, the seeds it finished,
its final accuracy, its AUBC with a 95% bootstrap interval, the AUBC difference to random paired
by seed (bootstrap interval, exact two-sided Wilcoxon signed-rank p, seeds won), and the labels
it needed to reach random's mean final accuracy; beside it the nearest-class-mean floor. Only
finished runs count (all the recipe's cycles): a run still going or interrupted is left out and
named. The numbers come from the package's own summary (``core.loop.benchmark.summarize``), so
they are those ``ktal-cryo benchmark`` prints, restricted to finished runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "results" / "verdict"


def pct(v: float, digits: int = 1) -> str:
    return "-" if not math.isfinite(v) else f"{100 * v:.{digits}f}"


def rung_report(folder: Path) -> str | None:
    """The Markdown section of one rung folder (None when it holds no benchmark results)."""
    from napari_ktal.core.evaluation.stats import min_wilcoxon_p
    from napari_ktal.core.loop import budget_schedule, load_recipe
    from napari_ktal.core.loop.benchmark import summarize

    results = folder / "benchmark" / "results.csv"
    if not results.exists():
        return None
    with open(results, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    baseline = json.loads((folder / "baseline.json").read_text())["baseline"]
    n_pool = int(baseline["pool"])
    recipe = load_recipe(folder / "recipe.toml")
    budgets = budget_schedule(n_pool, recipe.active)
    counts = Counter((r["strategy"], int(r["seed"])) for r in rows)
    unfinished = sorted(f"{s}-seed{k} ({n}/{len(budgets)} cycles)" for (s, k), n in counts.items() if n < len(budgets))
    curves = summarize(rows, n_pool, cycles=len(budgets))
    lines = [f"### `{folder.name}`", "",
             f"Pool {n_pool}, {len(budgets)} cycles ({budgets[0]} -> {budgets[-1]} labels), recipe "
             f"`{recipe.name}`; floor: nearest class mean with {baseline['labeled']} random labels "
             f"{pct(baseline['accuracy_mean'])} +- {pct(baseline['accuracy_std'])}% "
             f"(chance {pct(baseline['chance'])}%).", ""]
    lines += ["| strategy | seeds | final acc % | AUBC % [95% CI] | dAUBC vs random [95% CI] | p | wins | "
              "labels to reach random's final |", "|---|---|---|---|---|---|---|---|"]
    for c in curves:
        seeds = ",".join(str(s) for s in sorted(c.aubc_by_seed))
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
    n = max((len(c.aubc_by_seed) for c in curves), default=0)
    lines += ["", f"AUBC: area under the accuracy curve over the labeled fraction, per seed, then the mean over "
              f"seeds. p: exact two-sided Wilcoxon signed-rank over the paired seeds (its floor with {n} "
              f"seeds: {min_wilcoxon_p(n):.3g})."]
    if unfinished:
        lines.append(f"Left out (not finished): {', '.join(unfinished)}.")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=ROOT, help="the folder of the rung folders")
    p.add_argument("--out", type=Path, help="Markdown file to write (default ROOT/report.md)")
    args = p.parse_args(argv)
    sections = [s for d in sorted(args.root.iterdir()) if d.is_dir() and (s := rung_report(d)) is not None]
    if not sections:
        print(f"no benchmark results under {args.root}", file=sys.stderr)
        return 1
    text = "\n\n".join(sections) + "\n"
    out = args.out or args.root / "report.md"
    out.write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
