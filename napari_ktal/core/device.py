"""Choosing the compute device: only devices that actually work are offered."""

from __future__ import annotations

import warnings

import torch

from .errors import KtalError


def _cuda_works(index: int) -> bool:
    try:
        torch.zeros(1, device=f"cuda:{index}").add_(1).item()
        return True
    except Exception:  # a broken driver or a busy/faulty device
        return False


def available_devices() -> list[str]:
    """'auto', every CUDA device that can run a kernel, then 'cpu'."""
    cuda = []
    try:
        if torch.cuda.is_available():
            cuda = [f"cuda:{i}" for i in range(torch.cuda.device_count()) if _cuda_works(i)]
    except Exception:
        cuda = []
    return ["auto", *cuda, "cpu"]


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> the first working CUDA device, else the CPU (with a warning if CUDA is broken)."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        try:
            present = torch.cuda.is_available()
        except Exception:
            present = False
        if present:
            if _cuda_works(0):
                return torch.device("cuda:0")
            warnings.warn("CUDA is installed but does not work here; training on the CPU", RuntimeWarning, stacklevel=2)
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        name = "cuda:0"
    if name.startswith("cuda:") and name[5:].isdigit():
        if not torch.cuda.is_available() or int(name[5:]) >= torch.cuda.device_count():
            raise KtalError(f"device '{name}' is not available here; choose from {', '.join(available_devices())}")
        if not _cuda_works(int(name[5:])):
            raise KtalError(f"device '{name}' is present but cannot run (driver problem?); use --device cpu")
        return torch.device(name)
    raise KtalError(f"unknown device '{name}'; use auto, cpu or cuda:N")
