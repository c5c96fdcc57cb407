"""A cycle judges itself without a test set: the audit slice, held out for one cycle, the estimate,
the stop rule, and the oracle's slips (issue 21)."""

import math

import numpy as np
import pytest
import torch

from napari_ktal.core import loop as al
from napari_ktal.core.loop import cycle as cycle_module
from napari_ktal.core.loop import judging
from napari_ktal.core.loop.judging import audit_count, estimate_accuracy
from napari_ktal.core.project import HISTORY_COLUMNS, AuditJudgement, Project, QueryItem
from napari_ktal.core.seeds import seeded_rng
from napari_ktal.core.simulate import SimulationConfig, simulate_dataset
from napari_ktal.core.trust import audit_slice

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def easy(tmp_path_factory):
    """(train labels CSV, test labels CSV): 2 well separated classes x 20, and 2 x 10 to test."""
    out = tmp_path_factory.mktemp("easy")
    return simulate_dataset(out, SimulationConfig(classes=2, per_class=20, test_per_class=10, snr=4, box=16, seed=1))


def _oracle_run(tmp_path, train, recipe, *, test=None, seed=0, name="p"):
    p = Project.create(tmp_path / name, train, recipe)
    oracle = al.oracle_for_pool(p.pool, train)
    test_set = al.load_labeled_set(test, sorted(set(oracle.values()))) if test else None
    return p, al.run_with_oracle(p, recipe, oracle, CPU, seed=seed, test=test_set)


def test_audit_count_rounds_up_and_is_zero_without_audit():
    assert [audit_count(0.1, m) for m in (1, 9, 10, 11, 30)] == [1, 1, 1, 2, 3]
    assert audit_count(0.0, 50) == 0


def test_the_audit_slice_is_drawn_apart_from_the_strategy(tmp_path, easy, small_recipe):
    """Batch 1's audit volumes are the seeded uniform draw from the unlabeled pool whatever the strategy,
    and the strategy's picks are other volumes; cycle 0's random batch flags its first ceil(audit * size)."""
    recipe = small_recipe.replace(active={"final_fraction": 0.2}, trust={"audit": 0.5})
    batches = {}
    for strategy in ("margin", "random"):
        p = Project.create(tmp_path / strategy, easy[0], recipe.replace(active={"strategy": strategy}))
        oracle = al.oracle_for_pool(p.pool, easy[0])
        al.run_with_oracle(p, recipe.replace(active={"strategy": strategy}), oracle, CPU, seed=4)
        first = p.read_query(0)
        assert [q.audit for q in first] == [r < audit_count(0.5, len(first)) for r in range(len(first))]
        batch = p.read_query(1)
        audits = {q.index for q in batch if q.audit}
        assert len(audits) == audit_count(0.5, len(batch)) and len(audits) < len(batch)
        unlabeled = np.setdiff1d(np.arange(len(p.pool)), [q.index for q in first])
        assert audits == set(audit_slice(unlabeled, len(audits), seeded_rng(4, "audit", 0)).tolist())
        if strategy == "margin":  # the scores are the strategy's: the audit volumes have none, as random picks
            assert [np.isnan(q.score) for q in batch] == [q.audit for q in batch]
        batches[strategy] = batch
    assert {q.index for q in batches["margin"] if q.audit} == {q.index for q in batches["random"] if q.audit}


def test_audit_slices_are_uniform_over_the_unlabeled_pool():
    unlabeled = np.arange(3, 43)
    counts = np.zeros(43)
    for c in range(2000):
        counts[audit_slice(unlabeled, 4, seeded_rng(0, "audit", c))] += 1
    assert counts[:3].sum() == 0
    assert np.abs(counts[3:] / 2000 - 4 / 40).max() < 0.03  # each volume about 1 draw in 10


def test_audit_volumes_are_judged_before_they_are_trained_on(tmp_path, easy, small_recipe, monkeypatch):
    """Cycle c trains without the labeled audit volumes of its batch c, and with them from c+1 on; the
    judgements are recorded once per cycle; history has the estimate, the held-out count, the stop rule."""
    trained = []
    real = cycle_module.train_pair

    def spy(teacher, student, x, y, job, **kw):
        trained.append(np.asarray(x).copy())
        return real(teacher, student, x, y, job, **kw)

    monkeypatch.setattr(cycle_module, "train_pair", spy)
    recipe = small_recipe.replace(active={"final_fraction": 0.3}, trust={"audit": 0.5})
    p, reports = _oracle_run(tmp_path, easy[0], recipe)

    def trained_on(c, i):
        return any(np.array_equal(row, p.pool.read([i])[0]) for row in trained[c])

    for c, report in enumerate(reports):
        held = [q.index for q in p.read_query(c) if q.audit]
        assert report.audit_held_out == len(held) > 0
        assert len(trained[c]) == report.n_labeled - len(held)  # n_labeled: every label given
        assert not any(trained_on(c, i) for i in held)
        if c + 1 < len(reports):
            assert all(trained_on(c + 1, i) for i in held)
    judged = p.audits()
    assert sorted((j.cycle, j.index) for j in judged) == sorted(
        (c, q.index) for c in range(len(reports)) for q in p.read_query(c) if q.audit)
    hist = p.history()
    assert list(hist[0]) == HISTORY_COLUMNS
    for row, report in zip(hist, reports):
        low, acc, high = (float(row[k]) for k in ("estimated_accuracy_low", "estimated_accuracy",
                                                  "estimated_accuracy_high"))
        assert 0 <= low <= acc <= high <= 1 and int(row["audit_held_out"]) == report.audit_held_out
        assert row["stop_suggested"] in ("0", "1") and report.stop_reason
    assert hist[0]["stop_kappa"] == "" and all(-1 <= float(r["stop_kappa"]) <= 1 for r in hist[1:])


def test_the_estimate_holds_the_test_accuracy_in_most_cycles(tmp_path, easy, small_recipe):
    recipe = small_recipe.replace(active={"final_fraction": 0.4}, trust={"audit": 0.5})
    _, reports = _oracle_run(tmp_path, easy[0], recipe, test=easy[1], seed=2)
    held = [r.estimated_accuracy_low <= r.test_accuracy <= r.estimated_accuracy_high for r in reports]
    assert sum(held) >= 0.7 * len(held), [(r.estimated_accuracy_low, r.test_accuracy) for r in reports]


def test_without_audit_nothing_is_held_out_or_estimated(tmp_path, easy, small_recipe):
    recipe = small_recipe.replace(active={"final_fraction": 0.2}, trust={"audit": 0})
    p, reports = _oracle_run(tmp_path, easy[0], recipe)
    assert not any(q.audit for c in p.query_cycles() for q in p.read_query(c))
    assert all(r.audit_held_out == 0 and math.isnan(r.estimated_accuracy) for r in reports)
    assert p.audits() == [] and all(r["estimated_accuracy"] == "" for r in p.history())


def test_the_stop_rule_sees_kappa_1_when_successive_teachers_agree(tmp_path, easy, small_recipe, monkeypatch):
    real = judging.predict

    def always_class_0(model, source, indices, device, **kw):  # every teacher predicts the same
        pred, conf = real(model, source, indices, device, **kw)
        return np.zeros_like(pred), conf

    monkeypatch.setattr(judging, "predict", always_class_0)
    recipe = small_recipe.replace(active={"final_fraction": 0.3}, trust={"audit": 0, "stop_window": 2,
                                                                         "stop_set": 12})
    p, reports = _oracle_run(tmp_path, easy[0], recipe, seed=7)
    assert math.isnan(reports[0].stop_kappa) and [r.stop_kappa for r in reports[1:]] == [1.0] * (len(reports) - 1)
    assert [r.stop_suggested for r in reports] == [0, 0] + [1] * (len(reports) - 2)
    assert "no accuracy estimate" in reports[-1].stop_reason  # no audit: kappa alone decides
    stop = p.stop_predictions()
    assert len(stop.indices) == 12 and sorted(stop.predicted) == list(range(len(reports)))
    # the stop set is the project's: a later run with another seed predicts the same volumes
    assert np.array_equal(judging.stop_indices(p, recipe.trust, seed=99), stop.indices)


def test_the_estimate_counts_the_current_labels_and_each_judgement_once(tmp_path, new_project):
    p = new_project()
    keys = p.pool.keys
    p.record_audits(0, [AuditJudgement(0, 1, keys[1], "a"), AuditJudgement(0, 2, keys[2], "b")])
    p.record_audits(1, [AuditJudgement(1, 3, keys[3], "a")])
    p.record_audits(1, [AuditJudgement(1, 4, keys[4], "a")])  # cycle 1 trained again: replaces, not adds
    assert [(j.cycle, j.index) for j in p.audits()] == [(0, 1), (0, 2), (1, 4)]
    labels = {1: "a", 2: "a", 4: "a"}  # volume 2 was corrected to "a" since it was judged "b"
    e = estimate_accuracy(p.audits(), labels, 1)
    assert e.accuracy == pytest.approx((1 * 0.5 + 0 * 0.5 + 1 * 1) / 2)
    assert estimate_accuracy(p.audits(), labels, 0).accuracy == pytest.approx(0.5)
    assert math.isnan(estimate_accuracy([], labels, 0).accuracy)


def test_query_files_flag_audits_and_older_files_read_as_none(new_project):
    p = new_project()
    items = [QueryItem(0, 5, p.pool.keys[5], 0.5, "a", 0.9, audit=True), QueryItem(1, 6, p.pool.keys[6], 0.4, "a", 0.8)]
    p.write_query(0, items)
    assert p.read_query(0) == items
    text = p.paths.query(0).read_text().splitlines()
    p.paths.query(0).write_text("\n".join(line.rsplit(",", 1)[0] for line in text) + "\n")  # no audit column
    assert [q.audit for q in p.read_query(0)] == [False, False]


def test_flipped_answers_are_a_seeded_share_given_another_class():
    oracle = {i: f"c{i % 4}" for i in range(200)}
    answers, flips = al.flip_answers(oracle, 0.08, seed=3)
    assert len(flips) == 16 and set(flips) == {i for i in oracle if answers[i] != oracle[i]}
    assert all(true == oracle[i] and given == answers[i] != true for i, (true, given) in flips.items())
    assert al.flip_answers(oracle, 0.08, seed=3) == (answers, flips)
    assert set(al.flip_answers(oracle, 0.08, seed=4)[1]) != set(flips)
    assert al.flip_answers(oracle, 0.0, seed=3) == (oracle, {})


def test_query_items_with_nan_scores_are_equal_when_read_twice():
    a = QueryItem(0, 5, "k", float("nan"), "c", float("nan"), audit=True)
    assert a == QueryItem(0, 5, "k", float("nan"), "c", float("nan"), audit=True) and len({a, a}) == 1
    assert a != QueryItem(0, 5, "k", 0.5, "c", float("nan"), audit=True)
    assert a != QueryItem(0, 5, "k", float("nan"), "c", float("nan"))


def test_no_score_is_shown_in_a_batch_with_an_audit_slice():
    """The expert labels audit volumes blind: with one in the batch, no volume's score is shown."""
    from napari_ktal.core.loop import shown_score
    from napari_ktal.core.project import QueryItem

    scored = QueryItem(0, 5, "a.mrc", 0.7, "class_00", 0.9)
    audit = QueryItem(1, 9, "b.mrc", float("nan"), "class_01", 0.8, audit=True)
    assert shown_score(scored, [scored]) == 0.7
    assert shown_score(scored, [scored, audit]) is None and shown_score(audit, [scored, audit]) is None
