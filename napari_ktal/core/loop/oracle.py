"""Simulated runs: an oracle (labels known in advance) answers every query until the budget is spent.

For testing the review (:mod:`napari_ktal.core.trust`), the oracle can make an expert's slips
(:func:`flip_answers`): a seeded share of the pool answered with another class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data import Pool
from ..errors import InputError
from ..progress import QUIET, RunContext
from ..project import Project
from ..recipe import Recipe
from ..seeds import DEFAULT_SEED, seeded_rng
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


def flip_answers(oracle: dict[int, str], share: float, seed: int = DEFAULT_SEED
                 ) -> tuple[dict[int, str], dict[int, tuple[str, str]]]:
    """The oracle with ``round(share * n)`` of its ``n`` volumes, drawn with ``seed``, answered with
    another class (uniformly among the oracle's other classes), as an expert's slips; and the flips,
    ``index -> (true class, class given)``. A simulation-only device: no recipe setting."""
    if not 0 <= share < 1:
        raise ValueError(f"the share of flipped answers must be in [0, 1), not {share}")
    classes = sorted(set(oracle.values()))
    indices = np.array(sorted(oracle), dtype=np.int64)
    n = round(share * len(indices)) if len(classes) > 1 else 0
    rng = seeded_rng(seed, "oracle flips")
    answers, flips = dict(oracle), {}
    for i in np.sort(rng.choice(indices, size=n, replace=False)).tolist():
        others = [c for c in classes if c != oracle[i]]
        answers[i] = others[int(rng.integers(len(others)))]
        flips[i] = (oracle[i], answers[i])
    return answers, flips


def oracle_with_slips(project: Project, oracle: dict[int, str], share: float, seed: int = DEFAULT_SEED
                      ) -> dict[int, str]:
    """:func:`flip_answers`, with the flips written to the project (``oracle_flips.csv``: index,key,true,given)
    so that a measurement can check the review against them."""
    answers, flips = flip_answers(oracle, share, seed)
    keys = project.pool.keys
    project.write_oracle_flips({i: (keys[i], true, given) for i, (true, given) in flips.items()})
    return answers


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
        initial_query(project, recipe, seed, device=device, run=run)  # TypiClust pretrains on the run's device
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
