"""AutoAL (Wang, Zhan and Huang, "AutoAL: Automated Active Learning with Differentiable Query
Strategy Search", ICML 2025, arXiv 2410.13853; code haizailache999/AutoAL), ported to 3D.

K candidate strategies of this registry (``candidates``; kt among them by default) each
pick a batch, giving a 0/1 matrix A (N x K). SearchNet, a 3D ResNet with a K-way head, gives
per-sample weights w (N x K); a sample's score is s_i = softmax_i(sum_k A_ik w_ik) over the
samples; a Gaussian mixture fitted to s sets the threshold tau at the batch's share, and the
soft mask m_i = sigmoid((s_i - tau) / T) marks the samples the combined strategy would query.

Bi-level training on the labeled set, split in two halves: FitNet (the task network, fresh) is
trained on the first half (cross-entropy), then on the second half three steps take turns:
SearchNet maximises mean(CE_i m_i) of FitNet's per-sample losses (it learns which candidates'
picks are the informative ones, with a penalty on a mask of the wrong size); a loss-prediction
module (LL4AL, :mod:`.lloss`) learns to rank those losses from SearchNet's stages; FitNet
minimises mean(CE_i m_i). The query: A on the candidates, SearchNet's weights, the top M by s
among the samples some candidate picked.

Port and fixes (the reference code hard-codes 2D shapes, 7 candidates and the pool size):
- sizes are options: the candidates, FitNet's steps, the search steps and their batch, the lr;
  both networks have the teacher's architecture (SearchNet with a K-way head), FitNet fresh,
  SearchNet starting from the cycle's teacher (the reference starts both from ImageNet weights);
- A is computed once per cycle, not in every forward pass (the candidates' picks do not depend
  on SearchNet), on the second half with the first half as the labeled set;
- the mask: the reference's sigmoid(1e11 (s - tau)) is a step function whose gradient is zero
  almost everywhere, so SearchNet learned next to nothing; here the same threshold is applied
  with a finite slope on log s, sigmoid((log s - log tau) / T), T = ``temperature`` nats
  (a slope on s itself lets the softmax collapse onto one sample, all others at the threshold
  with mask 1/2; a slope relative to the spread of s leaves a candidate whose picks start
  below the threshold without gradient). The reference's size penalty is a Python number (no gradient) subtracted
  from SearchNet's loss; here it is ``size_weight`` x ((sum m - q) / q)^2 and added;
- the threshold is the mixture's quantile computed exactly (Brent's method on its CDF), not from
  10,000 samples of it; up to ``gmm_components`` components, fewer on a small batch;
- the loss-prediction module's ranking loss also reaches SearchNet's features
  (``lpl_weight``); in the reference its gradient is discarded before SearchNet steps;
- the networks live for one cycle (the reference keeps SearchNet across rounds);
- candidate strategies run with their default options; the labeled volumes' labels come from
  the query context (the teacher's predictions stand in when a caller gives none).
Cost: every candidate's query twice (on half the labeled set, and on the candidates), FitNet's
and the search's steps (about as many volumes through a network as a cycle's training of a
labeled set of ``(fit + 2 x search) x batch / epochs`` volumes), one SearchNet pass over the
candidates. The benchmark's query time reports it per cycle.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import KtalError
from ..models import ResNet3D
from ..progress import Progress
from ..recipe import check
from .base import STRATEGIES, QueryContext, Selection, register
from .lloss import LossPredictionHead, loss_ranking_loss

DEFAULT_CANDIDATES = "least-confidence,margin,entropy,bald,variation-ratio,coreset,kt"


# -- the threshold: a 1-D Gaussian mixture and its quantile ------------------------------------------------
@dataclass(frozen=True)
class Mixture1D:
    weights: np.ndarray
    means: np.ndarray
    sds: np.ndarray

    def cdf(self, x: float) -> float:
        from scipy.special import ndtr  # the standard normal CDF

        return float(np.sum(self.weights * ndtr((x - self.means) / self.sds)))

    def quantile(self, q: float, tol: float = 1e-12) -> float:
        """The x with cdf(x) = q, by Brent's method between 12 sds below the lowest component and
        above the highest (the CDF is 0 and 1 there to double precision)."""
        from scipy.optimize import brentq

        lo = float(np.min(self.means - 12 * self.sds))
        hi = float(np.max(self.means + 12 * self.sds))
        if self.cdf(lo) >= q:
            return lo
        if self.cdf(hi) <= q:
            return hi
        return float(brentq(lambda x: self.cdf(x) - q, lo, hi, xtol=tol, rtol=tol))


def fit_gmm_1d(values, components: int = 5, iterations: int = 200) -> Mixture1D:
    """EM for a 1-D Gaussian mixture, started at quantiles; variances floored at 1e-6 of the spread.

    Hand-written because neither numpy nor scipy fits a mixture (scikit-learn's GaussianMixture
    would be a dependency for these dozen lines; the tests check that it finds the components and
    the quantiles of its data). The log-density is written out: scipy.stats.norm.logpdf costs
    three times as much, and this runs at every step of the search."""
    from scipy.special import softmax

    x = np.asarray(values, float)
    k = max(1, min(components, len(np.unique(x))))
    spread = float(x.var()) if len(x) > 1 else 0.0
    floor = max(1e-6 * spread, 1e-18)
    means = np.quantile(x, (np.arange(k) + 0.5) / k)
    var = np.full(k, max(spread / k, floor))
    w = np.full(k, 1.0 / k)
    for _ in range(iterations):
        logp = -0.5 * (x[:, None] - means) ** 2 / var - 0.5 * np.log(2 * np.pi * var) + np.log(w)
        r = softmax(logp, axis=1)  # the responsibilities
        n = r.sum(0) + 1e-12
        new_means = (r * x[:, None]).sum(0) / n
        var = np.maximum((r * (x[:, None] - new_means) ** 2).sum(0) / n, floor)
        w = n / n.sum()
        if np.allclose(new_means, means, rtol=0, atol=1e-12 * max(1.0, np.abs(x).max())):
            means = new_means
            break
        means = new_means
    return Mixture1D(w, means, np.sqrt(var))


def soft_mask(s: torch.Tensor, share: float, temperature: float, components: int = 5) -> torch.Tensor:
    """The soft mask of scores ``s`` (positive, e.g. a softmax): tau is the (1 - share) quantile of a
    Gaussian mixture fitted to s; m = sigmoid((log s - log tau) / T) with T = ``temperature`` in
    nats (0: a hard step, as the reference's sigmoid(1e11 (s - tau))). The same threshold as on s;
    the slope is set on log s, where a softmax's scores spread evenly, and in fixed units, so the
    mask is soft while SearchNet's weights are small (every volume gets a gradient) and hardens
    as they grow."""
    tau = fit_gmm_1d(s.detach().double().cpu().numpy(), components).quantile(1.0 - share)
    log_s = torch.log(s.clamp_min(torch.finfo(s.dtype).tiny))
    log_tau = math.log(max(tau, float(torch.finfo(s.dtype).tiny)))
    if temperature <= 0:
        return (log_s > log_tau).to(s.dtype) + 0 * s
    return torch.sigmoid((log_s - log_tau) / temperature)


def combined_scores(weights: torch.Tensor, picks: torch.Tensor) -> torch.Tensor:
    """s = softmax over the samples of sum_k A_ik w_ik: (N,)."""
    return torch.softmax((picks * weights).sum(dim=1), dim=0)


def search_objective(weights: torch.Tensor, picks: torch.Tensor, ce: torch.Tensor, q: int, *, temperature: float,
                     size_weight: float, components: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """SearchNet's loss on a batch, -mean(CE_i m_i) + size_weight ((sum m - q) / q)^2, and the mask."""
    s = combined_scores(weights, picks)
    mask = soft_mask(s, q / len(s), temperature, components)
    loss = -(ce.detach() * mask).mean() + size_weight * ((mask.sum() - q) / q) ** 2
    return loss, mask


def candidate_names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _candidates_may_read_student(opts: Options) -> bool:
    """Whether a candidate may read the student (one whose need depends on its own options counts:
    those options are in another table)."""
    return any(STRATEGIES[n].student is not False for n in candidate_names(opts.candidates) if n in STRATEGIES)


def candidate_matrix(ctx: QueryContext, names: list[str], indices: np.ndarray, q: int) -> np.ndarray:
    """0/1 matrix (len(indices), K): column k marks the ``q`` volumes candidate k picks among ``indices``."""
    a = np.zeros((len(indices), len(names)))
    pos = {int(i): p for p, i in enumerate(indices)}
    for k, name in enumerate(names):
        ctx.run.check_cancel()
        sub = dataclasses.replace(ctx, rng=np.random.default_rng(ctx.rng.integers(2**62)))
        sel = STRATEGIES[name](sub, indices, min(q, len(indices)), ctx.options_of(name))  # its own table
        a[[pos[int(i)] for i in sel.indices], k] = 1.0
    return a


# -- the strategy ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    #: comma-separated registry names (K of them); each runs with its own [active.options.<name>]
    candidates: str = DEFAULT_CANDIDATES
    fit_steps: int = 100  # FitNet's cross-entropy steps on the first half of the labeled set
    search_steps: int = 60  # alternating SearchNet / loss-module / FitNet steps on the second half
    batch_size: int = 32  # volumes per step
    lr: float = 0.05  # SGD (momentum 0.9) for all three networks
    temperature: float = 1.0  # mask slope: sigmoid((log s - log tau) / temperature), in nats
    size_weight: float = 1.0  # weight of the mask-size penalty
    lpl_weight: float = 1.0  # weight of the loss-prediction ranking loss in SearchNet's
    gmm_components: int = 5  # Gaussian mixture components of the threshold

    def validate(self, section: str) -> None:
        names = candidate_names(self.candidates)
        check(len(names) >= 2 and len(set(names)) == len(names), f"{section}.candidates",
              "must name at least 2 different strategies, comma-separated")
        for name in names:
            check(name in STRATEGIES and name != "autoal", f"{section}.candidates",
                  f"{name!r} is not a strategy AutoAL can use; known: "
                  + ", ".join(n for n in STRATEGIES if n != "autoal"))
            check(STRATEGIES[name].head is None, f"{section}.candidates",
                  f"{name!r} needs a module trained with the teacher; AutoAL cannot run it")
        check(0 <= self.fit_steps <= 100_000, f"{section}.fit_steps", "must be between 0 and 100000")
        check(0 <= self.search_steps <= 100_000, f"{section}.search_steps",
              "must be between 0 and 100000")
        check(2 <= self.batch_size <= 4096, f"{section}.batch_size", "must be between 2 and 4096")
        check(0 < self.lr <= 10, f"{section}.lr", "must be in (0, 10]")
        check(0 <= self.temperature <= 100, f"{section}.temperature", "must be between 0 and 100")
        check(0 <= self.size_weight <= 1000, f"{section}.size_weight", "must be between 0 and 1000")
        check(0 <= self.lpl_weight <= 1000, f"{section}.lpl_weight", "must be between 0 and 1000")
        check(1 <= self.gmm_components <= 20, f"{section}.gmm_components", "must be between 1 and 20")


def _sgd(module, lr):
    return torch.optim.SGD(module.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)


def _labels(ctx: QueryContext, labeled: np.ndarray) -> np.ndarray:
    if ctx.labels is not None:
        return np.asarray(ctx.labels, np.int64)
    (logits,) = ctx.forward([ctx.teacher], labeled)
    return logits.argmax(1).numpy()


@dataclass
class SearchState:
    """What a cycle's search leaves: the trained SearchNet and the step losses (for tests and reports)."""

    search_net: ResNet3D
    fit_net: ResNet3D
    search_losses: list[float]
    fit_losses: list[float]


@dataclass
class _Networks:
    """The three networks of a cycle's search and their optimisers (FitNet keeps its optimiser, and
    its momentum, from the warm-up into the alternation)."""

    fit: ResNet3D
    search: ResNet3D
    loss: LossPredictionHead
    opt_fit: torch.optim.Optimizer
    opt_search: torch.optim.Optimizer
    opt_loss: torch.optim.Optimizer


@dataclass
class _Halves:
    """The labeled set on the device, split in FitNet's warm-up half and the search half, with the
    candidates' picks A on the search half."""

    x: torch.Tensor  # every labeled volume, (L, 1, D, H, W)
    y: torch.Tensor  # their labels
    fit: torch.Tensor  # positions in x of the warm-up half
    search: torch.Tensor  # positions in x of the search half
    picks: torch.Tensor  # (len(search), K): 1 where candidate k picked that volume
    q: int  # how many volumes each candidate picked on the search half


def _networks(ctx: QueryContext, k: int, lr: float) -> _Networks:
    """FitNet fresh, SearchNet from the teacher with a K-way head (both seeded from ``ctx.rng``),
    the loss module on SearchNet's stages."""
    device, teacher = ctx.device, ctx.teacher
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(ctx.rng.integers(2**62)))
        fit_net = ResNet3D.from_config(teacher.config).to(device)
        search_net = ResNet3D.from_config(dataclasses.replace(teacher.config, n_classes=k)).to(device)
    search_net.load_state_dict({n: v for n, v in teacher.state_dict().items() if not n.startswith("fc.")},
                               strict=False)
    lossnet = LossPredictionHead(search_net.stage_channels, hidden=32).to(device)
    return _Networks(fit_net, search_net, lossnet, _sgd(fit_net, lr), _sgd(search_net, lr), _sgd(lossnet, lr))


def _halves(ctx: QueryContext, names: list[str], share: float, labeled: np.ndarray, y: np.ndarray,
            perm: np.ndarray) -> _Halves:
    """Read the labeled volumes and run every candidate on the search half, with the warm-up half as
    their labeled set (A is computed once: the candidates' picks do not depend on SearchNet)."""
    device = ctx.device
    half = len(labeled) // 2
    fit_pos, search_pos = perm[:half], perm[half:]
    x_all = torch.from_numpy(np.asarray(ctx.source.read(labeled), np.float32)).unsqueeze(1).to(device)
    q_all = max(2, math.ceil(len(search_pos) * share))
    sub = dataclasses.replace(ctx, labeled=labeled[fit_pos], labels=y[fit_pos])
    picks = torch.as_tensor(candidate_matrix(sub, names, labeled[search_pos], q_all), dtype=torch.float32,
                            device=device)
    return _Halves(x_all, torch.as_tensor(y, device=device), torch.as_tensor(fit_pos, device=device),
                   torch.as_tensor(search_pos, device=device), picks, q_all)


def _batch(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Positions of one step's batch among ``n`` volumes: all of them, or ``size`` drawn at random."""
    if n <= size:
        return torch.arange(n, device=gen.device)
    return torch.randperm(n, generator=gen, device=gen.device)[:size]


def _step(optimiser: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    return float(loss.detach())


def _warm_up_fitnet(ctx: QueryContext, nets: _Networks, data: _Halves, gen: torch.Generator, opts: Options,
                    total: int) -> list[float]:
    """Phase 1: FitNet's cross-entropy steps on the warm-up half; its losses."""
    fit_losses = []
    nets.fit.train()
    for step in range(opts.fit_steps if len(data.fit) >= 2 else 0):
        ctx.run.check_cancel()
        b = data.fit[_batch(len(data.fit), opts.batch_size, gen)]
        fit_losses.append(_step(nets.opt_fit, F.cross_entropy(nets.fit(data.x[b]).logits, data.y[b])))
        ctx.run.emit(Progress("score", step + 1, total))
    return fit_losses


def _fit_ce(nets: _Networks, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """FitNet's per-volume cross-entropy, without gradient (the target SearchNet and the loss module learn)."""
    with torch.no_grad():
        nets.fit.eval()
        return F.cross_entropy(nets.fit(xb).logits, yb, reduction="none")


def _search_step(nets: _Networks, xb, yb, ab, q: int, opts: Options) -> float:
    """SearchNet's step: make the mask cover what FitNet gets wrong (plus the loss-ranking term)."""
    ce = _fit_ce(nets, xb, yb)
    nets.search.train()
    out = nets.search(xb)
    loss, _ = search_objective(out.logits.float(), ab, ce, q, temperature=opts.temperature,
                               size_weight=opts.size_weight, components=opts.gmm_components)
    if opts.lpl_weight > 0 and len(xb) >= 2:
        loss = loss + opts.lpl_weight * loss_ranking_loss(nets.loss(out.stages), ce)
    return _step(nets.opt_search, loss)


def _loss_module_step(nets: _Networks, xb, yb) -> float:
    """The loss module's step: rank FitNet's losses from SearchNet's stages."""
    ce = _fit_ce(nets, xb, yb)
    with torch.no_grad():
        nets.search.eval()
        stages = nets.search(xb).stages
    return _step(nets.opt_loss, loss_ranking_loss(nets.loss(stages), ce))


def _fitnet_step(nets: _Networks, xb, yb, ab, q: int, opts: Options) -> float:
    """FitNet's step: learn what SearchNet's mask selects, mean(CE_i m_i)."""
    with torch.no_grad():
        nets.search.eval()
        s = combined_scores(nets.search(xb).logits.float(), ab)
        mask = soft_mask(s, q / len(s), opts.temperature, opts.gmm_components)
    nets.fit.train()
    ce = F.cross_entropy(nets.fit(xb).logits, yb, reduction="none")
    return _step(nets.opt_fit, (ce * mask).mean())


def _alternate(ctx: QueryContext, nets: _Networks, data: _Halves, gen: torch.Generator, opts: Options,
               total: int) -> tuple[list[float], list[float]]:
    """Phase 2: on the search half, SearchNet, the loss module and FitNet take turns (the reference's
    order); SearchNet's losses and FitNet's."""
    search_losses, fit_losses = [], []
    n = len(data.search)
    for step in range(opts.search_steps if n >= 2 else 0):
        ctx.run.check_cancel()
        local = _batch(n, opts.batch_size, gen)
        b = data.search[local]
        xb, yb, ab = data.x[b], data.y[b], data.picks[local]
        q = max(1, min(len(local) - 1, round(len(local) * data.q / n)))
        phase = (step + 1) % 3
        if phase == 1:
            search_losses.append(_search_step(nets, xb, yb, ab, q, opts))
        elif phase == 2:
            _loss_module_step(nets, xb, yb)
        else:
            fit_losses.append(_fitnet_step(nets, xb, yb, ab, q, opts))
        ctx.run.emit(Progress("score", opts.fit_steps + step + 1, total))
    return search_losses, fit_losses


def train_search(ctx: QueryContext, names: list[str], share: float, opts: Options) -> SearchState:
    """The bi-level training of SearchNet, FitNet and the loss module on the labeled set: split it
    in halves, build the networks, run the candidates on the search half, warm FitNet up on the
    other half, then alternate. The order of the steps is the order ``ctx.rng`` is drawn in."""
    labeled = np.asarray(ctx.labeled, np.int64)
    y = _labels(ctx, labeled)
    perm = ctx.rng.permutation(len(labeled))
    gen = ctx.torch_generator()
    nets = _networks(ctx, len(names), opts.lr)
    data = _halves(ctx, names, share, labeled, y, perm)
    total = opts.fit_steps + opts.search_steps
    fit_losses = _warm_up_fitnet(ctx, nets, data, gen, opts, total)
    search_losses, more_fit_losses = _alternate(ctx, nets, data, gen, opts, total)
    return SearchState(nets.search.eval(), nets.fit.eval(), search_losses, fit_losses + more_fit_losses)


@register("autoal", summary="AutoAL: SearchNet learns per-volume weights of candidate strategies (kt among them) "
          "by bi-level training with FitNet on the labeled set", options=Options, old_prefix="autoal",
          cost="every candidate's query twice, FitNet and SearchNet trained for fit_steps + "
               "search_steps steps, one SearchNet pass over the candidates",
          student=_candidates_may_read_student)
def autoal_query(ctx: QueryContext, candidates: np.ndarray, m: int, opts: Options) -> Selection:
    names = candidate_names(opts.candidates)
    if len(ctx.labeled) < 2:
        raise KtalError("strategy 'autoal' needs at least 2 labeled volumes")
    share = m / max(len(candidates), 1)
    state = train_search(ctx, names, share, opts)
    picks = candidate_matrix(ctx, names, candidates, m)
    (weights,) = ctx.forward([state.search_net], candidates)
    s = combined_scores(weights.float(), torch.as_tensor(picks, dtype=torch.float32)).double().numpy()
    picked = picks.sum(axis=1) > 0
    order = np.lexsort((-s, ~picked))[:m]  # the candidates' picks by s, then (if too few) the rest by s
    order = order[np.argsort(-s[order], kind="stable")]
    return Selection(candidates[order], s[order] * len(candidates))

