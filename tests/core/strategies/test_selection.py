"""Top M and the random subset R_U."""


import numpy as np

from napari_ktal.core.strategies.selection import random_subset, top_m


def test_top_m_order_and_ties():
    cand = np.array([10, 11, 12, 13])
    chosen, scores = top_m(cand, np.array([0.1, 0.5, 0.5, 0.9]), 3)
    assert chosen.tolist() == [13, 11, 12]  # highest first; the tie keeps candidate order
    assert scores.tolist() == [0.9, 0.5, 0.5]


def test_random_subset_size_and_membership():
    rng = np.random.default_rng(0)
    cand = np.arange(100, 1100)
    sub = random_subset(cand, m=20, subset_factor=10, rng=rng)
    assert len(sub) == 200 and len(set(sub)) == 200 and set(sub) <= set(cand)
    assert len(random_subset(cand[:50], m=20, subset_factor=10, rng=rng)) == 50
