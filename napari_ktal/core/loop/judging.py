"""How a cycle judges itself without a test set: its held-out audit volumes and the stop rule.

The design (why audit volumes are held out for one cycle) is in :mod:`.cycle`'s docstring; the
estimators and the rule are :mod:`napari_ktal.core.trust`'s; what is recorded is
:mod:`napari_ktal.core.project.judgements`'. Every rank runs the predictions (sharded under
torchrun, as the cycle's other passes); rank 0 alone records and decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data.source import VolumeSource
from ..engine import predict
from ..progress import RunContext
from ..project import AuditJudgement, Project
from ..project.history import num
from ..recipe import Recipe, TrustSpec
from ..trust import AccuracyEstimate, cohen_kappa, prequential_accuracy, stop_set, suggest_stop

NO_ESTIMATE = AccuracyEstimate(float("nan"), float("nan"), float("nan"), 0.0)


def audit_count(share: float, m: int) -> int:
    """Volumes of a batch of ``m`` drawn as the audit slice: ``ceil(share * m)``, 0 when ``share`` is 0.

    Rounded to 9 decimals first, so that 0.1 * 30 (3.0000000000000004 in floating point) is 3."""
    return math.ceil(round(share * m, 9)) if share > 0 else 0


def held_out_audits(project: Project, cycle: int, labeled: np.ndarray) -> np.ndarray:
    """The labeled audit volumes of batch ``cycle``, which its training leaves out (sorted pool indices).

    None are held out when fewer than 2 labeled volumes would remain to train on."""
    if cycle not in project.query_cycles():  # labels imported without a batch: nothing was drawn
        return labeled[:0]
    flagged = [q.index for q in project.read_query(cycle) if q.audit]
    held = np.intersect1d(labeled, np.asarray(flagged, dtype=np.int64))
    return held if len(labeled) - len(held) >= 2 else labeled[:0]


def stop_indices(project: Project, trust: TrustSpec, seed: int) -> np.ndarray:
    """The project's stop set: the stored one, else drawn with ``seed`` (stored by the first cycle that
    predicts it, so that later runs with another seed keep it)."""
    stored = project.stop_predictions()
    if stored is not None:
        return stored.indices
    return stop_set(len(project.pool), trust.stop_set, seed=seed)


def estimate_accuracy(judged: list[AuditJudgement], labels: dict[int, str], latest: int) -> AccuracyEstimate:
    """The teacher's accuracy after cycle ``latest`` from the judgements of cycles up to it, each
    checked against the label the volume has *now* (one the expert corrected counts corrected; one
    taken back does not count)."""
    rows = [j for j in judged if j.cycle <= latest and j.index in labels]
    if not rows:
        return NO_ESTIMATE
    return prequential_accuracy([j.cycle for j in rows], [labels[j.index] == j.predicted for j in rows],
                                latest=latest)


@dataclass(frozen=True)
class Judgement:
    """What a cycle learned about itself: the accuracy estimate, the stop rule's kappa and verdict."""

    estimate: AccuracyEstimate
    held_out: int
    kappa: float
    suggested: bool
    reason: str


def judge_cycle(project: Project | None, teacher: nn.Module, pool: VolumeSource, recipe: Recipe,
                device: torch.device, *, cycle: int, classes: list[str], held_out: np.ndarray,
                stop: np.ndarray, run: RunContext) -> Judgement | None:
    """The freshly trained teacher predicts the held-out audit volumes and the stop set (every rank);
    rank 0 records both and returns the judgement, the other ranks None."""
    kw = dict(batch_size=recipe.train.eval_batch_size, speed=recipe.speed, run=run.quiet(), shard=True)
    held_pred = predict(teacher, pool, held_out, device, **kw)[0] if len(held_out) else np.empty(0, np.int64)
    stop_pred = predict(teacher, pool, stop, device, **kw)[0] if len(stop) else np.empty(0, np.int64)
    if project is None:
        return None
    keys = project.pool.keys
    project.record_audits(cycle, [AuditJudgement(cycle, int(i), keys[int(i)], classes[int(p)])
                                  for i, p in zip(held_out, held_pred)])
    estimate = estimate_accuracy(project.audits(), project.labels(), cycle)
    predicted = [classes[int(p)] for p in stop_pred]
    before = project.stop_predictions()
    kappa = float("nan")
    if before is not None and cycle - 1 in before.predicted:
        kappa = cohen_kappa(np.asarray(before.predicted[cycle - 1]), np.asarray(predicted))
    project.record_stop_predictions(cycle, stop, predicted)
    past = [r for r in project.history() if int(r["cycle"]) < cycle]
    kappas = [num(r.get("stop_kappa")) for r in past] + [kappa]
    lows = [num(r.get("estimated_accuracy_low")) for r in past] + [estimate.low]
    suggested, reason = suggest_stop(kappas, lows, threshold=recipe.trust.stop_kappa, window=recipe.trust.stop_window)
    return Judgement(estimate, len(held_out), kappa, suggested, reason)
