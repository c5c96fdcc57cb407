"""Training options: class-balanced loss, label smoothing, BatchNorm statistics recomputed after training."""

import numpy as np
import pytest
import torch

from napari_ktal.core.engine import TrainJob, train_pair
from napari_ktal.core.engine.training import class_weights, recalibrate_batchnorm
from napari_ktal.core.loop import load_recipe
from napari_ktal.core.models import ResNet3D, build_pair

pytestmark = pytest.mark.usefixtures("one_torch_thread")
# plain cross-entropy for both networks unless a test says otherwise (quick smooths the student's)
TINY = load_recipe("quick").replace(model={"width": 2}, train={
    "min_steps": 0, "epochs": 2, "lr_milestones": [], "batch_size": 8, "label_smoothing": 0.0, "label_smoothing_for": "both"})


def test_class_weights_are_inverse_frequency_over_the_classes_present():
    w = class_weights(torch.tensor([0, 0, 0, 1, 2, 2]), 4)
    assert w.tolist() == pytest.approx([6 / 9, 6 / 3, 6 / 6, 1.0])  # n / (K * n_k) with K = 3 present
    # weighted cross-entropy then gives each present class the same total weight
    counts = torch.tensor([3.0, 1.0, 2.0])
    assert (w[:3] * counts).tolist() == pytest.approx([2.0, 2.0, 2.0])


def test_recalibrated_batchnorm_holds_the_statistics_of_the_labeled_set():
    torch.manual_seed(0)
    model = ResNet3D(10, 3, width=2, stem="strided")
    x = torch.randn(12, 1, 16, 16, 16) * 3 + 5
    bn = model.stem[1]
    assert torch.allclose(bn.running_mean, torch.zeros(2))  # never trained: the defaults
    recalibrate_batchnorm([model], x, torch.device("cpu"), batch_size=4)
    with torch.no_grad():
        pre = model.stem[0](x)  # the stem convolution's output is what the first BatchNorm normalises
    torch.testing.assert_close(bn.running_mean, pre.mean(dim=(0, 2, 3, 4)), rtol=1e-4, atol=1e-4)
    assert model.training  # the mode it had


@pytest.mark.parametrize("options", [{"class_balance": "loss"}, {"recalibrate_bn": True}, {"label_smoothing": 0.1},
                                     {"label_smoothing": 0.1, "label_smoothing_for": "student"}])
def test_training_with_the_options_runs_and_changes_the_models(options):
    torch.manual_seed(0)
    t, s = build_pair(TINY.model, 3)
    before = [p.detach().clone() for p in s.parameters()]
    x = np.random.default_rng(0).normal(size=(10, 16, 16, 16)).astype(np.float32)
    y = np.array([0] * 6 + [1] * 3 + [2])
    res = train_pair(t, s, x, y, TrainJob(TINY.replace(train=options).train, TINY.transfer), device=torch.device("cpu"))
    assert np.isfinite(res.teacher_loss) and any(not torch.equal(a, b) for a, b in zip(before, s.parameters()))


def test_label_smoothing_keeps_the_logits_near_their_smoothed_optimum():
    """Plain cross-entropy drives the logit gap up without end on a few labels (the KL score's
    scale follows it); with smoothing e over K classes the optimum gap is log((1 - e + e/K) / (e/K))."""
    x, y = _easy_set(0)
    gaps = {}
    for smooth in (0.0, 0.3):
        t, _ = _train_easy(x, y, label_smoothing=smooth)
        logits = _logits(t, x)
        gaps[smooth] = _mean_gap(logits)
        assert (logits.argmax(1).numpy() == y).all()  # both learn this easy set
    assert gaps[0.3] < SMOOTHED_OPTIMUM + 0.5 < gaps[0.0]  # measured: 2.0 vs 7.7


def test_smoothing_the_student_alone_leaves_the_teacher_as_the_paper_trains_it():
    """label_smoothing_for = "student": the teacher's weights are those of plain training, bit for
    bit (same seed, same batches; the transfer loss does not reach it), and only the student's
    logits are held near the smoothed optimum."""
    x, y = _easy_set(1)
    plain = _train_easy(x, y)
    student_only = _train_easy(x, y, label_smoothing=0.3, label_smoothing_for="student")
    for a, b in zip(plain[0].state_dict().values(), student_only[0].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert _mean_gap(_logits(student_only[1], x)) < SMOOTHED_OPTIMUM + 0.5 < _mean_gap(_logits(plain[1], x))


def test_the_teacher_trained_alone_is_the_teacher_trained_beside_a_student():
    """A strategy that does not read the student trains the teacher alone (issue 18): same seed,
    batches and flips give the same teacher, bit for bit, with flips and a momentum optimizer on;
    the student's losses are NaN and the student is left as it started."""
    x, y = _easy_set(2)
    spec = TINY.replace(train={"epochs": 4, "batch_size": 5, "augment": "flips", "lr": 0.05}).train
    torch.manual_seed(0)
    t_pair, s_pair = build_pair(TINY.model, 3)
    torch.manual_seed(0)
    t_alone, s_unused = build_pair(TINY.model, 3)
    before = {k: v.clone() for k, v in s_unused.state_dict().items()}
    pair = train_pair(t_pair, s_pair, x, y, TrainJob(spec, TINY.transfer, seed=3), device=torch.device("cpu"))
    alone = train_pair(t_alone, None, x, y, TrainJob(spec, TINY.transfer, seed=3), device=torch.device("cpu"))
    for a, b in zip(t_pair.state_dict().values(), t_alone.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert alone.teacher_loss == pair.teacher_loss and np.isfinite(pair.student_loss)
    assert np.isnan(alone.student_loss) and np.isnan(alone.transfer_loss)
    for k, v in s_unused.state_dict().items():
        assert torch.equal(v, before[k])


# an easy 3-class set of 12 volumes that both networks fit, and the smoothed optimum of the logit
# gap for e = 0.3, K = 3: log((1 - e + e/K) / (e/K)) = 2.08 nats
SMOOTHED_OPTIMUM = float(np.log((1 - 0.3 + 0.1) / 0.1))


def _easy_set(seed: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.repeat([0, 1, 2], 4)
    x = np.random.default_rng(seed).normal(size=(12, 16, 16, 16)) + 1.0 * (y[:, None, None, None] - 1)
    return x.astype(np.float32), y


def _train_easy(x: np.ndarray, y: np.ndarray, **options):
    """(teacher, student) after 60 full-batch epochs from the same initialisation and seed."""
    torch.manual_seed(0)
    t, s = build_pair(TINY.model, 3)
    spec = TINY.replace(train={"epochs": 60, "batch_size": 12, "augment": "none", "lr": 0.05, **options}).train
    train_pair(t, s, x, y, TrainJob(spec, TINY.transfer), device=torch.device("cpu"))
    return t, s


def _logits(model, x: np.ndarray) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)[:, None]).logits


def _mean_gap(logits: torch.Tensor) -> float:
    top2 = logits.topk(2, dim=1).values
    return float((top2[:, 0] - top2[:, 1]).mean())


@pytest.mark.parametrize("precision, hint", [("fp32", "smaller [train] lr"), ("bf16", 'precision = "fp32"')])
def test_a_training_whose_loss_goes_non_finite_stops_and_says_what_to_change(precision, hint):
    from napari_ktal.core.errors import TrainingDiverged
    from napari_ktal.core.recipe import SpeedSpec

    torch.manual_seed(0)
    t, s = build_pair(TINY.model, 2)
    x = np.random.default_rng(0).normal(size=(8, 16, 16, 16)).astype(np.float32)
    x[3] = np.inf  # one volume that overflows every activation it touches
    job = TrainJob(TINY.train, TINY.transfer, speed=SpeedSpec(precision=precision, channels_last=False))
    with pytest.raises(TrainingDiverged, match=r"loss is not finite in epoch 1.*" + hint.replace("[", r"\[")):
        train_pair(t, s, x, np.array([0, 1] * 4), job, device=torch.device("cpu"))


def _fit_job(fit_loss: float, max_steps: int) -> TrainJob:
    spec = TINY.replace(train={"epochs": 4, "lr_milestones": [3], "fit_loss": fit_loss, "max_steps": max_steps}).train
    return TrainJob(spec, TINY.transfer, seed=0)


def test_fit_loss_holds_the_lr_drop_while_the_teacher_has_not_fit_within_max_steps():
    from napari_ktal.core.progress import RunContext

    x = np.random.default_rng(0).normal(size=(16, 16, 16, 16)).astype(np.float32)
    y = np.arange(16) % 8  # 8 classes of pure noise: no teacher fits them in a few steps
    events = []
    torch.manual_seed(0)
    t, s = build_pair(TINY.model, 8)
    # 2 steps an epoch (16 volumes, batches of 8); 4 epochs with the drop after 3, and the cap at 20
    # steps: extra epochs while (trained + 1 + the 1 after the drop) * 2 <= 20, so 10 epochs in all
    res = train_pair(t, s, x, y, _fit_job(1e-3, 20), device=torch.device("cpu"), run=RunContext(on_progress=events.append))
    assert res.epochs == 10 and res.teacher_loss > 1e-3
    assert events[-1].epochs == 10 and events[-1].epoch == 10  # the progress bar's total grew with it
    # without fit_loss the same job trains its 4 epochs
    torch.manual_seed(0)
    t, s = build_pair(TINY.model, 8)
    assert train_pair(t, s, x, y, _fit_job(0.0, 0), device=torch.device("cpu")).epochs == 4


def test_a_teacher_that_fits_before_the_lr_drop_trains_exactly_as_without_fit_loss():
    x, y = _easy_set(0)
    weights = []
    for job in (_fit_job(0.0, 0), _fit_job(50.0, 1000)):  # 50 nats: met at once, nothing added
        torch.manual_seed(0)
        t, s = build_pair(TINY.model, 3)
        assert train_pair(t, s, x, y, job, device=torch.device("cpu")).epochs == 4
        weights.append([p.detach().clone() for p in (*t.parameters(), *s.parameters())])
    assert all(torch.equal(a, b) for a, b in zip(*weights))


def test_fit_loss_needs_a_step_cap():
    from napari_ktal.core.errors import RecipeError

    with pytest.raises(RecipeError, match="max_steps"):
        TINY.replace(train={"fit_loss": 0.3, "max_steps": 0})


def test_a_schedule_without_an_lr_drop_has_nothing_for_fit_loss_to_hold():
    x = np.random.default_rng(0).normal(size=(16, 16, 16, 16)).astype(np.float32)
    spec = TINY.replace(train={"epochs": 3, "lr_milestones": [], "fit_loss": 1e-3, "max_steps": 100}).train
    torch.manual_seed(0)
    t, s = build_pair(TINY.model, 8)
    res = train_pair(t, s, x, np.arange(16) % 8, TrainJob(spec, TINY.transfer), device=torch.device("cpu"))
    assert res.epochs == 3 and res.teacher_loss > 1e-3  # not fit, and still the recipe's epochs
