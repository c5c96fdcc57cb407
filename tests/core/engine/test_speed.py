"""The recipe's [speed] table: what "auto" picks per device and phase, and that the bf16 path
computes what float32 computes, to bf16's precision, with float32 losses and outputs."""

import numpy as np
import pytest
import torch

from napari_ktal.core.data import ArraySource
from napari_ktal.core.engine import Speed, TrainJob, forward_outputs, native_bf16, resolve_speed, train_pair
from napari_ktal.core.engine import speed as speed_module
from napari_ktal.core.loop import load_recipe
from napari_ktal.core.models import build_pair
from napari_ktal.core.recipe import SpeedSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")
TINY = load_recipe("quick").replace(model={"width": 2}, train={
    "min_steps": 0, "epochs": 8, "lr_milestones": [], "batch_size": 8, "label_smoothing": 0.0})


def _fake_cpu(monkeypatch, bf16: bool, amx: bool = False) -> None:
    # raising: if torch renames its probes, native_bf16 would silently say no; this test must fail then
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


@pytest.mark.parametrize("avx512_bf16, amx", [(True, False), (False, True), (False, False)])
def test_native_bf16_on_the_cpu_is_what_torch_reports_of_avx512_bf16_and_amx(monkeypatch, avx512_bf16, amx):
    _fake_cpu(monkeypatch, avx512_bf16, amx)
    assert native_bf16(CPU) is (avx512_bf16 or amx)
    assert resolve_speed(SpeedSpec(), CPU, "train").bf16 is (avx512_bf16 or amx)
    assert resolve_speed(SpeedSpec(), CPU, "score").bf16 is (avx512_bf16 or amx)


def test_auto_follows_the_measured_table_and_explicit_choices_win(monkeypatch):
    _fake_cpu(monkeypatch, bf16=False)
    assert resolve_speed(None, CPU, "train") == Speed(bf16=False, channels_last=True)
    assert resolve_speed(None, CPU, "score") == Speed(bf16=False, channels_last=False)
    forced = SpeedSpec(precision="bf16", channels_last=False, compile=True)
    assert resolve_speed(forced, CPU, "train") == Speed(bf16=True, channels_last=False, compile=True)
    assert resolve_speed(forced, CPU, "score") == Speed(bf16=True, channels_last=False)  # never compiled to score
    _fake_cpu(monkeypatch, bf16=True)
    assert resolve_speed(SpeedSpec(precision="fp32", channels_last=True), CPU, "score") == Speed(False, True)


@pytest.mark.parametrize("capability, native", [((7, 0), False), ((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_cuda_bf16_counts_as_native_from_ampere_on_not_where_torch_emulates_it(monkeypatch, capability, native):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # torch says yes on a V100 too
    cuda = torch.device("cuda", 0)
    assert native_bf16(cuda) is native
    assert resolve_speed(None, cuda, "train") == Speed(bf16=native, channels_last=False)


def test_the_recipes_speed_reaches_every_pass_of_a_cycle(monkeypatch, new_project, small_recipe):
    """Training, the test set's prediction, the strategy's scoring and the batch's prediction all
    resolve the recipe's [speed], not a default."""
    from napari_ktal.core.engine import inference, training
    from napari_ktal.core.loop import train_cycle

    seen = []

    def spy(spec, device, phase):
        seen.append((spec, phase))
        return speed_module.resolve_speed(spec, device, phase)

    monkeypatch.setattr(training, "resolve_speed", spy)
    monkeypatch.setattr(inference, "resolve_speed", spy)
    wanted = SpeedSpec(precision="fp32", channels_last=True)
    recipe = small_recipe.replace(speed={"precision": "fp32", "channels_last": True})
    project = new_project()
    project.add_classes(["a", "b", "c"])
    project.label_many({i: "abc"[i % 3] for i in range(9)})
    train_cycle(project, recipe, CPU, seed=0)
    assert {phase for _, phase in seen} == {"train", "score"}
    assert all(spec == wanted for spec, _ in seen), seen


def _easy_set(n: int = 24, box: int = 16, seed: int = 0):
    """Two classes a tiny network separates in a few steps: a bright or a dark cube in noise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, box, box, box)).astype(np.float32)
    y = np.arange(n) % 2
    x[:, 4:12, 4:12, 4:12] += np.where(y == 1, 2.0, -2.0)[:, None, None, None]
    return x, y


def _trained(speed: SpeedSpec):
    x, y = _easy_set()
    torch.manual_seed(0)
    t, s = build_pair(TINY.model, 2)
    result = train_pair(t, s, x, y, TrainJob(TINY.train, TINY.transfer, 0, speed=speed), device=CPU)
    return t, s, result, x, y


def test_bf16_training_keeps_float32_weights_and_losses_and_learns_what_fp32_learns():
    t32, s32, r32, x, y = _trained(SpeedSpec(precision="fp32", channels_last=False))
    t16, s16, r16, _, _ = _trained(SpeedSpec(precision="bf16", channels_last=True))
    assert all(p.dtype == torch.float32 for m in (t16, s16) for p in m.parameters())  # autocast, not a cast
    assert all(p.is_contiguous() for m in (t16, s16) for p in m.parameters())  # back in the usual format
    for r in (r32, r16):
        assert np.isfinite([r.teacher_loss, r.student_loss, r.transfer_loss]).all()
    assert r16.teacher_loss == pytest.approx(r32.teacher_loss, rel=0.25, abs=0.05)
    # the weights moved the same way: bf16 rounding perturbs each step a little, nothing more
    a = torch.cat([p.detach().flatten() for p in t32.parameters()])
    b = torch.cat([p.detach().flatten() for p in t16.parameters()])
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.95
    accuracy = []
    for teacher in (t32, t16):
        (logits,) = forward_outputs([teacher], ArraySource(x), np.arange(len(y)), CPU, batch_size=8,
                                    speed=SpeedSpec(precision="fp32"))
        accuracy.append((logits.argmax(1).numpy() == y).mean())
    assert accuracy[0] == 1.0 and accuracy[1] >= 0.9, accuracy


def test_bf16_scoring_returns_float32_close_to_fp32():
    t, s, _, x, _ = _trained(SpeedSpec(precision="fp32", channels_last=False))
    idx = np.arange(len(x))
    ref = forward_outputs([t, s], ArraySource(x), idx, CPU, batch_size=8, speed=SpeedSpec(precision="fp32"))
    for cl in (False, True):
        got = forward_outputs([t, s], ArraySource(x), idx, CPU, batch_size=8,
                              speed=SpeedSpec(precision="bf16", channels_last=cl))
        for r, g in zip(ref, got):
            assert g.dtype == torch.float32
            scale = r.abs().max()
            assert (g - r).abs().max() <= 0.05 * scale  # bf16 keeps 8 bits of mantissa
            assert (g.argmax(1) == r.argmax(1)).float().mean() >= 0.9
        assert all(p.is_contiguous() for m in (t, s) for p in m.parameters())


def test_channels_last_changes_nothing_beyond_float32_rounding():
    t, s, _, x, _ = _trained(SpeedSpec(precision="fp32", channels_last=False))
    idx = np.arange(len(x))
    ref = forward_outputs([t, s], ArraySource(x), idx, CPU, batch_size=8, speed=SpeedSpec("fp32", False))
    got = forward_outputs([t, s], ArraySource(x), idx, CPU, batch_size=8, speed=SpeedSpec("fp32", True))
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)
