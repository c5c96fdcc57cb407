"""Training recipes: what a cycle trains, how, and how the labeled set grows.

A recipe is a small TOML file (see ``models/*.toml``) with four tables::

    [model]    teacher/student depth and width, stem
    [transfer] knowledge-transfer loss, its weight lambda, the scoring distance
    [train]    optimizer, lr schedule, epochs, batch size, augmentation
    [active]   strategy, initial fraction, step, final budget, subset factor, re-init

Every key is checked: an unknown key (a typo) or an out-of-range value raises
:class:`RecipeError` naming the key, so a recipe never silently runs with defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, get_origin, get_type_hints

from .errors import RecipeError


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise RecipeError(f"recipe key '{key}': {msg}")


@dataclass(frozen=True)
class ModelSpec:
    """The teacher/student pair. Depths are ResNet depths: 18 -> [2,2,2,2], 10 -> [1,1,1,1]."""

    teacher_depth: int = 18
    student_depth: int = 10
    width: int = 64  # channels of the first stage; stages have width, 2w, 4w, 8w
    stem: str = "cifar"  # "cifar": 3x3x3 stride 1 (32^3 input); "strided": 3x3x3 stride 2
    dropout: float = 0.0  # before the classifier; MC-dropout strategies turn it on

    def validate(self, section: str = "model") -> None:
        from .models.resnet3d import DEPTHS

        _check(self.teacher_depth in DEPTHS, f"{section}.teacher_depth", f"must be one of {sorted(DEPTHS)}")
        _check(self.student_depth in DEPTHS, f"{section}.student_depth", f"must be one of {sorted(DEPTHS)}")
        _check(1 <= self.width <= 512, f"{section}.width", "must be between 1 and 512")
        _check(self.stem in ("cifar", "strided"), f"{section}.stem", "must be 'cifar' or 'strided'")
        _check(0.0 <= self.dropout < 1.0, f"{section}.dropout", "must be in [0, 1)")


@dataclass(frozen=True)
class TransferSpec:
    """Knowledge transfer from teacher to student and how the pair scores uncertainty."""

    loss: str = "at"  # attention transfer (the paper); "mse", "l1" on features; "kl" on posteriors
    weight: float = 100.0  # lambda in L_student = CE + lambda * L_trans
    score: str = "kl"  # KL(softmax T || softmax S); "js"; "mse"

    def validate(self, section: str = "transfer") -> None:
        from .models.distances import DISTANCES
        from .models.transfer import TRANSFER_LOSSES

        _check(self.loss in TRANSFER_LOSSES, f"{section}.loss", f"must be one of {sorted(TRANSFER_LOSSES)}")
        _check(self.weight >= 0, f"{section}.weight", "must be >= 0")
        _check(self.score in DISTANCES, f"{section}.score", f"must be one of {sorted(DISTANCES)}")


@dataclass(frozen=True)
class TrainSpec:
    """One cycle's optimisation, applied identically to teacher and student."""

    optimizer: str = "sgd"  # "sgd" or "adamw"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 100
    lr_milestones: list[int] = field(default_factory=lambda: [80])  # epochs where lr *= lr_gamma
    lr_gamma: float = 0.1
    batch_size: int = 128
    augment: str = "flips"  # "flips": random flips of z, y, x (keeps the missing wedge); "none"
    eval_batch_size: int = 256

    def validate(self, section: str = "train") -> None:
        _check(self.optimizer in ("sgd", "adamw"), f"{section}.optimizer", "must be 'sgd' or 'adamw'")
        _check(0 < self.lr <= 10, f"{section}.lr", "must be in (0, 10]")
        _check(0 <= self.momentum < 1, f"{section}.momentum", "must be in [0, 1)")
        _check(0 <= self.weight_decay < 1, f"{section}.weight_decay", "must be in [0, 1)")
        _check(1 <= self.epochs <= 10_000, f"{section}.epochs", "must be between 1 and 10000")
        _check(
            all(isinstance(m, int) and 0 < m < self.epochs for m in self.lr_milestones)
            and list(self.lr_milestones) == sorted(self.lr_milestones),
            f"{section}.lr_milestones",
            f"must be increasing whole epochs between 1 and epochs-1 ({self.epochs - 1})",
        )
        _check(0 < self.lr_gamma <= 1, f"{section}.lr_gamma", "must be in (0, 1]")
        _check(2 <= self.batch_size <= 65_536, f"{section}.batch_size", "must be between 2 and 65536")
        _check(self.augment in ("flips", "none"), f"{section}.augment", "must be 'flips' or 'none'")
        _check(1 <= self.eval_batch_size <= 65_536, f"{section}.eval_batch_size", "must be between 1 and 65536")


@dataclass(frozen=True)
class ActiveSpec:
    """The budget schedule and the query strategy (fractions of the pool)."""

    strategy: str = "kt"
    initial_fraction: float = 0.10
    step_fraction: float = 0.05
    final_fraction: float = 0.40
    subset_factor: float = 10.0  # score a random subset of ~subset_factor * M unlabeled volumes
    reinit_each_cycle: bool = True  # train from scratch every cycle (the paper); False warm-starts
    # options of individual strategies (ignored by the others)
    mc_passes: int = 20  # bald: stochastic forward passes (dropout before the classifier)
    mc_dropout: float = 0.5  # bald: dropout rate used when [model] dropout is 0 (test-time only)
    noise_passes: int = 30  # noise-stability: K noisy copies of the teacher (the paper uses 30-50)
    noise_scale: float = 0.001  # noise-stability: ||noise|| = noise_scale * ||W|| for each layer's weight
    gradnorm_batch_size: int = 16  # gradnorm-*: samples per vmap call (memory ~ this x model size)
    lloss_weight: float = 1.0  # lloss: lambda of the loss-prediction ranking loss
    lloss_margin: float = 1.0  # lloss: margin of the ranking loss
    lloss_detach_fraction: float = 0.6  # lloss: features are detached after this fraction of epochs

    def validate(self, section: str = "active") -> None:
        from .strategies.registry import STRATEGIES

        _check(self.strategy in STRATEGIES, f"{section}.strategy", f"must be one of {', '.join(STRATEGIES)}")
        _check(1 <= self.mc_passes <= 1000, f"{section}.mc_passes", "must be between 1 and 1000")
        _check(0 < self.mc_dropout < 1, f"{section}.mc_dropout", "must be in (0, 1)")
        _check(1 <= self.noise_passes <= 1000, f"{section}.noise_passes", "must be between 1 and 1000")
        _check(0 < self.noise_scale <= 1, f"{section}.noise_scale", "must be in (0, 1]")
        _check(1 <= self.gradnorm_batch_size <= 4096, f"{section}.gradnorm_batch_size", "must be between 1 and 4096")
        _check(self.lloss_weight >= 0, f"{section}.lloss_weight", "must be >= 0")
        _check(self.lloss_margin >= 0, f"{section}.lloss_margin", "must be >= 0")
        _check(0 <= self.lloss_detach_fraction <= 1, f"{section}.lloss_detach_fraction", "must be in [0, 1]")
        _check(0 < self.initial_fraction <= 1, f"{section}.initial_fraction", "must be in (0, 1]")
        _check(0 < self.step_fraction <= 1, f"{section}.step_fraction", "must be in (0, 1]")
        _check(
            self.initial_fraction <= self.final_fraction <= 1,
            f"{section}.final_fraction",
            "must be between initial_fraction and 1",
        )
        _check(self.subset_factor >= 1, f"{section}.subset_factor", "must be >= 1")


@dataclass(frozen=True)
class Recipe:
    name: str = "custom"
    description: str = ""
    model: ModelSpec = field(default_factory=ModelSpec)
    transfer: TransferSpec = field(default_factory=TransferSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    active: ActiveSpec = field(default_factory=ActiveSpec)

    def validate(self) -> Recipe:
        self.model.validate()
        self.transfer.validate()
        self.train.validate()
        self.active.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **sections: dict[str, Any]) -> Recipe:
        """A copy with some keys changed, e.g. ``recipe.replace(train={"epochs": 5})``."""
        data = self.to_dict()
        for section, values in sections.items():
            _check(isinstance(data.get(section), dict), section, "is not a recipe table")
            data[section].update(values)
        return recipe_from_dict(data)


_SECTIONS = {"model": ModelSpec, "transfer": TransferSpec, "train": TrainSpec, "active": ActiveSpec}


def _unknown_key(key: str, known: list[str], where: str) -> RecipeError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(known)}"
    return RecipeError(f"recipe key '{where}{key}' is not known{hint}")


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Check a TOML value against a dataclass field type; ints are accepted for floats."""
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is float and isinstance(value, float):
        _check(math.isfinite(value), key, f"must be a finite number, got {value!r}")
    if get_origin(typ) is list:
        _check(isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value),
               key, "must be a list of whole numbers")
        return list(value)
    ok = isinstance(value, typ) and not (typ in (int, float) and isinstance(value, bool))
    _check(ok, key, f"must be a {getattr(typ, '__name__', typ)}, got {value!r}")
    return value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in known:
            raise _unknown_key(key, known, where)
        kwargs[key] = _coerce(value, hints[key], f"{where}{key}")
    return cls(**kwargs)


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    """Build and validate a recipe from a TOML-shaped dict; unknown keys are errors."""
    top_known = ["name", "description", *_SECTIONS]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in top_known:
            raise _unknown_key(key, top_known, "")
        if key in _SECTIONS:
            _check(isinstance(value, dict), key, "must be a table")
            kwargs[key] = _build(_SECTIONS[key], value, f"{key}.")
        else:
            kwargs[key] = _coerce(value, str, key)
    return Recipe(**kwargs).validate()


def builtin_recipe_dir() -> Path:
    """The shipped recipes: inside the installed package, or ``models/`` of a source checkout."""
    packaged = resources.files("napari_ktal") / "models"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "models"


def builtin_recipes() -> list[str]:
    return sorted(p.stem for p in builtin_recipe_dir().glob("*.toml"))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Load a recipe by shipped name (``quick``) or by path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix != ".toml" and not path.exists():
        path = builtin_recipe_dir() / f"{name_or_path}.toml"
        if not path.exists():
            raise RecipeError(
                f"no recipe named '{name_or_path}'; shipped recipes: {', '.join(builtin_recipes())}, "
                "or give the path of a .toml file"
            )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe file not found") from None
    except OSError as exc:
        raise RecipeError(f"{path}: recipe file cannot be read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: not valid TOML ({exc})") from None
    data.setdefault("name", path.stem)
    try:
        return recipe_from_dict(data)
    except RecipeError as exc:
        raise RecipeError(f"{path}: {exc}") from None
