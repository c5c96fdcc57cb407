"""Junk in the benchmark: the share of each queried batch that was junk, per cycle and per strategy
with intervals over seeds and its ratio to kt's, and accuracy on the particle classes alone."""

import csv
import math

import pytest
import torch

from napari_ktal.core.loop import load_recipe
from napari_ktal.core.loop.benchmark import BenchmarkSpec, run_benchmark, summarize, summary_rows, summary_table
from napari_ktal.core.evaluation.stats import ratio_ci
from napari_ktal.core.project import JUNK_CLASS, Project
from napari_ktal.core.simulate import SimulationConfig, simulate_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _rows(strategy, seeds_junk, accs=(0.5, 0.6, 0.7), particle=(0.4, 0.5, 0.6)):
    out = []
    for seed, junk in seeds_junk.items():
        for c, (n, a, p) in enumerate(zip([10, 20, 30], accs, particle)):
            out.append({"strategy": strategy, "seed": seed, "cycle": c, "n_labeled": n, "test_accuracy": a,
                        "test_particle_accuracy": p, "query_seconds": 1.0 if c < 2 else "", "train_seconds": 1.0,
                        "junk_share": junk[c] if c < 2 else ""})
    return out


def test_junk_share_per_seed_its_interval_and_its_ratio_to_kt():
    rows = _rows("kt", {0: [0.6, 0.4], 1: [0.8, 0.6]}) + _rows("kt-junk", {0: [0.2, 0.2], 1: [0.3, 0.1]})
    rows += [{**r, "junk_share": ""} for r in _rows("clean", {0: [0, 0]})]  # a pool without junk: no share
    kt, ktj, clean = summarize(rows, n_pool=100)
    assert kt.junk_by_seed == pytest.approx({0: 0.5, 1: 0.7}) and kt.junk_share == pytest.approx(0.6)
    assert ktj.junk_share == pytest.approx(0.2) and ktj.junk_ci[0] <= 0.2 <= ktj.junk_ci[1]
    ratio, lo, hi = ktj.junk_vs_kt
    assert ratio == pytest.approx(0.2 / 0.6) and lo <= ratio <= hi and kt.junk_vs_kt[0] == pytest.approx(1.0)
    assert math.isnan(clean.junk_share) and math.isnan(clean.junk_vs_kt[0])
    columns, srows = summary_rows([kt, ktj])
    assert {"junk_share", "junk_share_ci_low", "junk_vs_kt", "junk_vs_kt_ci_high"} <= set(columns)
    assert float(srows[1]["junk_vs_kt"]) == pytest.approx(1 / 3, abs=1e-4)
    assert "junk % [95% CI]" in summary_table([kt, ktj], 100)
    assert "junk %" not in summary_table([clean], 100)  # no junk column for a pool without junk
    # the particle metric reads its own column
    (p,) = summarize(_rows("kt", {0: [0.5, 0.5]}), n_pool=100, metric="particle")
    assert p.acc_mean == pytest.approx([0.4, 0.5, 0.6])


def test_ratio_interval_resamples_the_seeds_in_pairs():
    a, b = {0: 0.2, 1: 0.3, 2: 0.25}, {0: 0.5, 1: 0.6, 2: 0.55}
    r, lo, hi = ratio_ci(a, b)
    assert r == pytest.approx(0.75 / 1.65) and lo < r < hi < 1
    assert math.isnan(ratio_ci({0: 0.1}, {0: 0.0})[0])
    assert ratio_ci({0: 0.1}, {0: 0.2})[0] == pytest.approx(0.5) and math.isnan(ratio_ci({0: 0.1}, {0: 0.2})[1])
    # resampled in pairs: seed 0 (no junk in either) is a ratio of 1, seed 1 alone and the mixed pairs 0.6
    assert ratio_ci({0: 0.0, 1: 0.3}, {0: 0.0, 1: 0.5}) == pytest.approx((0.6, 0.6, 1.0))
    # b without junk in 2 of 3 seeds: (2/3)^3 of the resamples have nothing to divide by, the interval is open
    r, lo, hi = ratio_ci({0: 0.2, 1: 0.3, 2: 0.1}, {0: 0.0, 1: 0.5, 2: 0.0})
    assert r == pytest.approx(1.2) and 0 < lo < r and hi == math.inf


def test_a_benchmark_on_a_pool_with_junk_records_the_junk_share_of_every_batch(tmp_path):
    sim = tmp_path / "sim"
    train, test = simulate_dataset(sim, SimulationConfig(classes=2, per_class=10, test_per_class=3, snr=1, box=16,
                                                         seed=4, junk_fraction=0.5))
    recipe = load_recipe("quick").replace(
        model={"width": 2}, train={"min_steps": 0, "epochs": 1, "lr_milestones": [], "batch_size": 8, "eval_batch_size": 16},
        active={"final_fraction": 0.2})  # 40 volumes: 4, 6, 8 labeled
    out = tmp_path / "b"
    result = run_benchmark(BenchmarkSpec(sim / "train", train, test, ["kt", "random"], [0], recipe, out,
                                         torch.device("cpu"), metric="particle"))
    with open(out / "results.csv", newline="") as f:
        results = list(csv.DictReader(f))
    with open(train, newline="") as f:
        truth_by_key = {r["path"]: r["label"] for r in csv.DictReader(f)}
    for r in results:
        project = Project(out / "runs" / f"{r['strategy']}-seed0")
        if r["query_seconds"] == "":
            assert r["junk_share"] == ""
            continue
        batch = project.read_query(int(r["cycle"]) + 1)
        expected = sum(truth_by_key[q.key] == JUNK_CLASS for q in batch) / len(batch)
        assert float(r["junk_share"]) == pytest.approx(expected, abs=1e-6)
        assert 0 <= float(r["test_particle_accuracy"]) <= 1
    kt = result.curves[0]
    assert kt.strategy == "kt" and math.isfinite(kt.junk_share) and kt.junk_vs_kt[0] == pytest.approx(1.0)
