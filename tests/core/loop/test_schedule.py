"""The budget schedule: the paper's sizes, and never fewer than two volumes."""

from napari_ktal.core import loop as al
from napari_ktal.core.recipe import ActiveSpec


def test_budget_schedule_never_starts_below_two():
    assert al.budget_schedule(12, ActiveSpec(final_fraction=0.2)) == [2]
    assert al.budget_schedule(1, ActiveSpec()) == [1]


def test_budget_schedule_is_the_papers():
    assert al.budget_schedule(24_000, ActiveSpec()) == [2400, 3600, 4800, 6000, 7200, 8400, 9600]
    real = ActiveSpec(final_fraction=0.3)
    assert al.budget_schedule(4318, real) == [432, 648, 864, 1080, 1295]
