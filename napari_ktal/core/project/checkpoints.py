"""checkpoints/cycle_NNN/: a cycle's teacher and student, as state dicts and a meta.json.

meta.json is written last: a folder without it is incomplete and ignored. Checkpoints are
loaded with ``torch.load(weights_only=True)``: only tensors are ever unpickled, and a file
holding anything else is refused, not run. torch is imported only here, where models are
saved or loaded, so opening a project for labeling stays fast.
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import atomic_open, atomic_write_text, fsync_dir
from ..errors import ProjectError
from ..recipe import ModelSpec
from .paths import CYCLE_NAME

if TYPE_CHECKING:
    import torch

    from ..models import ResNet3D

ARCHITECTURE_KEYS = ("teacher_depth", "student_depth", "width", "stem")  # what a state dict's shapes depend on
META = "meta.json"


def save_models(folder: Path, cycle: int, teacher: ResNet3D, student: ResNet3D, classes: list[str],
                model_spec: dict, student_trained: bool = True) -> None:
    """Teacher, student and meta.json (cycle, classes, model, and ``student_trained``: False when the
    cycle's strategy did not read the student, which was then saved as initialised)."""
    import torch

    # a folder re-written (the cycle is trained again after a kill or a cancel) is incomplete
    # from here on until its new meta.json lands: never a new teacher beside an old student
    meta_path = folder / META
    if meta_path.exists():
        meta_path.unlink()
        fsync_dir(folder)
    for name, model in (("teacher", teacher), ("student", student)):
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        with atomic_open(folder / f"{name}.pt", "wb") as f:
            torch.save(state, f)
    meta = {"cycle": cycle, "classes": classes, "model": model_spec, "student_trained": student_trained}
    atomic_write_text(meta_path, json.dumps(meta, indent=2))  # last: the folder is complete now


def complete_cycles(checkpoints: Path) -> list[int]:
    """Cycles whose checkpoint folder has its meta.json (committed or not: see ``Project``)."""
    found = (CYCLE_NAME.match(p.parent.name) for p in checkpoints.glob(f"cycle_*/{META}"))
    return sorted(int(m.group(1)) for m in found if m)


def read_meta(folder: Path) -> dict | None:
    """The meta.json of the checkpoint in ``folder`` (None when it is missing or damaged)."""
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def load_models(folder: Path, device: str | torch.device = "cpu", expect_model: ModelSpec | None = None
                ) -> tuple[ResNet3D, ResNet3D, dict]:
    """The (teacher, student, meta) saved in ``folder``.

    ``expect_model``: the architecture the caller will copy the weights into (a warm start);
    a checkpoint of another architecture is refused with a ProjectError naming the keys.
    """
    import torch

    from ..models import ResNet3D, ResNetConfig

    meta_path = folder / META
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        spec, n = meta["model"], len(meta["classes"])
        common = dict(n_classes=n, width=int(spec["width"]), stem=str(spec["stem"]),
                      dropout=float(spec.get("dropout", 0.0)))
        depths = (("teacher", int(spec["teacher_depth"])), ("student", int(spec["student_depth"])))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProjectError(f"{meta_path}: damaged ({type(exc).__name__}: {exc}); "
                           f"delete the folder {folder.name} to train that cycle again") from None
    if expect_model is not None:
        require_architecture(folder, spec, expect_model)
    models = []
    for name, depth in depths:
        path = folder / f"{name}.pt"
        try:
            model = ResNet3D.from_config(ResNetConfig(depth, **common))
        except (ValueError, KeyError, TypeError) as exc:
            raise ProjectError(f"{meta_path}: describes a model that cannot be built ({exc})") from None
        try:
            with warnings.catch_warnings():  # torch's notes on foreign pickle protocols
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            found = next((ln.strip() for ln in str(exc).splitlines() if "Unsupported" in ln), "")
            raise ProjectError(
                f"{path}: refused: it holds more than tensors and was not loaded"
                + (f" ({found[:160]})" if found else "")
                + "; napari-ktal never writes such files: do not trust it, delete the folder "
                f"{folder.name} to train that cycle again") from None
        except FileNotFoundError:
            raise ProjectError(f"{path}: missing; delete the folder {folder.name} to train that cycle again") from None
        except Exception as exc:  # noqa: BLE001 - a torn or foreign file: torch reports it in many ways
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            raise ProjectError(f"{path}: damaged or not a checkpoint ({first}); "
                               f"delete the folder {folder.name} to train that cycle again") from None
        try:
            if not isinstance(state, dict):
                raise TypeError(f"holds a {type(state).__name__}, not a state dict")
            model.load_state_dict(state)
        except (RuntimeError, TypeError, ValueError, KeyError) as exc:
            raise ProjectError(f"{path}: does not match its meta.json or is damaged "
                               f"({str(exc).splitlines()[0][:200]})") from None
        models.append(model.to(device).eval())
    return models[0], models[1], meta


def check_architecture(folder: Path, expect: ModelSpec) -> None:
    """Raise ProjectError now if the checkpoint in ``folder`` cannot be copied into ``expect``.

    What :func:`load_models` with ``expect_model`` would find out only when a cycle begins; a
    damaged meta.json is left for :func:`load_models` to name.
    """
    try:
        spec = json.loads((folder / META).read_text(encoding="utf-8"))["model"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    require_architecture(folder, spec, expect)


def require_architecture(folder: Path, spec, expect: ModelSpec) -> None:
    have = {k: spec.get(k) if isinstance(spec, dict) else None for k in ARCHITECTURE_KEYS}
    want = {k: getattr(expect, k) for k in ARCHITECTURE_KEYS}
    diff = [k for k in ARCHITECTURE_KEYS if want[k] != have[k]]
    if diff:
        raise ProjectError(
            f"{folder}: trained with [model] " + ", ".join(f"{k} = {have[k]!r}" for k in diff)
            + " but the recipe asks for " + ", ".join(f"{k} = {want[k]!r}" for k in diff)
            + "; its weights cannot be carried over (set [active] reinit_each_cycle = true to train "
            "from scratch, or restore the recipe's [model])"
        )


def save_state(folder: Path, name: str, state: dict, meta: dict) -> None:
    """``state`` (tensors) as ``name``.pt and ``meta`` as meta.json, written last (the folder is
    complete only then), e.g. the pretrained encoder."""
    import torch

    meta_path = folder / META
    if meta_path.exists():
        meta_path.unlink()
        fsync_dir(folder)
    with atomic_open(folder / f"{name}.pt", "wb") as f:
        torch.save({k: v.detach().cpu() for k, v in state.items()}, f)
    atomic_write_text(meta_path, json.dumps(meta, indent=2))


def load_state(folder: Path, name: str) -> tuple[dict, dict] | None:
    """(state, meta) saved by :func:`save_state`, or None if the folder is incomplete or damaged."""
    import torch

    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(folder / f"{name}.pt", map_location="cpu", weights_only=True)
    except (OSError, ValueError, pickle.UnpicklingError, RuntimeError, EOFError):
        return None
    return (state, meta) if isinstance(state, dict) and isinstance(meta, dict) else None
