"""Learning loss (LL4AL): the head, its ranking loss, its training with the teacher, its query."""

import math

import numpy as np
import pytest
import torch

from napari_ktal.core.engine import TrainJob, train_pair
from napari_ktal.core.errors import KtalError
from napari_ktal.core.models import build_pair, pooled_stages
from napari_ktal.core.recipe import TrainSpec
from napari_ktal.core.strategies import STRATEGIES
from napari_ktal.core.strategies.lloss import (
    LossPredictionHead,
    Options,
    build_head,
    loss_ranking_loss,
)


def test_head_shape_and_ranking_loss_by_hand(tiny_net):
    head = LossPredictionHead(tiny_net.stage_channels, hidden=4)
    out = tiny_net(torch.randn(3, 1, 16, 16, 16))
    assert tiny_net.stage_channels == [2, 4, 8, 16] and head(out.stages).shape == (3,)
    # the query's path (pooled stages, from a pass over the pool) predicts what the training path does
    assert torch.allclose(head.from_pooled(pooled_stages(out)), head(out.stages), atol=1e-6)
    pred, true = torch.tensor([0.5, 0.0, 0.2, 1.0]), torch.tensor([2.0, 1.0, 3.0, 0.0])
    # pairs (0,3): d_pred -0.5, true 0 > 3 -> max(0, 1 + 0.5) = 1.5; (1,2): d_pred -0.2, true 1 < 2 -> 0.8
    assert loss_ranking_loss(pred, true, margin=1.0).item() == pytest.approx((1.5 + 0.8) / 2)
    # an odd batch leaves the middle sample out; a single sample has no pair
    assert loss_ranking_loss(torch.tensor([0.5, 9.0, 1.0]), torch.tensor([2.0, 5.0, 0.0])).item() == pytest.approx(1.5)
    assert loss_ranking_loss(torch.tensor([1.0]), torch.tensor([1.0])).item() == 0.0


def test_gradient_reaches_the_teacher_only_before_the_detach_epoch(tiny_net):
    head = build_head(tiny_net, TrainSpec(epochs=10, lr_milestones=[]), Options(detach_fraction=0.6))
    assert head.detach_epoch == 6
    out = tiny_net(torch.randn(4, 1, 16, 16, 16))
    ce = torch.tensor([3.0, 1.0, 2.0, 0.0])
    stages = tuple(s.detach().requires_grad_() for s in out.stages)
    fake = out._replace(stages=stages)
    head.loss(head(*head.inputs(fake, epoch=5)), ce).backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in stages)
    stages = tuple(s.detach().requires_grad_() for s in out.stages)
    fake = out._replace(stages=stages)
    head.loss(head(*head.inputs(fake, epoch=6)), ce).backward()
    assert all(s.grad is None for s in stages)


def test_the_head_is_rebuilt_from_its_config(tiny_net, tiny):
    head = build_head(tiny_net, tiny.train, Options(weight=2.0))
    copy = head.fresh_copy()
    assert type(copy) is LossPredictionHead and copy.config == head.config and copy.weight == 2.0


def test_training_trains_the_head_with_the_teacher(tiny):
    torch.manual_seed(0)
    t, s = build_pair(tiny.model, 3)
    head = build_head(t, tiny.train, Options())
    before = [p.detach().clone() for p in head.parameters()]
    x = np.random.default_rng(0).normal(size=(8, 16, 16, 16)).astype(np.float32)
    res = train_pair(t, s, x, np.arange(8) % 3, TrainJob(tiny.train, tiny.transfer), head=head,
                     device=torch.device("cpu"))
    assert any(not torch.equal(a, b) for a, b in zip(before, head.parameters()))
    assert math.isfinite(res.teacher_loss)


def test_the_query_needs_the_head(query_context, tiny):
    with pytest.raises(KtalError, match="loss-prediction head"):
        STRATEGIES["lloss"](query_context, np.arange(2, 12), 4)
    query_context.head = build_head(query_context.teacher, tiny.train, Options())
    sel = STRATEGIES["lloss"](query_context, np.arange(2, 12), 4)
    assert len(set(sel.indices.tolist())) == 4 and np.all(np.diff(sel.scores) <= 0)


def test_options_are_read_from_the_recipe():
    strategy = STRATEGIES["lloss"]
    assert strategy.parse_options({"margin": 0.5}).margin == 0.5
    with pytest.raises(Exception, match="active.options.lloss.detach_fraction"):
        strategy.parse_options({"detach_fraction": 2.0})
