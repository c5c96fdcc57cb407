"""Multiple-criteria active learning with a fixed-size determinantal point process (Zhan, Li and
Chan, "Multiple-criteria Based Active Learning with Fixed-size Determinantal Point Processes",
SubSetML @ ICML 2021, arXiv 2107.01622). No public code exists; this is our reading of the paper.

Three criteria, one k-DPP over the candidates:

- informativeness u_i: the teacher's uncertainty (``uncertainty``: entropy by default, or
  margin, least confidence, or the knowledge-transfer score);
- representativeness r_i, by centroid-based clustering: k-means with M clusters on the teacher's
  embeddings (the penultimate pooled features); r_i = (share of the candidates in i's cluster) x
  exp(-|e_i - centroid|^2 / 2 sigma^2): typical members of large groups;
- diversity: a Gaussian kernel S_ij = exp(-|e_i - e_j|^2 / 2 sigma^2) on the same embeddings,
  sigma = ``bandwidth`` x the median distance between candidates.

The quality of a candidate is q_i = (u_i / max u)^alpha (r_i / max r)^beta, the DPP kernel
L = diag(q) S diag(q) (the quality-diversity decomposition of Kulesza & Taskar), and the batch
is a set of exactly M candidates (a k-DPP): the paper's "fixed size". As the paper refines it,
the hardest candidate (largest u) is always taken, and the other M - 1 are chosen from the DPP
conditioned on it (the Schur complement of its row and column).

What follows the paper: the three criteria, the k-DPP, taking the hardest sample, clustering for
representativeness. Our choices (the paper leaves them open or has no deep-learning form): the
teacher's embedding as the feature space; the product form of the quality with exponents
``alpha`` and ``beta``; the Gaussian kernel and its median-distance bandwidth; k-means
with k = M, seeded k-means++; and by default the most probable batch found greedily (the fast
greedy MAP of Chen et al. 2018, ``mode = "map"``: the same pool gives the same batch)
instead of a random k-DPP draw (``mode = "sample"``, the exact sampler of Kulesza & Taskar
2012, Alg. 8). The paper's bias towards the classifier that best suits the data has no
counterpart here: there is one teacher. The batch is listed by quality, highest first.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..models import DISTANCES
from ..recipe import check
from .base import QueryContext, Selection, register
from .heuristics import SOFTMAX_HEURISTICS

UNCERTAINTIES = ("entropy", "margin", "least-confidence", "kt")
MODES = ("map", "sample")


# -- the criteria ---------------------------------------------------------------------------------------
def pairwise_sq_distances(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, float)
    sq = (x * x).sum(1)
    return np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)


def rbf_kernel(x: np.ndarray, bandwidth: float = 1.0) -> tuple[np.ndarray, float]:
    """Gaussian kernel of the rows of ``x``, sigma = bandwidth x their median distance; (S, sigma)."""
    d2 = pairwise_sq_distances(x)
    off = d2[~np.eye(len(d2), dtype=bool)]
    median = float(np.sqrt(np.median(off))) if off.size else 1.0
    sigma = bandwidth * (median if median > 0 else 1.0)
    return np.exp(-d2 / (2 * sigma**2)), sigma


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding (scipy's ``kmeans2``): (assignment (N,), centroids (k', D)).

    k' = min(k, the number of distinct points): k-means++ cannot seed more centres than there are
    distinct points. A cluster that empties keeps its centre (scipy warns; nothing is wrong here)."""
    from scipy.cluster.vq import kmeans2

    x = np.asarray(x, float)
    k = max(1, min(k, len(np.unique(x, axis=0))))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "One of the clusters is empty", UserWarning)
        centres, assign = kmeans2(x, k, iter=iterations, minit="++", seed=rng)
    return assign.astype(np.int64), centres


def representativeness(x: np.ndarray, k: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Share of the points in each point's k-means cluster x closeness to that cluster's centroid."""
    assign, centres = kmeans(x, k, rng)
    share = np.bincount(assign, minlength=len(centres))[assign] / len(x)
    d2 = ((np.asarray(x, float) - centres[assign]) ** 2).sum(1)
    return share * np.exp(-d2 / (2 * sigma**2))


def quality(u: np.ndarray, r: np.ndarray, alpha: float = 1.0, beta: float = 1.0, floor: float = 1e-6) -> np.ndarray:
    """(u / max u)^alpha (r / max r)^beta, each factor kept at or above ``floor``."""
    def unit(v):
        v = np.asarray(v, float)
        top = v.max() if len(v) and v.max() > 0 else 1.0
        return np.clip(v / top, floor, None)

    return unit(u) ** alpha * unit(r) ** beta


# -- k-DPP: greedy MAP and exact sampling ------------------------------------------------------------------
def greedy_map(kernel: np.ndarray, k: int, first: int | None = None) -> np.ndarray:
    """Greedy maximisation of det(L_Y) over |Y| = k (Chen, Zhang and Zhou 2018: incremental Cholesky,
    O(N k^2)); ``first`` is taken first whatever its gain. Stops early if no item adds volume."""
    L = np.asarray(kernel, float)
    n = len(L)
    k = min(k, n)
    c = np.zeros((k, n))
    d2 = np.diag(L).copy()
    chosen: list[int] = []
    j = int(np.argmax(d2)) if first is None else int(first)
    while True:
        chosen.append(j)
        t = len(chosen) - 1
        if len(chosen) == k:
            break
        if d2[j] <= 1e-12:
            break
        e = (L[j] - c[:t, j] @ c[:t]) / np.sqrt(d2[j])
        c[t] = e
        d2 = d2 - e**2
        d2[chosen] = -np.inf
        j = int(np.argmax(d2))
    if len(chosen) < k:  # the kernel's rank ran out: fill with the best qualities left
        rest = [i for i in np.argsort(-np.diag(L), kind="stable") if i not in chosen]
        chosen += rest[: k - len(chosen)]
    return np.array(chosen, np.int64)


def conditioned_on(kernel: np.ndarray, item: int) -> tuple[np.ndarray, np.ndarray]:
    """The DPP kernel of the other items given that ``item`` is in the set (Schur complement), and
    their positions."""
    L = np.asarray(kernel, float)
    rest = np.setdiff1d(np.arange(len(L)), [item])
    if L[item, item] <= 0:
        return L[np.ix_(rest, rest)], rest
    col = L[rest, item]
    return L[np.ix_(rest, rest)] - np.outer(col, col) / L[item, item], rest


def sample_k_dpp(kernel: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """An exact draw of a k-DPP with kernel ``L`` (Kulesza & Taskar 2012, Alg. 8: eigenvectors chosen
    by elementary symmetric polynomials, then items by sequential projection)."""
    lam, vecs = np.linalg.eigh(np.asarray(kernel, float))
    lam = np.clip(lam, 0.0, None)
    n = len(lam)
    k = min(k, int((lam > 1e-12 * max(lam.max(), 1e-300)).sum()))
    if k <= 0:
        return np.empty(0, np.int64)
    lam = lam / lam.max()  # the ratios below do not depend on the scale
    e = np.zeros((k + 1, n + 1))
    e[0] = 1.0
    for l in range(1, k + 1):
        for m in range(1, n + 1):
            e[l, m] = e[l, m - 1] + lam[m - 1] * e[l - 1, m - 1]
    picked, l = [], k
    for m in range(n, 0, -1):
        if l == 0:
            break
        if e[l, m] > 0 and rng.random() < lam[m - 1] * e[l - 1, m - 1] / e[l, m]:
            picked.append(m - 1)
            l -= 1
    v = vecs[:, picked]
    out = []
    while v.shape[1]:
        p = (v**2).sum(1)
        p = p / p.sum()
        i = int(rng.choice(n, p=p))
        out.append(i)
        j = int(np.argmax(np.abs(v[i])))
        vj = v[:, j].copy()
        v = np.delete(v - np.outer(vj, v[i] / vj[i]), j, axis=1)
        if v.shape[1]:
            v, _ = np.linalg.qr(v)
    return np.array(out, np.int64)


def select_batch(kernel: np.ndarray, k: int, rng: np.random.Generator, *, first: int | None = None,
                 mode: str = "map") -> np.ndarray:
    """``k`` positions from the k-DPP of ``kernel`` (the most probable set found greedily, or a draw),
    always containing ``first`` when it is given."""
    if mode == "map":
        return greedy_map(kernel, k, first)
    if first is None:
        chosen = sample_k_dpp(kernel, k, rng)
    else:
        cond, rest = conditioned_on(kernel, first)
        chosen = np.concatenate([[first], rest[sample_k_dpp(cond, k - 1, rng)]]).astype(np.int64)
    if len(chosen) < min(k, len(kernel)):  # the kernel's rank ran out: the best qualities left
        rest = [i for i in np.argsort(-np.diag(kernel), kind="stable") if i not in set(chosen.tolist())]
        chosen = np.concatenate([chosen, rest[: min(k, len(kernel)) - len(chosen)]]).astype(np.int64)
    return chosen


# -- the strategy ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    uncertainty: str = "entropy"  # informativeness: entropy, margin, least-confidence or kt
    alpha: float = 1.0  # exponent of informativeness in the quality
    beta: float = 1.0  # exponent of representativeness in the quality
    bandwidth: float = 1.0  # kernel sigma as a multiple of the median distance between candidates
    mode: str = "map"  # "map": the most probable batch (greedy); "sample": a random k-DPP draw
    hardest: bool = True  # always take the most informative candidate (the paper's refinement)

    def validate(self, section: str) -> None:
        check(self.uncertainty in UNCERTAINTIES, f"{section}.uncertainty",
              f"must be one of {', '.join(UNCERTAINTIES)}")
        check(self.mode in MODES, f"{section}.mode", f"must be one of {', '.join(MODES)}")
        check(0 <= self.alpha <= 100, f"{section}.alpha", "must be between 0 and 100")
        check(0 <= self.beta <= 100, f"{section}.beta", "must be between 0 and 100")
        check(0 < self.bandwidth <= 100, f"{section}.bandwidth", "must be in (0, 100]")


def informativeness(ctx: QueryContext, candidates: np.ndarray, kind: str) -> np.ndarray:
    if kind == "kt":
        t, s = ctx.forward([ctx.teacher, ctx.student], candidates)
        return DISTANCES[ctx.score_distance](t, s).double().numpy()
    (logits,) = ctx.forward([ctx.teacher], candidates)
    return SOFTMAX_HEURISTICS[kind](logits.softmax(1).numpy())


@register("dpp", summary="multiple criteria (uncertainty, k-means representativeness, diversity) as a "
          "fixed-size DPP on the teacher's embedding", options=Options, old_prefix="dpp",
          cost="one pass of the teacher over the candidates (two nets with uncertainty = kt); "
               "an N x N kernel, k-means and an O(N M^2) greedy selection",
          student=lambda opts: opts.uncertainty == "kt")
def dpp_query(ctx: QueryContext, candidates: np.ndarray, m: int, opts: Options) -> Selection:
    u = informativeness(ctx, candidates, opts.uncertainty)
    (emb,) = ctx.forward([ctx.teacher], candidates, output="embedding")
    x = emb.double().numpy()
    similarity, sigma = rbf_kernel(x, opts.bandwidth)
    r = representativeness(x, m, sigma, ctx.rng)
    q = quality(u, r, opts.alpha, opts.beta)
    kernel = q[:, None] * similarity * q[None, :]
    first = int(np.argmax(u)) if opts.hardest else None
    chosen = select_batch(kernel, m, ctx.rng, first=first, mode=opts.mode)
    chosen = chosen[np.argsort(-q[chosen], kind="stable")]
    return Selection(candidates[chosen], q[chosen])
