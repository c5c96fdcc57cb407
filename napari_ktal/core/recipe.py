"""Training recipes: what a cycle trains, how, and how the labeled set grows.

A recipe is a small TOML file (see ``models/*.toml``) with four tables::

    [model]    teacher/student depth and width, stem
    [transfer] knowledge-transfer loss, its weight lambda, the scoring distance
    [train]    optimizer, lr schedule, epochs, batch size, augmentation
    [active]   strategy, initial fraction, step, final budget, subset factor, re-init
    [active.options.<strategy>]  one table of settings per query strategy ([active.options.bald])
    [pretrain] self-supervised pretraining of the encoder on the pool (optional)
    [speed]    the convolutions' precision and memory format ("auto": the fastest measured)
    [trust]    judging the labels and the model without a test set: the audit slice of each
               batch, the folds of cross-fitting, the stop rule

Every key is checked: an unknown key (a typo) or an out-of-range value raises
:class:`RecipeError` naming the key, so a recipe never silently runs with defaults.

This module is the bottom of the core: it imports nothing of napari-ktal but its errors, so
every layer can read recipes. It knows the names the recipe's fixed tables accept (depths,
stems, transfer losses, scores); the packages that implement them are tested to agree. The
strategies are an open set: :func:`read_recipe` keeps ``[active] strategy`` and the
``[active.options.<strategy>]`` tables as given, and
:func:`napari_ktal.core.strategies.check_recipe` checks them against the registry
(``napari_ktal.core.loop.load_recipe`` does both).

Older recipes wrote strategy settings flat, in ``[active]`` (``mc_passes = 20``) or in one
shared ``[active.options]`` with a prefix per strategy (``autoal_fit_steps = 50``). Such keys
are kept here as flat entries of ``options``; ``check_recipe`` moves each into the table of
the strategies that read it, with a FutureWarning, so projects written by earlier versions
still open (and are written back in the new form).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, get_origin, get_type_hints

import tomli_w

from .errors import RecipeError

#: what the fixed tables accept (the models package implements exactly these)
DEPTHS = (10, 18, 34)  # ResNet depths: 10 -> one BasicBlock per stage, 18 -> two, 34 -> 3/4/6/3
STEMS = ("cifar", "strided")
TRANSFER_LOSS_NAMES = ("at", "mse", "l1", "kl")
DISTANCE_NAMES = ("kl", "js", "mse")
PRECISIONS = ("auto", "bf16", "fp32")
OptionValue = bool | int | float | str | list


def check(cond: bool, key: str, msg: str) -> None:
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
        check(self.teacher_depth in DEPTHS, f"{section}.teacher_depth", f"must be one of {sorted(DEPTHS)}")
        check(self.student_depth in DEPTHS, f"{section}.student_depth", f"must be one of {sorted(DEPTHS)}")
        check(1 <= self.width <= 512, f"{section}.width", "must be between 1 and 512")
        check(self.stem in STEMS, f"{section}.stem", "must be 'cifar' or 'strided'")
        check(0.0 <= self.dropout < 1.0, f"{section}.dropout", "must be in [0, 1)")


@dataclass(frozen=True)
class TransferSpec:
    """Knowledge transfer from teacher to student and how the pair scores uncertainty."""

    loss: str = "at"  # attention transfer (the paper); "mse", "l1" on features; "kl" on posteriors
    weight: float = 100.0  # lambda in L_student = CE + lambda * L_trans
    score: str = "kl"  # KL(softmax T || softmax S); "js"; "mse"

    def validate(self, section: str = "transfer") -> None:
        check(self.loss in TRANSFER_LOSS_NAMES, f"{section}.loss", f"must be one of {sorted(TRANSFER_LOSS_NAMES)}")
        check(self.weight >= 0, f"{section}.weight", "must be >= 0")
        check(self.score in DISTANCE_NAMES, f"{section}.score", f"must be one of {sorted(DISTANCE_NAMES)}")


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
    #: at least this many optimizer steps per cycle: a small labeled set gets more epochs (and the
    #: lr milestones move with them); 0 trains exactly ``epochs`` epochs, as the paper does
    min_steps: int = 0
    #: the step floor of a warm-started cycle ([active] reinit_each_cycle = false, after the first):
    #: it continues from trained weights and may need fewer steps; -1: as ``min_steps``
    warm_min_steps: int = -1
    #: train until the teacher fits: while its mean training loss over the epoch before the first
    #: lr milestone is above this (nats; with its label smoothing, if any), the milestone waits one
    #: more epoch, within ``max_steps`` for the whole cycle; 0: off, the milestones stay put (as
    #: they do in a schedule without milestones)
    fit_loss: float = 0.0
    #: the most optimizer steps a cycle may take when ``fit_loss`` adds epochs
    max_steps: int = 0
    class_balance: str = "none"  # "loss": cross-entropy weighted by inverse class frequency
    #: cross-entropy against (1 - e) one-hot + e uniform (torch's label_smoothing): bounds how far
    #: apart the logits are driven on a few labels, and with them the KL score's scale; 0 is the paper
    label_smoothing: float = 0.0
    #: label smoothing applies only while the labeled set holds fewer than this many volumes per
    #: class (on average); 0: in every cycle. Tens of labels are memorised within a few hundred
    #: steps and leave the pair confidently apart on unseen volumes; later cycles need no cap
    label_smoothing_below: int = 0
    #: whose cross-entropy is smoothed: "both", or "student" alone, which bounds KL(teacher ||
    #: student) (its log-ratio needs the student's probabilities kept off zero) and leaves the
    #: teacher, whose predictions the user sees, trained as in the paper
    label_smoothing_for: str = "both"
    #: after training, recompute the BatchNorm statistics over the labeled set (train mode, no
    #: gradient): short, steep training leaves the running averages behind the weights
    recalibrate_bn: bool = False

    def validate(self, section: str = "train") -> None:
        check(self.optimizer in ("sgd", "adamw"), f"{section}.optimizer", "must be 'sgd' or 'adamw'")
        check(0 < self.lr <= 10, f"{section}.lr", "must be in (0, 10]")
        check(0 <= self.momentum < 1, f"{section}.momentum", "must be in [0, 1)")
        check(0 <= self.weight_decay < 1, f"{section}.weight_decay", "must be in [0, 1)")
        check(1 <= self.epochs <= 10_000, f"{section}.epochs", "must be between 1 and 10000")
        check(
            all(isinstance(m, int) and 0 < m < self.epochs for m in self.lr_milestones)
            and list(self.lr_milestones) == sorted(self.lr_milestones),
            f"{section}.lr_milestones",
            f"must be increasing whole epochs between 1 and epochs-1 ({self.epochs - 1})",
        )
        check(0 < self.lr_gamma <= 1, f"{section}.lr_gamma", "must be in (0, 1]")
        check(2 <= self.batch_size <= 65_536, f"{section}.batch_size", "must be between 2 and 65536")
        check(self.augment in ("flips", "none"), f"{section}.augment", "must be 'flips' or 'none'")
        check(1 <= self.eval_batch_size <= 65_536, f"{section}.eval_batch_size", "must be between 1 and 65536")
        check(0 <= self.min_steps <= 10_000_000, f"{section}.min_steps", "must be between 0 and 10000000")
        check(0 <= self.fit_loss <= 100, f"{section}.fit_loss", "must be between 0 (off) and 100 nats")
        check(0 <= self.max_steps <= 10_000_000, f"{section}.max_steps", "must be between 0 and 10000000")
        check(not self.fit_loss or self.max_steps > 0, f"{section}.max_steps",
              "must be set (above 0) when fit_loss is: it caps the steps fit_loss may add")
        check(-1 <= self.warm_min_steps <= 10_000_000, f"{section}.warm_min_steps",
              "must be between 0 and 10000000, or -1 (as min_steps)")
        check(self.class_balance in ("none", "loss"), f"{section}.class_balance", "must be 'none' or 'loss'")
        check(0 <= self.label_smoothing < 1, f"{section}.label_smoothing", "must be in [0, 1)")
        check(0 <= self.label_smoothing_below <= 1_000_000, f"{section}.label_smoothing_below",
              "must be between 0 and 1000000 (volumes per class; 0: always)")
        check(self.label_smoothing_for in ("both", "student"), f"{section}.label_smoothing_for",
              "must be 'both' or 'student'")

    def steps_per_epoch(self, n_labeled: int) -> int:
        """Optimizer steps in one epoch over ``n_labeled`` volumes (a lone last sample is folded in)."""
        full, rest = divmod(max(n_labeled, 0), self.batch_size)
        return max(1, full + (1 if rest >= 2 or full == 0 else 0))

    def for_labeled(self, n_labeled: int, n_classes: int, warm: bool = False) -> TrainSpec:
        """This spec for a cycle on ``n_labeled`` volumes of ``n_classes`` classes: enough epochs for
        ``min_steps`` steps (``warm_min_steps`` when the cycle starts from the last cycle's weights,
        ``warm``; the lr milestones at the same fractions of training), and label smoothing only
        while the labeled set is under ``label_smoothing_below`` per class."""
        changes: dict = {}
        steps = self.steps_per_epoch(n_labeled)
        floor = self.warm_min_steps if warm and self.warm_min_steps >= 0 else self.min_steps
        epochs = max(self.epochs, -(-floor // steps))
        if epochs != self.epochs:
            changes["epochs"] = epochs
            changes["lr_milestones"] = sorted(
                {min(epochs - 1, max(1, round(m * epochs / self.epochs))) for m in self.lr_milestones})
        if self.label_smoothing and self.label_smoothing_below and n_labeled >= self.label_smoothing_below * n_classes:
            changes["label_smoothing"] = 0.0
        return dataclasses.replace(self, **changes) if changes else self


@dataclass(frozen=True)
class PretrainSpec:
    """Self-supervised pretraining of the encoder on the pool (once per project; reused every cycle)."""

    method: str = "none"  # "simclr": contrast between wedge-preserving views of each volume
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    temperature: float = 0.2
    shift: int = 2  # voxels a view may be shifted by, per axis
    noise: float = 0.5  # std of the Gaussian noise added to a view (volumes are normalised to std 1)
    max_volumes: int = 20_000  # volumes per epoch at most (a random subset of a larger pool)

    def validate(self, section: str = "pretrain") -> None:
        check(self.method in ("none", "simclr"), f"{section}.method", "must be 'none' or 'simclr'")
        check(1 <= self.epochs <= 10_000, f"{section}.epochs", "must be between 1 and 10000")
        check(4 <= self.batch_size <= 65_536, f"{section}.batch_size", "must be between 4 and 65536")
        check(0 < self.lr <= 10, f"{section}.lr", "must be in (0, 10]")
        check(0 < self.temperature <= 10, f"{section}.temperature", "must be in (0, 10]")
        check(0 <= self.shift <= 16, f"{section}.shift", "must be between 0 and 16")
        check(0 <= self.noise <= 10, f"{section}.noise", "must be between 0 and 10")
        check(self.max_volumes >= 4, f"{section}.max_volumes", "must be at least 4")


@dataclass(frozen=True)
class ActiveSpec:
    """The budget schedule and the query strategy (fractions of the pool)."""

    strategy: str = "kt"
    initial_fraction: float = 0.10
    step_fraction: float = 0.05
    final_fraction: float = 0.40
    subset_factor: float = 10.0  # score a random subset of ~subset_factor * M unlabeled volumes
    reinit_each_cycle: bool = True  # train from scratch every cycle (the paper); False warm-starts
    #: cycle 0's batch: "random" (the paper), or "typiclust": the most typical volume of each of M
    #: clusters of the pretrained features (needs [pretrain] method)
    initial: str = "random"
    #: [active.options.<strategy>]: each strategy's settings, one table per strategy name, checked
    #: by the strategy registry (older recipes' flat keys sit here as scalars until that check)
    options: dict[str, dict[str, OptionValue] | OptionValue] = field(default_factory=dict)

    def validate(self, section: str = "active") -> None:
        check(bool(self.strategy.strip()), f"{section}.strategy", "must name a query strategy")
        check(0 < self.initial_fraction <= 1, f"{section}.initial_fraction", "must be in (0, 1]")
        check(0 < self.step_fraction <= 1, f"{section}.step_fraction", "must be in (0, 1]")
        check(
            self.initial_fraction <= self.final_fraction <= 1,
            f"{section}.final_fraction",
            "must be between initial_fraction and 1",
        )
        check(self.subset_factor >= 1, f"{section}.subset_factor", "must be >= 1")
        check(self.initial in ("random", "typiclust"), f"{section}.initial", "must be 'random' or 'typiclust'")


@dataclass(frozen=True)
class SpeedSpec:
    """How the passes compute: the convolutions' precision and memory format.

    Part of the recipe (and so recorded in the project) because precision changes results in
    their last digits. ``"auto"`` decides per device and per phase (training, scoring) with
    what measured fastest there (:func:`napari_ktal.core.engine.speed.resolve_speed`,
    docs/performance.md). Whatever is chosen, losses, KL scores and metrics are float32.
    """

    #: "bf16": autocast of convolutions and products to bfloat16; "fp32": float32 throughout;
    #: "auto": bf16 where the device computes it natively (CUDA; a CPU with AVX512-BF16 or AMX)
    precision: str = "auto"
    #: channels_last_3d memory format for models and batches: true, false or "auto"
    channels_last: bool | str = "auto"
    #: ``torch.compile`` the models for training and pretraining (the first step compiles: seconds to minutes)
    compile: bool = False

    def validate(self, section: str = "speed") -> None:
        check(self.precision in PRECISIONS, f"{section}.precision", f"must be one of {', '.join(PRECISIONS)}")
        check(isinstance(self.channels_last, bool) or self.channels_last == "auto", f"{section}.channels_last",
              "must be true, false or 'auto'")


@dataclass(frozen=True)
class TrustSpec:
    """How a project judges itself without a test set (:mod:`napari_ktal.core.trust`).

    A share of every queried batch is an *audit slice*, drawn uniformly from the unlabeled pool
    instead of by the strategy: the expert's labels on it measure the teacher's accuracy without
    bias. Cross-fitting (``ktal-cryo review``, the review tab) judges every label by a teacher
    that did not train on it. The stop rule watches successive teachers agree on a fixed set.
    """

    #: share of each queried batch drawn at random as the audit slice (rounded up: at least one
    #: volume while > 0); 0 turns the estimate of accuracy off
    audit: float = 0.1
    #: folds of the cross-fitting that judges each label out of sample (at least 2)
    folds: int = 5
    #: cross-fittings on differently drawn splits, averaged (each label judged by this many models)
    repeats: int = 2
    #: the stop rule: Cohen's kappa of successive teachers on the stop set at least this ...
    stop_kappa: float = 0.99
    #: ... for this many cycles in a row (and the estimate's lower bound no longer rising)
    stop_window: int = 3
    #: volumes in the fixed stop set (a seeded random subset of the pool; all if the pool is smaller)
    stop_set: int = 1000

    def validate(self, section: str = "trust") -> None:
        check(0 <= self.audit < 1, f"{section}.audit", "must be in [0, 1): the share of each batch drawn at random")
        check(self.folds >= 2, f"{section}.folds", "must be at least 2")
        check(self.repeats >= 1, f"{section}.repeats", "must be at least 1")
        check(0 < self.stop_kappa <= 1, f"{section}.stop_kappa", "must be in (0, 1]")
        check(self.stop_window >= 1, f"{section}.stop_window", "must be at least 1")
        check(self.stop_set >= 10, f"{section}.stop_set", "must be at least 10 volumes")


@dataclass(frozen=True)
class Recipe:
    name: str = "custom"
    description: str = ""
    model: ModelSpec = field(default_factory=ModelSpec)
    transfer: TransferSpec = field(default_factory=TransferSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    active: ActiveSpec = field(default_factory=ActiveSpec)
    pretrain: PretrainSpec = field(default_factory=PretrainSpec)
    speed: SpeedSpec = field(default_factory=SpeedSpec)
    trust: TrustSpec = field(default_factory=TrustSpec)

    def validate(self) -> Recipe:
        self.model.validate()
        self.transfer.validate()
        self.train.validate()
        self.active.validate()
        self.pretrain.validate()
        self.speed.validate()
        self.trust.validate()
        check(self.active.initial != "typiclust" or self.pretrain.method != "none", "active.initial",
              "'typiclust' needs pretrained features: set [pretrain] method")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The recipe as TOML (what a project's recipe.toml holds); reads back equal."""
        data = self.to_dict()
        if not data["active"]["options"]:
            del data["active"]["options"]
        if self.pretrain == PretrainSpec():
            del data["pretrain"]
        return tomli_w.dumps(data)

    def replace(self, **sections: dict[str, Any]) -> Recipe:
        """A copy with some keys changed, e.g. ``recipe.replace(train={"epochs": 5})``.

        In ``active``, ``options`` updates the strategies' tables key by key
        (``active={"options": {"bald": {"mc_passes": 4}}}``); a flat key that is not one of
        ``[active]``'s own (``mc_passes=4``) is an older-form option, moved into its strategies'
        tables (with a warning) by ``check_recipe``.
        """
        data = self.to_dict()
        for section, values in sections.items():
            check(isinstance(data.get(section), dict), section, "is not a recipe table")
            values = dict(values)
            if section == "active":
                own = {f.name for f in fields(ActiveSpec)}
                options = data["active"]["options"]
                for key, value in values.pop("options", {}).items():
                    if isinstance(value, dict) and isinstance(options.get(key), dict):
                        options[key] = {**options[key], **value}
                    else:
                        options[key] = value
                options.update({k: values.pop(k) for k in list(values) if k not in own})
            data[section].update(values)
        return recipe_from_dict(data)


_SECTIONS = {"model": ModelSpec, "transfer": TransferSpec, "train": TrainSpec, "active": ActiveSpec,
             "pretrain": PretrainSpec, "speed": SpeedSpec, "trust": TrustSpec}


def unknown_key(key: str, known: list[str], where: str) -> RecipeError:
    """The error for recipe key ``where + key``, naming the closest of the ``known`` keys (or all of them)."""
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(known)}"
    return RecipeError(f"recipe key '{where}{key}' is not known{hint}")


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Check a TOML value against a dataclass field type; ints are accepted for floats."""
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is float and isinstance(value, float):
        check(math.isfinite(value), key, f"must be a finite number, got {value!r}")
    if get_origin(typ) is list:
        check(isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value),
               key, "must be a list of whole numbers")
        return list(value)
    ok = isinstance(value, typ) and not (typ in (int, float) and isinstance(value, bool))
    check(ok, key, f"must be a {getattr(typ, '__name__', typ)}, got {value!r}")
    return value


def from_table(cls: type, data: dict[str, Any], where: str, ignore: Iterable[str] = ()) -> Any:
    """``cls(**data)`` for a dataclass, each value checked against its field's type.

    A key that is not a field (and not in ``ignore``) raises :class:`RecipeError` with a
    "did you mean" hint; ``where`` prefixes the key in messages (``"train."``).
    """
    hints = get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    skip = set(ignore)
    kwargs = {}
    for key, value in data.items():
        if key in skip:
            continue
        if key not in known:
            raise unknown_key(key, known, where)
        kwargs[key] = _coerce(value, hints[key], f"{where}{key}")
    return cls(**kwargs)


def _option_value(value: Any, key: str) -> None:
    check(isinstance(value, (bool, int, float, str, list)), key,
          f"must be a number, a word, true/false or a list, got {value!r}")


def _active_table(data: dict[str, Any]) -> ActiveSpec:
    """``[active]``: its own keys typed; the ``[active.options.<strategy>]`` tables as given; the
    older flat strategy keys (in ``[active]`` or ``[active.options]``) as flat entries of ``options``."""
    own = [f.name for f in fields(ActiveSpec)]
    options = data.get("options", {})
    check(isinstance(options, dict), "active.options", "must be a table")
    options = {k: dict(v) if isinstance(v, dict) else v for k, v in options.items()}
    for key, value in options.items():
        if isinstance(value, dict):
            for option, v in value.items():
                _option_value(v, f"active.options.{key}.{option}")
        else:
            _option_value(value, f"active.options.{key}")
    for key, value in data.items():
        if key in own:
            continue
        close = difflib.get_close_matches(key, own, n=1, cutoff=0.8)
        if close:  # a typo of one of [active]'s own keys, not a strategy setting
            raise unknown_key(key, own, "active.")
        check(key not in options, f"active.{key}", "is given twice: in [active] and in [active.options]")
        options[key] = value  # a strategy setting written the older way, flat in [active]
    spec = from_table(ActiveSpec, {k: v for k, v in data.items() if k in own and k != "options"}, "active.")
    return dataclasses.replace(spec, options=options)


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    """Build and validate a recipe from a TOML-shaped dict; unknown keys are errors."""
    top_known = ["name", "description", *_SECTIONS]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in top_known:
            raise unknown_key(key, top_known, "")
        if key == "active":
            check(isinstance(value, dict), key, "must be a table")
            kwargs[key] = _active_table(value)
        elif key in _SECTIONS:
            check(isinstance(value, dict), key, "must be a table")
            kwargs[key] = from_table(_SECTIONS[key], value, f"{key}.")
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


def recipe_path(name_or_path: str | Path) -> Path:
    """The file of a shipped recipe (``quick``), or the path given."""
    path = Path(name_or_path)
    if path.suffix != ".toml" and not path.exists():
        path = builtin_recipe_dir() / f"{name_or_path}.toml"
        if not path.exists():
            raise RecipeError(
                f"no recipe named '{name_or_path}'; shipped recipes: {', '.join(builtin_recipes())}, "
                "or give the path of a .toml file"
            )
    return path


def read_recipe(name_or_path: str | Path) -> Recipe:
    """Read a recipe by shipped name (``quick``) or by path to a TOML file.

    The strategy and its options are checked by the strategy registry, not here: use
    :func:`napari_ktal.core.loop.load_recipe`, which reads and checks.
    """
    path = recipe_path(name_or_path)
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
