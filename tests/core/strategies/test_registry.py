"""The registry: names, options from the recipe, discovery, and every strategy through a real cycle."""

import dataclasses
import importlib
import pkgutil

import numpy as np
import pytest

import napari_ktal.core.strategies as strategies_pkg
from napari_ktal.core.errors import RecipeError
from napari_ktal.core.loop import load_recipe
from napari_ktal.core.recipe import recipe_from_dict
from napari_ktal.core.strategies import STRATEGIES, check_recipe

HELPERS = {"base", "heuristics", "kcenter", "selection"}  # modules that register no strategy


def test_the_method_and_its_baseline_come_first_and_every_entry_describes_itself():
    names = list(STRATEGIES)
    assert names[:2] == ["kt", "random"] and names[2:] == sorted(names[2:])
    for name, strategy in STRATEGIES.items():
        assert strategy.name == name and strategy.summary and strategy.cost


def test_every_module_of_the_package_is_found_and_each_strategy_module_registers():
    modules = {m.name for m in pkgutil.iter_modules(strategies_pkg.__path__)}
    registering = {s.query.__module__.rpartition(".")[2] for s in STRATEGIES.values()}
    assert registering == modules - HELPERS
    for name in modules:  # nothing is left unimported by the discovery
        importlib.import_module(f"{strategies_pkg.__name__}.{name}")


def test_unknown_strategy_is_refused_with_the_known_names(tiny):
    with pytest.raises(RecipeError, match="active.strategy.*noise-stability"):
        check_recipe(tiny.replace(active={"strategy": "noise_stability"}))


def test_options_from_the_options_table_and_from_older_flat_keys():
    new = recipe_from_dict({"active": {"strategy": "bald", "options": {"mc_passes": 7}}})
    old = recipe_from_dict({"active": {"strategy": "bald", "mc_passes": 7}})  # how earlier versions wrote it
    assert new == old and new.active.options == {"mc_passes": 7}
    assert STRATEGIES["bald"].parse_options(check_recipe(new).active.options).mc_passes == 7
    with pytest.raises(RecipeError, match="given twice"):
        recipe_from_dict({"active": {"mc_passes": 7, "options": {"mc_passes": 8}}})


def test_option_typos_and_bad_values_are_refused_by_name():
    with pytest.raises(RecipeError, match="'active.options.mc_pases' is not known; did you mean 'mc_passes'"):
        check_recipe(recipe_from_dict({"active": {"options": {"mc_pases": 3}}}))
    with pytest.raises(RecipeError, match="active.options.noise_scale"):
        check_recipe(recipe_from_dict({"active": {"noise_scale": 5.0}}))
    with pytest.raises(RecipeError, match="'active.inital_fraction' is not known; did you mean 'initial_fraction'"):
        recipe_from_dict({"active": {"inital_fraction": 0.1}})  # a typo of [active]'s own key


def test_options_at_their_default_are_dropped_so_an_old_full_recipe_equals_the_shipped_one():
    shipped = load_recipe("quick")
    old = shipped.to_dict()
    old["active"].pop("options")
    old["active"].update(mc_passes=20, mc_dropout=0.5, noise_passes=30, noise_scale=0.001, gradnorm_batch_size=16)
    assert check_recipe(recipe_from_dict(old)) == shipped


def test_a_recipe_with_options_reads_back_from_toml(tmp_path, tiny):
    path = tmp_path / "r.toml"
    path.write_text(tiny.to_toml())
    assert load_recipe(path) == check_recipe(tiny) and "[active.options]" in path.read_text()


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_runs_one_cycle_and_returns_m_distinct_unlabeled_volumes(first_cycle, name, tiny):
    project, report = first_cycle(tiny.replace(active={"strategy": name}))
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


def test_strategies_called_directly_with_the_query_interface(query_context):
    candidates = np.arange(2, 12)
    for name, strategy in STRATEGIES.items():
        if strategy.head is not None:
            continue  # needs its head trained with the teacher: see its own tests
        options = dataclasses.replace(strategy.options(), **{k: v for k, v in {"mc_passes": 4, "noise_passes": 3}.items()
                                                             if k in {f.name for f in dataclasses.fields(strategy.options)}})
        sel = strategy(query_context, candidates, 4, options)
        assert len(sel.indices) == len(set(sel.indices.tolist())) == 4 and set(sel.indices) <= set(candidates)
