"""What a query strategy is, and the one registry of them.

A strategy is one module of this package that registers a query function::

    @dataclass(frozen=True)
    class Options:                       # its settings, read from the recipe's [active.options]
        passes: int = 20
        def validate(self, section): ...

    @register("my-strategy", summary="one line for help texts", cost="what it costs", options=Options)
    def my_strategy(ctx: QueryContext, candidates: np.ndarray, m: int, opts: Options) -> Selection:
        (logits,) = ctx.forward([ctx.teacher], candidates)
        return Selection(*top_m(candidates, score_of(logits), m))

It gets the trained models and the pool through a :class:`QueryContext`, the candidate
indices (already the random subset R_U) and M, and returns the chosen indices with their
scores, most informative first (higher = more informative). A strategy that needs a module
trained with the teacher passes ``head=`` a function that builds an
:class:`~napari_ktal.core.engine.AuxiliaryHead`; training and the multi-process path train it
without knowing which strategy it serves, and the query finds it in ``ctx.head``.

The package finds its strategy modules itself (see ``__init__``): adding a strategy is adding
its file. The CLI's help, the widget and the README's strategy table read :data:`STRATEGIES`.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import VolumeSource
from ..engine import AuxiliaryHead, forward_outputs
from ..errors import RecipeError
from ..progress import ProgressCallback, StopFlag
from ..recipe import Recipe, SpeedSpec, TrainSpec, from_table


@dataclass
class QueryContext:
    """What a query may use: the cycle's trained models, the pool, the labeled set (and its labels,
    where the caller knows them), which class is junk, a seeded rng."""

    teacher: nn.Module
    student: nn.Module
    source: VolumeSource
    labeled: np.ndarray
    device: torch.device
    rng: np.random.Generator
    score_distance: str = "kl"  # the recipe's [transfer] score
    batch_size: int = 256
    head: AuxiliaryHead | None = None  # the strategy's head, trained with the teacher, if it has one
    on_progress: ProgressCallback | None = None
    should_stop: StopFlag | None = None
    labels: np.ndarray | None = None  # class ids of ``labeled`` (the labels given so far), if known
    junk_class: int | None = None  # the id of the project's ``junk`` class, if it has one
    speed: SpeedSpec | None = None  # the recipe's [speed] (None: "auto")
    #: under torchrun every rank runs the query: its passes are split across the ranks and
    #: gathered on every rank (:func:`~napari_ktal.core.engine.forward_outputs`)
    shard: bool = False

    def torch_generator(self) -> torch.Generator:
        """A torch generator on the device, seeded from ``rng`` (so a query is reproducible)."""
        return torch.Generator(device=self.device).manual_seed(int(self.rng.integers(2**62)))

    def forward(self, models, indices, output: str = "logits") -> list[torch.Tensor]:
        """``output`` ("logits", "embedding", "pooled_stages") of each model on volumes ``indices``."""
        return forward_outputs(models, self.source, indices, self.device, output=output, batch_size=self.batch_size,
                               speed=self.speed, on_progress=self.on_progress, should_stop=self.should_stop,
                               shard=self.shard)


@dataclass(frozen=True)
class Selection:
    indices: np.ndarray  # chosen pool indices, most informative first
    scores: np.ndarray  # their scores (higher = more informative)


@dataclass(frozen=True)
class NoOptions:
    """The options of a strategy that has none."""

    def validate(self, section: str) -> None:
        pass


Query = Callable[[QueryContext, np.ndarray, int, Any], Selection]
HeadFactory = Callable[[nn.Module, TrainSpec, Any], AuxiliaryHead]


@dataclass(frozen=True)
class Strategy:
    """A registered strategy: callable as ``strategy(ctx, candidates, m, options)``."""

    name: str
    query: Query
    summary: str  # one line for help texts and tooltips
    cost: str = ""  # what a query costs, in passes over the candidates
    options: type = NoOptions
    head: HeadFactory | None = field(default=None, compare=False)

    def parse_options(self, table: dict[str, Any]) -> Any:
        """This strategy's options from ``[active.options]`` (keys of other strategies are left alone)."""
        own = {f.name for f in dataclasses.fields(self.options)}
        opts = from_table(self.options, {k: v for k, v in table.items() if k in own}, "active.options.")
        opts.validate("active.options")
        return opts

    def make_head(self, teacher: nn.Module, train: TrainSpec, options: Any) -> AuxiliaryHead | None:
        return None if self.head is None else self.head(teacher, train, options)

    def __call__(self, ctx: QueryContext, candidates: np.ndarray, m: int, options: Any = None) -> Selection:
        options = self.options() if options is None else options
        return self.query(ctx, np.asarray(candidates, dtype=np.int64), m, options)


#: every strategy, by name: the method first, the random baseline second, then by name
STRATEGIES: dict[str, Strategy] = {}


def register(name: str, *, summary: str, cost: str = "", options: type = NoOptions,
             head: HeadFactory | None = None) -> Callable[[Query], Query]:
    """Decorator: register ``query`` as the strategy ``name`` (the function itself is returned)."""

    def decorate(query: Query) -> Query:
        if name in STRATEGIES:
            raise ValueError(f"strategy {name!r} is registered twice")
        STRATEGIES[name] = Strategy(name, query, summary, cost, options, head)
        return query

    return decorate


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise RecipeError(f"recipe key 'active.strategy': must be one of {', '.join(STRATEGIES)}, "
                          f"not {name!r}") from None


def option_defaults() -> dict[str, Any]:
    """Every option key any strategy reads, with its default."""
    out: dict[str, Any] = {}
    for s in STRATEGIES.values():
        for f in dataclasses.fields(s.options):
            out[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return out


def check_recipe(recipe: Recipe) -> Recipe:
    """``recipe`` with its strategy and ``[active.options]`` checked against the registry.

    Raises :class:`RecipeError` for an unknown strategy, an option no strategy reads (with a
    "did you mean"), or a value out of range. Options equal to their default are dropped, so
    a recipe written with every default (as earlier versions did) equals the shipped one.
    """
    get_strategy(recipe.active.strategy)
    table = recipe.active.options
    defaults = option_defaults()
    for key in table:
        if key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known options: {', '.join(sorted(defaults))}"
            raise RecipeError(f"recipe key 'active.options.{key}' is not known{hint}")
    for s in STRATEGIES.values():
        s.parse_options(table)
    kept = {k: v for k, v in table.items() if v != defaults[k] or type(v) is not type(defaults[k])}
    return dataclasses.replace(recipe, active=dataclasses.replace(recipe.active, options=kept))


def strategy_table() -> str:
    """Every strategy as a Markdown table (the README's, and ``ktal-cryo strategies``)."""
    rows = ["| strategy | what it picks | cost of a query | options (`[active.options]`) |", "|---|---|---|---|"]
    for s in STRATEGIES.values():
        options = ", ".join(f"`{f.name}` = {f.default!r}" for f in dataclasses.fields(s.options)) or "-"
        rows.append(f"| `{s.name}` | {s.summary} | {s.cost} | {options} |")
    return "\n".join(rows)
