"""Choosing the compute device: only devices that actually work are offered."""

from __future__ import annotations

import warnings

import torch

from ..errors import KtalError


def _cuda_works(index: int) -> bool:
    try:
        torch.zeros(1, device=f"cuda:{index}").add_(1).item()
        return True
    except Exception:  # a broken driver or a busy/faulty device
        return False


def available_devices() -> list[str]:
    """'auto', every CUDA device that can run a kernel, then 'cpu'."""
    cuda = []
    if _cuda_present():
        cuda = [f"cuda:{i}" for i in range(_cuda_count()) if _cuda_works(i)]
    return ["auto", *cuda, "cpu"]


def cuda_broken(devices: list[str] | None = None) -> bool:
    """CUDA says it is there, but no device runs a kernel (what 'auto' warns about).

    ``devices``: the result of :func:`available_devices`, if the caller has it already.
    """
    if not _cuda_present():
        return False
    devices = available_devices() if devices is None else devices
    return not any(d.startswith("cuda") for d in devices)


def _cuda_present() -> bool:
    """torch.cuda.is_available(), False where asking fails (a broken driver or runtime)."""
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - any failure to ask means: no usable CUDA
        return False


def _cuda_count() -> int:
    try:
        return int(torch.cuda.device_count())
    except Exception:  # noqa: BLE001 - as above
        return 0


CUDA_BROKEN = "CUDA is installed but does not work here (driver or runtime problem?); computing on the CPU"
AUTO_GPU_INDEX = 0
AUTO_GPU = f"cuda:{AUTO_GPU_INDEX}"  # what 'auto' (and a bare 'cuda') takes when it works


def parse_device(name: str | None) -> str:
    """A device name as ``--device`` takes it (auto, cpu, cuda, cuda:N; any case, None for auto) in
    its canonical form ('cuda' is 'cuda:0'); KtalError for anything else. Says nothing of whether it works."""
    name = (name or "auto").strip().lower()
    if name == "cuda":
        return AUTO_GPU
    if name in ("auto", "cpu") or (name.startswith("cuda:") and name[5:].isdigit()):
        return name
    raise KtalError(f"unknown device '{name}'; use auto, cpu or cuda:N")


def auto_device(devices: list[str]) -> str:
    """The device 'auto' computes on, given :func:`available_devices`' list (the rule of :func:`resolve_device`)."""
    return AUTO_GPU if AUTO_GPU in devices else "cpu"


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> the first CUDA device if it works, else the CPU (with a warning if CUDA is broken)."""
    name = parse_device(name)
    if name == "auto":
        if _cuda_present():
            if _cuda_works(AUTO_GPU_INDEX):
                return torch.device(AUTO_GPU)
            warnings.warn(CUDA_BROKEN, RuntimeWarning, stacklevel=2)
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda:"):
        if not _cuda_present() or int(name[5:]) >= _cuda_count():
            raise KtalError(f"device '{name}' is not available here; choose from {', '.join(available_devices())}")
        if not _cuda_works(int(name[5:])):
            raise KtalError(f"device '{name}' is present but cannot run (driver problem?); use --device cpu")
    return torch.device(name)
