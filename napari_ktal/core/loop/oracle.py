"""Simulated runs: an oracle (labels known in advance) answers every query until the budget is spent."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data import Pool
from ..errors import InputError
from ..progress import QUIET, RunContext
from ..project import Project
from ..recipe import Recipe
from ..seeds import DEFAULT_SEED
from .cycle import CycleReport, initial_query, open_source, train_cycle
from .labels import LabeledSet, labels_on_pool
from .ranks import check_owner, from_rank0
from .schedule import budget_schedule


def oracle_for_pool(pool: Pool, csv_path: str | Path, record: dict | None = None) -> dict[int, str]:
    """Map a labels CSV (or a particle list with classes, for a pool cut from one: ``record`` is the
    project's source record) onto pool indices (every pool volume must be in it; extra rows are ignored)."""
    oracle, _ = labels_on_pool(pool, csv_path, record)
    missing = len(pool) - len(oracle)
    if missing:
        example = next(pool.keys[i] for i in range(len(pool)) if i not in oracle)
        raise InputError(csv_path, f"has no label for {missing} of the {len(pool)} pool volumes (e.g. {example})",
                         "an oracle must label every volume of the data set")
    return oracle


def run_with_oracle(
    project: Project | None,
    recipe: Recipe,
    oracle: dict[int, str],
    device: torch.device,
    *,
    seed: int = DEFAULT_SEED,
    test: LabeledSet | None = None,
    on_cycle=None,
    run: RunContext = QUIET,
) -> list[CycleReport]:
    """Run every remaining cycle of the schedule, answering each batch from ``oracle``.

    Resumable: cycles already in history.csv are not redone; an answered batch is not re-asked.
    Under torchrun every rank runs this; the others with ``project=None`` (rank 0 labels).
    """
    check_owner(project)
    if project is not None:
        project.add_classes(sorted(set(oracle.values())))
        initial_query(project, recipe, seed)
    n_pool, first, reopen = from_rank0(lambda: (len(project.pool), project.trained_cycles, project.pool.reopen()))
    pool = None if project is not None else open_source(reopen)  # the other ranks open the pool once
    schedule = budget_schedule(n_pool, recipe.active)
    reports = []
    for cycle in range(first, len(schedule)):
        run.check_cancel()
        if project is not None:
            batch = project.read_query(cycle)
            labeled = project.labels()
            answers = {q.index: oracle[q.index] for q in batch if q.index not in labeled}
            if answers:
                project.label_many(answers, by="oracle", cycle=cycle)
        report = train_cycle(project, recipe, device, seed=seed, test=test, select=cycle < len(schedule) - 1,
                             pool=pool, run=run)
        reports.append(report)
        if on_cycle is not None:
            on_cycle(report)
    return reports
