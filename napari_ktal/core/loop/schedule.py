"""The budget schedule: how large the labeled set is after each cycle."""

from __future__ import annotations

import math

from ..recipe import ActiveSpec


def budget_schedule(n_pool: int, spec: ActiveSpec) -> list[int]:
    """Labeled-set size of each cycle: n * f rounded half up, for f = initial, initial+step, ..., final.

    Products are rounded to 6 decimals first, so float noise in the fractions (0.1 + 0.05 is
    not exactly 0.15) never moves a size: 30 volumes give 3, 5, 6, 8, 9, 11, 12.
    """
    n_steps = int(round((spec.final_fraction - spec.initial_fraction) / spec.step_fraction + 1e-9))
    fractions = [spec.initial_fraction + k * spec.step_fraction for k in range(n_steps + 1)]
    # at least 2 volumes: training needs two (BatchNorm), even in a tiny pool
    sizes = [max(min(2, n_pool), min(n_pool, math.floor(round(n_pool * f, 6) + 0.5))) for f in fractions]
    return sorted(set(sizes))


def next_query_size(n_pool: int, n_labeled: int, spec: ActiveSpec) -> int:
    """M for the next batch: up to the next scheduled size, or one step beyond the schedule."""
    for size in budget_schedule(n_pool, spec):
        if size > n_labeled:
            return size - n_labeled
    return max(1, int(round(n_pool * spec.step_fraction)))
