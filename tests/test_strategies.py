"""Query strategies: the pure heuristics on constructed cases, the model-side passes on tiny
models, and every registered strategy through one real training cycle."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from napari_ktal.core.engine.inference import array_reader
from napari_ktal.core.engine.training import train_pair
from napari_ktal.core.errors import RecipeError
from napari_ktal.core.loop import cycle as al
from napari_ktal.core.models.resnet3d import ResNet3D, build_pair
from napari_ktal.core.project.project import Project
from napari_ktal.core.recipe import load_recipe
from napari_ktal.core.strategies.gradnorm import entropy_loss, expected_loss, per_sample_grad_norms
from napari_ktal.core.strategies.heuristics import bald, entropy, least_confidence, margin
from napari_ktal.core.strategies.kcenter import kcenter_greedy
from napari_ktal.core.strategies.lloss import (
    LossPredictionModule,
    build_loss_learning,
    loss_ranking_loss,
    stage_channels,
)
from napari_ktal.core.strategies.noise_stability import add_weight_noise, output_changes
from napari_ktal.core.strategies.registry import (
    STRATEGIES,
    QueryContext,
    dropout_rate,
    mc_dropout_probs,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # 2 shared cores: no OpenMP barrier stalls

TINY = load_recipe("quick").replace(
    model={"width": 2},
    train={"epochs": 2, "lr_milestones": [], "batch_size": 8, "eval_batch_size": 16},
    # 30 volumes: 6 labeled, then M = 6 from all 24 unlabeled
    active={"initial_fraction": 0.2, "step_fraction": 0.2, "final_fraction": 0.6,
            "mc_passes": 4, "noise_passes": 3, "gradnorm_batch_size": 8},
)


# -- pure heuristics ---------------------------------------------------------------------------
UNIFORM, PEAKED, ONE_HOT = [1 / 3, 1 / 3, 1 / 3], [0.6, 0.3, 0.1], [1.0, 0.0, 0.0]


def test_entropy_ranks_the_uniform_prediction_first():
    h = entropy([PEAKED, UNIFORM, ONE_HOT])
    assert np.argmax(h) == 1 and h[1] == pytest.approx(math.log(3)) and h[2] == pytest.approx(0.0)
    assert h[0] == pytest.approx(-(0.6 * math.log(0.6) + 0.3 * math.log(0.3) + 0.1 * math.log(0.1)))


def test_margin_and_least_confidence_rank_the_uniform_prediction_first():
    mg = margin([PEAKED, UNIFORM, ONE_HOT])
    assert mg.tolist() == pytest.approx([1 - 0.3, 1.0, 0.0])
    lc = least_confidence([PEAKED, UNIFORM, ONE_HOT])
    assert lc.tolist() == pytest.approx([0.4, 2 / 3, 0.0])
    # margin looks only at the top two: a tie between two classes is maximal, whatever the third
    assert margin([[0.45, 0.45, 0.1]])[0] == pytest.approx(1.0)


def test_bald_is_zero_when_passes_agree_and_log2_when_confident_passes_disagree():
    agree = np.array([[UNIFORM], [UNIFORM], [UNIFORM]])  # (K=3, N=1, C): uncertain but consistent
    assert bald(agree)[0] == pytest.approx(0.0, abs=1e-12)
    disagree = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # two confident passes, opposite classes
    assert bald(disagree)[0] == pytest.approx(math.log(2))
    both = bald(np.concatenate([np.repeat([[[0.5, 0.5]]], 2, 0), disagree], axis=1))
    assert np.argmax(both) == 1 and both[0] == pytest.approx(0.0, abs=1e-12)


def test_heuristics_reject_wrong_shapes():
    with pytest.raises(ValueError):
        entropy([0.5, 0.5])
    with pytest.raises(ValueError):
        bald([[0.5, 0.5]])


# -- k-center ------------------------------------------------------------------------------------
def test_kcenter_picks_the_far_point_first_and_scores_the_pick_distance():
    pts = np.array([[0.1, 0.0], [0.0, 0.2], [5.0, 0.0], [0.0, 3.0], [5.1, 0.0]])
    order, dist = kcenter_greedy(pts, 3, centers=np.zeros((1, 2)))
    assert order[0] == 4 and dist[0] == pytest.approx(5.1)  # farthest from the origin
    assert order[1] == 3 and dist[1] == pytest.approx(3.0)  # then farthest from {origin, pick 1}
    assert order[2] == 1 and dist[2] == pytest.approx(0.2)  # point 2 is now 0.1 from pick 1: covered
    assert np.all(np.diff(dist) <= 0)


def _naive_kcenter(x, n, centers):
    d = np.min(np.linalg.norm(x[:, None] - centers[None], axis=2), axis=1)
    picks = []
    for _ in range(n):
        i = int(np.argmax(d))
        picks.append(i)
        d = np.minimum(d, np.linalg.norm(x - x[i], axis=1))
        d[i] = -1
    return picks


def test_kcenter_matches_a_naive_implementation_and_never_repeats():
    rng = np.random.default_rng(0)
    x, c = rng.normal(size=(60, 5)), rng.normal(size=(7, 5))
    order, _ = kcenter_greedy(x, 20, centers=c)
    assert order.tolist() == _naive_kcenter(x, 20, c)
    order, _ = kcenter_greedy(np.zeros((4, 2)), 10, centers=np.zeros((1, 2)))  # duplicates, n > N
    assert sorted(order.tolist()) == [0, 1, 2, 3]


# -- gradnorm ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    net = ResNet3D(18, 3, width=2, stem="strided")
    with torch.no_grad():
        net.train()
        net(torch.randn(6, 1, 16, 16, 16))  # non-trivial BatchNorm running statistics
    return net.eval()


@pytest.mark.parametrize("loss_fn", [expected_loss, entropy_loss])
def test_vmap_gradnorm_equals_a_per_sample_loop(tiny_net, loss_fn):
    x = torch.randn(4, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    batched = per_sample_grad_norms(tiny_net, x, loss_fn)
    loop = []
    for i in range(len(x)):  # the reference code: batch size 1, eval mode, sum of per-tensor norms
        tiny_net.zero_grad()
        loss_fn(tiny_net(x[i : i + 1]).logits[0]).backward()
        loop.append(sum(p.grad.norm() for p in tiny_net.parameters()))
    tiny_net.zero_grad()
    assert torch.allclose(batched, torch.stack(loop), rtol=1e-5, atol=1e-7)
    assert batched.min() > 0


def test_gradnorm_expected_and_entropy_losses_coincide_and_confident_inputs_score_low():
    z = torch.tensor([2.0, -1.0, 0.5])
    assert expected_loss(z).item() == pytest.approx(entropy_loss(z).item(), rel=1e-6)
    lin = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(3))
    scores = per_sample_grad_norms(lin.eval(), torch.tensor([[20.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), entropy_loss)
    assert scores[0] < 1e-3 * scores[1] and scores[1] > 0.1  # a near one-hot prediction has (almost) no gradient


# -- noise stability ---------------------------------------------------------------------------------
def test_weight_noise_has_the_requested_relative_norm_per_layer(tiny_net):
    import copy

    noisy = copy.deepcopy(tiny_net)
    add_weight_noise(noisy, 1e-3, torch.Generator().manual_seed(0))
    for (name, w0), w1 in zip(tiny_net.named_parameters(), noisy.parameters()):
        if name.endswith("weight") and w0.norm() > 0:
            assert ((w1 - w0).norm() / w0.norm()).item() == pytest.approx(1e-3, rel=1e-3)
        else:  # biases untouched; zero-initialised weights stay zero
            assert torch.equal(w0, w1)


def test_output_changes_shape_and_scale(tiny_net):
    vols = np.random.default_rng(0).normal(size=(5, 16, 16, 16)).astype(np.float32)
    feats = output_changes(tiny_net, array_reader(vols), np.arange(5), torch.device("cpu"), passes=3,
                           scale=1e-3, generator=torch.Generator().manual_seed(0))
    assert feats.shape == (5, 3 * 3)
    assert 0 < feats.abs().max() < 0.1  # small noise, small but non-zero changes


# -- MC dropout -----------------------------------------------------------------------------------------
def test_mc_dropout_probs_shape_rate_and_zero_rate_agreement():
    fc = nn.Linear(8, 3)
    emb = torch.randn(5, 8)
    probs = mc_dropout_probs(fc, emb, 0.5, 6, torch.Generator().manual_seed(0), max_elements=40)  # chunked
    assert probs.shape == (6, 5, 3) and torch.allclose(probs.sum(-1), torch.ones(6, 5))
    assert bald(probs.numpy()).min() > 0
    still = mc_dropout_probs(fc, emb, 0.0, 3)  # no dropout: all passes equal -> BALD 0
    assert np.allclose(bald(still.numpy()), 0.0, atol=1e-7)
    assert dropout_rate(ResNet3D(10, 3, width=2, dropout=0.3), 0.5) == 0.3
    assert dropout_rate(ResNet3D(10, 3, width=2), 0.5) == 0.5


# -- learning loss ---------------------------------------------------------------------------------------
def test_loss_prediction_module_shape_and_ranking_loss_by_hand(tiny_net):
    module = LossPredictionModule(stage_channels(tiny_net), hidden=4)
    out = tiny_net(torch.randn(3, 1, 16, 16, 16))
    assert stage_channels(tiny_net) == [2, 4, 8, 16] and module(out.stages).shape == (3,)
    pred, true = torch.tensor([0.5, 0.0, 0.2, 1.0]), torch.tensor([2.0, 1.0, 3.0, 0.0])
    # pairs (0,3): d_pred -0.5, true 0 > 3 -> max(0, 1 + 0.5) = 1.5; (1,2): d_pred -0.2, true 1 < 2 -> 0.8
    assert loss_ranking_loss(pred, true, margin=1.0).item() == pytest.approx((1.5 + 0.8) / 2)
    # an odd batch leaves the middle sample out; a single sample has no pair
    assert loss_ranking_loss(torch.tensor([0.5, 9.0, 1.0]), torch.tensor([2.0, 5.0, 0.0])).item() == pytest.approx(1.5)
    assert loss_ranking_loss(torch.tensor([1.0]), torch.tensor([1.0])).item() == 0.0


def test_loss_module_gradient_reaches_the_teacher_only_before_the_detach_epoch(tiny_net):
    ll = build_loss_learning(tiny_net, epochs=10, detach_fraction=0.6)
    assert ll.detach_epoch == 6
    stages = [torch.randn(4, c, 2, 2, 2, requires_grad=True) for c in stage_channels(tiny_net)]
    ll.loss(stages, torch.tensor([3.0, 1.0, 2.0, 0.0]), epoch=5).backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in stages)
    stages = [s.detach().requires_grad_() for s in stages]
    ll.loss(stages, torch.tensor([3.0, 1.0, 2.0, 0.0]), epoch=6).backward()
    assert all(s.grad is None for s in stages)


def test_train_pair_trains_the_loss_module_with_the_teacher():
    torch.manual_seed(0)
    t, s = build_pair(TINY.model, 3)
    ll = build_loss_learning(t, TINY.train.epochs)
    before = [p.detach().clone() for p in ll.module.parameters()]
    x = np.random.default_rng(0).normal(size=(8, 16, 16, 16)).astype(np.float32)
    res = train_pair(t, s, x, np.arange(8) % 3, TINY.train, TINY.transfer, torch.device("cpu"), loss_learning=ll)
    assert any(not torch.equal(a, b) for a, b in zip(before, ll.module.parameters()))
    assert math.isfinite(res.teacher_loss)


# -- registry and every strategy through a real cycle -----------------------------------------------------
def test_registry_names_are_recipe_values_and_unknown_names_are_refused():
    assert {"kt", "random", "entropy", "margin", "least-confidence", "bald", "coreset", "gradnorm-expected",
            "gradnorm-entropy", "noise-stability", "lloss"} <= set(STRATEGIES)
    for name, strategy in STRATEGIES.items():
        assert TINY.replace(active={"strategy": name}).active.strategy == name and strategy.summary
    with pytest.raises(RecipeError, match="active.strategy.*noise-stability"):
        TINY.replace(active={"strategy": "noise_stability"})


@pytest.fixture(scope="module")
def oracle_of(sim_train_dir):
    def make(project):
        return al.oracle_for_pool(project.pool, sim_train_dir / "labels.csv")

    return make


def _first_cycle(tmp_path, sim_train_dir, oracle_of, recipe, name="p"):
    project = Project.create(tmp_path / name, sim_train_dir, recipe)
    oracle = oracle_of(project)
    project.add_classes(sorted(set(oracle.values())))
    batch = al.initial_query(project, recipe, seed=0)
    project.label_many({q.index: oracle[q.index] for q in batch}, by="oracle")
    report = al.train_cycle(project, recipe, torch.device("cpu"), seed=0)
    return project, report


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_runs_one_cycle_and_returns_m_distinct_unlabeled_volumes(
    tmp_path, sim_train_dir, oracle_of, name
):
    recipe = TINY.replace(active={"strategy": name})
    project, report = _first_cycle(tmp_path, sim_train_dir, oracle_of, recipe)
    batch = project.read_query(1)
    chosen = [q.index for q in batch]
    labeled = set(project.labels())
    assert len(labeled) == 6 and report.n_queried == len(batch) == 6  # M = 6
    assert len(set(chosen)) == 6 and not set(chosen) & labeled and all(0 <= i < 30 for i in chosen)
    scores = np.array([q.score for q in batch])
    if name == "random":
        assert np.isnan(scores).all()
    else:
        assert np.isfinite(scores).all() and np.all(np.diff(scores) <= 1e-12)  # most informative first
    assert project.history()[0]["strategy"] == name


def test_strategy_called_directly_with_the_query_interface(tiny_net):
    vols = np.random.default_rng(1).normal(size=(12, 16, 16, 16)).astype(np.float32)
    ctx = QueryContext(tiny_net, tiny_net, array_reader(vols), np.array([0, 1]), torch.device("cpu"),
                       np.random.default_rng(0), options=TINY.active)
    candidates = np.arange(2, 12)
    for name in ("entropy", "bald", "coreset", "gradnorm-entropy", "noise-stability"):
        sel = STRATEGIES[name](ctx, candidates, 4)
        assert len(sel.indices) == len(set(sel.indices.tolist())) == 4 and set(sel.indices) <= set(candidates)
    with pytest.raises(Exception, match="loss-prediction module"):
        STRATEGIES["lloss"](ctx, candidates, 4)


@pytest.mark.parametrize("transfer", [{"loss": "at"}, {"loss": "mse"}, {"loss": "l1"}, {"loss": "kl"},
                                      {"score": "js"}, {"score": "mse"}])
def test_kt_ablation_variants_run_a_cycle(tmp_path, sim_train_dir, oracle_of, transfer):
    recipe = TINY.replace(transfer=transfer, active={"strategy": "kt"})
    project, report = _first_cycle(tmp_path, sim_train_dir, oracle_of, recipe)
    assert math.isfinite(report.transfer_loss) and report.transfer_loss >= 0
    scores = [q.score for q in project.read_query(1)]
    assert len(scores) == 6 and all(math.isfinite(s) and s >= 0 for s in scores)
