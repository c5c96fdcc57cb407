"""Per-sample gradient norms: vmap equals the reference code's per-sample loop."""

import pytest
import torch
from torch import nn

from napari_ktal.core.strategies.gradnorm import entropy_loss, expected_loss, per_sample_grad_norms


@pytest.mark.parametrize("loss_fn", [expected_loss, entropy_loss])
def test_vmap_gradnorm_equals_a_per_sample_loop(tiny_net, loss_fn):
    x = torch.randn(4, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    batched = per_sample_grad_norms(tiny_net, x, loss_fn)
    loop = []
    for i in range(len(x)):  # the reference code: batch size 1, eval mode, sum of per-tensor norms
        tiny_net.zero_grad()
        loss_fn(tiny_net(x[i : i + 1]).logits[0]).backward()
        loop.append(sum(p.grad.norm() for p in tiny_net.parameters()))
    tiny_net.zero_grad()
    assert torch.allclose(batched, torch.stack(loop), rtol=1e-5, atol=1e-7)
    assert batched.min() > 0


def test_gradnorm_expected_and_entropy_losses_coincide_and_confident_inputs_score_low():
    z = torch.tensor([2.0, -1.0, 0.5])
    assert expected_loss(z).item() == pytest.approx(entropy_loss(z).item(), rel=1e-6)
    lin = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(3))
    scores = per_sample_grad_norms(lin.eval(), torch.tensor([[20.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), entropy_loss)
    assert scores[0] < 1e-3 * scores[1] and scores[1] > 0.1  # a near one-hot prediction has (almost) no gradient
