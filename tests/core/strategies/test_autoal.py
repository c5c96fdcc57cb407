"""AutoAL: the mixture threshold, the soft mask (and why the reference's step mask cannot learn),
the search on a tiny problem with a known answer, and the query end to end."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from napari_ktal.core.strategies import STRATEGIES
from napari_ktal.core.strategies.autoal import (
    Mixture1D,
    Options,
    candidate_matrix,
    combined_scores,
    fit_gmm_1d,
    search_objective,
    soft_mask,
    train_search,
)


def test_the_mixture_quantile_inverts_its_cdf_and_a_fit_finds_the_quantiles_of_its_data():
    mix = Mixture1D(np.array([0.3, 0.7]), np.array([0.0, 5.0]), np.array([1.0, 0.5]))
    for x in (-1.0, 2.5, 5.3):
        assert mix.quantile(mix.cdf(x)) == pytest.approx(x, abs=1e-6)
    rng = np.random.default_rng(0)
    data = np.concatenate([rng.normal(0, 1, 600), rng.normal(5, 0.5, 1400)])
    fit = fit_gmm_1d(data, components=2)
    assert sorted(fit.means.tolist()) == pytest.approx([0.0, 5.0], abs=0.15)
    for q in (0.2, 0.75, 0.9):
        assert fit.quantile(q) == pytest.approx(np.quantile(data, q), abs=0.1)


def test_the_mask_covers_the_top_share_and_only_a_soft_one_passes_gradient():
    s = torch.tensor([0.1, 0.11, 0.105, 0.095, 0.098] + [0.01 + 0.001 * i for i in range(15)])
    mask = soft_mask(s, 0.25, temperature=0.05, components=2)
    assert (mask[:5] > 0.9).all() and (mask[5:] < 0.1).all()
    w = torch.randn(20, 2, generator=torch.Generator().manual_seed(0)) * 0.1
    picks = torch.zeros(20, 2)
    picks[:5, 0] = 1
    picks[5:10, 1] = 1
    ce = torch.linspace(2, 0, 20)
    for temperature, moves in ((0.0, False), (0.1, True)):
        wt = w.clone().requires_grad_(True)
        loss, _ = search_objective(wt, picks, ce, 5, temperature=temperature, size_weight=1.0)
        loss.backward()
        assert (wt.grad.abs().max() > 1e-6) == moves, temperature  # the step mask: no gradient at all


def test_the_search_learns_to_weigh_the_candidate_that_picks_the_high_losses():
    """16 volumes; candidate 0 picks the 4 with the largest loss, candidate 1 four with small losses.
    A SearchNet whose weights are one per candidate (the same for every volume: the search over
    strategies in its simplest form) must come to weigh candidate 0 above candidate 1, so that
    its picks are the top 4 by s and the mask is largest on them."""
    ce = torch.tensor([3.0, 2.8, 2.9, 3.1] + [0.2] * 4 + [0.5] * 8)
    picks = torch.zeros(16, 2)
    picks[:4, 0] = 1
    picks[4:8, 1] = 1
    theta = torch.nn.Parameter(torch.tensor([[-0.01, 0.01]]))  # starts slightly in favour of candidate 1
    opt = torch.optim.SGD([theta], lr=1.0)
    before = combined_scores(theta.detach().expand(16, 2), picks)
    assert sorted(torch.topk(before, 4).indices.tolist()) == [4, 5, 6, 7]
    for _ in range(200):
        loss, mask = search_objective(theta.expand(16, 2), picks, ce, 4, temperature=1.0, size_weight=1.0,
                                      components=2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    s = combined_scores(theta.detach().expand(16, 2), picks)
    assert sorted(torch.topk(s, 4).indices.tolist()) == [0, 1, 2, 3]
    assert theta[0, 0] > theta[0, 1] + 1.0
    assert mask[:4].min() > 2 * mask[4:].max()


def _labeled_ctx(query_context):
    return dataclasses.replace(query_context, labeled=np.arange(6), labels=np.array([0, 1, 2, 0, 1, 2]))


def test_candidate_picks_form_the_matrix(query_context):
    ctx = _labeled_ctx(query_context)
    a = candidate_matrix(ctx, ["entropy", "margin", "kt"], np.arange(6, 12), 2)
    assert a.shape == (6, 3) and (a.sum(axis=0) == 2).all()
    ent = STRATEGIES["entropy"](ctx, np.arange(6, 12), 2)
    assert set(6 + np.flatnonzero(a[:, 0])) == set(ent.indices.tolist())


def test_the_bilevel_training_steps_every_network(query_context):
    ctx = _labeled_ctx(query_context)
    opts = Options(candidates="entropy,kt", fit_steps=3, search_steps=6, batch_size=3)
    before = {k: v.clone() for k, v in ctx.teacher.state_dict().items()}
    state = train_search(ctx, ["entropy", "kt"], 0.5, opts)
    assert len(state.search_losses) == 2 and len(state.fit_losses) == 3 + 2
    assert all(math.isfinite(v) for v in state.search_losses + state.fit_losses)
    assert state.search_net.fc.out_features == 2
    assert all(torch.equal(before[k], v) for k, v in ctx.teacher.state_dict().items())  # the teacher is untouched


def test_the_query_takes_m_of_the_candidates_picks(query_context):
    ctx = _labeled_ctx(query_context)
    opts = Options(candidates="entropy,margin,kt", fit_steps=2, search_steps=3,
                   batch_size=3)
    sel = STRATEGIES["autoal"](ctx, np.arange(6, 12), 2, opts)
    assert len(set(sel.indices.tolist())) == 2 and set(sel.indices) <= set(range(6, 12))
    assert np.all(np.diff(sel.scores) <= 0)
    picked = set()
    for name in ("entropy", "margin", "kt"):
        picked |= set(STRATEGIES[name](ctx, np.arange(6, 12), 2).indices.tolist())
    assert set(sel.indices.tolist()) <= picked


def test_candidates_are_checked_by_name():
    parse = STRATEGIES["autoal"].parse_options
    assert parse({"candidates": "kt, entropy"}).candidates == "kt, entropy"
    for bad, why in (("kt", "at least 2"), ("kt,nope", "'nope'"), ("kt,lloss", "needs a module"),
                     ("kt,autoal", "'autoal'")):
        with pytest.raises(Exception, match=why):
            parse({"candidates": bad})


def test_each_candidate_runs_with_its_own_options_table(query_context, monkeypatch):
    """The composite rule: AutoAL runs bald with [active.options.bald], not with its own table."""
    seen = []
    bald = STRATEGIES["bald"]

    def spy(ctx, candidates, m, opts):
        seen.append(opts.mc_passes)
        return bald.query(ctx, candidates, m, opts)

    monkeypatch.setitem(STRATEGIES, "bald", dataclasses.replace(bald, query=spy))
    ctx = dataclasses.replace(_labeled_ctx(query_context), option_tables={"bald": {"mc_passes": 3}})
    candidate_matrix(ctx, ["entropy", "bald"], np.arange(6, 12), 2)
    ctx = dataclasses.replace(ctx, option_tables={})
    candidate_matrix(ctx, ["entropy", "bald"], np.arange(6, 12), 2)
    assert seen == [3, 20]  # its table, then its default
