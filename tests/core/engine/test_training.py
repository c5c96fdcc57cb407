"""Training options: class-balanced loss, BatchNorm statistics recomputed after training."""

import numpy as np
import pytest
import torch

from napari_ktal.core.engine import TrainJob, train_pair
from napari_ktal.core.engine.training import class_weights, recalibrate_batchnorm
from napari_ktal.core.loop import load_recipe
from napari_ktal.core.models import ResNet3D, build_pair

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = load_recipe("quick").replace(model={"width": 2}, train={"min_steps": 0, "epochs": 2, "lr_milestones": [], "batch_size": 8})


def test_class_weights_are_inverse_frequency_over_the_classes_present():
    w = class_weights(torch.tensor([0, 0, 0, 1, 2, 2]), 4)
    assert w.tolist() == pytest.approx([6 / 9, 6 / 3, 6 / 6, 1.0])  # n / (K * n_k) with K = 3 present
    # weighted cross-entropy then gives each present class the same total weight
    counts = torch.tensor([3.0, 1.0, 2.0])
    assert (w[:3] * counts).tolist() == pytest.approx([2.0, 2.0, 2.0])


def test_recalibrated_batchnorm_holds_the_statistics_of_the_labeled_set():
    torch.manual_seed(0)
    model = ResNet3D(10, 3, width=2, stem="strided")
    x = torch.randn(12, 1, 16, 16, 16) * 3 + 5
    bn = model.stem[1]
    assert torch.allclose(bn.running_mean, torch.zeros(2))  # never trained: the defaults
    recalibrate_batchnorm([model], x, torch.device("cpu"), batch_size=4)
    with torch.no_grad():
        pre = model.stem[0](x)  # the stem convolution's output is what the first BatchNorm normalises
    torch.testing.assert_close(bn.running_mean, pre.mean(dim=(0, 2, 3, 4)), rtol=1e-4, atol=1e-4)
    assert model.training  # the mode it had


@pytest.mark.parametrize("options", [{"class_balance": "loss"}, {"recalibrate_bn": True}])
def test_training_with_the_options_runs_and_changes_the_models(options):
    torch.manual_seed(0)
    t, s = build_pair(TINY.model, 3)
    before = [p.detach().clone() for p in s.parameters()]
    x = np.random.default_rng(0).normal(size=(10, 16, 16, 16)).astype(np.float32)
    y = np.array([0] * 6 + [1] * 3 + [2])
    res = train_pair(t, s, x, y, TrainJob(TINY.replace(train=options).train, TINY.transfer), device=torch.device("cpu"))
    assert np.isfinite(res.teacher_loss) and any(not torch.equal(a, b) for a, b in zip(before, s.parameters()))
