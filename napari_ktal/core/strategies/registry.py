"""Query strategies: one interface, one registry.

A strategy gets a :class:`QueryContext` (the trained models, how to read volumes, the
recipe's strategy options), the unlabeled candidate indices (already the random subset R_U)
and M, and returns the chosen indices with their scores, most informative first (higher =
more informative). Strategies that pick by greedy k-center (``coreset``,
``noise-stability``) return the greedy order, scored by the k-center distance at pick time.

Every strategy is a :class:`QueryStrategy` in :data:`STRATEGIES`, selected by name
(``[active] strategy`` in a recipe; the CLI and the widget read the same registry). The math
that needs no model lives in pure modules: :mod:`.heuristics` (entropy, margin, least
confidence, BALD), :mod:`.kcenter`, :mod:`.uncertainty` (teacher-student distances);
model-side passes in :mod:`.gradnorm`, :mod:`.noise_stability` and :mod:`.lloss`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..engine.inference import VolumeReader, forward_outputs
from ..errors import KtalError
from ..models.distances import DISTANCES
from ..progress import ProgressCallback, StopFlag
from ..recipe import ActiveSpec
from .gradnorm import gradnorm_scores
from .heuristics import bald, entropy, least_confidence, margin
from .kcenter import kcenter_greedy
from .noise_stability import output_changes
from .selection import top_m


@dataclass
class QueryContext:
    teacher: nn.Module
    student: nn.Module
    read: VolumeReader
    labeled: np.ndarray
    device: torch.device
    rng: np.random.Generator
    score_distance: str = "kl"
    batch_size: int = 256
    on_progress: ProgressCallback | None = None
    should_stop: StopFlag | None = None
    options: ActiveSpec = field(default_factory=ActiveSpec)  # the recipe's [active] table: strategy options
    loss_module: nn.Module | None = None  # lloss: the loss-prediction module trained with the teacher

    def torch_generator(self) -> torch.Generator:
        """A torch generator on the device, seeded from ``rng`` (so a query is reproducible)."""
        return torch.Generator(device=self.device).manual_seed(int(self.rng.integers(2**62)))

    def forward(self, models, indices, collect: Callable = lambda out: out.logits) -> list[torch.Tensor]:
        return forward_outputs(models, self.read, indices, self.device, self.batch_size, collect,
                               on_progress=self.on_progress, should_stop=self.should_stop)


@dataclass(frozen=True)
class Selection:
    indices: np.ndarray  # chosen pool indices, most informative first
    scores: np.ndarray  # their scores (higher = more informative)


Strategy = Callable[[QueryContext, np.ndarray, int], Selection]


@dataclass(frozen=True)
class QueryStrategy:
    """A named entry of the registry: callable like a plain :data:`Strategy`."""

    query: Strategy
    summary: str  # one line for help texts and tooltips
    trains_loss_module: bool = False  # train_cycle must train a loss-prediction module with the teacher

    def __call__(self, ctx: QueryContext, candidates: np.ndarray, m: int) -> Selection:
        return self.query(ctx, np.asarray(candidates, dtype=np.int64), m)


# -- the paper's method and the random baseline ----------------------------------------------
def knowledge_transfer(ctx: QueryContext, candidates: np.ndarray, m: int) -> Selection:
    """The paper's method: the teacher-student distance of the posteriors (KL by default)."""
    t_logits, s_logits = ctx.forward([ctx.teacher, ctx.student], candidates)
    scores = DISTANCES[ctx.score_distance](t_logits, s_logits).numpy()
    return Selection(*top_m(candidates, scores, m))


def random_query(ctx: QueryContext, candidates: np.ndarray, m: int) -> Selection:
    """Uniformly random; scores are NaN (no model is consulted)."""
    chosen = ctx.rng.choice(np.asarray(candidates), size=min(m, len(candidates)), replace=False)
    return Selection(chosen, np.full(len(chosen), np.nan))


# -- the teacher's softmax ---------------------------------------------------------------------
def softmax_query(score: Callable[[np.ndarray], np.ndarray]) -> Strategy:
    """A strategy that ranks the candidates by ``score(teacher softmax (N, C))``."""

    def query(ctx: QueryContext, candidates: np.ndarray, m: int) -> Selection:
        (logits,) = ctx.forward([ctx.teacher], candidates)
        return Selection(*top_m(candidates, score(logits.softmax(1).numpy()), m))

    query.__name__ = f"{score.__name__}_query"
    query.__doc__ = f"Top M by {score.__name__} of the teacher's softmax (see heuristics.{score.__name__})."
    return query


# -- MC dropout: BALD ----------------------------------------------------------------------------
@torch.no_grad()
def mc_dropout_probs(classifier: nn.Module, embedding: torch.Tensor, p: float, passes: int,
                     generator: torch.Generator | None = None, max_elements: int = 1 << 24) -> torch.Tensor:
    """Softmax of ``classifier(dropout(embedding))`` for ``passes`` dropout masks: (passes, N, C).

    The 3D ResNet's only dropout sits between the pooled embedding and the classifier, so the
    K stochastic forward passes share the backbone: one backbone pass, then K cheap masked
    classifier passes, all masks of a chunk drawn in one call (inverted dropout, like nn.Dropout).
    """
    n, d = embedding.shape
    chunk = max(1, max_elements // max(1, passes * d))
    out = []
    for start in range(0, n, chunk):
        e = embedding[start : start + chunk].float()
        keep = torch.rand((passes, *e.shape), generator=generator, device=e.device) >= p
        out.append(classifier(e.unsqueeze(0) * keep / (1.0 - p)).float().softmax(-1))
    return torch.cat(out, dim=1)


def dropout_rate(model: nn.Module, fallback: float) -> float:
    """The model's trained dropout rate, or ``fallback`` when it trained without dropout."""
    p = float(getattr(getattr(model, "dropout", None), "p", 0.0))
    return p if p > 0 else fallback


def bald_query(ctx: QueryContext, candidates: np.ndarray, m: int) -> Selection:
    """BALD (Houlsby et al. 2011; Gal et al. 2017) with MC dropout before the classifier.

    ``[active] mc_passes`` passes; the dropout rate is the teacher's ``[model] dropout`` when it
    trained with dropout (the proper MC-Dropout baseline), else ``[active] mc_dropout`` applied at
    query time only.
    """
    (emb,) = ctx.forward([ctx.teacher], candidates, collect=lambda out: out.embedding)
    p = dropout_rate(ctx.teacher, ctx.options.mc_dropout)
    probs = mc_dropout_probs(ctx.teacher.fc, emb.to(ctx.device), p, ctx.options.mc_passes, ctx.torch_generator())
    return Selection(*top_m(candidates, bald(probs.cpu().numpy()), m))


# -- diversity: core-set ---------------------------------------------------------------------
def coreset_query(ctx: QueryContext, candidates: np.ndarray, m: int) -> Selection:
    """Core-Set (Sener & Savarese 2018): greedy k-center on the teacher's penultimate features.

    The labeled volumes are the initial centers; each pick is the candidate farthest from
    every center so far (labeled and already picked), scored by that distance.
    """
    labeled = np.asarray(ctx.labeled, dtype=np.int64)
    (emb,) = ctx.forward([ctx.teacher], np.concatenate([labeled, candidates]), collect=lambda out: out.embedding)
    order, dist = kcenter_greedy(emb[len(labeled):], m, centers=emb[: len(labeled)], device=ctx.device)
    return Selection(candidates[order], dist)


# -- gradient norm of a label-free loss --------------------------------------------------------
def gradnorm_query(loss: str) -> Strategy:
    def query(ctx: QueryContext, candidates: np.ndarray, m: int) -> Selection:
        scores = gradnorm_scores(ctx.teacher, ctx.read, candidates, ctx.device, loss,
                                 ctx.options.gradnorm_batch_size, ctx.on_progress, ctx.should_stop)
        return Selection(*top_m(candidates, scores, m))

    query.__name__ = f"gradnorm_{loss}_query"
    query.__doc__ = (f"{loss}-gradnorm (Wang et al. 2022): top M by the sum over parameter tensors of the "
                     "per-sample gradient norms of the label-free loss, teacher in eval mode (see gradnorm).")
    return query


# -- noise stability -------------------------------------------------------------------------------
def noise_stability_query(ctx: QueryContext, candidates: np.ndarray, m: int) -> Selection:
    """Noise stability (Li et al. 2024): greedy k-center from the origin on the concatenated
    normalised softmax changes under ``[active] noise_passes`` weight-noise draws of relative
    size ``[active] noise_scale`` (see noise_stability)."""
    feats = output_changes(ctx.teacher, ctx.read, candidates, ctx.device, ctx.options.noise_passes,
                           ctx.options.noise_scale, ctx.torch_generator(), ctx.batch_size,
                           ctx.on_progress, ctx.should_stop)
    order, dist = kcenter_greedy(feats, m, centers=feats.new_zeros(1, feats.shape[1]))
    return Selection(candidates[order], dist)


# -- learning loss --------------------------------------------------------------------------------
def lloss_query(ctx: QueryContext, candidates: np.ndarray, m: int) -> Selection:
    """LL4AL (Yoo & Kweon 2019): top M by the loss the loss-prediction module predicts (see lloss)."""
    if ctx.loss_module is None:
        raise KtalError("strategy 'lloss' needs the loss-prediction module trained with the teacher "
                        "(train_cycle builds it when [active] strategy = 'lloss')")
    module = ctx.loss_module.to(ctx.device).eval()
    (pred,) = ctx.forward([ctx.teacher], candidates, collect=lambda out: module(out.stages))
    return Selection(*top_m(candidates, pred.numpy(), m))


STRATEGIES: dict[str, QueryStrategy] = {
    "kt": QueryStrategy(knowledge_transfer, "knowledge transfer: teacher-student distance of the posteriors (the paper)"),
    "random": QueryStrategy(random_query, "uniformly random (baseline)"),
    "entropy": QueryStrategy(softmax_query(entropy), "entropy of the teacher's softmax"),
    "margin": QueryStrategy(softmax_query(margin), "smallest gap between the teacher's two most likely classes"),
    "least-confidence": QueryStrategy(softmax_query(least_confidence), "lowest top-class probability of the teacher"),
    "bald": QueryStrategy(bald_query, "BALD mutual information from MC-dropout passes"),
    "coreset": QueryStrategy(coreset_query, "core-set: greedy k-center on the teacher's penultimate features"),
    "gradnorm-expected": QueryStrategy(gradnorm_query("expected"), "gradient norm of the expected loss (gradnorm)"),
    "gradnorm-entropy": QueryStrategy(gradnorm_query("entropy"), "gradient norm of the prediction entropy (gradnorm)"),
    "noise-stability": QueryStrategy(noise_stability_query, "k-center on output changes under small weight noise"),
    "lloss": QueryStrategy(lloss_query, "learning loss: a module trained to predict the teacher's loss (LL4AL)",
                           trains_loss_module=True),
}
