"""The statistics of core.trust on hand-made numbers: confident learning, calibration, audit, stopping."""

import numpy as np
import pytest

from napari_ktal.core.trust import (
    apply_temperature,
    audit_slice,
    calibrate,
    class_thresholds,
    cohen_kappa,
    crossfit_accuracy,
    expected_calibration_error,
    fit_temperature,
    flag_suspects,
    label_score,
    prequential_accuracy,
    rank_suspects,
    suggest_stop,
    stop_set,
    wilson_interval,
)


# -- confident learning ------------------------------------------------------------------------
def test_thresholds_are_the_mean_probability_of_each_class_where_it_was_given():
    probs = np.array([[0.9, 0.1, 0.0], [0.5, 0.5, 0.0], [0.2, 0.8, 0.0]])
    t = class_thresholds(probs, np.array([0, 0, 1]))
    assert t[0] == pytest.approx(0.7) and t[1] == pytest.approx(0.8) and t[2] == np.inf


def test_a_label_is_scored_against_its_class_threshold_and_flagged_when_another_class_wins():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55], [0.6, 0.4]])
    labels = np.array([0, 0, 1, 0, 1])  # t_0 = (0.9 + 0.8 + 0.45) / 3 = 0.7167, t_1 = (0.7 + 0.4) / 2 = 0.55
    assert flag_suspects(probs, labels).tolist() == [False, False, False, True, True]
    t0, t1 = 2.15 / 3, 0.55
    expected = [(1 - (0.9 - t0)) / 2, (1 - (0.8 - t0)) / 2, (1 - (0.7 - t1)) / 2, (1 - (0.45 - t0)) / 2,
                (1 - (0.4 - t1)) / 2]
    assert label_score(probs, labels) == pytest.approx(expected)
    # per class: p = 0.7 is typical of the hard class 1 (score < 0.5) but would be low for class 0
    assert label_score(probs, labels)[2] < 0.5 < label_score(np.array([[0.7, 0.3]]), np.array([0]), [t0, t1])[0]
    ranked = rank_suspects(probs, labels)
    assert [s.index for s in ranked] == [3, 4, 1, 2, 0]  # flagged first, each part most suspect first


def test_planted_flips_rank_first_and_carry_their_true_class_as_the_suggestion():
    rng = np.random.default_rng(0)
    n, k = 400, 4
    truth = rng.integers(0, k, n)
    # a good but imperfect model: most mass on the true class, harder classes less sure
    alpha = np.ones((n, k))
    alpha[np.arange(n), truth] = 6.0 + 3.0 * (truth % 2)
    probs = np.stack([rng.dirichlet(a) for a in alpha])
    given = truth.copy()
    flipped = rng.choice(n, 20, replace=False)
    given[flipped] = (truth[flipped] + rng.integers(1, k, 20)) % k
    ranked = rank_suspects(probs, given, indices=np.arange(n) + 1000)
    top = {s.index - 1000 for s in ranked[:40]}  # the top 2K
    assert len(top & set(flipped)) >= 18
    flagged = [s for s in ranked if s.suspect]
    assert ranked[: len(flagged)] == flagged  # suspects first
    assert all(a.score >= b.score for a, b in zip(flagged, flagged[1:]))
    by_index = {s.index - 1000: s for s in ranked}
    assert np.mean([by_index[i].suggested == truth[i] for i in flipped]) >= 0.9
    assert all(0 <= s.score <= 1 and s.p_given == pytest.approx(probs[s.index - 1000, s.given]) for s in ranked)
    judged = np.ones(n, bool)
    judged[flipped[0]] = False  # say its class had no other volume: it cannot be judged
    last = rank_suspects(probs, given, judged=judged)[-1]
    assert last.index == flipped[0] and not last.suspect and np.isnan(last.score)


# -- calibration -------------------------------------------------------------------------------
def _overconfident(n=3000, k=4, sharpen=4.0, seed=1):
    """Labels drawn from softmax(z), logits reported as sharpen * z: right as often, far surer."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.2, (n, k))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    labels = (rng.random((n, 1)) > p.cumsum(1)).sum(1)  # one categorical draw per row
    return sharpen * z, labels


def test_temperature_scaling_recovers_the_sharpening_and_lowers_the_ece():
    logits, labels = _overconfident()
    result = calibrate(logits, labels)
    assert result.temperature == pytest.approx(4.0, rel=0.15)
    assert result.ece_before > 0.1 and result.ece_after < result.ece_before / 3
    # scaling never changes a prediction
    assert (apply_temperature(logits, result.temperature).argmax(1) == logits.argmax(1)).all()


def test_ece_is_zero_for_a_calibrated_bin_and_the_gap_otherwise():
    probs = np.array([[0.75, 0.25]] * 4)
    assert expected_calibration_error(probs, np.array([0, 0, 0, 1])) == pytest.approx(0.0)
    assert expected_calibration_error(probs, np.array([0, 0, 0, 0])) == pytest.approx(0.25)
    assert fit_temperature(np.zeros((0, 2)), np.zeros(0, int)) == 1.0


# -- audit -------------------------------------------------------------------------------------
def test_wilson_interval_matches_published_values():
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert np.isnan(wilson_interval(0, 0)).all()


def test_audit_slice_is_a_seeded_uniform_subset_of_the_unlabeled_volumes():
    unlabeled = np.arange(100, 200)
    a = audit_slice(unlabeled, 5, np.random.default_rng(3))
    assert len(a) == 5 and set(a) <= set(unlabeled) and (np.diff(a) > 0).all()
    assert (a == audit_slice(unlabeled, 5, np.random.default_rng(3))).all()
    assert len(audit_slice(unlabeled[:3], 5, np.random.default_rng(0))) == 3
    assert len(audit_slice(unlabeled, 0, np.random.default_rng(0))) == 0
    counts = np.bincount(np.concatenate([audit_slice(np.arange(10), 3, np.random.default_rng(s))
                                         for s in range(2000)]), minlength=10)
    assert counts.min() > 520 and counts.max() < 680  # 600 each if uniform


def test_crossfit_accuracy_with_per_class_values_only_where_there_are_enough():
    labels = np.array([0] * 12 + [1] * 5)
    predicted = labels.copy()
    predicted[:3] = 1  # 9/12 right on class 0, 5/5 on class 1
    est = crossfit_accuracy(predicted, labels)
    assert est.accuracy == pytest.approx(14 / 17) and est.n == 17
    assert (est.low, est.high) == pytest.approx(wilson_interval(14, 17))
    assert set(est.per_class) == {0} and est.per_class[0][0] == pytest.approx(0.75)


def test_prequential_accuracy_weighs_recent_teachers_more_with_the_effective_size():
    est = prequential_accuracy([0, 0, 1, 1], [False, False, True, True], decay=0.5)
    assert est.accuracy == pytest.approx(2 / 3)  # (1 + 1) / (0.5 + 0.5 + 1 + 1)
    assert est.n == pytest.approx(9 / 2.5)  # (sum w)^2 / sum w^2
    assert (est.low, est.high) == pytest.approx(wilson_interval(2 / 3 * 3.6, 3.6))
    assert np.isnan(prequential_accuracy([], []).accuracy)
    assert prequential_accuracy([0, 0, 1, 1], [False, False, True, True], latest=2).accuracy == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        prequential_accuracy([0, 3], [True, True], latest=2)


# -- stopping ----------------------------------------------------------------------------------
def test_cohen_kappa_of_the_textbook_two_raters():
    # 50 items: both yes 20, A yes B no 5, A no B yes 10, both no 15: p_o 0.7, p_e 0.5
    a = np.array([1] * 20 + [1] * 5 + [0] * 10 + [0] * 15)
    b = np.array([1] * 20 + [0] * 5 + [1] * 10 + [0] * 15)
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == 1.0 and cohen_kappa(np.zeros(5), np.zeros(5)) == 1.0
    assert cohen_kappa(a, 1 - a) == pytest.approx(-1.0)


def test_the_stop_set_is_fixed_by_the_seed_and_bounded_by_the_pool():
    s = stop_set(5000, 1000, seed=7)
    assert len(s) == 1000 and (np.diff(s) > 0).all() and s.max() < 5000
    assert (s == stop_set(5000, 1000, seed=7)).all() and not (s == stop_set(5000, 1000, seed=8)).all()
    assert (stop_set(240, 1000) == np.arange(240)).all()


def test_a_plateau_stops_and_a_rising_curve_does_not():
    stable = [0.7, 0.9, 0.995, 0.992, 0.998]
    plateau = [0.5, 0.7, 0.80, 0.81, 0.805, 0.805]
    stop, why = suggest_stop(stable, plateau)
    assert stop and "no longer rises" in why
    stop, why = suggest_stop(stable, [0.5, 0.6, 0.7, 0.75, 0.8, 0.85])
    assert not stop and "still rises" in why
    stop, why = suggest_stop([0.7, 0.9, 0.995, 0.95, 0.998], plateau)
    assert not stop and "0.950" in why
    assert not suggest_stop([0.995, 0.999], plateau)[0]  # fewer kappas than the window
    stop, why = suggest_stop(stable, [float("nan")] * 6)
    assert stop and "no accuracy estimate" in why
