"""A cycle and a simulated run: seeding, progress, cancel, other box sizes."""


import numpy as np
import pytest
import torch

from napari_ktal.core import loop as al
from napari_ktal.core.errors import Cancelled
from napari_ktal.core.progress import RunContext
from napari_ktal.core.project import Project
from napari_ktal.core.simulate import SimulationConfig, simulate_dataset


def test_same_seed_same_run_different_seed_different_queries(new_project, sim_with_test, small_recipe):
    recipe = small_recipe.replace(active={"final_fraction": 0.2})
    runs = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        p = new_project(name)
        test = al.load_labeled_set(sim_with_test[2], sorted(set(al.oracle_for_pool(p.pool, sim_with_test[1]).values())))
        reports = al.run_with_oracle(p, recipe, al.oracle_for_pool(p.pool, sim_with_test[1]), torch.device("cpu"), seed=seed, test=test)
        runs.append(([r.test_accuracy for r in reports], [r.teacher_loss for r in reports],
                     [[q.index for q in p.read_query(c)] for c in p.query_cycles()]))
    assert runs[0] == runs[1]
    assert runs[0][2] != runs[2][2]


def test_progress_reports_epochs_and_losses_and_cancel_stops(new_project, sim_with_test, small_recipe):
    p = new_project()
    oracle = al.oracle_for_pool(p.pool, sim_with_test[1])
    p.add_classes(sorted(set(oracle.values())))
    batch = al.initial_query(p, small_recipe, seed=0)
    p.label_many({q.index: oracle[q.index] for q in batch}, by="oracle")
    events = []
    al.train_cycle(p, small_recipe, torch.device("cpu"), run=RunContext(events.append))
    epochs = [e for e in events if e.phase == "train" and e.metrics]
    assert [e.epoch for e in epochs] == [1, 2] and all(np.isfinite(e.metrics["student_loss"]) for e in epochs)
    assert any(e.phase == "score" for e in events)
    # cancel at the first training step: nothing of the cycle is saved
    with pytest.raises(Cancelled):
        al.train_cycle(p, small_recipe, torch.device("cpu"), run=RunContext(should_stop=lambda: True))
    assert p.trained_cycles == 1 and p.checkpoint_cycles() == [0]


@pytest.fixture
def warm_run(new_project, sim_with_test, small_recipe, monkeypatch):
    """(recipe, project with its classes, oracle, trainings): warm start with min_steps 12 and
    warm_min_steps 4; ``trainings`` collects each training's (teacher weights at its start, epochs)."""
    recipe = small_recipe.replace(train={"min_steps": 12, "warm_min_steps": 4, "batch_size": 8},
                                  active={"reinit_each_cycle": False, "final_fraction": 0.3})
    p = new_project()
    oracle = al.oracle_for_pool(p.pool, sim_with_test[1])
    p.add_classes(sorted(set(oracle.values())))
    trainings = []
    original = al.cycle.train_pair

    def spy(teacher, student, x, y, job, **kw):
        trainings.append(({k: v.clone() for k, v in teacher.state_dict().items()}, job.train.epochs))
        return original(teacher, student, x, y, job, **kw)

    monkeypatch.setattr(al.cycle, "train_pair", spy)
    return recipe, p, oracle, trainings


def test_warm_start_continues_from_the_last_weights_with_the_warm_step_floor(warm_run):
    """[active] reinit_each_cycle = false: cycle 1 starts from cycle 0's weights and trains at least
    warm_min_steps steps (cycle 0, from scratch, min_steps); a new class starts afresh."""
    recipe, p, oracle, seen = warm_run
    reports = al.run_with_oracle(p, recipe, oracle, torch.device("cpu"), seed=0)
    saved0, _, _ = p.load_models(0)
    assert [r.n_labeled for r in reports] == [3, 5, 6, 8, 9]
    assert seen[0][1] == 12  # 3 volumes = 1 step per epoch: the min_steps floor, from scratch
    assert seen[1][1] == 4  # warm: 5 volumes, 1 step per epoch, the warm floor
    assert all(torch.equal(v, saved0.state_dict()[k]) for k, v in seen[1][0].items())  # cycle 0's weights
    p.add_classes(["extra"])  # another class: cycle 5 starts from scratch, with min_steps
    al.train_cycle(p, recipe, torch.device("cpu"), seed=0, select=False)
    assert seen[-1][1] == 12


def test_after_a_teacher_only_cycle_kt_does_not_warm_start_an_untrained_student(warm_run):
    """margin trains no student (its checkpoint says so); the kt cycle after it starts both models
    afresh with the full floor, and the kt cycle after that warm-starts again."""
    recipe, p, oracle, seen = warm_run
    for cycle, strategy in enumerate(("margin", "kt", "kt")):
        batch = al.initial_query(p, recipe, seed=0) if cycle == 0 else p.read_query(cycle)
        p.label_many({q.index: oracle[q.index] for q in batch}, by="oracle")
        al.train_cycle(p, recipe.replace(active={"strategy": strategy}), torch.device("cpu"), seed=0)
    assert [p.checkpoint_meta(c)["student_trained"] for c in range(3)] == [False, True, True]
    assert [epochs for _, epochs in seen] == [12, 12, 4]  # 3, 5, 6 volumes: one step per epoch


def test_other_box_sizes_and_a_labels_csv_as_data(tmp_path, small_recipe):
    train, _ = simulate_dataset(tmp_path / "d", SimulationConfig(classes=2, per_class=10, snr=2, box=16, seed=1))
    p = Project.create(tmp_path / "p", train, small_recipe)  # DATA may be the labels CSV itself
    assert len(p.pool) == 20 and p.pool.box == 16
    reports = al.run_with_oracle(p, small_recipe.replace(active={"final_fraction": 0.2}), al.oracle_for_pool(p.pool, train),
                                 torch.device("cpu"))
    assert [r.n_labeled for r in reports] == [2, 3, 4]
