"""The registry: names, options from the recipe, discovery, and every strategy through a real cycle."""

import dataclasses
import importlib
import pkgutil

import numpy as np
import pytest

import napari_ktal.core.strategies as strategies_pkg
from napari_ktal.core.errors import RecipeError
from napari_ktal.core.loop import load_recipe
from napari_ktal.core.recipe import read_recipe, recipe_from_dict
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


def test_each_strategy_reads_its_own_table_without_prefixes():
    recipe = check_recipe(recipe_from_dict({"active": {"strategy": "autoal", "options": {
        "autoal": {"candidates": "kt,margin", "fit_steps": 5}, "bald": {"mc_passes": 7}}}}))
    assert recipe.active.options == {"autoal": {"candidates": "kt,margin", "fit_steps": 5}, "bald": {"mc_passes": 7}}
    autoal = STRATEGIES["autoal"].parse_options(recipe.active.options["autoal"])
    assert (autoal.candidates, autoal.fit_steps, autoal.lr) == ("kt,margin", 5, 0.05)
    assert STRATEGIES["bald"].parse_options(recipe.active.options["bald"]).mc_passes == 7
    assert STRATEGIES["variation-ratio"].parse_options(recipe.active.options.get("variation-ratio", {})).mc_passes == 20


@pytest.mark.parametrize("old", [
    {"strategy": "autoal", "autoal_fit_steps": 5, "mc_passes": 7},  # flat in [active] (the first versions)
    {"strategy": "autoal", "options": {"autoal_fit_steps": 5, "mc_passes": 7}},  # flat, prefixed [active.options]
])
def test_older_flat_keys_are_read_into_their_strategies_tables_with_a_warning(old):
    new = {"strategy": "autoal", "options": {"autoal": {"fit_steps": 5}, "bald": {"mc_passes": 7},
                                             "variation-ratio": {"mc_passes": 7}}}  # every strategy that read it
    with pytest.warns(FutureWarning) as caught:
        got = check_recipe(recipe_from_dict({"active": old}))
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert "'autoal_fit_steps'" in messages[0] and "[active.options.autoal] fit_steps" in messages[0]
    assert "'mc_passes'" in messages[1] and "[active.options.variation-ratio] mc_passes" in messages[1]
    assert got == check_recipe(recipe_from_dict({"active": new}))
    assert "autoal_" not in got.to_toml() and "[active.options.autoal]" in got.to_toml()  # written in the new form


def test_an_option_given_in_both_forms_is_refused():
    with pytest.raises(RecipeError, match="given twice"):
        recipe_from_dict({"active": {"mc_passes": 7, "options": {"mc_passes": 8}}})
    with pytest.raises(RecipeError, match="'active.options.bald.mc_passes': is given twice"):
        check_recipe(recipe_from_dict({"active": {"mc_passes": 7, "options": {"bald": {"mc_passes": 8}}}}))


def test_option_typos_and_bad_values_are_refused_by_table_and_key():
    with pytest.raises(RecipeError, match=r"'active.options.bald.mc_pases' is not known; did you mean 'mc_passes'\?"):
        check_recipe(recipe_from_dict({"active": {"options": {"bald": {"mc_pases": 3}}}}))
    with pytest.raises(RecipeError, match="'active.options.autoal.autoal_lr' is not known; did you mean 'lr'"):
        check_recipe(recipe_from_dict({"active": {"options": {"autoal": {"autoal_lr": 0.1}}}}))
    with pytest.raises(RecipeError, match="'active.options.bladd' is not known; did you mean 'bald'"):
        check_recipe(recipe_from_dict({"active": {"options": {"bladd": {"mc_passes": 3}}}}))
    with pytest.raises(RecipeError, match="'active.options.mc_pases' is not known; did you mean "
                                          "'active.options.bald.mc_passes'"):
        check_recipe(recipe_from_dict({"active": {"options": {"mc_pases": 3}}}))
    with pytest.raises(RecipeError, match="'active.options.noise-stability.scale'"), pytest.warns(FutureWarning):
        check_recipe(recipe_from_dict({"active": {"noise_scale": 5.0}}))
    with pytest.raises(RecipeError, match="'active.options.poal.shrinkage'"):
        check_recipe(recipe_from_dict({"active": {"options": {"poal": {"shrinkage": "high"}}}}))
    with pytest.raises(RecipeError, match="'active.inital_fraction' is not known; did you mean 'initial_fraction'"):
        recipe_from_dict({"active": {"inital_fraction": 0.1}})  # a typo of [active]'s own key


def test_options_at_their_default_are_dropped_so_an_old_full_recipe_equals_the_shipped_one():
    shipped = load_recipe("quick")
    old = shipped.to_dict()
    old["active"].pop("options")
    old["active"].update(mc_passes=20, mc_dropout=0.5, noise_passes=30, noise_scale=0.001, gradnorm_batch_size=16)
    with pytest.warns(FutureWarning):
        assert check_recipe(recipe_from_dict(old)) == shipped


def test_a_recipe_with_options_reads_back_from_toml(tmp_path, tiny):
    path = tmp_path / "r.toml"
    path.write_text(tiny.to_toml())
    assert load_recipe(path) == check_recipe(tiny) and "[active.options.noise-stability]" in path.read_text()
    assert read_recipe(path) == tiny


def test_an_older_projects_recipe_file_still_reads_and_writes_back_new(tmp_path, tiny):
    old = tiny.to_toml().split("[active.options")[0]  # [active] and everything before it, no tables
    path = tmp_path / "recipe.toml"
    path.write_text(old + "mc_passes = 4\n\n[active.options]\nnoise_passes = 3\ngradnorm_batch_size = 8\n"
                    "autoal_fit_steps = 6\nautoal_search_steps = 6\n\n[speed]\n" + tiny.to_toml().split("[speed]\n")[1])
    with pytest.warns(FutureWarning) as caught:
        recipe = load_recipe(path)
    assert any("'noise_passes'" in str(w.message) for w in caught)
    assert recipe == check_recipe(tiny)
    assert "noise_passes" not in recipe.to_toml() and "[active.options.noise-stability]\npasses = 3" in recipe.to_toml()


def test_replace_updates_a_table_key_by_key(tiny):
    changed = check_recipe(tiny.replace(active={"options": {"autoal": {"fit_steps": 2}, "poal": {"noise": 0.0}}}))
    assert changed.active.options["autoal"] == {"fit_steps": 2, "search_steps": 6}
    assert changed.active.options["poal"] == {"noise": 0.0} and changed.active.options["bald"] == {"mc_passes": 4}


def test_replace_with_an_older_flat_key_still_works_with_the_warning():
    recipe = load_recipe("quick").replace(active={"strategy": "poal", "poal_noise": 0.0})
    with pytest.warns(FutureWarning, match="poal_noise"):
        assert check_recipe(recipe).active.options == {"poal": {"noise": 0.0}}


def test_the_recipe_table_of_the_strategy_reaches_its_query_in_a_cycle(first_cycle, tiny, monkeypatch):
    seen = []
    bald = STRATEGIES["bald"]

    def spy(ctx, candidates, m, opts):
        seen.append((opts, ctx.option_tables))
        return bald.query(ctx, candidates, m, opts)

    monkeypatch.setitem(STRATEGIES, "bald", dataclasses.replace(bald, query=spy))
    first_cycle(tiny.replace(active={"strategy": "bald", "options": {"bald": {"mc_dropout": 0.25}}}))
    (opts, tables), = seen
    assert (opts.mc_passes, opts.mc_dropout) == (4, 0.25) and tables["noise-stability"] == {"passes": 3}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_runs_one_cycle_and_returns_m_distinct_unlabeled_volumes(first_cycle, name, tiny):
    project, report = first_cycle(tiny.replace(active={"strategy": name}))
    batch = project.read_query(1)
    chosen = [q.index for q in batch]
    labeled = set(project.labels())
    assert len(labeled) == 6 and report.n_queried == len(batch) == 6  # M = 6
    assert len(set(chosen)) == 6 and not set(chosen) & labeled and all(0 <= i < 30 for i in chosen)
    assert all(np.isnan(q.score) for q in batch if q.audit)  # the audit slice: drawn at random, no score
    scores = np.array([q.score for q in batch if not q.audit])  # the strategy's picks, in its order
    assert len(scores) == 6 - sum(q.audit for q in batch) > 0
    if name == "random":
        assert np.isnan(scores).all()
    else:
        assert np.isfinite(scores).all() and np.all(np.diff(scores) <= 1e-12)  # most informative first
    assert project.history()[0]["strategy"] == name


def test_only_the_strategies_that_read_the_student_get_one_trained():
    assert {n for n, s in STRATEGIES.items() if s.needs_student()} == {"kt", "kt-junk", "autoal"}
    dpp = STRATEGIES["dpp"]
    assert dpp.needs_student(dpp.parse_options({"uncertainty": "kt"}))
    autoal = STRATEGIES["autoal"]
    assert not autoal.needs_student(autoal.parse_options({"candidates": "margin,entropy,coreset"}))
    assert autoal.needs_student(autoal.parse_options({"candidates": "margin,dpp"}))  # dpp's own table may say kt


@pytest.mark.parametrize("name", ["margin", "kt"])
def test_a_cycle_trains_the_student_only_for_a_strategy_that_reads_it(first_cycle, name, tiny):
    _, report = first_cycle(tiny.replace(active={"strategy": name}))
    assert np.isfinite(report.teacher_loss)
    assert np.isnan(report.student_loss) == (name == "margin")


def test_a_query_reading_an_untrained_student_says_what_to_declare(query_context):
    query_context.student = None
    with pytest.raises(RuntimeError, match="student=True"):
        STRATEGIES["kt"](query_context, np.arange(2, 12), 4)


def test_strategies_called_directly_with_the_query_interface(query_context):
    candidates = np.arange(2, 12)
    for name, strategy in STRATEGIES.items():
        if strategy.head is not None:
            continue  # needs its head trained with the teacher: see its own tests
        options = strategy.parse_options({"bald": {"mc_passes": 4}, "variation-ratio": {"mc_passes": 4},
                                          "noise-stability": {"passes": 3}}.get(name, {}))
        sel = strategy(query_context, candidates, 4, options)
        assert len(sel.indices) == len(set(sel.indices.tolist())) == 4 and set(sel.indices) <= set(candidates)
