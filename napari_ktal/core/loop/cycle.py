"""One active-learning cycle, as the paper runs it (METHOD.md).

Cycle c trains teacher and student (the student only where the strategy reads it) on the
labeled set L_c, scores a random subset of the unlabeled pool and writes the next batch to
label (``queries/cycle_{c+1}.csv``). Cycle 0's batch is a random ``initial_fraction`` of the
pool. Labeled-set sizes follow the recipe: 10% -> 40% of the pool in steps of 5% (7 cycles) by
default.

Judging without a test set (``[trust]``, :mod:`napari_ktal.core.trust`, :mod:`.judging`):

- *The audit slice.* ``ceil(audit * m)`` volumes of every batch of m are drawn uniformly from
  the unlabeled pool, before and apart from the strategy, which chooses the other ones among
  the rest (cycle 0's random batch: its first ``ceil(audit * size)`` volumes; a TypiClust
  initial batch is not random and has none). The query file flags them (``audit``) and they
  sit at random places of the batch; nothing on screen flags them, so the expert labels them
  as any other volume. They have no strategy score (NaN, as the random picks of cycle 0).
- *Judged before learning from them.* Cycle c trains on its labeled set minus the labeled
  audit volumes of its own batch c; the freshly trained teacher then predicts them (audit.csv).
  They join training from cycle c+1 on. This is the only way the teacher of cycle c is judged
  on volumes it did not train on (a teacher judged on its own training labels is nearly always
  "right"), and it costs little: a few labels per cycle arrive one cycle late. The estimate
  after cycle c pools the judgements of cycles <= c (the latest teacher's weigh most:
  :func:`~napari_ktal.core.trust.prequential_accuracy`), against the labels as they are now,
  with a Wilson interval: history.csv's ``estimated_accuracy`` (``_low``, ``_high``).
  ``n_labeled`` stays the number of labels given, ``audit_held_out`` says how many sat out.
- *The stop rule.* A fixed stop set per project (``stop_set.csv``) is predicted by every
  cycle's teacher; Cohen's kappa with the previous cycle's predictions (``stop_kappa``) and the
  estimate's lower bound give :func:`~napari_ktal.core.trust.suggest_stop`'s suggestion
  (``stop_suggested``; the reason in the :class:`CycleReport`). It is never enforced.

With ``[trust] audit = 0`` nothing is drawn or held out: the cycle trains and queries exactly
as before these were added (tests/core/loop/test_same_history.py).

Under torchrun every rank runs :func:`train_cycle`; rank 0 alone reads and writes the
project (:mod:`.ranks`).

Two drivers share :func:`train_cycle`:
- interactive (napari, or ``ktal-cryo train`` without an oracle): one cycle on the current labels;
- simulated (``--oracle``, :mod:`.oracle`): queries are answered from a labels file until the
  budget is spent.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np
import torch

from ..data.source import Reopen, VolumeSource
from ..engine import TrainJob, predict, train_pair
from ..errors import KtalError
from ..models import build_pair
from ..progress import QUIET, RunContext
from ..project import JUNK_CLASS, Project, QueryItem
from ..recipe import Recipe
from ..seeds import DEFAULT_SEED, derive_seed, seeded_rng
from ..strategies import QueryContext, Selection, Strategy, check_recipe, get_strategy
from ..strategies.selection import random_subset
from ..trust import audit_slice
from .labels import LabeledSet
from ..evaluation.metrics import score_predictions
from .judging import Judgement, audit_count, held_out_audits, judge_cycle, stop_indices
from .pretraining import initialise_from, pool_features, pretrained_state, typiclust
from .ranks import check_owner, rank0s
from .schedule import budget_schedule, next_query_size


@dataclass(frozen=True)
class CycleReport:
    cycle: int
    n_labeled: int
    test_accuracy: float
    mean_uncertainty: float
    train_seconds: float
    select_seconds: float
    n_queried: int
    teacher_loss: float
    student_loss: float
    transfer_loss: float
    samples_per_second: float
    strategy: str
    device: str
    class_counts: dict[str, int]
    test_balanced_accuracy: float = float("nan")
    test_recall: str = ""  # per-class recall on the test set: "name=0.93;other=0.5"
    epochs: int = 0  # epochs trained (more than the recipe's for a small labeled set: [train] min_steps)
    test_particle_accuracy: float = float("nan")  # accuracy on the test volumes that are not junk
    # judged without a test set (see the module's docstring): fractions like test_accuracy, NaN without audits
    estimated_accuracy: float = float("nan")
    estimated_accuracy_low: float = float("nan")
    estimated_accuracy_high: float = float("nan")
    audit_held_out: int = 0  # labeled audit volumes of this cycle's batch left out of its training
    stop_kappa: float = float("nan")  # kappa of this teacher and the previous one on the stop set
    stop_suggested: int = 0  # 1: the stop rule suggests that labeling can stop (never enforced)
    stop_reason: str = ""  # the stop rule's sentence for the user (not in history.csv)

    def history_row(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("class_counts", "stop_reason")}


def initial_query(project: Project, recipe: Recipe, seed: int = DEFAULT_SEED, *,
                  device: torch.device | None = None, run: RunContext = QUIET) -> list[QueryItem]:
    """Cycle 0's batch (written once, then reused): a random ``initial_fraction`` of the pool, or
    with ``[active] initial = "typiclust"`` the typical and diverse volumes of the pretrained
    features (the encoder is pretrained first if the project has none yet). The first
    ``ceil(audit * size)`` volumes of a random batch are its audit slice (a random sample already)."""
    if 0 in project.query_cycles():
        return project.read_query(0)
    n = len(project.pool)
    size = budget_schedule(n, recipe.active)[0]
    n_audit = 0
    if recipe.active.initial == "typiclust":
        device = device or torch.device("cpu")
        state = pretrained_state(project, recipe, device, seed=seed, run=run)
        feats = pool_features(project, recipe, state, device, run=run.quiet())
        chosen = typiclust(feats, size, seeded_rng(seed, "initial"))
    else:
        chosen = seeded_rng(seed, "initial").choice(n, size=size, replace=False)
        n_audit = audit_count(recipe.trust.audit, size)
    items = [QueryItem(r, int(i), project.pool.keys[i], float("nan"), "", float("nan"), audit=r < n_audit)
             for r, i in enumerate(chosen)]
    project.write_query(0, items)
    return items


@dataclass(frozen=True)
class CycleInputs:
    """What a cycle needs of the project, read by rank 0 and sent to every rank (:mod:`.ranks`)."""

    cycle: int
    classes: list[str]
    labeled: np.ndarray  # pool indices, sorted
    labels: np.ndarray  # their class ids
    pool: Reopen  # how another rank opens the pool (read-only)
    n_pool: int
    held_out: np.ndarray  # the labeled audit volumes of this cycle's batch: judged, not trained on
    stop: np.ndarray  # the project's stop set (pool indices, sorted)
    #: the cycle starts from the last cycle's weights ([active] reinit_each_cycle = false, same classes)
    warm: bool = False


def _read_inputs(project: Project, recipe: Recipe, seed: int,
                 needs_student: bool) -> tuple[CycleInputs, np.ndarray]:
    """Rank 0: the cycle's inputs, checked, and the labeled volumes (``needs_student``: whether this
    cycle's strategy reads the student, which a warm start needs trained)."""
    cycle = project.trained_cycles
    classes = project.classes
    idx, y, x = project.labeled_arrays()
    if len(idx) < 2:
        raise KtalError(f"cycle {cycle}: only {len(idx)} volume(s) labeled; label the current batch first")
    if len(classes) < 2:
        raise KtalError("define at least 2 classes before training")
    return CycleInputs(cycle, classes, idx, y, project.pool.reopen(), len(project.pool),
                       held_out_audits(project, cycle, idx), stop_indices(project, recipe.trust, seed),
                       _warm_start(project, recipe, classes, needs_student)), x


def _warm_start(project: Project, recipe: Recipe, classes: list[str], needs_student: bool) -> bool:
    """Whether the cycle starts from the last cycle's weights: warm start asked for, a checkpoint
    there, trained on the same classes (after a class was added or renamed it starts afresh), and,
    if this cycle's strategy reads the student, a trained student in it (after cycles of a
    teacher-only strategy both start afresh, rather than an untrained student on a warm floor)."""
    cycles = [] if recipe.active.reinit_each_cycle else project.checkpoint_cycles()
    meta = project.checkpoint_meta(cycles[-1]) if cycles else None
    if meta is None or meta.get("classes") != classes:
        return False
    return bool(meta.get("student_trained", True)) or not needs_student


def _initial_models(project: Project | None, recipe: Recipe, inputs: CycleInputs,
                    pretrained: Mapping[str, torch.Tensor] | None, seed: int):
    """Teacher and student of this cycle. Rank 0 (``project`` given) starts them from the pretrained
    encoder or, warm-starting, the last cycle's weights; under torchrun DDP copies rank 0's weights
    to every rank."""
    torch.manual_seed(derive_seed(seed, "init", 0 if recipe.active.reinit_each_cycle else inputs.cycle))
    teacher, student = build_pair(recipe.model, len(inputs.classes))
    if pretrained is not None:
        initialise_from(pretrained, teacher, student)
    if project is not None and inputs.warm:
        prev_t, prev_s, _ = project.load_models(expect_model=recipe.model)  # another architecture: clear error
        teacher.load_state_dict(prev_t.state_dict())
        student.load_state_dict(prev_s.state_dict())
    return teacher, student


def train_cycle(
    project: Project | None,
    recipe: Recipe,
    device: torch.device,
    *,
    seed: int = DEFAULT_SEED,
    test: LabeledSet | None = None,
    select: bool = True,
    pool: VolumeSource | None = None,
    run: RunContext = QUIET,
) -> CycleReport:
    """Train on the current labels, save the models, score, write the next batch, judge, log the cycle.

    Under torchrun every rank calls this: rank 0 with the project, the others with
    ``project=None`` (:mod:`.ranks`); all train, test and score together, rank 0 writes.
    ``pool``: on another rank, the pool it opened in an earlier cycle (a run of several cycles
    opens it once); None opens it as rank 0 says. Rank 0 uses ``project.pool``.
    """
    check_owner(project)
    recipe = check_recipe(recipe)
    strategy = get_strategy(recipe.active.strategy)
    options = strategy.parse_options(recipe.active.options.get(strategy.name, {}))
    needs_student = strategy.needs_student(options)
    inputs, x, pretrained = None, None, None
    if project is not None:
        inputs, x = _read_inputs(project, recipe, seed, needs_student)
        # before the broadcast, so that the other ranks wait for a first pretraining there
        pretrained = pretrained_state(project, recipe, device, seed=seed, run=run)
    inputs = rank0s(inputs)
    cycle, classes, idx, y = inputs.cycle, inputs.classes, inputs.labeled, inputs.labels
    if project is not None:
        pool = project.pool
    elif pool is None:
        pool = open_source(inputs.pool)
    if x is None:
        x = pool.read(idx)  # the volumes rank 0 read, from the same file
    train_x, train_y = x, y
    if len(inputs.held_out):  # judged after training, not trained on (the module's docstring)
        keep = ~np.isin(idx, inputs.held_out)
        train_x, train_y = x[keep], y[keep]
    teacher, student = _initial_models(project, recipe, inputs, pretrained, seed)
    train = recipe.train.for_labeled(len(train_y), len(classes), warm=inputs.warm)
    head = strategy.make_head(teacher, train, options)
    job = TrainJob(train, recipe.transfer, derive_seed(seed, "train", cycle), cycle, recipe.speed)
    # a strategy that does not read the student gets the teacher it would have had, without the
    # student's training; the checkpoint keeps the student as it started
    trained_student = student if needs_student else None
    result = train_pair(teacher, trained_student, train_x, train_y, job, head=head, device=device, run=run)
    run.check_cancel()
    if project is not None:
        project.save_models(cycle, teacher, student, recipe, student_trained=trained_student is not None)

    scores = _test_scores(teacher, test, classes, recipe, device, run)
    mean_unc, select_s, n_queried = float("nan"), 0.0, 0
    if select:
        t0 = time.perf_counter()
        ctx = QueryContext(teacher, trained_student, pool, idx, device, seeded_rng(seed, "select", cycle),
                           recipe.transfer.score, recipe.train.eval_batch_size, head, run, labels=y,
                           junk_class=classes.index(JUNK_CLASS) if JUNK_CLASS in classes else None,
                           speed=recipe.speed, shard=True, option_tables=recipe.active.options)
        batch = _query(ctx, strategy, options, recipe, inputs.n_pool, seeded_rng(seed, "audit", cycle))
        if batch is not None:
            if project is not None:
                project.write_query(cycle + 1, batch.items(project.pool.keys, classes))
            n_queried = len(batch.indices)
            mean_unc = float(np.nanmean(batch.scores)) if np.isfinite(batch.scores).any() else float("nan")
        select_s = time.perf_counter() - t0

    judged = judge_cycle(project, teacher, pool, recipe, device, cycle=cycle, classes=classes,
                         held_out=inputs.held_out, stop=inputs.stop, run=run)
    counts = {c: int((y == k).sum()) for k, c in enumerate(classes)}
    report = CycleReport(cycle, len(idx), scores.accuracy, mean_unc, result.seconds, select_s, n_queried,
                         result.teacher_loss, result.student_loss, result.transfer_loss,
                         result.samples_per_second, recipe.active.strategy, str(device), counts,
                         scores.balanced_accuracy, scores.recall_text(), result.epochs, scores.particle_accuracy,
                         **_judgement_fields(judged))
    if project is not None:
        project.record_cycle(report.history_row())
    return report


def _test_scores(teacher, test: LabeledSet | None, classes: list[str], recipe: Recipe, device: torch.device,
                 run: RunContext):
    """The teacher's scores on the test set (NaN without one)."""
    if test is None or not len(test.y):
        return score_predictions([], [], classes)
    pred, _ = predict(teacher, test.source, np.arange(len(test.y)), device, batch_size=recipe.train.eval_batch_size,
                      speed=recipe.speed, run=run.quiet(), shard=True)
    return score_predictions(pred, test.y, classes)


def _judgement_fields(judged: Judgement | None) -> dict:
    """The CycleReport's fields of a cycle's judgement (defaults on ranks other than 0)."""
    if judged is None:
        return {}
    e = judged.estimate
    return dict(estimated_accuracy=e.accuracy, estimated_accuracy_low=e.low, estimated_accuracy_high=e.high,
                audit_held_out=judged.held_out, stop_kappa=judged.kappa, stop_suggested=int(judged.suggested),
                stop_reason=judged.reason)


@dataclass(frozen=True)
class QueriedBatch:
    """The next batch: pool indices in the order shown, their strategy scores, which are the audit
    slice, and the teacher's predicted class and confidence of each."""

    indices: np.ndarray
    scores: np.ndarray
    audit: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray

    def items(self, keys: list[str], classes: list[str]) -> list[QueryItem]:
        return [QueryItem(r, int(i), keys[i], float(s), classes[p], float(c), audit=bool(a))
                for r, (i, s, p, c, a) in enumerate(zip(self.indices, self.scores, self.predicted, self.confidence,
                                                        self.audit))]


def _query(ctx: QueryContext, strategy: Strategy, options, recipe: Recipe, n_pool: int,
           audit_rng: np.random.Generator) -> QueriedBatch | None:
    """The next batch of m: the audit slice, ``ceil(audit * m)`` volumes drawn uniformly from the
    unlabeled pool first, and the strategy's m - a picks among a random subset of the rest; None
    when nothing is left to ask.

    The audit volumes have no strategy score (NaN, as a random pick) and sit at seeded random
    places among the strategy's picks, which keep their order. With no audit slice the strategy's
    picks are the batch, as they were before the slice existed."""
    unlabeled = np.setdiff1d(np.arange(n_pool), ctx.labeled)
    m = min(next_query_size(n_pool, len(ctx.labeled), recipe.active), len(unlabeled))
    if m <= 0:
        return None
    audits = audit_slice(unlabeled, audit_count(recipe.trust.audit, m), audit_rng)
    picks = Selection(audits[:0], np.empty(0))
    if m > len(audits):
        rest = np.setdiff1d(unlabeled, audits) if len(audits) else unlabeled
        subset = random_subset(rest, m - len(audits), recipe.active.subset_factor, ctx.rng)
        picks = rank0s(strategy(ctx, subset, m - len(audits), options))  # every rank: its passes are collective
    indices, scores, flags = picks.indices, picks.scores, np.zeros(len(picks.indices), bool)
    if len(audits):
        n = len(picks.indices) + len(audits)
        flags = np.zeros(n, bool)
        flags[audit_rng.choice(n, size=len(audits), replace=False)] = True
        indices, scores = np.empty(n, np.int64), np.full(n, np.nan)
        indices[flags], indices[~flags], scores[~flags] = audits, picks.indices, picks.scores
    pred, conf = predict(ctx.teacher, ctx.source, indices, ctx.device, batch_size=ctx.batch_size,
                         speed=ctx.speed, run=ctx.run.quiet(), shard=True)
    return QueriedBatch(indices, scores, flags, pred, conf)


def open_source(reopen: Reopen) -> VolumeSource:
    """The source another process described with its ``reopen()`` (the pool, read-only)."""
    opener, args = reopen
    return opener(*args)
