"""Knowledge transfer made junk-aware: the teacher-student disagreement, weighed by how likely a
volume is to be a particle at all.

Junk (empty boxes, ice, membranes, carbon, gold, broken particles) is where the teacher and the
student disagree most freely: nothing in the labeled particles constrains it. Plain ``kt`` then
spends a share of every batch on it, and each junk label teaches the particle classes nothing.
``kt-junk`` keeps the paper's score D = KL(teacher || student) and uses what the project already
knows about junk:

- ``product`` (default): D x P(not junk)^power, with P(not junk) = 1 - the teacher's softmax
  probability of the ``junk`` class. Labels of the junk class train the teacher like any other
  (10% of the pool is labeled at random first, so it has seen junk of every common kind), and
  a volume the teacher calls junk with 90% confidence keeps a tenth of its score; a particle
  the teacher half-suspects of being junk keeps half, so hard particles near junk still come.
- ``pareto``: POAL's Pareto search (:mod:`.poal`) for a batch trading D against P(not junk).
- ``ood`` (both modes): also weigh by an in-distribution p-value, the share of the labeled
  particle volumes whose Mahalanobis confidence (:func:`.poal.ood_scores`, on the teacher's
  stages) is no higher than the candidate's: junk of a kind no label has shown yet is far from
  every particle class even when the teacher's junk class does not cover it.

A project without a ``junk`` class gets plain ``kt`` (times the p-value with ``ood``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..models import DISTANCES
from ..recipe import check
from .base import QueryContext, Selection, register
from .poal import ood_scores, poal_select
from .selection import top_m

MODES = ("product", "pareto")


def not_junk_probability(logits, junk_class: int | None) -> np.ndarray:
    """1 - softmax probability of ``junk_class`` (all ones when there is no junk class)."""
    if junk_class is None:
        return np.ones(len(logits))
    return 1.0 - logits.float().softmax(1)[:, junk_class].double().numpy()


def in_distribution_p_value(candidate_ood, labeled_ood) -> np.ndarray:
    """(1 + #labeled scores >= the candidate's) / (1 + #labeled): a conformal p-value of being like the
    labeled particles (OOD scores: high = far; 1/(n+1) for a candidate farther than all of them)."""
    ref = np.sort(np.asarray(labeled_ood, float))
    c = np.asarray(candidate_ood, float)
    at_least = len(ref) - np.searchsorted(ref, c, side="left")
    return (1.0 + at_least) / (1.0 + len(ref))


@dataclass(frozen=True)
class Options:
    mode: str = "product"  # "product": kt x P(not junk)^power; "pareto": POAL's search over both
    power: float = 1.0  # exponent of P(not junk) in the product (0: plain kt)
    ood: bool = False  # also weigh by the in-distribution p-value of the Mahalanobis confidence

    def validate(self, section: str) -> None:
        check(self.mode in MODES, f"{section}.mode", f"must be one of {', '.join(MODES)}")
        check(0 <= self.power <= 100, f"{section}.power", "must be between 0 and 100")


@register("kt-junk", summary="knowledge transfer weighed by the teacher's probability that a volume is no junk "
          "(junk-aware kt)", cost="one pass of teacher and student over the candidates (+ a Mahalanobis pass over "
          "labeled + candidates with ood = true)", options=Options, old_prefix="ktjunk",
          student=True)
def kt_junk_query(ctx: QueryContext, candidates: np.ndarray, m: int, opts: Options) -> Selection:
    t_logits, s_logits = ctx.forward([ctx.teacher, ctx.student], candidates)
    kt = DISTANCES[ctx.score_distance](t_logits, s_logits).double().numpy()
    particle = not_junk_probability(t_logits, ctx.junk_class)
    if opts.ood:
        labeled = np.asarray(ctx.labeled, np.int64)
        if ctx.labels is not None and ctx.junk_class is not None:
            labeled = labeled[np.asarray(ctx.labels) != ctx.junk_class]
        if len(labeled):
            scores = ood_scores(ctx, np.concatenate([labeled, candidates]))
            particle = particle * in_distribution_p_value(scores[len(labeled):], scores[: len(labeled)])
    if opts.mode == "pareto":
        chosen = poal_select(kt, particle, m, ctx.rng)
        order = chosen[np.argsort(-kt[chosen], kind="stable")]
        return Selection(candidates[order], kt[order])
    return Selection(*top_m(candidates, kt * particle**opts.power, m))
