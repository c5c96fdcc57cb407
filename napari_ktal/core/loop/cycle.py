"""The active-learning loop, as the paper runs it (METHOD.md).

Cycle c trains teacher and student on the labeled set L_c, scores a random subset of the
unlabeled pool and writes the next batch to label (``queries/cycle_{c+1}.csv``). Cycle 0's
batch is a random ``initial_fraction`` of the pool. Labeled-set sizes follow the recipe:
10% -> 40% of the pool in steps of 5% (7 cycles) by default.

Two drivers share :func:`train_cycle`:
- interactive (napari, or ``ktal-cryo train`` without an oracle): one cycle on the current labels;
- simulated (``--oracle``): queries are answered from a labels file until the budget is spent.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.mrc import iter_volumes, normalize, read_labels_csv
from ..data.pool import Pool
from ..engine.inference import array_reader, predict
from ..engine.training import train_pair
from ..errors import InputError, KtalError
from ..models.resnet3d import build_pair
from ..progress import ProgressCallback, StopFlag, check_cancel
from ..project.project import Project, QueryItem
from ..recipe import ActiveSpec, Recipe
from ..strategies.lloss import build_loss_learning
from ..strategies.registry import STRATEGIES, QueryContext
from ..strategies.selection import random_subset


# -- schedule & seeds ------------------------------------------------------------------
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


def derive_seed(seed: int, *parts: object) -> int:
    """A stable 63-bit seed for (seed, parts): each cycle and role gets its own stream."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seeded_rng(seed: int, *parts: object) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, *parts))


# -- labeled sets read from CSV -----------------------------------------------------------
@dataclass(frozen=True)
class LabeledSet:
    """Volumes with known classes held in memory (a test set), normalised like the pool."""

    volumes: np.ndarray  # float16 (n, b, b, b)
    y: np.ndarray  # class ids
    keys: list[str]


def load_labeled_set(csv_path: str | Path, classes: list[str]) -> LabeledSet:
    csv_path = Path(csv_path)
    items = read_labels_csv(csv_path)
    lookup = {c: k for k, c in enumerate(classes)}
    unknown = sorted({lab for _, lab in items} - set(lookup))
    if unknown:
        raise InputError(csv_path, f"label(s) {', '.join(unknown)} are not classes of this project",
                         f"classes: {', '.join(classes)}")
    refs = [r for r, _ in items]
    vols = np.stack([normalize(v, r.path).astype(np.float16) for r, v in iter_volumes(refs)])
    keys = [r.label_key(csv_path.parent.resolve()) for r in refs]
    return LabeledSet(vols, np.array([lookup[lab] for _, lab in items], np.int64), keys)


def labels_on_pool(pool: Pool, csv_path: str | Path) -> tuple[dict[int, str], list[str]]:
    """A labels CSV mapped onto pool indices, and the CSV's keys that are not in the pool.

    A row matches by its resolved file (and frame), or else by its key relative to the CSV's
    folder, so a CSV still matches a pool imported from another copy of the same folder.
    """
    csv_path = Path(csv_path)
    by_ref, by_key = pool.index_of(), {k: i for i, k in enumerate(pool.keys)}
    root = csv_path.parent.resolve()
    found: dict[int, str] = {}
    unmatched: list[str] = []
    for ref, label in read_labels_csv(csv_path):
        i = by_ref.get(ref)
        if i is None:
            i = by_key.get(ref.label_key(root))
        if i is None:
            unmatched.append(ref.label_key(root))
        else:
            found[i] = label
    return found, unmatched


def oracle_for_pool(pool: Pool, csv_path: str | Path) -> dict[int, str]:
    """Map a labels CSV onto pool indices (every pool volume must be in it; extra rows are ignored)."""
    oracle, _ = labels_on_pool(pool, csv_path)
    missing = len(pool) - len(oracle)
    if missing:
        example = next(pool.keys[i] for i in range(len(pool)) if i not in oracle)
        raise InputError(csv_path, f"has no label for {missing} of the {len(pool)} pool volumes (e.g. {example})",
                         "an oracle must label every volume of the data set")
    return oracle


# -- one cycle ---------------------------------------------------------------------------
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


def initial_query(project: Project, recipe: Recipe, seed: int) -> list[QueryItem]:
    """Cycle 0's batch: a random ``initial_fraction`` of the pool (written once, then reused)."""
    if 0 in project.query_cycles():
        return project.read_query(0)
    n = len(project.pool)
    size = budget_schedule(n, recipe.active)[0]
    chosen = seeded_rng(seed, "initial").choice(n, size=size, replace=False)
    items = [QueryItem(r, int(i), project.pool.keys[i], float("nan"), "", float("nan")) for r, i in enumerate(chosen)]
    project.write_query(0, items)
    return items


def next_query_size(n_pool: int, n_labeled: int, spec: ActiveSpec) -> int:
    """M for the next batch: up to the next scheduled size, or one step beyond the schedule."""
    for size in budget_schedule(n_pool, spec):
        if size > n_labeled:
            return size - n_labeled
    return max(1, int(round(n_pool * spec.step_fraction)))


def train_cycle(
    project: Project,
    recipe: Recipe,
    device: torch.device,
    seed: int = 0,
    test: LabeledSet | None = None,
    select: bool = True,
    on_progress: ProgressCallback | None = None,
    should_stop: StopFlag | None = None,
) -> CycleReport:
    """Train on the current labels, save the models, score, write the next batch, log the cycle."""
    cycle = project.trained_cycles
    classes = project.classes
    idx, y, x = project.labeled_arrays()
    if len(idx) < 2:
        raise KtalError(f"cycle {cycle}: only {len(idx)} volume(s) labeled; label the current batch first")
    if len(classes) < 2:
        raise KtalError("define at least 2 classes before training")
    torch.manual_seed(derive_seed(seed, "init", 0 if recipe.active.reinit_each_cycle else cycle))
    teacher, student = build_pair(recipe.model, len(classes))
    if not recipe.active.reinit_each_cycle and project.checkpoint_cycles():
        prev_t, prev_s, meta = project.load_models(expect_model=recipe.model)  # another architecture: clear error
        if meta["classes"] == classes:
            teacher.load_state_dict(prev_t.state_dict())
            student.load_state_dict(prev_s.state_dict())
    strategy = STRATEGIES[recipe.active.strategy]
    opts = recipe.active
    loss_learning = (build_loss_learning(teacher, recipe.train.epochs, opts.lloss_weight, opts.lloss_margin,
                                         opts.lloss_detach_fraction) if strategy.trains_loss_module else None)
    result = train_pair(teacher, student, x, y, recipe.train, recipe.transfer, device,
                        derive_seed(seed, "train", cycle), cycle, on_progress, should_stop, loss_learning)
    check_cancel(should_stop)
    project.save_models(cycle, teacher, student, recipe)

    acc = float("nan")
    if test is not None and len(test.y):
        pred, _ = predict(teacher, array_reader(test.volumes), np.arange(len(test.y)), device,
                          recipe.train.eval_batch_size, should_stop=should_stop)
        acc = float((pred == test.y).mean())

    n_pool = len(project.pool)
    mean_unc, select_s, n_queried = float("nan"), 0.0, 0
    if select:
        t0 = time.perf_counter()
        unlabeled = np.setdiff1d(np.arange(n_pool), idx)
        m = min(next_query_size(n_pool, len(idx), recipe.active), len(unlabeled))
        if m > 0:
            rng = seeded_rng(seed, "select", cycle)
            subset = random_subset(unlabeled, m, recipe.active.subset_factor, rng)
            ctx = QueryContext(teacher, student, project.pool.read, idx, device, rng, recipe.transfer.score,
                               recipe.train.eval_batch_size, on_progress, should_stop, recipe.active,
                               loss_learning.module if loss_learning is not None else None)
            sel = strategy(ctx, subset, m)
            pred, conf = predict(teacher, project.pool.read, sel.indices, device, recipe.train.eval_batch_size,
                                 should_stop=should_stop)
            items = [
                QueryItem(r, int(i), project.pool.keys[i], float(s), classes[p], float(c))
                for r, (i, s, p, c) in enumerate(zip(sel.indices, sel.scores, pred, conf))
            ]
            project.write_query(cycle + 1, items)
            n_queried = len(items)
            mean_unc = float(np.nanmean(sel.scores)) if np.isfinite(sel.scores).any() else float("nan")
        select_s = time.perf_counter() - t0

    counts = {c: int((y == k).sum()) for k, c in enumerate(classes)}
    report = CycleReport(cycle, len(idx), acc, mean_unc, result.seconds, select_s, n_queried,
                         result.teacher_loss, result.student_loss, result.transfer_loss,
                         result.samples_per_second, recipe.active.strategy, str(device), counts)
    row = {k: getattr(report, k) for k in report.__dataclass_fields__ if k != "class_counts"}
    project.record_cycle(row)
    return report


# -- simulated run with an oracle ---------------------------------------------------------
def run_with_oracle(
    project: Project,
    recipe: Recipe,
    oracle: dict[int, str],
    device: torch.device,
    seed: int = 0,
    test: LabeledSet | None = None,
    on_cycle=None,
    on_progress: ProgressCallback | None = None,
    should_stop: StopFlag | None = None,
) -> list[CycleReport]:
    """Run every remaining cycle of the schedule, answering each batch from ``oracle``.

    Resumable: cycles already in history.csv are not redone; an answered batch is not re-asked.
    """
    project.add_classes(sorted(set(oracle.values())))
    schedule = budget_schedule(len(project.pool), recipe.active)
    initial_query(project, recipe, seed)
    reports = []
    for cycle in range(project.trained_cycles, len(schedule)):
        check_cancel(should_stop)
        batch = project.read_query(cycle)
        labeled = project.labels()
        answers = {q.index: oracle[q.index] for q in batch if q.index not in labeled}
        if answers:
            project.label_many(answers, by="oracle", cycle=cycle)
        report = train_cycle(project, recipe, device, seed, test, select=cycle < len(schedule) - 1,
                             on_progress=on_progress, should_stop=should_stop)
        reports.append(report)
        if on_cycle is not None:
            on_cycle(report)
    return reports
