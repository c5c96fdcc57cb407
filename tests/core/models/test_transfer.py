"""Attention transfer on small hand-checked tensors (METHOD.md)."""

import math

import pytest
import torch

from napari_ktal.core.models.transfer import (
    TRANSFER_LOSSES,
    attention_map,
    attention_transfer_loss,
    normalized_attention,
)
from napari_ktal.core.recipe import TRANSFER_LOSS_NAMES


def _act(channels):
    """(1, C, 1, 1, n) activation from a list of per-channel value lists."""
    return torch.tensor(channels, dtype=torch.float32).view(1, len(channels), 1, 1, -1)


def test_attention_map_sums_squares_over_channels():
    a = _act([[1.0, 2.0], [3.0, 0.0]])
    assert attention_map(a).tolist() == [[10.0, 4.0]]


def test_attention_map_is_sign_blind():
    assert torch.equal(attention_map(_act([[-1.0, 2.0]])), attention_map(_act([[1.0, -2.0]])))


def test_normalized_attention_has_unit_l2_norm():
    v = normalized_attention(_act([[1.0, 2.0], [3.0, 0.0]]))
    assert v.tolist()[0] == pytest.approx([10 / math.sqrt(116), 4 / math.sqrt(116)])
    # an all-zero map (dead ReLUs) stays zero instead of dividing by zero
    assert normalized_attention(_act([[0.0, 0.0]])).tolist() == [[0.0, 0.0]]


def test_attention_transfer_loss_value_by_hand():
    # stage 1: Q_S = [1, 0], Q_T = [0, 1] -> ||[1, -1]|| = sqrt 2
    # stage 2: A_S = [3, 4] -> Q_S = [9, 16] -> [9, 16]/sqrt(337); Q_T = [16, 9] -> [16, 9]/sqrt(337)
    #          -> ||[-7, 7]|| / sqrt(337) = 7 sqrt(2) / sqrt(337)
    s = [_act([[1.0, 0.0]]), _act([[3.0, 4.0]])]
    t = [_act([[0.0, 1.0]]), _act([[4.0, 3.0]])]
    assert attention_transfer_loss(s, t).item() == pytest.approx(math.sqrt(2) + 7 * math.sqrt(2) / math.sqrt(337), rel=1e-6)


def test_attention_transfer_loss_is_batch_mean_and_zero_for_equal_maps():
    s = torch.cat([_act([[1.0, 0.0]]), _act([[2.0, 2.0]])])  # batch of 2
    t = torch.cat([_act([[0.0, 1.0]]), _act([[5.0, 5.0]])])  # second pair: same direction -> 0
    assert attention_transfer_loss([s], [t]).item() == pytest.approx(math.sqrt(2) / 2, rel=1e-6)
    # scale invariance: the maps are normalised
    assert attention_transfer_loss([s], [3 * s]).item() == pytest.approx(0.0, abs=1e-6)


def test_transfer_loss_sends_no_gradient_to_the_teacher():
    s = _act([[1.0, 2.0]]).requires_grad_()
    t = _act([[2.0, 1.0]]).requires_grad_()
    attention_transfer_loss([s], [t]).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_attention_transfer_rejects_mismatched_stage_sizes():
    with pytest.raises(ValueError, match="differ"):
        attention_transfer_loss([torch.ones(1, 2, 4, 4, 4)], [torch.ones(1, 2, 2, 2, 2)])


def test_the_losses_are_the_recipe_vocabulary():
    assert tuple(TRANSFER_LOSSES) == TRANSFER_LOSS_NAMES
