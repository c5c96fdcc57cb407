"""Devices: only those that work are offered; with no CUDA, or a broken CUDA install, 'auto'
computes on the CPU and says so, and explicit CUDA is refused."""

from __future__ import annotations

import warnings

import pytest
import torch

from napari_ktal.cli import main
from napari_ktal.core.engine import device
from napari_ktal.core.engine.device import (
    CUDA_BROKEN,
    auto_device,
    available_devices,
    cuda_broken,
    parse_device,
    resolve_device,
)
from napari_ktal.core.errors import KtalError


def test_devices_offered_work():
    devices = available_devices()
    assert devices[0] == "auto" and devices[-1] == "cpu"
    for d in devices:
        torch.zeros(1, device=resolve_device(d))
    with pytest.raises(KtalError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(KtalError, match="not available"):
            resolve_device("cuda:0")


def test_device_names_as_the_cli_takes_them():
    assert [parse_device(n) for n in (None, "", " Auto ", "CPU", "cuda", "cuda:1")] == [
        "auto", "auto", "auto", "cpu", "cuda:0", "cuda:1"]
    for bad in ("tpu", "cuda:", "cuda:x", "gpu"):
        with pytest.raises(KtalError, match="unknown device"):
            parse_device(bad)
    assert auto_device(["auto", "cpu"]) == "cpu" and auto_device(["auto", "cuda:0", "cuda:1", "cpu"]) == "cuda:0"
    assert auto_device(available_devices()) == str(resolve_device("auto"))


@pytest.fixture
def broken_cuda(monkeypatch):
    """CUDA reports one device, and the probe (a tiny kernel) fails on it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(device, "_cuda_works", lambda index: False)


@pytest.fixture
def raising_cuda(monkeypatch):
    """Asking whether CUDA is there raises (a driver/runtime mismatch)."""

    def boom():
        raise RuntimeError("CUDA driver initialization failed")

    monkeypatch.setattr(torch.cuda, "is_available", boom)
    monkeypatch.setattr(torch.cuda, "device_count", boom)


def test_auto_falls_back_to_cpu_with_a_warning_when_cuda_is_broken(broken_cuda):
    with pytest.warns(RuntimeWarning, match="CUDA is installed but does not work"):
        assert resolve_device("auto") == torch.device("cpu")
    assert available_devices() == ["auto", "cpu"]
    assert cuda_broken()
    with pytest.raises(KtalError, match="cannot run.*--device cpu"):
        resolve_device("cuda:0")
    with pytest.raises(KtalError, match="not available"):
        resolve_device("cuda:1")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the real probe would succeed on a working GPU")
def test_the_real_probe_fails_here_and_auto_still_gives_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # claims a GPU this torch cannot use
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.warns(RuntimeWarning, match="CUDA is installed"):
        assert resolve_device("auto").type == "cpu"
    assert available_devices() == ["auto", "cpu"]


def test_a_raising_cuda_query_means_no_cuda(raising_cuda):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: CUDA is simply not there
        assert resolve_device("auto") == torch.device("cpu")
    assert available_devices() == ["auto", "cpu"]
    assert not cuda_broken()
    with pytest.raises(KtalError, match="not available"):
        resolve_device("cuda")


def test_no_cuda_at_all(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_device("auto") == torch.device("cpu")
        assert resolve_device(None) == torch.device("cpu")
    assert not cuda_broken()


def test_cli_shows_the_fallback_as_one_warning_line(broken_cuda, tmp_path, sim_train_dir, capsys):
    code = main(["train", str(sim_train_dir), "--project", str(tmp_path / "p"), "--device", "auto"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "recipe quick, device cpu" in captured.out or "no labels yet" in captured.out
    warnings_ = [ln for ln in captured.err.splitlines() if ln.startswith("ktal-cryo: warning:")]
    assert warnings_ == [f"ktal-cryo: warning: {CUDA_BROKEN}"], captured.err
    assert "Traceback" not in captured.err
