"""Out-of-sample class probabilities for every labeled volume, by k-fold cross-fitting.

A teacher trained on a volume's label cannot judge that label: it memorises it (the review
tab's old "likely mistakes" showed 99.6% for a label given wrongly on purpose). Here the
labeled set is cut into ``k`` stratified folds; for each fold a fresh teacher is trained with
the project's recipe on the other folds and predicts the held-out one, so every volume's
probabilities come from a model that never saw its label.

Training goes through the engine's own :func:`~napari_ktal.core.engine.train_pair`, with the
teacher alone (no student: the teacher it trains is the one it would train beside a student, on
the same batches and flips). A strategy's auxiliary head (learning loss) is not trained:
cross-fitting judges the plain teacher. How many folds and repeats: the recipe's ``[trust]``
unless the caller says otherwise.

Each fold's teacher starts from a seeded fresh initialisation (or from ``initial_state``, the
project's pretrained encoder, when its recipe pretrains), never from the last cycle's weights,
which have seen the held-out labels.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

import numpy as np
import torch

from ..data import ArraySource
from ..engine import TrainJob, forward_outputs, train_pair
from ..models import ResNet3D, pair_configs
from ..progress import QUIET, Progress, RunContext
from ..recipe import Recipe
from ..seeds import DEFAULT_SEED, derive_seed, seeded_rng

DEFAULT_FOLDS = 5


@dataclasses.dataclass(frozen=True)
class CrossFit:
    """Out-of-sample predictions of the labeled set, one row per volume, in the order given.

    ``probs`` is ``softmax(logits)``; ``logits`` are kept for temperature scaling
    (:mod:`.calibration`). ``fold[i]`` is the fold volume ``i`` was held out in; ``judged[i]``
    is False for a volume whose class has no other labeled volume (no fold could learn it, so
    its out-of-sample probability says nothing about its label).
    """

    indices: np.ndarray  # (n,) pool indices
    labels: np.ndarray  # (n,) the given class ids
    logits: np.ndarray  # (n, K) float32
    probs: np.ndarray  # (n, K) float32
    fold: np.ndarray  # (n,) int
    n_folds: int
    judged: np.ndarray  # (n,) bool
    seconds: float
    #: (R, n, K) float32: each repeat's out-of-sample logits, when there were ``R > 1`` repeats
    #: (``logits`` is then the log of the repeats' mean probability, and ``fold`` repeat 0's split)
    repeat_logits: np.ndarray | None = None

    @property
    def n_repeats(self) -> int:
        """How many differently split cross-fittings were averaged (1: a single one)."""
        return 1 if self.repeat_logits is None else len(self.repeat_logits)

    @property
    def predictions(self) -> np.ndarray:
        """The out-of-sample predicted class of each volume."""
        return self.probs.argmax(1)


def assign_folds(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Stratified fold of each volume: each class shuffled and dealt round-robin over the folds.

    Every class is spread as evenly as it can be (fold counts differ by at most one), and
    the next class starts dealing where the last stopped, so fold sizes stay within one of
    each other. A class with fewer volumes than folds lands one volume in each of as many
    folds: each of its volumes is still judged by a model that trained on all its other
    ones, which is better than lowering ``k`` for every class (a class of 2 would force
    2 folds, each model trained on half the labels).
    """
    labels = np.asarray(labels)
    fold = np.empty(len(labels), np.int64)
    start = 0
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        fold[members] = (start + np.arange(len(members))) % k
        start = (start + len(members)) % k
    return fold


def n_folds_for(n_labeled: int, folds: int = DEFAULT_FOLDS) -> int:
    """Folds actually used: at most one per volume, and at least 2 (a model per half)."""
    if n_labeled < 4:
        raise ValueError(f"cross-fitting needs at least 4 labeled volumes, not {n_labeled}")
    return max(2, min(folds, n_labeled // 2))


def fold_teacher(recipe: Recipe, n_classes: int) -> ResNet3D:
    """A fresh teacher of the recipe."""
    teacher_cfg, _ = pair_configs(recipe.model, n_classes)
    return ResNet3D.from_config(teacher_cfg)


def fit_fold(
    x: np.ndarray,
    labels: np.ndarray,
    held_out: np.ndarray,
    recipe: Recipe,
    device: torch.device,
    *,
    n_classes: int,
    seed: int,
    initial_state: Mapping[str, torch.Tensor] | None = None,
    run: RunContext = QUIET,
) -> np.ndarray:
    """Train a teacher on the volumes not in ``held_out`` (a boolean mask); its logits on the held-out ones.

    The initial weights (and dropout on the CPU) draw from torch's global generator, seeded
    here inside a fork, so the caller's random state is as it was."""
    train = ~held_out
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        teacher = fold_teacher(recipe, n_classes)
        if initial_state is not None:  # the pretrained encoder; the classifier stays as initialised
            teacher.load_state_dict(dict(initial_state), strict=False)
        spec = recipe.train.for_labeled(int(train.sum()), n_classes)
        job = TrainJob(spec, recipe.transfer, derive_seed(seed, "train"), None, recipe.speed)
        train_pair(teacher, None, x[train], labels[train], job, device=device, run=run)
    (logits,) = forward_outputs([teacher], ArraySource(x), np.flatnonzero(held_out), device,
                                batch_size=recipe.train.eval_batch_size, speed=recipe.speed, run=run)
    return logits.numpy()


def _one_split(x, labels, recipe, device, *, n_classes, k, repeat, seed, initial_state, run, t0, total):
    """One k-fold cross-fitting; repeat 0 draws the split and fold seeds of a single cross-fitting."""
    tag = () if repeat == 0 else (repeat,)
    fold = assign_folds(labels, k, seeded_rng(seed, "crossfit", "folds", *tag))
    logits = np.zeros((len(labels), n_classes), np.float32)
    for f in range(k):
        run.check_cancel()
        step = repeat * k + f
        run.emit(Progress("crossfit", step, total, message=f"cross-fitting: fold {step + 1}/{total}",
                          elapsed=time.perf_counter() - t0))
        held_out = fold == f
        logits[held_out] = fit_fold(x, labels, held_out, recipe, device, n_classes=n_classes,
                                    seed=derive_seed(seed, "crossfit", *tag, f), initial_state=initial_state,
                                    run=run.quiet())
    return fold, logits


def crossfit(
    x: np.ndarray,
    labels: np.ndarray,
    recipe: Recipe,
    device: torch.device,
    *,
    n_classes: int,
    indices: np.ndarray | None = None,
    folds: int | None = None,
    repeats: int | None = None,
    seed: int = DEFAULT_SEED,
    initial_state: Mapping[str, torch.Tensor] | None = None,
    run: RunContext = QUIET,
) -> CrossFit:
    """Out-of-sample logits and probabilities of every labeled volume ``x`` (n, b, b, b).

    ``labels``: class ids in ``range(n_classes)``; ``indices``: their pool indices (kept
    for the caller; default ``arange(n)``). Each fold is seeded by ``(seed, fold)``: the
    same labels give the same result. ``repeats`` > 1 cross-fits again on differently drawn
    splits and averages the probabilities (each volume judged by ``repeats`` models, none of
    which saw it): less of the verdict hangs on one split and one initialisation. Costs
    ``k * repeats`` teacher trainings on ``(k-1)/k`` of the set: measured 2.7-2.8x one
    cycle's training at ``k = 5`` and one repeat (the package docstring).
    """
    folds = recipe.trust.folds if folds is None else folds
    repeats = recipe.trust.repeats if repeats is None else repeats
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, not {repeats}")
    labels = np.asarray(labels, np.int64)
    n = len(labels)
    k = n_folds_for(n, folds)
    t0 = time.perf_counter()
    splits = [_one_split(x, labels, recipe, device, n_classes=n_classes, k=k, repeat=r, seed=seed,
                         initial_state=initial_state, run=run, t0=t0, total=k * repeats) for r in range(repeats)]
    run.emit(Progress("crossfit", k * repeats, k * repeats, elapsed=time.perf_counter() - t0))
    fold = splits[0][0]
    stacked = np.stack([lg for _, lg in splits])  # (R, n, K)
    probs = torch.from_numpy(stacked).softmax(-1).mean(0).numpy()
    logits = stacked[0] if repeats == 1 else np.log(np.maximum(probs, np.finfo(np.float32).tiny)).astype(np.float32)
    counts = np.bincount(labels, minlength=n_classes)
    return CrossFit(np.arange(n) if indices is None else np.asarray(indices), labels, logits, probs, fold, k,
                    counts[labels] >= 2, time.perf_counter() - t0, None if repeats == 1 else stacked)
