"""The pure scores of prediction arrays, on constructed cases."""

import math

import numpy as np
import pytest

from napari_ktal.core.strategies.heuristics import bald, entropy, least_confidence, margin

UNIFORM, PEAKED, ONE_HOT = [1 / 3, 1 / 3, 1 / 3], [0.6, 0.3, 0.1], [1.0, 0.0, 0.0]


def test_entropy_ranks_the_uniform_prediction_first():
    h = entropy([PEAKED, UNIFORM, ONE_HOT])
    assert np.argmax(h) == 1 and h[1] == pytest.approx(math.log(3)) and h[2] == pytest.approx(0.0)
    assert h[0] == pytest.approx(-(0.6 * math.log(0.6) + 0.3 * math.log(0.3) + 0.1 * math.log(0.1)))


def test_margin_and_least_confidence_rank_the_uniform_prediction_first():
    mg = margin([PEAKED, UNIFORM, ONE_HOT])
    assert mg.tolist() == pytest.approx([1 - 0.3, 1.0, 0.0])
    lc = least_confidence([PEAKED, UNIFORM, ONE_HOT])
    assert lc.tolist() == pytest.approx([0.4, 2 / 3, 0.0])
    # margin looks only at the top two: a tie between two classes is maximal, whatever the third
    assert margin([[0.45, 0.45, 0.1]])[0] == pytest.approx(1.0)


def test_bald_is_zero_when_passes_agree_and_log2_when_confident_passes_disagree():
    agree = np.array([[UNIFORM], [UNIFORM], [UNIFORM]])  # (K=3, N=1, C): uncertain but consistent
    assert bald(agree)[0] == pytest.approx(0.0, abs=1e-12)
    disagree = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # two confident passes, opposite classes
    assert bald(disagree)[0] == pytest.approx(math.log(2))
    both = bald(np.concatenate([np.repeat([[[0.5, 0.5]]], 2, 0), disagree], axis=1))
    assert np.argmax(both) == 1 and both[0] == pytest.approx(0.0, abs=1e-12)


def test_heuristics_reject_wrong_shapes():
    with pytest.raises(ValueError):
        entropy([0.5, 0.5])
    with pytest.raises(ValueError):
        bald([[0.5, 0.5]])
