"""One active-learning cycle, as the paper runs it (METHOD.md).

Cycle c trains teacher and student on the labeled set L_c, scores a random subset of the
unlabeled pool and writes the next batch to label (``queries/cycle_{c+1}.csv``). Cycle 0's
batch is a random ``initial_fraction`` of the pool. Labeled-set sizes follow the recipe:
10% -> 40% of the pool in steps of 5% (7 cycles) by default.

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
from ..recipe import ActiveSpec, Recipe
from ..seeds import DEFAULT_SEED, derive_seed, seeded_rng
from ..strategies import QueryContext, Selection, Strategy, check_recipe, get_strategy
from ..strategies.selection import random_subset
from .labels import LabeledSet
from ..evaluation.metrics import score_predictions
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

    def history_row(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "class_counts"}


def initial_query(project: Project, recipe: Recipe, seed: int = DEFAULT_SEED, *,
                  device: torch.device | None = None, run: RunContext = QUIET) -> list[QueryItem]:
    """Cycle 0's batch (written once, then reused): a random ``initial_fraction`` of the pool, or
    with ``[active] initial = "typiclust"`` the typical and diverse volumes of the pretrained
    features (the encoder is pretrained first if the project has none yet)."""
    if 0 in project.query_cycles():
        return project.read_query(0)
    n = len(project.pool)
    size = budget_schedule(n, recipe.active)[0]
    if recipe.active.initial == "typiclust":
        device = device or torch.device("cpu")
        state = pretrained_state(project, recipe, device, seed=seed, run=run)
        feats = pool_features(project, recipe, state, device, run=run.quiet())
        chosen = typiclust(feats, size, seeded_rng(seed, "initial"))
    else:
        chosen = seeded_rng(seed, "initial").choice(n, size=size, replace=False)
    items = [QueryItem(r, int(i), project.pool.keys[i], float("nan"), "", float("nan")) for r, i in enumerate(chosen)]
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


def _read_inputs(project: Project) -> tuple[CycleInputs, np.ndarray]:
    """Rank 0: the cycle's inputs, checked, and the labeled volumes."""
    cycle = project.trained_cycles
    classes = project.classes
    idx, y, x = project.labeled_arrays()
    if len(idx) < 2:
        raise KtalError(f"cycle {cycle}: only {len(idx)} volume(s) labeled; label the current batch first")
    if len(classes) < 2:
        raise KtalError("define at least 2 classes before training")
    return CycleInputs(cycle, classes, idx, y, project.pool.reopen(), len(project.pool)), x


def _initial_models(project: Project | None, recipe: Recipe, classes: list[str], cycle: int,
                    pretrained: Mapping[str, torch.Tensor] | None, seed: int):
    """Teacher and student of this cycle. Rank 0 (``project`` given) starts them from the pretrained
    encoder or the last cycle's weights; under torchrun DDP copies rank 0's weights to every rank."""
    torch.manual_seed(derive_seed(seed, "init", 0 if recipe.active.reinit_each_cycle else cycle))
    teacher, student = build_pair(recipe.model, len(classes))
    if pretrained is not None:
        initialise_from(pretrained, teacher, student)
    if project is not None and not recipe.active.reinit_each_cycle and project.checkpoint_cycles():
        prev_t, prev_s, meta = project.load_models(expect_model=recipe.model)  # another architecture: clear error
        if meta["classes"] == classes:
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
    """Train on the current labels, save the models, score, write the next batch, log the cycle.

    Under torchrun every rank calls this: rank 0 with the project, the others with
    ``project=None`` (:mod:`.ranks`); all train, test and score together, rank 0 writes.
    ``pool``: on another rank, the pool it opened in an earlier cycle (a run of several cycles
    opens it once); None opens it as rank 0 says. Rank 0 uses ``project.pool``.
    """
    check_owner(project)
    recipe = check_recipe(recipe)
    strategy = get_strategy(recipe.active.strategy)
    options = strategy.parse_options(recipe.active.options.get(strategy.name, {}))
    inputs, x, pretrained = None, None, None
    if project is not None:
        inputs, x = _read_inputs(project)
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
    teacher, student = _initial_models(project, recipe, classes, cycle, pretrained, seed)
    train = recipe.train.for_labeled(len(idx), len(classes))
    head = strategy.make_head(teacher, train, options)
    job = TrainJob(train, recipe.transfer, derive_seed(seed, "train", cycle), cycle, recipe.speed)
    result = train_pair(teacher, student, x, y, job, head=head, device=device, run=run)
    run.check_cancel()
    if project is not None:
        project.save_models(cycle, teacher, student, recipe)
    batch_size = recipe.train.eval_batch_size

    scores = score_predictions([], [], classes)
    if test is not None and len(test.y):
        pred, _ = predict(teacher, test.source, np.arange(len(test.y)), device, batch_size=batch_size,
                          speed=recipe.speed, run=run.quiet(), shard=True)
        scores = score_predictions(pred, test.y, classes)

    mean_unc, select_s, n_queried = float("nan"), 0.0, 0
    if select:
        t0 = time.perf_counter()
        ctx = QueryContext(teacher, student, pool, idx, device, seeded_rng(seed, "select", cycle),
                           recipe.transfer.score, batch_size, head, run, labels=y,
                           junk_class=classes.index(JUNK_CLASS) if JUNK_CLASS in classes else None,
                           speed=recipe.speed, shard=True, option_tables=recipe.active.options)
        picked = _query(ctx, strategy, options, recipe.active, inputs.n_pool)
        if picked is not None:
            sel, pred, conf = picked
            if project is not None:
                items = [
                    QueryItem(r, int(i), project.pool.keys[i], float(s), classes[p], float(c))
                    for r, (i, s, p, c) in enumerate(zip(sel.indices, sel.scores, pred, conf))
                ]
                project.write_query(cycle + 1, items)
            n_queried = len(sel.indices)
            mean_unc = float(np.nanmean(sel.scores)) if np.isfinite(sel.scores).any() else float("nan")
        select_s = time.perf_counter() - t0

    counts = {c: int((y == k).sum()) for k, c in enumerate(classes)}
    report = CycleReport(cycle, len(idx), scores.accuracy, mean_unc, result.seconds, select_s, n_queried,
                         result.teacher_loss, result.student_loss, result.transfer_loss,
                         result.samples_per_second, recipe.active.strategy, str(device), counts,
                         scores.balanced_accuracy, scores.recall_text(), result.epochs, scores.particle_accuracy)
    if project is not None:
        project.record_cycle(report.history_row())
    return report


def _query(ctx: QueryContext, strategy: Strategy, options, active: ActiveSpec, n_pool: int
           ) -> tuple[Selection, np.ndarray, np.ndarray] | None:
    """The next batch: the strategy's picks among a random subset of the unlabeled pool, with the
    teacher's predicted class and confidence for each; None when nothing is left to ask."""
    unlabeled = np.setdiff1d(np.arange(n_pool), ctx.labeled)
    m = min(next_query_size(n_pool, len(ctx.labeled), active), len(unlabeled))
    if m <= 0:
        return None
    subset = random_subset(unlabeled, m, active.subset_factor, ctx.rng)
    sel = strategy(ctx, subset, m, options)  # every rank: its passes are collective
    sel = rank0s(sel)  # every rank chose the same from the same gathered scores; now it is certain
    pred, conf = predict(ctx.teacher, ctx.source, sel.indices, ctx.device, batch_size=ctx.batch_size,
                         speed=ctx.speed, run=ctx.run.quiet(), shard=True)
    return sel, pred, conf


def open_source(reopen: Reopen) -> VolumeSource:
    """The source another process described with its ``reopen()`` (the pool, read-only)."""
    opener, args = reopen
    return opener(*args)
