"""bf16 on the CPU: the quick pair's gradients stay those of float32, to bf16's rounding.

On a CPU with native bf16 (AVX512-BF16; a 2-core AMD EPYC, torch 2.13) oneDNN's bf16 weight
gradient of a 3x3x3 convolution over a 2x2x2 input with 16 or more channels came back non-finite
or wrong by orders of magnitude, and the quick pair's last stage is that case: every bf16 training
of the shipped default ended in NaN with its teacher at chance. These tests hold on any CPU (where
bf16 is emulated they check the guard's logic); on a native-bf16 CPU they are the regression test.
"""

import pytest
import torch

from napari_ktal.core.loop import load_recipe
from napari_ktal.core.models import TRANSFER_LOSSES, build_pair
from napari_ktal.core.models.resnet3d import Conv3d

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _grads(models, x, y, bf16: bool) -> list[torch.Tensor]:
    for m in models:
        m.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        ot, os_ = (m(x) for m in models)
    loss = (torch.nn.functional.cross_entropy(ot.logits.float(), y)
            + torch.nn.functional.cross_entropy(os_.logits.float(), y) + 100 * TRANSFER_LOSSES["at"](os_, ot))
    loss.backward()
    return [p.grad.detach().clone() for m in models for p in m.parameters()]


@pytest.mark.parametrize("side, dtype", [(2, torch.float32), (1, torch.float32), (4, torch.bfloat16)])
def test_a_convolution_over_an_input_smaller_than_its_kernel_runs_in_float32(side, dtype):
    conv = Conv3d(16, 16, 3, padding=1, bias=False)
    x = torch.randn(4, 16, side, side, side)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(x).dtype == dtype
    assert conv(x).dtype == torch.float32  # no autocast: float32 as nn.Conv3d
    assert set(conv.state_dict()) == {"weight"}  # the same weights as nn.Conv3d(..., bias=False)


def test_the_quick_pairs_bf16_gradients_are_float32s_to_rounding():
    torch.manual_seed(0)
    models = build_pair(load_recipe("quick").model, 4)  # width 8, strided stem: 2x2x2 in the last stage
    for m in models:  # as after some training: the residual branches' last BatchNorm starts at zero,
        for bn in m.modules():  # which zeroes their convolutions' gradients
            if isinstance(bn, torch.nn.BatchNorm3d):
                torch.nn.init.uniform_(bn.weight, 0.5, 1.5)
    x, y = torch.randn(8, 1, 32, 32, 32), torch.tensor([0, 1, 2, 3] * 2)
    ref, got = _grads(models, x, y, False), _grads(models, x, y, True)
    for r, g in zip(ref, got):
        assert torch.isfinite(g).all()
        if r.dim() == 5:  # every convolution's weight gradient points where float32's does
            assert r.norm() > 0
            cos = torch.nn.functional.cosine_similarity(r.flatten(), g.flatten(), dim=0)
            assert cos > 0.9, cos
            assert g.norm() < 3 * r.norm()
