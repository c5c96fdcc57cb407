"""The method's math on small hand-checked tensors (METHOD.md)."""

import math

import numpy as np
import pytest
import torch

from napari_ktal.core.models.distances import js_score, kl_score, mse_score
from napari_ktal.core.models.resnet3d import ResNet3D, build_pair
from napari_ktal.core.models.transfer import (
    TRANSFER_LOSSES,
    attention_map,
    attention_transfer_loss,
    normalized_attention,
)
from napari_ktal.core.recipe import ModelSpec
from napari_ktal.core.strategies.selection import random_subset, top_m


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


def test_kl_direction_is_teacher_reference():
    # p_T = [0.9, 0.1], p_S = [0.5, 0.5]
    t = torch.log(torch.tensor([[0.9, 0.1]]))
    s = torch.zeros(1, 2)
    kl_ts = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)  # 0.3681
    kl_st = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)  # 0.5108
    assert kl_score(t, s).item() == pytest.approx(kl_ts, rel=1e-5)
    assert kl_score(s, t).item() == pytest.approx(kl_st, rel=1e-5)
    # equals PyTorch's kl_div(log_softmax(S), softmax(T)), the form METHOD.md gives
    ref = torch.nn.functional.kl_div(s.log_softmax(1), t.softmax(1), reduction="none").sum(1)
    assert kl_score(t, s).item() == pytest.approx(ref.item(), rel=1e-6)


def test_scores_are_zero_when_teacher_and_student_agree_and_per_sample():
    logits = torch.randn(5, 4)
    for fn in (kl_score, js_score, mse_score):
        out = fn(logits, logits)
        assert out.shape == (5,)
        assert out.abs().max().item() < 1e-6
    assert js_score(torch.log(torch.tensor([[0.9, 0.1]])), torch.zeros(1, 2)).item() > 0


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


@pytest.mark.parametrize("stem,sizes", [("cifar", [32, 16, 8, 4]), ("strided", [16, 8, 4, 2])])
def test_teacher_and_student_stages_match_in_size(stem, sizes):
    teacher, student = build_pair(ModelSpec(width=4, stem=stem), n_classes=3)
    x = torch.randn(2, 1, 32, 32, 32)
    out_t, out_s = teacher(x), student(x)
    assert out_t.logits.shape == out_s.logits.shape == (2, 3)
    assert [f.shape[-1] for f in out_t.stages] == sizes == [f.shape[-1] for f in out_s.stages]
    assert [f.shape[1] for f in out_t.stages] == [4, 8, 16, 32]
    for name, loss in TRANSFER_LOSSES.items():
        assert torch.isfinite(loss(out_s, out_t)), name


def test_depths_have_the_right_number_of_blocks():
    count = lambda m: sum(1 for s in m.stages for _ in s)  # noqa: E731
    assert count(ResNet3D(18, 2, width=2)) == 8
    assert count(ResNet3D(10, 2, width=2)) == 4
