"""The benchmark: curve summaries by hand, and the mechanics of a tiny two-strategy benchmark
(shared pool, same initial set, outputs, resume without redoing finished runs)."""

import csv
import math
import os
import shutil

import pytest
import torch

from napari_ktal.cli import main
from napari_ktal.core.errors import Cancelled, KtalError
from napari_ktal.core.loop import load_recipe
from napari_ktal.core.loop.benchmark import (
    RESULT_COLUMNS,
    BenchmarkSpec,
    aubc,
    labels_to_reach,
    parse_strategies,
    run_benchmark,
    summarize,
)
from napari_ktal.core.progress import RunContext
from napari_ktal.core.simulate import SimulationConfig, simulate_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 30 volumes: labeled sets of 3, 5, 6 (10% -> 20% by 5%): 3 cycles per run
TINY = load_recipe("quick").replace(
    model={"width": 2},
    train={"min_steps": 0, "epochs": 2, "lr_milestones": [], "batch_size": 8, "eval_batch_size": 16},
    active={"final_fraction": 0.2},
)
CPU = torch.device("cpu")


# -- the pure summaries ----------------------------------------------------------------------------
def test_aubc_is_the_normalised_trapezoid_area():
    assert aubc([0.1, 0.2, 0.4], [0.5, 0.5, 0.5]) == pytest.approx(0.5)
    # (0.1, 0.5) -> (0.2, 0.7): mean 0.6 over the first half; (0.2, 0.7) -> (0.3, 0.7): 0.7
    assert aubc([0.1, 0.2, 0.3], [0.5, 0.7, 0.7]) == pytest.approx(0.65)
    assert aubc([0.3, 0.1, 0.2], [0.7, 0.5, 0.7]) == pytest.approx(0.65)  # order does not matter
    assert aubc([0.1], [0.42]) == pytest.approx(0.42)
    assert math.isnan(aubc([], []))


def test_labels_to_reach_interpolates_and_is_nan_when_never_reached():
    assert labels_to_reach([10, 20, 30], [0.5, 0.6, 0.8], 0.7) == pytest.approx(25)
    assert labels_to_reach([10, 20, 30], [0.5, 0.6, 0.8], 0.8) == pytest.approx(30)
    assert labels_to_reach([10, 20, 30], [0.75, 0.6, 0.8], 0.7) == pytest.approx(10)  # no extrapolation
    assert math.isnan(labels_to_reach([10, 20, 30], [0.5, 0.6, 0.65], 0.7))


def test_summarize_mean_std_aubc_and_labels_to_match_random():
    def rows(strategy, seed, accs):
        return [{"strategy": strategy, "seed": seed, "cycle": c, "n_labeled": n, "test_accuracy": a,
                 "query_seconds": 1.0 if c < 2 else "", "train_seconds": 2.0}
                for c, (n, a) in enumerate(zip([10, 20, 30], accs))]

    data = rows("random", 0, [0.4, 0.5, 0.6]) + rows("random", 1, [0.4, 0.5, 0.6])
    data += rows("kt", 0, [0.4, 0.6, 0.7]) + rows("kt", 1, [0.4, 0.7, 0.7])
    kt, rnd = summarize(data, n_pool=100, strategies=["kt", "random"])
    assert kt.n_runs == 2 and kt.n_labeled == [10, 20, 30]
    assert kt.acc_mean == pytest.approx([0.4, 0.65, 0.7])
    assert kt.acc_std[1] == pytest.approx(math.sqrt(0.005)) and kt.acc_std[0] == pytest.approx(0.0)
    assert rnd.aubc_mean == pytest.approx(0.5) and kt.aubc_mean == pytest.approx((0.575 + 0.625) / 2)
    assert kt.aubc_std == pytest.approx(math.sqrt(2) * 0.025)
    # random's final mean is 0.6: kt gets there between 10 (0.4) and 20 (0.65) labels
    assert kt.labels_to_match_reference == pytest.approx(10 + 10 * 0.2 / 0.25)
    assert rnd.labels_to_match_reference == pytest.approx(30)
    assert kt.query_seconds == pytest.approx(1.0) and kt.train_seconds == pytest.approx(2.0)
    # paired by seed: kt beats random on both seeds by 0.075 and 0.125 of AUBC
    vs = kt.versus["random"]
    assert vs.n == 2 and vs.wins == 2 and vs.mean_difference == pytest.approx(0.1) and vs.p_value == pytest.approx(0.5)
    assert "kt" not in kt.versus and rnd.versus["kt"].mean_difference == pytest.approx(-0.1)
    assert kt.aubc_ci[0] <= kt.aubc_mean <= kt.aubc_ci[1]


def test_summarize_leaves_out_unfinished_runs_when_told_how_many_cycles_a_run_has():
    def rows(strategy, seed, accs):
        return [{"strategy": strategy, "seed": seed, "cycle": c, "n_labeled": n, "test_accuracy": a,
                 "query_seconds": "", "train_seconds": 1.0} for c, (n, a) in enumerate(zip([10, 20, 30], accs))]

    data = rows("random", 0, [0.4, 0.5, 0.6]) + rows("random", 1, [0.4, 0.5, 0.6])
    data += rows("kt", 0, [0.4, 0.6, 0.7]) + rows("kt", 1, [0.9, 0.9])  # kt seed 1 stopped after 2 cycles
    kt, rnd = summarize(data, n_pool=100, strategies=["kt", "random"], cycles=3)
    assert kt.n_runs == 1 and list(kt.aubc_by_seed) == [0] and kt.versus["random"].n == 1
    assert rnd.n_runs == 2 and rnd.versus["kt"].n == 1
    kt_all, _ = summarize(data, n_pool=100, strategies=["kt", "random"])  # without cycles: every row counts
    assert kt_all.n_runs == 2


def test_summarize_balanced_accuracy_when_asked():
    data = [{"strategy": "kt", "seed": 0, "cycle": c, "n_labeled": n, "test_accuracy": 0.9,
             "test_balanced_accuracy": b, "query_seconds": "", "train_seconds": 1.0}
            for c, (n, b) in enumerate(zip([10, 20], [0.4, 0.6]))]
    (kt,) = summarize(data, n_pool=100, metric="balanced")
    assert kt.acc_mean == pytest.approx([0.4, 0.6]) and kt.aubc_mean == pytest.approx(0.5)


def test_strategy_names_are_checked():
    assert parse_strategies(" kt, random ,kt") == ["kt", "random"]
    assert "noise-stability" in parse_strategies("all")
    with pytest.raises(KtalError, match="unknown strategy nope; choose from kt, random"):
        parse_strategies("kt,nope")


# -- a tiny benchmark ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-sim")
    train, test = simulate_dataset(out, SimulationConfig(classes=3, per_class=10, test_per_class=2, snr=1, seed=3))
    return out / "train", train, test


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _mtimes(root):
    return {p: p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()
            and "runs" in p.parts}


def test_tiny_benchmark_outputs_shared_pool_same_start_and_resume(tmp_path, sim):
    data, oracle, test = sim
    out = tmp_path / "bench"
    seen = []
    result = run_benchmark(BenchmarkSpec(data, oracle, test, ["kt", "random"], [0], TINY, out, CPU),
                           on_run=seen.append)
    assert [(o.strategy, o.status, len(o.history)) for o in seen] == [("kt", "ran", 3), ("random", "ran", 3)]
    assert result.n_pool == 30 and [c.strategy for c in result.curves] == ["kt", "random"]

    # outputs and their columns
    results = _read_csv(out / "results.csv")
    assert list(results[0]) == RESULT_COLUMNS and len(results) == 2 * 3
    assert [int(r["n_labeled"]) for r in results] == [3, 5, 6, 3, 5, 6]
    assert all(0 <= float(r["test_accuracy"]) <= 1 for r in results)
    assert [r["query_seconds"] == "" for r in results] == [False, False, True] * 2  # last cycle queries nothing
    summary = _read_csv(out / "summary.csv")
    assert [r["strategy"] for r in summary] == ["kt", "random"]
    assert {"acc_mean@3", "acc_std@6", "aubc", "labels_to_match_random", "query_seconds_mean"} <= set(summary[0])
    assert float(summary[1]["aubc"]) == pytest.approx(result.curves[1].aubc_mean, abs=1e-4)
    png = (out / "benchmark.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000

    # one pool, imported once, shared by every run
    base_pool = out / "base" / "pool" / "volumes.npy"
    for name in ("kt-seed0", "random-seed0"):
        assert os.path.samefile(out / "runs" / name / "pool" / "volumes.npy", base_pool)
    assert sorted(p.name for p in out.rglob("volumes.npy") if not p.parent.is_symlink()) == ["volumes.npy"]

    # the same random initial set (and the same first training) for every strategy of a seed
    def first_batch(name):
        return sorted(r["index"] for r in _read_csv(out / "runs" / name / "queries" / "cycle_000.csv"))

    assert first_batch("kt-seed0") == first_batch("random-seed0")
    assert results[0]["test_accuracy"] == results[3]["test_accuracy"]

    # rerun: nothing of a finished run is touched; a new strategy is added beside them
    before = _mtimes(out)
    assert len(before) > 20 and any(p.name == "teacher.pt" for p in before)
    seen.clear()
    run_benchmark(BenchmarkSpec(data, oracle, test, ["kt", "random", "entropy"], [0], TINY, out, CPU),
                  on_run=seen.append)
    assert [(o.strategy, o.status) for o in seen] == [("kt", "done"), ("random", "done"), ("entropy", "ran")]
    after = _mtimes(out)
    assert all(after[p] == t for p, t in before.items())
    assert first_batch("entropy-seed0") == first_batch("kt-seed0")
    assert len(_read_csv(out / "results.csv")) == 3 * 3

    # a different recipe in the same folder is refused
    with pytest.raises(KtalError, match="different recipe"):
        changed = TINY.replace(train={"min_steps": 0, "epochs": 3})
        run_benchmark(BenchmarkSpec(data, oracle, test, ["kt"], [0], changed, out, CPU))


def test_interrupted_benchmark_continues_where_it_stopped(tmp_path, sim):
    data, oracle, test = sim
    out = tmp_path / "bench"
    cycles = []

    def stop_after_four():  # checked between steps: stops during the second run's second cycle
        return len(cycles) >= 4

    with pytest.raises(Cancelled):
        run_benchmark(BenchmarkSpec(data, oracle, test, ["kt", "margin"], [1], TINY, out, CPU),
                      on_cycle=cycles.append, run=RunContext(should_stop=stop_after_four))
    margin = out / "runs" / "margin-seed1" / "history.csv"
    assert len(_read_csv(margin)) == 1  # one cycle of the second run was saved
    seen = []
    run_benchmark(BenchmarkSpec(data, oracle, test, ["kt", "margin"], [1], TINY, out, CPU), on_run=seen.append)
    assert [(o.strategy, o.status, len(o.history)) for o in seen] == [("kt", "done", 3), ("margin", "resumed", 3)]
    assert [int(r["cycle"]) for r in _read_csv(margin)] == [0, 1, 2]


def test_a_benchmark_carried_as_its_small_files_continues_without_redoing_finished_runs(tmp_path, sim):
    """benchmark.json and results.csv alone (what a long benchmark commits as it goes) are enough to
    continue it: finished runs count as done from their rows, and new seeds run beside them."""
    data, oracle, test = sim
    out = tmp_path / "bench"
    run_benchmark(BenchmarkSpec(data, oracle, test, ["kt", "random"], [0], TINY, out, CPU))
    first = _read_csv(out / "results.csv")
    carried = tmp_path / "carried"
    carried.mkdir()
    for name in ("benchmark.json", "results.csv"):
        shutil.copy(out / name, carried / name)
    seen = []
    result = run_benchmark(BenchmarkSpec(data, oracle, test, ["kt", "random"], [0, 1], TINY, carried, CPU),
                           on_run=seen.append)
    assert [(o.strategy, o.seed, o.status) for o in seen] == [
        ("kt", 0, "done"), ("kt", 1, "ran"), ("random", 0, "done"), ("random", 1, "ran")]
    assert not (carried / "runs" / "kt-seed0").exists()  # not rerun
    rows = _read_csv(carried / "results.csv")
    assert [r for r in rows if r["seed"] == "0"] == first  # the carried rows, unchanged
    assert len(rows) == 4 * 3 and [c.n_runs for c in result.curves] == [2, 2]


def test_cli_benchmark_prints_runs_and_summary(tmp_path, sim, capsys):
    data, oracle, test = sim
    recipe = tmp_path / "tiny.toml"
    recipe.write_text('[model]\nwidth = 2\n[train]\nepochs = 2\nlr_milestones = []\nbatch_size = 8\n'
                      '[active]\nfinal_fraction = 0.15\n')
    args = ["benchmark", str(data), "--oracle", str(oracle), "--test", str(test), "--strategies", "random,least-confidence",
            "--seeds", "1", "--recipe", str(recipe), "--out", str(tmp_path / "b"), "--device", "cpu"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "random-seed0" in text and "least-confidence-seed0" in text and "2 cycles" in text
    assert "AUBC" in text and "labels to random" in text
    # the verdict: the AUBC interval and the paired test against random, with the Wilcoxon floor
    assert "AUBC % [95% CI]" in text and "vs random: dAUBC [CI] p (wins)" in text and "Wilcoxon signed-rank" in text
    assert "p=1 (0/1)" in text or "p=" in text.split("least-confidence", 2)[-1]
    summary = _read_csv(tmp_path / "b" / "summary.csv")
    assert {"aubc_ci_low", "aubc_ci_high", "vs_random_wilcoxon_p", "vs_random_aubc_diff", "vs_kt_wilcoxon_p"} <= set(
        summary[0])
    assert summary[1]["vs_random_seeds"] == "1"
    assert main(args) == 0
    assert capsys.readouterr().out.count("done before, skipped") == 2
    assert main([*args[:6], "--strategies", "kt,bogus", *args[8:]]) == 2
    assert "unknown strategy bogus" in capsys.readouterr().err
