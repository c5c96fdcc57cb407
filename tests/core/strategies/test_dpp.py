"""The multiple-criteria DPP: a k-DPP must prefer the diverse pair; its sampler must draw sets with
probability proportional to det(L_Y); clustering must call the typical point representative."""

import itertools
import warnings

import numpy as np
import pytest

from napari_ktal.core.strategies import STRATEGIES
from napari_ktal.core.strategies.dpp import (
    Options,
    conditioned_on,
    greedy_map,
    kmeans,
    quality,
    rbf_kernel,
    representativeness,
    sample_k_dpp,
    select_batch,
)


def _three():
    """A and A' almost the same point and of the best quality; B far away, of lower quality."""
    x = np.array([[0.0, 0.0], [0.05, 0.0], [3.0, 0.0]])
    s, _ = rbf_kernel(x, bandwidth=1.0)
    q = np.array([1.0, 0.98, 0.7])
    return q[:, None] * s * q[None, :]


def test_the_map_batch_prefers_the_diverse_pair_over_the_two_best_look_alikes():
    L = _three()
    assert sorted(greedy_map(L, 2).tolist()) == [0, 2]
    # by brute force too: det of the diverse pair is the largest of the three pairs
    dets = {pair: np.linalg.det(L[np.ix_(pair, pair)]) for pair in itertools.combinations(range(3), 2)}
    assert max(dets, key=dets.get) == (0, 2) and dets[(0, 1)] < 0.01 * dets[(0, 2)]
    # quality alone (the top two) would have taken the look-alikes
    assert sorted(np.argsort(-np.diag(L))[:2].tolist()) == [0, 1]


def test_the_sampler_draws_each_set_with_probability_proportional_to_its_determinant():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 2))
    L = rbf_kernel(x, 1.0)[0] * np.outer([1, 0.8, 0.6, 0.9, 0.5], [1, 0.8, 0.6, 0.9, 0.5])
    pairs = list(itertools.combinations(range(5), 2))
    dets = np.array([np.linalg.det(L[np.ix_(p, p)]) for p in pairs])
    expected = dets / dets.sum()
    draws = 4000
    counts = dict.fromkeys(pairs, 0)
    for _ in range(draws):
        counts[tuple(sorted(sample_k_dpp(L, 2, rng).tolist()))] += 1
    observed = np.array([counts[p] for p in pairs]) / draws
    assert np.abs(observed - expected).max() < 0.03  # 4000 draws: binomial sd <= 0.008
    assert all(len(sample_k_dpp(L, 3, rng)) == 3 for _ in range(5))


def test_conditioning_keeps_the_hardest_item_and_the_rest_stays_diverse():
    L = _three()
    cond, rest = conditioned_on(L, 1)
    assert rest.tolist() == [0, 2] and cond[0, 0] < 0.01 * cond[1, 1]  # A is nearly explained by A'
    for mode in ("map", "sample"):
        batch = select_batch(L, 2, np.random.default_rng(0), first=1, mode=mode)
        assert sorted(batch.tolist()) == [1, 2], mode


def test_the_typical_member_of_a_large_cluster_is_the_most_representative():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.1, (12, 2)), [[0.0, 0.0]], rng.normal(5, 0.1, (3, 2)), [[20.0, 20.0]]])
    r = representativeness(x, 3, sigma=1.0, rng=np.random.default_rng(1))
    assert int(np.argmax(r)) in range(13) and r[12] > r[13:16].max() > r[16]
    q = quality([1.0, 0.5, 0.0], [0.2, 0.4, 0.4])
    assert q == pytest.approx([0.5, 0.5, 1e-6])


def test_kmeans_separates_blobs_and_seeds_no_more_centres_than_distinct_points():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    x = np.concatenate([c + rng.normal(0, 0.3, (10, 2)) for c in centres])
    assign, found = kmeans(x, 3, np.random.default_rng(1))
    truth = np.repeat(np.arange(3), 10)
    assert len(set(zip(assign.tolist(), truth.tolist()))) == 3  # one cluster per blob, whatever its number
    assert np.abs(np.sort(found[:, 0] + 10 * found[:, 1]) - np.sort(centres[:, 0] + 10 * centres[:, 1])).max() < 2
    same = np.array([[1.0, 1.0]] * 4 + [[2.0, 2.0]] * 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # k-means++ on 2 distinct points with k = 3 would divide 0 by 0
        assign, found = kmeans(same, 3, np.random.default_rng(0))
    assert len(found) == 2 and assign[:4].tolist() == [assign[0]] * 4 and assign[0] != assign[4]
    assert kmeans(x, 3, np.random.default_rng(1))[0].tolist() == kmeans(x, 3, np.random.default_rng(1))[0].tolist()


def test_the_query_takes_the_hardest_candidate_and_m_distinct_volumes(query_context):
    from napari_ktal.core.strategies.dpp import informativeness

    for mode in ("map", "sample"):
        sel = STRATEGIES["dpp"](query_context, np.arange(2, 12), 4, Options(mode=mode))
        assert len(set(sel.indices.tolist())) == 4 and np.all(np.diff(sel.scores) <= 0)
        u = informativeness(query_context, np.arange(2, 12), "entropy")
        assert 2 + int(np.argmax(u)) in sel.indices
    with pytest.raises(Exception, match="active.options.dpp.uncertainty"):
        STRATEGIES["dpp"].parse_options({"uncertainty": "bald"})
