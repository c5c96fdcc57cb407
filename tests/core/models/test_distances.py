"""The teacher-student scores: KL direction, zero on agreement (METHOD.md)."""

import math

import pytest
import torch

from napari_ktal.core.models.distances import DISTANCES, js_score, kl_score, mse_score
from napari_ktal.core.recipe import DISTANCE_NAMES


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


def test_the_scores_are_the_recipe_vocabulary():
    assert tuple(DISTANCES) == DISTANCE_NAMES
