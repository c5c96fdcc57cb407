"""What a query strategy is, and the one registry of them.

A strategy is one module of this package that registers a query function::

    @dataclass(frozen=True)
    class Options:                       # its settings: the recipe's [active.options.my-strategy]
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

Only a strategy that declares it (``student=True``, or a function of its options) gets a trained
student in ``ctx.student``; for the others the cycle trains the teacher alone and
``ctx.student`` is None. Training the student changes nothing in the teacher (the transfer loss
detaches the teacher, :mod:`~napari_ktal.core.engine.training`), so a teacher-only strategy
costs a student's training less per cycle and its teacher is the one it would have had (with
``[model] dropout = 0``: dropout masks come from one random stream, which the student shares).

Each strategy reads its own table ``[active.options.<name>]``, wherever it runs: a composite
strategy (AutoAL) runs each of its candidates with that candidate's own table
(:meth:`QueryContext.options_of`), so ``[active.options.bald] mc_passes = 8`` applies to bald
alone and to bald as one of AutoAL's candidates alike. Older recipes wrote every strategy's
options in one flat namespace, with a prefix per strategy (``autoal_fit_steps``); such a key is
read into the table of every strategy that declared it (``old_prefix``), with a FutureWarning.

The package finds its strategy modules itself (see ``__init__``): adding a strategy is adding
its file. The CLI's help, the widget and the README's strategy table read :data:`STRATEGIES`.
"""

from __future__ import annotations

import dataclasses
import difflib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import VolumeSource
from ..engine import AuxiliaryHead, forward_outputs
from ..errors import RecipeError
from ..progress import QUIET, RunContext
from ..recipe import Recipe, SpeedSpec, TrainSpec, check, from_table, unknown_key


@dataclass
class QueryContext:
    """What a query may use: the cycle's trained models, the pool, the labeled set (and its labels,
    where the caller knows them), which class is junk, a seeded rng."""

    teacher: nn.Module
    student: nn.Module | None  # None unless the strategy declares it reads the student
    source: VolumeSource
    labeled: np.ndarray
    device: torch.device
    rng: np.random.Generator
    score_distance: str = "kl"  # the recipe's [transfer] score
    batch_size: int = 256
    head: AuxiliaryHead | None = None  # the strategy's head, trained with the teacher, if it has one
    run: RunContext = QUIET  # where the query's progress goes, how it learns to stop
    labels: np.ndarray | None = None  # class ids of ``labeled`` (the labels given so far), if known
    junk_class: int | None = None  # the id of the project's ``junk`` class, if it has one
    speed: SpeedSpec | None = None  # the recipe's [speed] (None: "auto")
    #: under torchrun every rank runs the query: its passes are split across the ranks and
    #: gathered on every rank (:func:`~napari_ktal.core.engine.forward_outputs`)
    shard: bool = False
    #: the recipe's ``[active.options]``, one table per strategy (checked): what a composite strategy
    #: reads its candidates' options from
    option_tables: dict[str, dict[str, Any]] = field(default_factory=dict)

    def options_of(self, name: str) -> Any:
        """The options strategy ``name`` runs with here: its own table of the recipe, else its defaults."""
        return get_strategy(name).parse_options(self.option_tables.get(name, {}))

    def torch_generator(self) -> torch.Generator:
        """A torch generator on the device, seeded from ``rng`` (so a query is reproducible)."""
        return torch.Generator(device=self.device).manual_seed(int(self.rng.integers(2**62)))

    def forward(self, models, indices, output: str = "logits") -> list[torch.Tensor]:
        """``output`` ("logits", "embedding", "pooled_stages") of each model on volumes ``indices``."""
        if any(m is None for m in models):
            raise RuntimeError("this query reads the student, which was not trained: its strategy must be "
                               "registered with student=True (or a function of its options saying so)")
        return forward_outputs(models, self.source, indices, self.device, output=output, batch_size=self.batch_size,
                               speed=self.speed, run=self.run, shard=self.shard)


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
StudentNeed = bool | Callable[[Any], bool]  # whether a query reads the student, or a function of its options
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
    #: the prefix its options had in the older flat ``[active.options]`` (``autoal`` for ``autoal_lr``)
    old_prefix: str = field(default="", compare=False)
    student: StudentNeed = field(default=False, compare=False)

    def parse_options(self, table: dict[str, Any]) -> Any:
        """This strategy's options from its table ``[active.options.<name>]``; a key it does not read,
        or a value out of range, raises :class:`RecipeError` naming ``active.options.<name>.<key>``."""
        check(isinstance(table, dict), f"active.options.{self.name}", "must be a table")
        old = self.old_keys()
        for key in table:  # an older prefixed name inside the new table: name the option it became
            if key in old and key not in self.defaults():
                raise RecipeError(f"recipe key 'active.options.{self.name}.{key}' is not known; "
                                  f"did you mean '{old[key]}'?")
        opts = from_table(self.options, table, f"active.options.{self.name}.")
        opts.validate(f"active.options.{self.name}")
        return opts

    def defaults(self) -> dict[str, Any]:
        """Each option's default."""
        return dataclasses.asdict(self.options())

    def old_keys(self) -> dict[str, str]:
        """The flat ``[active.options]`` key each option had in older recipes -> its name now."""
        return {f"{self.old_prefix}_{f}" if self.old_prefix else f: f for f in self.defaults()}

    def needs_student(self, options: Any = None) -> bool:
        """Whether this strategy's query, run with ``options`` (None: its defaults), reads the student."""
        if callable(self.student):
            return bool(self.student(self.options() if options is None else options))
        return self.student

    def make_head(self, teacher: nn.Module, train: TrainSpec, options: Any) -> AuxiliaryHead | None:
        return None if self.head is None else self.head(teacher, train, options)

    def __call__(self, ctx: QueryContext, candidates: np.ndarray, m: int, options: Any = None) -> Selection:
        options = self.options() if options is None else options
        return self.query(ctx, np.asarray(candidates, dtype=np.int64), m, options)


#: every strategy, by name: the method first, the random baseline second, then by name
STRATEGIES: dict[str, Strategy] = {}


def register(name: str, *, summary: str, cost: str = "", options: type = NoOptions,
             head: HeadFactory | None = None, old_prefix: str = "", student: StudentNeed = False
             ) -> Callable[[Query], Query]:
    """Decorator: register ``query`` as the strategy ``name`` (the function itself is returned).

    ``student``: whether the query reads ``ctx.student`` (or a function of the options saying so);
    without it the cycle trains no student."""

    def decorate(query: Query) -> Query:
        if name in STRATEGIES:
            raise ValueError(f"strategy {name!r} is registered twice")
        STRATEGIES[name] = Strategy(name, query, summary, cost, options, head, old_prefix, student)
        return query

    return decorate


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise RecipeError(f"recipe key 'active.strategy': must be one of {', '.join(STRATEGIES)}, "
                          f"not {name!r}") from None


def _tables_from_old_keys(flat: dict[str, Any], tables: dict[str, dict[str, Any]]) -> None:
    """Move the older flat options (``autoal_lr = 0.1``, ``mc_passes = 8``) into the tables of the
    strategies that read them, warning once per key with its new place."""
    for key, value in flat.items():
        targets = [(s.name, s.old_keys()[key]) for s in STRATEGIES.values() if key in s.old_keys()]
        if not targets:  # a typo, or an option written outside its strategy's table
            places: dict[str, str] = {}  # an old or a new option name -> its first strategy's table.option
            for s in STRATEGIES.values():
                for old_key, f in s.old_keys().items():
                    places.setdefault(old_key, f"{s.name}.{f}")
                    places.setdefault(f, f"{s.name}.{f}")
            close = difflib.get_close_matches(key, list(places), n=1)
            hint = (f"; did you mean 'active.options.{places[close[0]]}'?" if close else
                    "; options go in the table of their strategy: [active.options.<strategy>]")
            raise RecipeError(f"recipe key 'active.options.{key}' is not known{hint}")
        for name, option in targets:
            table = tables.setdefault(name, {})
            check(option not in table, f"active.options.{name}.{option}",
                  f"is given twice: in [active.options.{name}] and as the older flat key '{key}'")
            table[option] = value
        where = " and ".join(f"[active.options.{name}] {option}" for name, option in targets)
        warnings.warn(f"recipe key '{key}' (flat in [active] or [active.options]) is the older form; "
                      f"it is read as {where}: write it there", FutureWarning, stacklevel=3)


def check_recipe(recipe: Recipe) -> Recipe:
    """``recipe`` with its strategy and ``[active.options.<strategy>]`` tables checked against the registry.

    Raises :class:`RecipeError` for an unknown strategy, a table of no strategy, an option its
    strategy does not read (with a "did you mean"), or a value out of range. Older flat option
    keys are moved into their strategies' tables (with a FutureWarning). Options equal to their
    default are dropped (and then empty tables), so a recipe written with every default (as
    earlier versions did) equals the shipped one.
    """
    get_strategy(recipe.active.strategy)
    tables = {k: dict(v) for k, v in recipe.active.options.items() if isinstance(v, dict)}
    _tables_from_old_keys({k: v for k, v in recipe.active.options.items() if not isinstance(v, dict)}, tables)
    kept: dict[str, dict[str, Any]] = {}
    for name, table in tables.items():
        if name not in STRATEGIES:
            raise unknown_key(name, list(STRATEGIES), "active.options.")  # tables are named by strategy
        STRATEGIES[name].parse_options(table)
        defaults = STRATEGIES[name].defaults()
        own = {k: v for k, v in table.items() if v != defaults[k] or type(v) is not type(defaults[k])}
        if own:
            kept[name] = own
    return dataclasses.replace(recipe, active=dataclasses.replace(recipe.active, options=kept))


def strategy_table() -> str:
    """Every strategy as a Markdown table (the README's, and ``ktal-cryo strategies``)."""
    rows = ["| strategy | what it picks | cost of a query | options (`[active.options.<strategy>]`) |",
            "|---|---|---|---|"]
    for s in STRATEGIES.values():
        options = ", ".join(f"`{f.name}` = {f.default!r}" for f in dataclasses.fields(s.options)) or "-"
        rows.append(f"| `{s.name}` | {s.summary} | {s.cost} | {options} |")
    return "\n".join(rows)
