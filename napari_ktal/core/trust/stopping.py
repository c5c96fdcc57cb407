"""When labeling can stop: stabilising predictions (Bloodgood and Vijay-Shanker 2009).

A fixed *stop set* (a seeded random subset of the pool, chosen once per project and never
changed, :func:`stop_set`) is predicted by every cycle's teacher. When successive teachers
agree on it almost perfectly (Cohen's kappa >= 0.99 for the last 3 cycles, the paper's
setting) more labels no longer change the model's decisions, and, as a second condition here,
the accuracy estimate's interval (:mod:`.audit`) has stopped rising: its lower bound is not
above the one ``window`` cycles earlier by more than ``tolerance``. The rule is a suggestion
for the user, never enforced.

Kappa rather than raw agreement: two teachers that both call 95% of the pool one class agree
on 90% of it by chance alone; kappa counts only the agreement beyond that.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..seeds import seeded_rng

DEFAULT_STOP_SET = 1000
DEFAULT_KAPPA = 0.99
DEFAULT_WINDOW = 3
DEFAULT_TOLERANCE = 0.01


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two labelings of the same items: ``(p_o - p_e) / (1 - p_e)``.

    ``p_o`` is the observed agreement, ``p_e`` the agreement expected from the two labelings'
    class frequencies alone. Two identical constant labelings (``p_e = 1``) agree perfectly:
    1.0. No items: NaN."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"the labelings differ in length: {len(a)} and {len(b)}")
    if len(a) == 0:
        return float("nan")
    classes, coded = np.unique(np.concatenate([a, b]), return_inverse=True)
    ca, cb = coded[: len(a)], coded[len(a):]
    p_o = float(np.mean(ca == cb))
    p_e = float(np.dot(np.bincount(ca, minlength=len(classes)), np.bincount(cb, minlength=len(classes)))) / len(a) ** 2
    if p_e >= 1.0:
        return 1.0 if p_o >= 1.0 else 0.0
    return (p_o - p_e) / (1.0 - p_e)


def stop_set(n_pool: int, size: int = DEFAULT_STOP_SET, seed: int = 0) -> np.ndarray:
    """``min(size, n_pool)`` pool indices drawn with ``seed``, sorted: the same for the whole project.

    It may overlap labeled volumes (the paper's stop set is drawn from the unlabeled data, but the
    pool shrinks as labels come: a fixed set needs no bookkeeping, and on labeled volumes
    successive teachers agree the more the more they are fitted, which the kappa sees alike)."""
    size = min(max(int(size), 0), int(n_pool))
    return np.sort(seeded_rng(seed, "stop set").choice(int(n_pool), size=size, replace=False))


def suggest_stop(
    kappas: Sequence[float],
    lows: Sequence[float],
    *,
    threshold: float = DEFAULT_KAPPA,
    window: int = DEFAULT_WINDOW,
    tolerance: float = DEFAULT_TOLERANCE,
) -> tuple[bool, str]:
    """Whether to suggest stopping after the last cycle, and why (one sentence for the user).

    ``kappas``: kappa between each cycle's teacher and the one before, oldest first (cycle 0
    has none: one fewer than cycles, or NaN first). ``lows``: the accuracy estimate's lower bound
    after each cycle, oldest first. When the last ``window + 1`` lows are not all known (no audit
    slice), the kappa condition decides alone, as in the paper, and the reason says so."""
    recent = [float(k) for k in kappas[-window:]]
    if len(recent) < window or not all(np.isfinite(recent)):
        return False, f"not yet: the predictions need {window} cycles of kappa to compare"
    if min(recent) < threshold:
        return False, (f"keep labeling: the predictions still change (kappa {min(recent):.3f} < "
                       f"{threshold:g} within the last {window} cycles)")
    shown = ", ".join(f"{k:.3f}" for k in recent)
    last = [float(v) for v in lows[-(window + 1):]]
    if len(last) < window + 1 or not all(np.isfinite(last)):
        return True, f"labeling can stop: the predictions are stable (kappa {shown}); no accuracy estimate to check"
    rise = last[-1] - last[0]
    if rise > tolerance:
        return False, (f"keep labeling: the predictions are stable (kappa {shown}) but the accuracy's lower bound "
                       f"still rises ({last[0]:.1%} -> {last[-1]:.1%} over {window} cycles)")
    return True, (f"labeling can stop: the predictions are stable (kappa {shown}) and the accuracy's lower bound "
                  f"no longer rises ({last[0]:.1%} -> {last[-1]:.1%})")
