"""POAL (Zhan et al., "Pareto Optimization for Active Learning under Out-of-Distribution Data
Scenarios", TMLR 2023; code SineZHAN/POAL): uncertainty against in-distribution confidence, a
Pareto choice of a fixed-size batch.

Two objectives per candidate, both to be maximised:

- informativeness U: entropy of the teacher's softmax;
- in-distribution confidence M: the Mahalanobis confidence of Lee et al. (2018) on the teacher's
  spatially averaged stage activations. Class means and one tied covariance per stage come from
  the labeled volumes of the particle classes (junk is left out: it is the out-of-distribution
  data). Each input is first nudged by an FGSM-style step of ``noise`` (0.01) towards its
  nearest class mean, then ``M_l = max_c -1/2 (f_l - mu_c)^T Sigma_l^-1 (f_l - mu_c)`` and M is
  the mean over the stages. Junk lies far from every particle class: low M.

The batch: successive non-dominated fronts of (U, M) are pre-selected until they hold at least
``preselect`` x M candidates; then a Monte-Carlo search draws fixed-size subsets, scores
each by (sum U, sum M), keeps a non-dominated archive, stops early when the MMD between recent
archive fronts stops changing, and returns the archived subset that overlaps most with how often
each candidate recurs across the archive.

**The sign of the OOD objective.** The public deep-learning code computes M as above (a
confidence: high = in-distribution, "the smaller the better" says its comment) and then gives the
Pareto search ``max(M) - M``, which is largest for the samples *farthest* from every class: with
entropy it selects uncertain *and out-of-distribution* samples, the opposite of the paper's aim
(to avoid querying OOD data). We maximise M itself: the search prefers uncertain samples that
look like the labeled particle classes. ``ood_scores`` (-M, high = out of distribution) is
what the tests rank a planted outlier by. Equivalent, for fixed-size subsets, to maximising the
sum of ``-d^2``: the min-max normalisation we apply before the search moves every subset's sums
by the same affine map, so the archive's dominance is unchanged (it only makes the early stop's
MMD tolerance scale-free).

Our choices beside the paper: the tied covariance is shrunk towards its mean variance
(``shrinkage``; a few dozen labeled volumes cannot estimate a 64x64 covariance, where the
reference code's ``EmpiricalCovariance`` would use a pseudo-inverse); the archive is seeded with
the top-M subsets of a few weighted sums of the two objectives (``seed_archive``; each is
Pareto-optimal among fixed-size subsets, where pure random subsets of 6M candidates rarely are);
the early-stop statistics are the real mean and spread of the MMDs to the recent fronts (the
reference code keeps only the last one, with a spread of 0). Without labels (a caller that gives
none), the teacher's predicted classes of the labeled volumes stand in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..recipe import check
from .base import QueryContext, Selection, register
from .heuristics import entropy

# -- Pareto fronts and the Monte-Carlo subset search (pure numpy) --------------------------------------


def dominates(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether objective vectors ``a`` (..., k) dominate ``b`` (..., k): >= everywhere, > somewhere."""
    return np.all(a >= b, axis=-1) & np.any(a > b, axis=-1)


def non_dominated(objectives) -> np.ndarray:
    """Positions of the points no other point dominates (all objectives maximised), in order."""
    f = np.asarray(objectives, float)
    if f.ndim != 2:
        raise ValueError(f"objectives must be (N, k), got shape {f.shape}")
    dominated = np.array([dominates(f, f[i]).any() for i in range(len(f))], bool)
    return np.flatnonzero(~dominated)


def preselect(objectives, at_least: int) -> np.ndarray:
    """Successive non-dominated fronts (POAL's pre-selection) until they hold ``at_least`` points."""
    f = np.asarray(objectives, float)
    left = np.arange(len(f))
    chosen: list[int] = []
    while len(chosen) < at_least and len(left):
        front = left[non_dominated(f[left])]
        chosen.extend(front.tolist())
        left = np.setdiff1d(left, front)
    return np.array(chosen, np.int64)


def mmd_rbf(x, y, kernel_mul: float = 2.0, kernel_num: int = 5) -> float:
    """Maximum mean discrepancy of two point sets under a sum of ``kernel_num`` Gaussian kernels whose
    bandwidths are spread by ``kernel_mul`` around the mean squared distance (as the reference code)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    total = np.concatenate([x, y])
    d2 = ((total[:, None, :] - total[None, :, :]) ** 2).sum(-1)
    n = len(total)
    bandwidth = d2.sum() / max(n * n - n, 1)
    if bandwidth <= 0:
        return 0.0
    bandwidth /= kernel_mul ** (kernel_num // 2)
    k = sum(np.exp(-d2 / (bandwidth * kernel_mul**i)) for i in range(kernel_num))
    nx = len(x)
    return float(k[:nx, :nx].mean() + k[nx:, nx:].mean() - 2 * k[:nx, nx:].mean())


@dataclass(frozen=True)
class SearchResult:
    chosen: np.ndarray  # positions of the chosen subset
    archive: np.ndarray  # (A, n) 0/1 masks of the final non-dominated archive
    iterations: int  # Monte-Carlo draws made (early stop included)


def pareto_subset_search(objectives, b: int, rng: np.random.Generator, *, iterations: int, seed_archive: bool = True,
                         check_every: int = 200, window: int = 10, tolerance: float = 0.01) -> SearchResult:
    """POAL's Monte-Carlo search for a size-``b`` subset of ``n`` points with two objectives.

    Each draw is a uniformly random size-``b`` subset scored by the sums of the objectives; it
    enters the archive unless an archived subset dominates it, and removes the archived subsets it
    weakly dominates. Every ``check_every`` draws, the archive's front is compared (MMD) with the
    last ``window`` recorded fronts; the search stops when the mean and spread of those MMDs have
    varied by at most ``tolerance`` over ``window`` checks. The result is the archived subset with
    the largest overlap with the recurrence counts of the candidates over the archive.
    """
    f = np.asarray(objectives, float)
    n = len(f)
    if b >= n:
        return SearchResult(np.arange(n), np.ones((1, n)), 0)
    masks: list[np.ndarray] = []
    fits: list[np.ndarray] = []

    def offer(mask: np.ndarray) -> None:
        fit = mask @ f
        if any(dominates(g, fit) for g in fits):
            return
        keep = [i for i, g in enumerate(fits) if not np.all(g <= fit)]
        masks[:] = [masks[i] for i in keep] + [mask]
        fits[:] = [fits[i] for i in keep] + [fit]

    if seed_archive:
        for w in np.linspace(0.0, 1.0, 11):
            mask = np.zeros(n)
            mask[np.argsort(-(w * f[:, 0] + (1 - w) * f[:, 1]), kind="stable")[:b]] = 1
            offer(mask)
    records: list[tuple[np.ndarray, float, float]] = []
    done = 0
    for done in range(1, iterations + 1):
        mask = np.zeros(n)
        mask[rng.choice(n, size=b, replace=False)] = 1
        offer(mask)
        if done % check_every == 0:
            front = np.array(fits)
            mmds = [mmd_rbf(front, old) for old, _, _ in records]
            records.append((front, float(np.mean(mmds)) if mmds else 0.0, float(np.std(mmds)) if mmds else 0.0))
            records = records[-window:]
            if len(records) >= window:
                means, spreads = np.array([r[1] for r in records]), np.array([r[2] for r in records])
                if np.ptp(means) <= tolerance and np.ptp(spreads) <= tolerance:
                    break
    archive = np.array(masks)
    recurrence = archive.sum(axis=0)
    best = int(np.argmax(archive @ recurrence))
    return SearchResult(np.flatnonzero(archive[best]), archive, done)


def poal_select(u, c, b: int, rng: np.random.Generator, *, preselect_factor: float = 6.0, seed_archive: bool = True,
                max_iterations: int = 20_000, check_every: int = 200) -> np.ndarray:
    """Positions of the ``b`` candidates POAL chooses for objectives ``u`` and ``c`` (both maximised)."""
    f = np.stack([np.asarray(u, float), np.asarray(c, float)], axis=1)
    if b >= len(f):
        return np.arange(len(f))
    pre = preselect(f, int(np.ceil(preselect_factor * b)))
    if len(pre) <= b:
        return pre
    g = f[pre]
    span = np.ptp(g, axis=0)
    g = (g - g.min(axis=0)) / np.where(span > 0, span, 1.0)  # the same affine map for every subset's sums
    result = pareto_subset_search(g, b, rng, iterations=min(max_iterations, b * len(pre)), seed_archive=seed_archive,
                                  check_every=check_every)
    return pre[result.chosen]


# -- the Mahalanobis confidence on the teacher's stages -----------------------------------------------


@dataclass(frozen=True)
class ClassGaussians:
    """Per stage: class means (C, d_l) and the precision (d_l, d_l) of one tied covariance."""

    means: list[torch.Tensor]
    precisions: list[torch.Tensor]
    classes: np.ndarray  # the class ids the means belong to

    def scores(self, stage: int, feats: torch.Tensor) -> torch.Tensor:
        """-1/2 Mahalanobis distance squared of ``feats`` (N, d) to every class mean: (N, C)."""
        diff = feats[:, None, :] - self.means[stage][None]
        return -0.5 * torch.einsum("ncd,de,nce->nc", diff, self.precisions[stage], diff)


def fit_class_gaussians(pooled, labels, stage_channels, shrinkage: float = 0.1) -> ClassGaussians:
    """Class means and a tied covariance per stage from pooled stage features (N, sum(channels)).

    The covariance is shrunk towards a multiple of the identity: (1 - s) Sigma + s tr(Sigma)/d I.
    """
    x = torch.as_tensor(np.asarray(pooled), dtype=torch.float64)
    y = np.asarray(labels)
    classes = np.unique(y)
    means, precisions = [], []
    for feats in x.split(list(stage_channels), dim=1):
        mu = torch.stack([feats[torch.from_numpy(y == k)].mean(0) for k in classes])
        centred = feats - mu[torch.from_numpy(np.searchsorted(classes, y))]
        d = feats.shape[1]
        cov = centred.T @ centred / max(len(feats), 1)
        scale = float(torch.trace(cov)) / d
        if scale <= 0:
            scale = 1.0
        cov = (1 - shrinkage) * cov + shrinkage * scale * torch.eye(d, dtype=cov.dtype)
        means.append(mu.float())
        precisions.append(torch.linalg.pinv(cov, hermitian=True).float())
    return ClassGaussians(means, precisions, classes)


def mahalanobis_confidence(model, volumes: torch.Tensor, gaussians: ClassGaussians, noise: float = 0.01,
                           batch_size: int = 32) -> torch.Tensor:
    """Lee et al.'s confidence M (N,) of ``volumes`` (N, D, H, W): per stage, the input nudged by
    ``noise`` x sign of the gradient that brings its pooled features nearer their closest class
    mean, then the best class score; the mean over the stages."""
    was_training = model.training
    model.eval()
    n_stages = len(gaussians.means)
    out = []
    try:
        for start in range(0, len(volumes), batch_size):
            x = volumes[start : start + batch_size].unsqueeze(1).float()
            if noise <= 0:
                with torch.no_grad():
                    stages = model(x).stages
                    per_stage = [gaussians.scores(k, stages[k].float().mean(dim=(2, 3, 4))).max(dim=1).values
                                 for k in range(n_stages)]
                out.append(torch.stack(per_stage).mean(0))
                continue
            xg = x.clone().requires_grad_(True)
            with torch.enable_grad():  # one forward, one gradient per stage
                stages = model(xg).stages
                grads = []
                for k in range(n_stages):
                    nearest = gaussians.scores(k, stages[k].float().mean(dim=(2, 3, 4))).max(dim=1).values
                    (g,) = torch.autograd.grad((-nearest).mean(), xg, retain_graph=k < n_stages - 1)
                    grads.append(g)
            per_stage = []
            with torch.no_grad():
                for k, g in enumerate(grads):
                    feats = model(x - noise * torch.sign(g)).stages[k].float().mean(dim=(2, 3, 4))
                    per_stage.append(gaussians.scores(k, feats).max(dim=1).values)
            out.append(torch.stack(per_stage).mean(0))
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def in_distribution_gaussians(ctx: QueryContext, shrinkage: float) -> ClassGaussians | None:
    """Class Gaussians of the labeled particle volumes (junk left out); None when there are none."""
    labeled = np.asarray(ctx.labeled, np.int64)
    if not len(labeled):
        return None
    (pooled,) = ctx.forward([ctx.teacher], labeled, output="pooled_stages")
    if ctx.labels is not None:
        y = np.asarray(ctx.labels)
    else:  # no labels given: the teacher's own classes of the labeled volumes
        (logits,) = ctx.forward([ctx.teacher], labeled)
        y = logits.argmax(1).numpy()
    keep = y != ctx.junk_class if ctx.junk_class is not None else np.ones(len(y), bool)
    if not keep.any():
        return None
    return fit_class_gaussians(pooled.numpy()[keep], y[keep], ctx.teacher.stage_channels, shrinkage)


def ood_scores(ctx: QueryContext, candidates: np.ndarray, *, noise: float = 0.01, shrinkage: float = 0.1
               ) -> np.ndarray:
    """-M for each candidate: high = far from every labeled particle class (0 where none is labeled)."""
    gauss = in_distribution_gaussians(ctx, shrinkage)
    if gauss is None:
        return np.zeros(len(candidates))
    gauss = ClassGaussians([t.to(ctx.device) for t in gauss.means], [t.to(ctx.device) for t in gauss.precisions],
                           gauss.classes)
    candidates = np.asarray(candidates, np.int64)
    chunk = max(1, min(ctx.batch_size, 32))
    out = []
    for start in range(0, len(candidates), chunk):
        ctx.run.check_cancel()
        volumes = torch.from_numpy(np.asarray(ctx.source.read(candidates[start : start + chunk]), np.float32))
        out.append(mahalanobis_confidence(ctx.teacher, volumes.to(ctx.device), gauss, noise, batch_size=chunk).cpu())
    return -torch.cat(out).double().numpy() if out else np.zeros(0)


# -- the strategy ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    noise: float = 0.01  # FGSM step on the input before the Mahalanobis score (0: none)
    shrinkage: float = 0.1  # tied covariance shrunk this far towards its mean variance
    preselect: float = 6.0  # pre-select non-dominated fronts until this many x M candidates
    max_iterations: int = 20000  # Monte-Carlo draws at most (the reference: M x pre-selected)
    seed_archive: bool = True  # start the archive with the top-M subsets of weighted sums

    def validate(self, section: str) -> None:
        check(0 <= self.noise <= 1, f"{section}.noise", "must be in [0, 1]")
        check(0 <= self.shrinkage <= 1, f"{section}.shrinkage", "must be in [0, 1]")
        check(1 <= self.preselect <= 100, f"{section}.preselect", "must be between 1 and 100")
        check(0 <= self.max_iterations <= 10_000_000, f"{section}.max_iterations",
              "must be between 0 and 10000000")


@register("poal", summary="POAL: Pareto choice of a batch, entropy against Mahalanobis in-distribution confidence",
          cost="one pass of the teacher over labeled + candidates, then 4 x (forward, backward, forward) over the "
               "candidates; a Monte-Carlo subset search (seconds)", options=Options, old_prefix="poal")
def poal_query(ctx: QueryContext, candidates: np.ndarray, m: int, opts: Options) -> Selection:
    """The batch POAL's Pareto search picks, ordered by entropy (its score)."""
    (logits,) = ctx.forward([ctx.teacher], candidates)
    u = entropy(logits.softmax(1).numpy())
    ood = ood_scores(ctx, candidates, noise=opts.noise, shrinkage=opts.shrinkage)
    chosen = poal_select(u, -ood, m, ctx.rng, preselect_factor=opts.preselect,
                         seed_archive=opts.seed_archive, max_iterations=opts.max_iterations)
    order = chosen[np.argsort(-u[chosen], kind="stable")]
    return Selection(candidates[order], u[order])
