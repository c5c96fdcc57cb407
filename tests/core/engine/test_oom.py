"""Out of GPU memory: training lowers the batch size and goes on, or stops with a clear message;
scoring splits its batches. Tested on the CPU by making a model raise torch.OutOfMemoryError."""

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch

from napari_ktal.core.data import ArraySource
from napari_ktal.core.engine import TrainJob, forward_outputs, train_pair
from napari_ktal.core.errors import KtalError
from napari_ktal.core.loop import load_recipe
from napari_ktal.core.models.resnet3d import build_pair
from napari_ktal.core.progress import Progress, RunContext

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = load_recipe("quick").replace(model={"width": 2},
                                    train={"min_steps": 0, "epochs": 2, "lr_milestones": [], "batch_size": 16, "eval_batch_size": 16})
CPU = torch.device("cpu")


def _data(n=24, box=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, box, box, box)).astype(np.float32), np.arange(n) % 3


def _oom_above(model, limit, calls):
    """Make ``model`` raise OutOfMemoryError for batches larger than ``limit``."""
    forward = model.forward

    def guarded(x):
        calls.append(x.shape[0])
        if x.shape[0] > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (fake)")
        return forward(x)

    model.forward = guarded


def test_training_halves_the_batch_restarts_and_warns():
    x, y = _data()
    torch.manual_seed(0)
    t, s = build_pair(TINY.model, 3)
    calls, events = [], []
    _oom_above(t, 5, calls)
    with pytest.warns(RuntimeWarning, match=r"out of GPU memory at batch size 16.*batch size 8") as rec:
        res = train_pair(t, s, x, y, TrainJob(TINY.train, TINY.transfer), device=CPU, run=RunContext(events.append))
    assert res.batch_size == 4 and math.isfinite(res.teacher_loss)
    assert any("batch size 8; restarting" in str(w.message) for w in rec) and len(rec) == 2
    assert max(calls[-6:]) <= 4  # the run that finished used batches of 4 (24 = 6 x 4)
    assert any(isinstance(e, Progress) and "out of GPU memory" in e.message for e in events)

    # the restarted run is the run that batch size gives from the start: same weights
    torch.manual_seed(0)
    t2, s2 = build_pair(TINY.model, 3)
    res2 = train_pair(t2, s2, x, y, TrainJob(dataclasses.replace(TINY.train, batch_size=4), TINY.transfer), device=CPU)
    assert res2.teacher_loss == pytest.approx(res.teacher_loss, rel=1e-6)
    for a, b in zip(t.state_dict().values(), t2.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_training_stops_with_a_clear_error_when_even_two_volumes_do_not_fit():
    x, y = _data(8)
    t, s = build_pair(TINY.model, 3)
    _oom_above(s, 0, [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(KtalError, match="out of CPU memory even with a batch of 2 volumes"):
            train_pair(t, s, x, y, TrainJob(TINY.train, TINY.transfer), device=CPU)


def test_scoring_splits_batches_on_out_of_memory():
    x, _ = _data(20)
    torch.manual_seed(0)
    t, s = build_pair(TINY.model, 3)
    reference = forward_outputs([t, s], ArraySource(x), np.arange(20), CPU, batch_size=8)
    calls = []
    _oom_above(s, 3, calls)
    with pytest.warns(RuntimeWarning, match="continuing with batches of 2"):
        got = forward_outputs([t, s], ArraySource(x), np.arange(20), CPU, batch_size=8)
    for a, b in zip(reference, got):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    _oom_above(t, 0, [])
    with pytest.warns(RuntimeWarning), pytest.raises(KtalError, match="even for one volume"):
        forward_outputs([t], ArraySource(x), np.arange(4), CPU, batch_size=4)
