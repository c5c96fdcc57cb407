"""Cross-fitting: stratified folds, and planted label flips found by out-of-sample teachers."""

import numpy as np
import pytest
import torch
from easy_volumes import easy_volumes

from napari_ktal.core.loop import load_recipe
from napari_ktal.core.progress import Progress, RunContext
from napari_ktal.core.trust import assign_folds, calibrate, crossfit, n_folds_for, rank_suspects
from napari_ktal.core.trust.calibration import nll

CPU = torch.device("cpu")


def test_folds_are_stratified_and_a_small_class_lands_once_per_fold():
    labels = np.array([0] * 23 + [1] * 12 + [2] * 3)
    fold = assign_folds(labels, 5, np.random.default_rng(0))
    for c, n in ((0, 23), (1, 12)):
        counts = np.bincount(fold[labels == c], minlength=5)
        assert counts.max() - counts.min() <= 1 and counts.sum() == n
    assert len(set(fold[labels == 2])) == 3  # each of its 3 volumes judged by a model that saw the other 2
    sizes = np.bincount(fold, minlength=5)
    assert sizes.max() - sizes.min() <= 1
    assert n_folds_for(100) == 5 and n_folds_for(6) == 3 and n_folds_for(4) == 2
    with pytest.raises(ValueError):
        n_folds_for(3)


def test_flipped_labels_rank_among_the_top_suspects_after_cross_fitting():
    torch.set_num_threads(1)
    x, truth = easy_volumes(48)
    given = truth.copy()
    flipped = np.array([3, 17, 30, 41])
    given[flipped] = (truth[flipped] + 2) % 4
    # 8 epochs on 36 volumes a fold sit on an edge where the arithmetic's order moves the result
    # (on an AVX512-BF16 CPU: 4 of 4 flips suggested right in float32, 1 of 4 with channels_last,
    # whose gradients agree with float32's to 1e-7): one arithmetic on every machine
    recipe = load_recipe("quick").replace(model={"width": 4}, train={
        "min_steps": 0, "epochs": 8, "lr": 0.1, "lr_milestones": [], "batch_size": 8, "recalibrate_bn": True},
        speed={"precision": "fp32", "channels_last": False})
    events = []
    before = torch.random.get_rng_state()
    cf = crossfit(x, given, recipe, CPU, n_classes=4, indices=np.arange(48) + 100, folds=4, repeats=1, seed=1,
                  run=RunContext(on_progress=events.append))
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's random state untouched
    assert cf.n_folds == 4 and cf.probs.shape == (48, 4) and cf.judged.all()
    assert np.allclose(cf.probs.sum(1), 1, atol=1e-5) and set(cf.fold) == {0, 1, 2, 3}
    assert [e.done for e in events if isinstance(e, Progress) and e.phase == "crossfit"] == [0, 1, 2, 3, 4]
    ranked = rank_suspects(cf.probs, cf.labels, cf.indices)
    top = {s.index - 100 for s in ranked[: 2 * len(flipped)]}
    assert len(top & set(flipped)) >= 3, [(s.index, round(s.score, 2)) for s in ranked[:8]]
    # out of sample, the model mostly disagrees with the flipped labels: it suggests their true class
    by_index = {s.index - 100: s for s in ranked}
    assert np.mean([by_index[i].suggested == truth[i] for i in flipped]) >= 0.75
    cal = calibrate(cf.logits, cf.labels)
    # what the fit guarantees is the likelihood (the ECE on 48 volumes may move either way)
    assert cal.temperature > 0 and nll(cf.logits, cf.labels, cal.temperature) <= nll(cf.logits, cf.labels, 1.0) + 1e-9


def test_repeats_average_differently_split_cross_fittings_and_the_first_is_a_single_one():
    torch.set_num_threads(1)
    x, truth = easy_volumes(16)
    recipe = load_recipe("quick").replace(model={"width": 2}, train={
        "min_steps": 0, "epochs": 1, "lr_milestones": [], "batch_size": 8})
    one = crossfit(x, truth, recipe, CPU, n_classes=4, folds=2, repeats=1, seed=3)
    events = []
    two = crossfit(x, truth, recipe.replace(trust={"folds": 2, "repeats": 2}), CPU, n_classes=4, seed=3,
                   run=RunContext(on_progress=events.append))  # folds and repeats: the recipe's [trust]
    assert one.n_repeats == 1 and one.repeat_logits is None and two.n_repeats == 2
    assert two.repeat_logits.shape == (2, 16, 4)
    np.testing.assert_array_equal(two.repeat_logits[0], one.logits)  # repeat 0 is the single cross-fitting
    np.testing.assert_array_equal(two.fold, one.fold)
    assert not np.array_equal(two.repeat_logits[1], one.logits)  # another split, other seeds
    mean = torch.from_numpy(two.repeat_logits).softmax(-1).mean(0).numpy()
    np.testing.assert_allclose(two.probs, mean, rtol=1e-6)
    np.testing.assert_allclose(torch.from_numpy(two.logits).softmax(-1).numpy(), mean, rtol=1e-5, atol=1e-7)
    assert [e.done for e in events if e.phase == "crossfit"] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="repeats"):
        crossfit(x, truth, recipe, CPU, n_classes=4, folds=2, repeats=0)
