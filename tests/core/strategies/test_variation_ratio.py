"""Variation ratio on constructed passes, and as a query."""

import numpy as np
import pytest

from napari_ktal.core.strategies import STRATEGIES
from napari_ktal.core.strategies.variation_ratio import variation_ratio


def test_variation_ratio_counts_the_passes_outside_the_mode():
    a, b = [0.9, 0.1], [0.2, 0.8]
    passes = np.array([[a, a, a], [a, b, b], [a, a, b], [a, b, b]])  # (K=4, N=3, C=2): votes by sample below
    assert variation_ratio(passes).tolist() == pytest.approx([0.0, 0.5, 0.25])  # 0000, 0101, 0111
    with pytest.raises(ValueError):
        variation_ratio(np.ones((3, 2)))


def test_the_query_returns_m_distinct_candidates_with_the_most_disagreeing_first(query_context):
    sel = STRATEGIES["variation-ratio"](query_context, np.arange(2, 12), 4,
                                        STRATEGIES["variation-ratio"].parse_options({"mc_passes": 8}))
    assert len(set(sel.indices.tolist())) == 4 and set(sel.indices) <= set(range(2, 12))
    assert np.all(np.diff(sel.scores) <= 0) and np.all((0 <= sel.scores) & (sel.scores <= 1))
