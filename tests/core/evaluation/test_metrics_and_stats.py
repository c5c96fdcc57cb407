"""Test-set scores (balanced accuracy, recall) and the benchmark's statistics, on constructed cases."""

import math

import numpy as np
import pytest

from napari_ktal.core.evaluation.metrics import parse_recall, score_predictions
from napari_ktal.core.evaluation.stats import bootstrap_ci, min_wilcoxon_p, paired_comparison


def test_balanced_accuracy_is_the_mean_recall_over_the_classes_present():
    truth = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 0, 0, 0, 0, 0, 0, 2, 1])  # the majority class alone is right
    s = score_predictions(pred, truth, ["a", "b", "c"])
    assert s.accuracy == pytest.approx(0.7) and s.balanced_accuracy == pytest.approx((1 + 0 + 0.5) / 3)
    assert s.recall == {"a": 1.0, "b": 0.0, "c": 0.5}
    assert parse_recall(s.recall_text()) == s.recall
    assert math.isnan(score_predictions([], [], ["a"]).balanced_accuracy)
    with pytest.raises(ValueError):
        score_predictions([0], [0, 1], ["a", "b"])


def test_particle_accuracy_leaves_the_junk_volumes_out_and_counts_junk_calls_as_errors():
    classes = ["a", "junk", "b"]
    truth = np.array([0, 0, 2, 2, 1, 1, 1, 1])
    pred = np.array([0, 1, 2, 2, 1, 1, 1, 0])  # one particle called junk; junk itself 3/4 right
    s = score_predictions(pred, truth, classes)
    assert s.particle_accuracy == pytest.approx(3 / 4) and s.accuracy == pytest.approx(6 / 8)
    # no junk class: every test volume is a particle
    assert score_predictions([0, 1], [0, 0], ["a", "b"]).particle_accuracy == pytest.approx(0.5)
    # a test set of junk alone has no particle accuracy
    assert math.isnan(score_predictions([1, 0], [1, 1], classes).particle_accuracy)


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_more_seeds():
    rng = np.random.default_rng(0)
    few, many = rng.normal(0.5, 0.05, 5), rng.normal(0.5, 0.05, 50)
    lo, hi = bootstrap_ci(few)
    assert lo < few.mean() < hi
    lo2, hi2 = bootstrap_ci(many)
    assert hi2 - lo2 < hi - lo
    assert all(math.isnan(v) for v in bootstrap_ci([0.5]))
    # two values: resampled means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4, so the 95% interval is [0, 1]
    assert bootstrap_ci([0.0, 1.0]) == pytest.approx((0.0, 1.0))
    assert bootstrap_ci([0.3, 0.3, 0.3]) == pytest.approx((0.3, 0.3))  # no spread: a point (BCa would give NaN)
    assert bootstrap_ci(few) == bootstrap_ci(few) != bootstrap_ci(few, seed=1)  # seeded: a summary is reproducible


def test_paired_wilcoxon_over_seeds_and_its_floor():
    better = {s: 0.6 + 0.01 * s for s in range(5)}
    worse = {s: 0.5 + 0.012 * s for s in range(5)}
    c = paired_comparison(better, worse)
    assert c.n == 5 and c.wins == 5 and c.mean_difference > 0
    assert c.p_value == pytest.approx(min_wilcoxon_p(5)) == pytest.approx(0.0625)  # 5 seeds cannot reach 0.05
    assert c.ci[0] > 0
    eight = paired_comparison({s: 1.0 + s for s in range(8)}, {s: float(s) for s in range(8)})
    assert eight.p_value < 0.01
    mixed = paired_comparison({0: 0.5, 1: 0.6, 2: 0.4}, {0: 0.5, 1: 0.5, 2: 0.5})
    assert mixed.p_value > 0.5 and mixed.wins == 1
    assert paired_comparison({0: 0.5}, {1: 0.5}).n == 0  # no seed in common
    assert paired_comparison({0: 0.5, 1: 0.5}, {0: 0.5, 1: 0.5}).p_value == 1.0
    assert "p=0.0625 (5/5)" in c.describe()


def test_the_learning_curve_draws_the_estimate_beside_the_test_accuracy():
    from napari_ktal.core.evaluation.plots import learning_curve_figure

    rows = [{"n_labeled": n, "test_accuracy": a, "mean_uncertainty": "0.5"} for n, a in ((10, "0.6"), (20, "0.8"))]
    labels = {line.get_label() for line in learning_curve_figure(rows).axes[0].get_lines()}
    assert "teacher test accuracy" in labels and not any("estimated" in x for x in labels)
    for r, (e, lo, hi) in zip(rows, (("0.5", "0.3", "0.7"), ("0.75", "0.6", "0.9"))):
        r.update(estimated_accuracy=e, estimated_accuracy_low=lo, estimated_accuracy_high=hi)
    ax = learning_curve_figure(rows).axes[0]
    est = next(line for line in ax.get_lines() if line.get_label().startswith("estimated accuracy"))
    assert list(est.get_ydata()) == [50.0, 75.0]
    assert any(c.get_label().startswith("95% interval") for c in ax.collections)
    no_test = [{**r, "test_accuracy": ""} for r in rows]  # real data: the estimate is the only accuracy
    assert {line.get_label() for line in learning_curve_figure(no_test).axes[0].get_lines()} == {
        "estimated accuracy (audit volumes)"}
