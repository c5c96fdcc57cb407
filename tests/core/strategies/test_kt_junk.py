"""kt-junk: the knowledge-transfer score weighed by the teacher's probability of not being junk,
on a constructed case where plain kt would spend the batch on junk."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from napari_ktal.core.data import ArraySource
from napari_ktal.core.models import ModelOutput
from napari_ktal.core.strategies import STRATEGIES, QueryContext
from napari_ktal.core.strategies.kt_junk import Options, in_distribution_p_value, not_junk_probability


class TableNet(nn.Module):
    """Logits looked up by volume: volume i is filled with the value i."""

    def __init__(self, logits):
        super().__init__()
        self.table = nn.Parameter(torch.as_tensor(logits, dtype=torch.float32), requires_grad=False)

    def forward(self, x):
        i = x.mean(dim=(1, 2, 3, 4)).round().long()
        logits = self.table[i]
        return ModelOutput(logits, (x,), logits)


def _case():
    """3 classes, class 2 is junk. Volumes 0-3: junk the teacher recognises (p_junk 0.9) on which the
    student disagrees strongly; 4-7: particles with a moderate disagreement."""
    t = np.zeros((8, 3))
    s = np.zeros((8, 3))
    t[:4] = np.log([0.05, 0.05, 0.9])
    s[:4] = np.log([0.45, 0.45, 0.1])  # KL(t || s) ~ 1.76
    t[4:] = np.log([0.8, 0.15, 0.05])
    s[4:] = np.log([0.3, 0.65, 0.05])  # KL ~ 0.56: a third of the junk's, but 95% particle
    vols = np.repeat(np.arange(8, dtype=np.float32), 8**3).reshape(8, 8, 8, 8)
    return QueryContext(TableNet(t), TableNet(s), ArraySource(vols), np.empty(0, np.int64), torch.device("cpu"),
                        np.random.default_rng(0), junk_class=2)


def test_plain_kt_takes_the_junk_and_kt_junk_the_particles():
    ctx = _case()
    kt = STRATEGIES["kt"](ctx, np.arange(8), 4)
    assert sorted(kt.indices.tolist()) == [0, 1, 2, 3]
    sel = STRATEGIES["kt-junk"](ctx, np.arange(8), 4, Options())
    assert sorted(sel.indices.tolist()) == [4, 5, 6, 7] and np.all(np.diff(sel.scores) <= 0)
    # power 0 is plain kt; without a junk class there is nothing to weigh
    assert sorted(STRATEGIES["kt-junk"](ctx, np.arange(8), 4, Options(power=0.0)).indices) == [0, 1, 2, 3]
    no_junk = dataclasses.replace(ctx, junk_class=None)
    assert sorted(STRATEGIES["kt-junk"](no_junk, np.arange(8), 4).indices) == [0, 1, 2, 3]


def test_the_pareto_mode_takes_what_dominates_on_both_counts():
    ctx = _case()
    ctx.student.table.data[4:6] = torch.log(torch.tensor([0.02, 0.93, 0.05]))  # 4, 5: KL ~ 2.6, above the junk's
    sel = STRATEGIES["kt-junk"](ctx, np.arange(8), 2, Options(mode="pareto"))
    assert sorted(sel.indices.tolist()) == [4, 5] and np.all(np.diff(sel.scores) <= 0)


def test_the_product_score_is_kt_times_the_probability_of_no_junk():
    ctx = _case()
    sel = STRATEGIES["kt-junk"](ctx, np.arange(8), 8)
    kt = STRATEGIES["kt"](ctx, np.arange(8), 8)
    kt_by_index = dict(zip(kt.indices.tolist(), kt.scores))
    for i, score in zip(sel.indices.tolist(), sel.scores):
        assert score == pytest.approx(kt_by_index[i] * (0.1 if i < 4 else 0.95), rel=1e-5)


def test_helpers_on_constructed_values():
    logits = torch.log(torch.tensor([[0.2, 0.3, 0.5], [0.7, 0.2, 0.1]]))
    assert not_junk_probability(logits, 2) == pytest.approx([0.5, 0.9])
    assert not_junk_probability(logits, None) == pytest.approx([1.0, 1.0])
    labeled = [0.0, 1.0, 2.0, 3.0]  # OOD scores of the labeled particles
    # farther than all: 1/5; nearer than all: 5/5; between: counts the labeled scores at or above it
    assert in_distribution_p_value([9.0, -1.0, 1.5, 2.0], labeled) == pytest.approx([0.2, 1.0, 0.6, 0.6])


def test_the_ood_weight_pushes_a_planted_outlier_down(query_context):
    vols = np.random.default_rng(1).normal(size=(12, 16, 16, 16)).astype(np.float32)
    vols[9] = vols[9] * 25 + 10
    ctx = dataclasses.replace(query_context, source=ArraySource(vols), labeled=np.arange(6),
                              labels=np.array([0, 0, 1, 1, 0, 1]), junk_class=None)
    full = STRATEGIES["kt-junk"](ctx, np.arange(6, 12), 6, Options())
    weighted = STRATEGIES["kt-junk"](ctx, np.arange(6, 12), 6, Options(ood=True))
    rank = {i: r for r, i in enumerate(weighted.indices.tolist())}
    assert rank[9] == 5 or weighted.scores[rank[9]] <= dict(zip(full.indices, full.scores))[9] / 6
    assert STRATEGIES["kt-junk"].parse_options({"mode": "pareto"}).mode == "pareto"
    with pytest.raises(Exception, match="active.options.kt-junk.mode"):
        STRATEGIES["kt-junk"].parse_options({"mode": "sum"})
