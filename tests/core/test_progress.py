"""Progress events: one wording for the CLI's bar and the widget's, with the time left."""

from napari_ktal.core.progress import Progress, RunContext, clock, describe


def test_time_left_from_the_rate_so_far():
    p = Progress("train", 5, 10, cycle=2, epoch=2, epochs=4, elapsed=30.0)  # 15 of 40 steps in 30 s
    assert p.steps == (15, 40) and p.remaining == 50.0
    assert describe(p) == "cycle 2: epoch 2/4 · ~50 s left"
    assert Progress("train", 5, 10, epoch=1, epochs=4).remaining is None  # no elapsed: no estimate
    assert Progress("predict", 0, 10, elapsed=3.0).remaining is None  # no rate yet
    done = Progress("train", 10, 10, cycle=0, epoch=4, epochs=4, metrics={"teacher_loss": 0.25}, elapsed=60.0)
    assert describe(done) == "cycle 0: epoch 4/4 · loss 0.250"  # finished: nothing left to estimate
    assert describe(Progress("predict", 40, 100, elapsed=8.0)) == "predicting: 40/100 · ~12 s left"


def test_clock():
    assert [clock(s) for s in (0.4, 59.6, 61, 3599, 3600, 7322)] == [
        "0 s", "1 min 00 s", "1 min 01 s", "59 min 59 s", "1 h 00 min", "2 h 02 min"]


def test_training_reports_elapsed_time(small_recipe):
    import numpy as np
    import torch

    from napari_ktal.core.engine import TrainJob, train_pair
    from napari_ktal.core.models import build_pair

    t, s = build_pair(small_recipe.model, 2)
    x = np.random.default_rng(0).normal(size=(8, 16, 16, 16)).astype(np.float32)
    events = []
    train_pair(t, s, x, np.array([0, 1] * 4), TrainJob(small_recipe.train, small_recipe.transfer, 0, 0),
               device=torch.device("cpu"), run=RunContext(events.append))
    assert all(e.elapsed is not None and e.elapsed >= 0 for e in events)
    assert [e.elapsed for e in events] == sorted(e.elapsed for e in events)
    assert "left" in describe(events[0]) and "left" not in describe(events[-1])
