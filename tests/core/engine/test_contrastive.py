"""Contrastive pretraining: the loss, the views, and the student taken from the teacher."""

import numpy as np
import pytest
import torch

from napari_ktal.core.data import ArraySource
from napari_ktal.core.engine.contrastive import augment, nt_xent, pretrain_encoder, student_state_from_teacher
from napari_ktal.core.models import ResNet3D
from napari_ktal.core.progress import RunContext
from napari_ktal.core.recipe import PretrainSpec, SpeedSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_nt_xent_is_low_when_views_match_and_high_when_they_are_shuffled():
    z = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    matched = nt_xent(z, z + 0.01 * torch.randn_like(z), 0.1)
    shuffled = nt_xent(z, z[torch.randperm(16, generator=torch.Generator().manual_seed(1))], 0.1)
    assert matched < 0.1 < shuffled


def test_views_keep_shape_and_differ():
    x = torch.randn(3, 1, 16, 16, 16)
    gen = torch.Generator().manual_seed(0)
    a, b = augment(x, gen, 2, 0.5), augment(x, gen, 2, 0.5)
    assert a.shape == x.shape and not torch.allclose(a, b)
    clean = augment(x, torch.Generator().manual_seed(3), 0, 0.0)  # flips and contrast only
    assert torch.allclose(clean.abs().sum(dim=(1, 2, 3, 4)) / x.abs().sum(dim=(1, 2, 3, 4)),
                          clean.abs().amax(dim=(1, 2, 3, 4)) / x.abs().amax(dim=(1, 2, 3, 4)), rtol=1e-4)


def test_the_student_starts_from_the_teachers_first_block_of_each_stage():
    teacher, student = ResNet3D(18, 3, width=2, stem="strided"), ResNet3D(10, 3, width=2, stem="strided")
    state = student_state_from_teacher(teacher.state_dict(), student)
    student.load_state_dict(state, strict=False)
    assert torch.equal(student.stages[2][0].conv1.weight, teacher.stages[2][0].conv1.weight)
    assert torch.equal(student.stem[0].weight, teacher.stem[0].weight)
    assert not any(k.startswith("fc.") for k in state)


def test_a_few_pretraining_epochs_run_and_change_the_encoder():
    torch.manual_seed(0)
    encoder = ResNet3D(18, 2, width=2, stem="strided")
    before = encoder.stem[0].weight.detach().clone()
    vols = np.random.default_rng(0).normal(size=(12, 16, 16, 16)).astype(np.float32)
    events = []
    res = pretrain_encoder(encoder, ArraySource(vols), PretrainSpec(method="simclr", epochs=2, batch_size=6),
                           torch.device("cpu"), seed=0, run=RunContext(events.append))
    assert res.epochs == 2 and np.isfinite(res.loss) and res.volumes == 12
    assert not torch.equal(before, encoder.stem[0].weight)
    assert [e.epoch for e in events if e.metrics] == [1, 2]


def test_pretraining_compiles_the_encoder_when_the_recipe_asks(monkeypatch):
    """[speed] compile = true reaches pretraining as it reaches training (torch.compile stubbed:
    compiling for real takes minutes; the stub runs the module as it is)."""
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda m: compiled.append(m) or m)
    encoder = ResNet3D(18, 2, width=2, stem="strided")
    vols = np.random.default_rng(0).normal(size=(8, 16, 16, 16)).astype(np.float32)
    spec = PretrainSpec(method="simclr", epochs=1, batch_size=4)
    pretrain_encoder(encoder, ArraySource(vols), spec, torch.device("cpu"), seed=0)
    assert compiled == []
    pretrain_encoder(encoder, ArraySource(vols), spec, torch.device("cpu"), seed=0,
                     speed=SpeedSpec(precision="fp32", compile=True))
    assert compiled == [encoder]
