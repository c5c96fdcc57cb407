"""POAL: Pareto fronts, the Monte-Carlo subset search, the Mahalanobis OOD score and its sign."""

import dataclasses

import numpy as np
import pytest
import torch

from napari_ktal.core.data import ArraySource
from napari_ktal.core.strategies import STRATEGIES
from napari_ktal.core.strategies.poal import (
    Options,
    dominates,
    fit_class_gaussians,
    mmd_rbf,
    non_dominated,
    ood_scores,
    pareto_subset_search,
    poal_select,
    preselect,
)

# (u, c): 0, 1, 2 and 4 are the first front; 3 is dominated by 2 only; 5 by everyone but 6; 6 is last
POINTS = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.4, 0.4], [0.2, 0.9], [0.1, 0.1], [0.0, 0.0]])


def test_the_non_dominated_front_and_successive_fronts_of_a_known_set():
    assert non_dominated(POINTS).tolist() == [0, 1, 2, 4]
    assert preselect(POINTS, 4).tolist() == [0, 1, 2, 4]  # the first front already holds 4
    assert preselect(POINTS, 5).tolist() == [0, 1, 2, 4, 3]  # then the second front ...
    assert preselect(POINTS, 6).tolist() == [0, 1, 2, 4, 3, 5]
    assert preselect(POINTS, 99).tolist() == [0, 1, 2, 4, 3, 5, 6]  # ... until none is left
    assert non_dominated([[1, 1], [1, 1]]).tolist() == [0, 1]  # equal points do not dominate each other


def test_the_search_finds_the_subset_that_dominates_all_others():
    rng = np.random.default_rng(0)
    f = rng.uniform(0, 0.5, size=(10, 2))
    f[[2, 5, 7]] += 1.0  # these three are best on both objectives: their subset dominates every other
    res = pareto_subset_search(f, 3, np.random.default_rng(1), iterations=3000, seed_archive=False, check_every=10**9)
    assert sorted(res.chosen.tolist()) == [2, 5, 7] and res.iterations == 3000
    assert len(res.archive) == 1  # nothing else survives next to it


def test_the_archive_holds_only_mutually_non_dominated_subsets_and_the_early_stop_stops():
    rng = np.random.default_rng(3)
    f = rng.uniform(size=(30, 2))
    res = pareto_subset_search(f, 5, np.random.default_rng(4), iterations=100_000, check_every=50)
    sums = res.archive @ f
    assert all(res.archive.sum(axis=1) == 5)
    assert not any(dominates(sums[i], sums[j]) for i in range(len(sums)) for j in range(len(sums)))
    assert res.iterations < 100_000  # the fronts stopped changing long before
    assert len(res.chosen) == 5 and any((res.archive[i] == np.isin(np.arange(30), res.chosen)).all()
                                        for i in range(len(res.archive)))


def test_mmd_is_zero_for_equal_sets_and_grows_with_their_distance():
    a = np.random.default_rng(0).normal(size=(20, 2))
    assert mmd_rbf(a, a) == pytest.approx(0.0, abs=1e-12)
    assert 0 < mmd_rbf(a, a + 0.5) < mmd_rbf(a, a + 3.0)


def test_the_in_distribution_objective_is_maximised_not_its_complement():
    """With equal informativeness, POAL must take the candidates nearest the labeled classes (the
    reference code's max(M) - M would take the farthest)."""
    u = np.full(12, 0.7)
    confidence = -np.arange(12.0)[::-1]  # candidate 11 is the most in-distribution, 0 the least
    chosen = poal_select(u, confidence, 3, np.random.default_rng(0))
    assert sorted(chosen.tolist()) == [9, 10, 11]


def test_the_mahalanobis_score_ranks_a_planted_outlier_first_on_constructed_features():
    rng = np.random.default_rng(0)
    channels = [2, 3]
    labeled = np.concatenate([rng.normal(0, 1, (20, 5)), rng.normal(4, 1, (20, 5))])
    y = np.repeat([0, 1], 20)
    g = fit_class_gaussians(labeled, y, channels)
    cand = np.concatenate([rng.normal(0, 1, (5, 5)), rng.normal(4, 1, (5, 5)), [[-9, 12, 7, -8, 15]]])
    t = torch.as_tensor(cand, dtype=torch.float32)
    m = torch.stack([g.scores(k, part).max(1).values for k, part in enumerate(t.split(channels, 1))]).mean(0)
    assert int(torch.argmin(m)) == 10  # lowest confidence = highest OOD score
    assert g.classes.tolist() == [0, 1] and g.means[0].shape == (2, 2) and g.precisions[1].shape == (3, 3)


@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_the_ood_score_of_the_teacher_ranks_a_planted_outlier_first(query_context, noise):
    vols = np.random.default_rng(1).normal(size=(12, 16, 16, 16)).astype(np.float32)
    vols[9] = vols[9] * 25 + 10  # a box like no labeled one (a gold bead's contrast, everywhere)
    ctx = dataclasses.replace(query_context, source=ArraySource(vols), labeled=np.arange(6),
                              labels=np.array([0, 0, 1, 1, 2, 2]), junk_class=2)
    scores = ood_scores(ctx, np.arange(6, 12), noise=noise)
    assert int(np.argmax(scores)) == 3  # volume 9
    # junk labels do not shape the in-distribution model: relabelling them as junk changes nothing
    ctx_no_junk = dataclasses.replace(ctx, labeled=np.arange(4), labels=np.array([0, 0, 1, 1]))
    assert np.allclose(scores, ood_scores(ctx_no_junk, np.arange(6, 12), noise=noise), rtol=1e-4, atol=1e-3)


def test_the_query_returns_m_volumes_by_entropy_and_reads_its_options(query_context):
    sel = STRATEGIES["poal"](query_context, np.arange(2, 12), 3, Options(noise=0.0))
    assert len(set(sel.indices.tolist())) == 3 and set(sel.indices) <= set(range(2, 12))
    assert np.all(np.diff(sel.scores) <= 0)
    assert STRATEGIES["poal"].parse_options({"preselect": 3}).preselect == 3.0
    with pytest.raises(Exception, match="active.options.poal.shrinkage"):
        STRATEGIES["poal"].parse_options({"shrinkage": 2.0})
