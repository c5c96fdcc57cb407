"""Trusting the result without a test set: the expert's mistakes, accuracy, calibration, stopping.

- :mod:`.crossfit`     out-of-sample probabilities of every labeled volume (k-fold teachers, repeated splits averaged)
- :mod:`.mistakes`     confident learning's class thresholds: suspect labels ranked, with the suggested class
- :mod:`.calibration`  temperature scaling on the out-of-sample logits; expected calibration error
- :mod:`.audit`        accuracy from a random audit slice of every batch, with a Wilson interval
- :mod:`.stopping`     stabilising predictions: kappa of successive teachers on a fixed stop set

Wiring (the layer of core.strategies and core.project; core.loop calls it): after a cycle,
``crossfit(x, y, recipe, device, n_classes=..., indices=idx, seed=..., initial_state=pretrained)``
on the project's labeled arrays; ``rank_suspects(cf.probs, cf.labels, cf.indices, cf.judged)`` for the review
(CSV path,label,suggested,score); ``calibrate(cf.logits, cf.labels)`` for ``T`` and the ECE
(predict/export use ``apply_temperature``); ``crossfit_accuracy`` on the rows flagged audit,
or ``prequential_accuracy`` from the queries' predicted classes; ``cohen_kappa`` of successive
teachers on ``stop_set(len(pool), seed=...)`` and ``suggest_stop`` over the history.

Cost, per repeat: 5-fold cross-fitting took 2.7-2.8x one cycle's training (teacher + student)
on 48 volumes (quick recipe, width 8, 8 epochs, 16^3 and 32^3, one CPU thread; measured when
each fold's teacher still trained beside a one-channel stand-in student, which cost next to
nothing): 5 teachers on 4/5 of the set against a teacher and a half-cost student. With
``[train] min_steps`` every fold trains as many steps as the cycle, so expect ~3.3x; 3 folds cost
about 2x. ``repeats`` multiplies it: the recipe's ``[trust] repeats`` = 2 (measured to find more
of the planted mistakes, docs/results.md "Trust") costs about twice that, 4.5x a cycle's training
on the issue's pool of 240.
"""

from .audit import (
    AccuracyEstimate,
    audit_slice,
    crossfit_accuracy,
    estimate_text,
    prequential_accuracy,
    recency_weights,
    wilson_interval,
)
from .calibration import Calibration, apply_temperature, calibrate, expected_calibration_error, fit_temperature
from .crossfit import DEFAULT_FOLDS, CrossFit, assign_folds, crossfit, n_folds_for
from .mistakes import Suspect, class_thresholds, flag_suspects, label_score, rank_suspects
from .stopping import cohen_kappa, stop_set, suggest_stop

__all__ = [
    "DEFAULT_FOLDS",
    "AccuracyEstimate",
    "Calibration",
    "CrossFit",
    "Suspect",
    "apply_temperature",
    "assign_folds",
    "audit_slice",
    "calibrate",
    "class_thresholds",
    "cohen_kappa",
    "crossfit",
    "crossfit_accuracy",
    "estimate_text",
    "expected_calibration_error",
    "fit_temperature",
    "flag_suspects",
    "label_score",
    "n_folds_for",
    "prequential_accuracy",
    "rank_suspects",
    "recency_weights",
    "stop_set",
    "suggest_stop",
    "wilson_interval",
]
