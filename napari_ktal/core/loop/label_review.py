"""Judging a project's labels out of sample: likely mistakes, and the temperature of its confidence.

The latest teacher trained on every label, so it memorises them and cannot find a wrong one.
:func:`review_labels` cross-fits the teacher (:func:`~napari_ktal.core.trust.crossfit`: k
teachers of the project's recipe, each judging the labels it did not train on), ranks the labels
by their out-of-sample probability against their class's threshold (:func:`~napari_ktal.core.trust.rank_suspects`) and fits a temperature on
the out-of-sample logits (:func:`~napari_ktal.core.trust.calibrate`). ``ktal-cryo review`` and the
review tab show the result; export and predict divide the teacher's logits by the temperature.

The result is stored in ``P/review/`` (written atomically, by the holder of the project's lock):

- ``crossfit.npz``: the out-of-sample logits and probabilities, folds, and what was judged (pool
  indices, class ids, the class names, the cycle trained before it), so that a review of other
  labels is known to be stale (:meth:`LabelReview.is_current`);
- ``calibration.json``: temperature, ECE before and after, how many labels it was fitted on.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..atomic import atomic_open, atomic_write_text
from ..errors import KtalError, ProjectError
from ..progress import QUIET, RunContext
from ..project import Project
from ..seeds import DEFAULT_SEED
from ..trust import (
    Calibration,
    CrossFit,
    Suspect,
    apply_temperature,
    calibrate,
    crossfit,
    crossfit_accuracy,
    rank_suspects,
)
from .pretraining import pretrained_state, stored_pretrained

CROSSFIT_FILE, CALIBRATION_FILE = "crossfit.npz", "calibration.json"
MIN_LABELS = 4  # cross-fitting needs two folds of two
#: below this share of the labels agreed with out of sample, the review says its judges are weak: a
#: rule of thumb (an expert slips on far fewer labels than 30%), not a measured threshold. Seen on the
#: screenshots' project (4 classes, 62 labels, most chosen as the hardest): 3 folds agreed on 34%
#: and flagged 41 labels, nearly all of them right
WEAK_AGREEMENT = 0.7


@dataclass(frozen=True)
class SuspectRow:
    """One labeled volume as the review shows it, by name."""

    index: int  # pool index
    key: str  # the pool key: the volume's path as the labels CSVs name it
    given: str  # the label given
    suggested: str  # the out-of-sample class
    score: float  # in [0, 1]: how likely the label is wrong (0.5: as probable as its class's typical label)
    p_given: float  # out-of-sample probability of the given label
    suspect: bool  # flagged: the out-of-sample prediction is another class


@dataclass(frozen=True)
class LabelReview:
    """The labels of a project judged out of sample, and the calibration fitted on the way."""

    cycle: int  # the last cycle trained before the review
    classes: list[str]  # the class names the ids of ``crossfit.labels`` index
    crossfit: CrossFit
    calibration: Calibration
    seed: int

    @property
    def suspects(self) -> list[Suspect]:
        """Every judged label, most likely mistake first (:func:`~napari_ktal.core.trust.rank_suspects`)."""
        cf = self.crossfit
        return rank_suspects(cf.probs, cf.labels, cf.indices, cf.judged)

    def rows(self, keys) -> list[SuspectRow]:
        """The suspects by name, most likely mistake first; ``keys``: the pool's keys."""
        c = self.classes
        return [SuspectRow(s.index, keys[s.index], c[s.given], c[s.suggested], s.score, s.p_given, s.suspect)
                for s in self.suspects]

    def agreement_text(self) -> str:
        """How often the out-of-sample teachers agree with the labels (Wilson interval), as both shells
        say it, and a warning when so few agree that most flags are more likely the judges' errors.

        Over all judged labels, not an accuracy estimate: the volumes a strategy chose are the hard
        ones, and the audit slice alone estimates accuracy."""
        cf = self.crossfit
        est = crossfit_accuracy(cf.predictions[cf.judged], cf.labels[cf.judged])
        if math.isnan(est.accuracy):
            return "no label could be judged"
        text = (f"the out-of-sample teachers agree with {100 * est.accuracy:.0f}% "
                f"[{100 * est.low:.0f}-{100 * est.high:.0f}%] of {int(est.n)} labels")
        if est.accuracy < WEAK_AGREEMENT:
            text += ("; with this few labels they are weak judges: most flags are more likely their "
                     "errors than yours (judge again after more cycles)")
        return text

    @property
    def judged_labels(self) -> dict[int, str]:
        """The labels this review judged (pool index -> class name)."""
        return {int(i): self.classes[int(k)] for i, k in zip(self.crossfit.indices, self.crossfit.labels)}

    def is_current(self, labels: dict[int, str]) -> bool:
        """Whether it judged exactly ``labels`` (the project's labels now)."""
        return self.judged_labels == {int(i): lab for i, lab in labels.items()}


def review_blocker(project: Project, labels: dict[int, str] | None = None) -> str | None:
    """Why the labels cannot be judged out of sample now (None: they can)."""
    if not project.checkpoint_cycles():
        return "no trained cycle yet: label the first batch and train a cycle first"
    labels = project.labels() if labels is None else labels
    if len(labels) < MIN_LABELS:
        return f"only {len(labels)} volume(s) labeled; judging labels out of sample needs at least {MIN_LABELS}"
    counts: dict[str, int] = {}
    for label in labels.values():
        counts[label] = counts.get(label, 0) + 1
    if sum(n >= 2 for n in counts.values()) < 2:
        return "judging labels out of sample needs at least 2 classes with 2 or more labels each"
    return None


def review_labels(project: Project, device: torch.device, *, folds: int | None = None, repeats: int | None = None,
                  seed: int = DEFAULT_SEED, run: RunContext = QUIET) -> LabelReview:
    """Cross-fit the teacher on the project's labels, rank them, calibrate; store the result in ``P/review/``.

    ``folds``, ``repeats``: default the recipe's ``[trust] folds`` and ``repeats``. The folds' teachers start from the project's
    pretrained encoder when its recipe pretrains (the one its cycles started from). Costs ``folds x
    repeats`` trainings of the teacher on ``(folds-1)/folds`` of the labels: per repeat at 5 folds,
    2.7-2.8x a cycle's training at width 8 (:mod:`napari_ktal.core.trust`), 4.8x at width 4 (96
    volumes of 16^3, 8 epochs, one CPU thread: 58 s against 12 s), where the cycle's student costs
    relatively less; the default 2 repeats twice that.
    KtalError when there is nothing to judge yet (:func:`review_blocker`).
    """
    blocker = review_blocker(project)
    if blocker:
        raise KtalError(blocker)
    recipe = project.recipe()
    folds = recipe.trust.folds if folds is None else folds
    repeats = recipe.trust.repeats if repeats is None else repeats
    if folds < 2:
        raise KtalError(f"--folds {folds}: cross-fitting needs at least 2 folds")
    if repeats < 1:
        raise KtalError(f"--repeats {repeats}: cross-fitting needs at least 1 repeat")
    cycle = project.checkpoint_cycles()[-1]
    idx, y, x = project.labeled_arrays()
    initial = stored_pretrained(project, recipe)
    if initial is None:
        initial = pretrained_state(project, recipe, device, seed=seed, run=run.quiet())
    cf = crossfit(x, y, recipe, device, n_classes=len(project.classes), indices=idx, folds=folds, repeats=repeats,
                  seed=seed, initial_state=initial, run=run)
    review = LabelReview(cycle, project.classes, cf, calibrate(cf.logits, cf.labels), seed)
    save_review(project, review)
    return review


# -- storage ---------------------------------------------------------------------------------------
def save_review(project: Project, review: LabelReview) -> None:
    """Write ``P/review/crossfit.npz`` and ``calibration.json`` (each atomically; the calibration last)."""
    cf, cal = review.crossfit, review.calibration
    folder = project.paths.review
    with atomic_open(folder / CROSSFIT_FILE, "wb") as f:
        np.savez(f, indices=cf.indices, labels=cf.labels, logits=cf.logits, probs=cf.probs, fold=cf.fold,
                 judged=cf.judged, classes=np.array(review.classes, dtype=str),
                 meta=np.array([cf.n_folds, review.cycle, review.seed], np.int64), seconds=np.float64(cf.seconds),
                 **({} if cf.repeat_logits is None else {"repeat_logits": cf.repeat_logits}))
    atomic_write_text(folder / CALIBRATION_FILE, json.dumps(
        {"temperature": cal.temperature, "ece_before": cal.ece_before, "ece_after": cal.ece_after, "n": cal.n,
         "cycle": review.cycle}, indent=2))


def load_calibration(project: Project) -> Calibration | None:
    """The project's stored calibration (None: no review yet); ProjectError for a damaged file."""
    path = project.paths.review / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        cal = Calibration(float(d["temperature"]), float(d["ece_before"]), float(d["ece_after"]), int(d["n"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ProjectError(f"{path}: cannot be read ({exc}); delete it and run `ktal-cryo review` again") from None
    if not (math.isfinite(cal.temperature) and cal.temperature > 0):
        raise ProjectError(f"{path}: temperature {cal.temperature} is not positive; delete it and review again")
    return cal


def load_review(project: Project) -> LabelReview | None:
    """The stored review (None: none yet); ProjectError for a damaged file."""
    path = project.paths.review / CROSSFIT_FILE
    cal = load_calibration(project)
    if cal is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            n_folds, cycle, seed = (int(v) for v in z["meta"])
            cf = CrossFit(z["indices"], z["labels"], z["logits"], z["probs"], z["fold"], n_folds, z["judged"],
                          float(z["seconds"]), z["repeat_logits"] if "repeat_logits" in z.files else None)
            classes = [str(c) for c in z["classes"]]
    except (OSError, ValueError, KeyError) as exc:
        raise ProjectError(f"{path}: cannot be read ({exc}); delete it and run `ktal-cryo review` again") from None
    return LabelReview(cycle, classes, cf, cal, seed)


def calibrated_probs(logits, calibration: Calibration | None) -> np.ndarray:
    """``softmax(logits / T)`` with the stored temperature (``T = 1``, the raw softmax, without a review)."""
    return apply_temperature(np.asarray(logits, np.float64), 1.0 if calibration is None else calibration.temperature)


SUSPECT_COLUMNS = ["path", "label", "suggested", "score"]


def write_suspects(out, rows: list[SuspectRow]) -> None:
    """``out`` as a labels CSV: path,label,suggested,score in the order given (most suspect first), atomically."""
    import csv

    with atomic_open(out, "w") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(SUSPECT_COLUMNS)
        w.writerows([r.key, r.given, r.suggested, f"{r.score:.4g}"] for r in rows)
