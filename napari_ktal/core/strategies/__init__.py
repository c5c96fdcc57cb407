"""Query strategies: one registry, one module per strategy family.

- :mod:`.base`        QueryContext, Selection, Strategy, :func:`register`, the registry, recipe checks
- :mod:`.heuristics`  pure scores of prediction arrays (entropy, margin, least confidence, BALD)
- :mod:`.kcenter`     greedy k-center; :mod:`.selection`: top-M and the random subset R_U
- one module per strategy (or family: softmax holds entropy, margin and least confidence).
  Every module of this package is imported here, so a new strategy is one new file.
"""

import importlib
import pkgutil

from .base import STRATEGIES, QueryContext, Selection, Strategy, check_recipe, get_strategy, register, strategy_table

__all__ = ["STRATEGIES", "QueryContext", "Selection", "Strategy", "check_recipe", "get_strategy", "register",
           "strategy_table"]

FIRST = ("kt", "random")  # the method, then its baseline; the rest by name


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    ordered = sorted(STRATEGIES.items(), key=lambda kv: (FIRST.index(kv[0]) if kv[0] in FIRST else len(FIRST), kv[0]))
    STRATEGIES.clear()
    STRATEGIES.update(ordered)


_discover()
