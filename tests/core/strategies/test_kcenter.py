"""Greedy k-center against a hand-worked case and a naive implementation."""

import numpy as np
import pytest

from napari_ktal.core.strategies.kcenter import kcenter_greedy


def test_kcenter_picks_the_far_point_first_and_scores_the_pick_distance():
    pts = np.array([[0.1, 0.0], [0.0, 0.2], [5.0, 0.0], [0.0, 3.0], [5.1, 0.0]])
    order, dist = kcenter_greedy(pts, 3, centers=np.zeros((1, 2)))
    assert order[0] == 4 and dist[0] == pytest.approx(5.1)  # farthest from the origin
    assert order[1] == 3 and dist[1] == pytest.approx(3.0)  # then farthest from {origin, pick 1}
    assert order[2] == 1 and dist[2] == pytest.approx(0.2)  # point 2 is now 0.1 from pick 1: covered
    assert np.all(np.diff(dist) <= 0)


def _naive_kcenter(x, n, centers):
    d = np.min(np.linalg.norm(x[:, None] - centers[None], axis=2), axis=1)
    picks = []
    for _ in range(n):
        i = int(np.argmax(d))
        picks.append(i)
        d = np.minimum(d, np.linalg.norm(x - x[i], axis=1))
        d[i] = -1
    return picks


def test_kcenter_matches_a_naive_implementation_and_never_repeats():
    rng = np.random.default_rng(0)
    x, c = rng.normal(size=(60, 5)), rng.normal(size=(7, 5))
    order, _ = kcenter_greedy(x, 20, centers=c)
    assert order.tolist() == _naive_kcenter(x, 20, c)
    order, _ = kcenter_greedy(np.zeros((4, 2)), 10, centers=np.zeros((1, 2)))  # duplicates, n > N
    assert sorted(order.tolist()) == [0, 1, 2, 3]
