import tomllib

import pytest

from napari_ktal.core.errors import RecipeError
from napari_ktal.core.loop import load_recipe
from napari_ktal.core.recipe import builtin_recipes


def test_shipped_recipes_load_and_follow_the_paper():
    assert {"quick", "paper-simulated", "paper-real"} <= set(builtin_recipes())
    sim = load_recipe("paper-simulated")
    assert (sim.model.teacher_depth, sim.model.student_depth) == (18, 10)
    assert sim.transfer.weight == 100 and sim.transfer.loss == "at" and sim.transfer.score == "kl"
    assert (sim.train.lr, sim.train.momentum, sim.train.weight_decay) == (0.1, 0.9, 5e-4)
    assert sim.train.epochs == 100 and sim.train.lr_milestones == [80]
    assert (sim.active.initial_fraction, sim.active.step_fraction, sim.active.final_fraction) == (0.1, 0.05, 0.4)
    assert sim.active.subset_factor == 10
    real = load_recipe("paper-real")
    assert real.train.epochs == 5 and real.train.lr_milestones == [] and real.active.final_fraction == 0.3


def _write(tmp_path, text):
    p = tmp_path / "r.toml"
    p.write_text(text)
    return p


def test_typo_key_is_named_with_a_suggestion(tmp_path):
    with pytest.raises(RecipeError, match=r"train\.epoch'.*did you mean 'epochs'"):
        load_recipe(_write(tmp_path, "[train]\nepoch = 3\n"))


def test_out_of_range_value_names_the_key(tmp_path):
    with pytest.raises(RecipeError, match=r"active\.final_fraction"):
        load_recipe(_write(tmp_path, "[active]\nfinal_fraction = 1.5\n"))
    with pytest.raises(RecipeError, match=r"train\.lr_milestones"):
        load_recipe(_write(tmp_path, "[train]\nepochs = 10\nlr_milestones = [20]\n"))
    with pytest.raises(RecipeError, match=r"model\.width.*must be a int"):
        load_recipe(_write(tmp_path, "[model]\nwidth = 'wide'\n"))


def test_unknown_table_and_bad_toml(tmp_path):
    with pytest.raises(RecipeError, match="'trian' is not known"):
        load_recipe(_write(tmp_path, "[trian]\nepochs = 3\n"))
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(_write(tmp_path, "[train\n"))
    with pytest.raises(RecipeError, match="no recipe named"):
        load_recipe("no-such-recipe")


def test_replace_revalidates():
    r = load_recipe("quick").replace(train={"min_steps": 0, "epochs": 2, "lr_milestones": []})
    assert r.train.epochs == 2
    with pytest.raises(RecipeError):
        load_recipe("quick").replace(train={"min_steps": 0, "epochs": 0})


def test_a_small_labeled_set_gets_enough_epochs_for_the_step_floor():
    from napari_ktal.core.recipe import TrainSpec

    spec = TrainSpec(epochs=30, lr_milestones=[24], batch_size=32, min_steps=300)
    assert spec.steps_per_epoch(24) == 1 and spec.steps_per_epoch(33) == 1 and spec.steps_per_epoch(34) == 2
    small = spec.for_labeled(24, 4)  # 1 step per epoch: 300 epochs, the lr step at the same 80%
    assert small.epochs == 300 and small.lr_milestones == [240]
    assert spec.for_labeled(320, 4) is spec  # 10 steps x 30 epochs is enough already
    assert TrainSpec(epochs=30, lr_milestones=[24]).for_labeled(24, 4).epochs == 30  # no floor: the paper's epochs


def test_a_warm_started_cycle_has_its_own_step_floor():
    from napari_ktal.core.recipe import TrainSpec

    spec = TrainSpec(epochs=30, lr_milestones=[24], batch_size=32, min_steps=300, warm_min_steps=60)
    assert spec.for_labeled(24, 4, warm=True).epochs == 60 and spec.for_labeled(24, 4).epochs == 300
    assert TrainSpec(epochs=30, lr_milestones=[24], min_steps=300).for_labeled(24, 4, warm=True).epochs == 300  # -1
    with pytest.raises(RecipeError, match="warm_min_steps"):
        load_recipe("quick").replace(train={"warm_min_steps": -2})


def test_label_smoothing_stops_once_the_labeled_set_reaches_its_threshold_per_class():
    from napari_ktal.core.errors import RecipeError
    from napari_ktal.core.recipe import TrainSpec

    spec = TrainSpec(epochs=30, lr_milestones=[24], label_smoothing=0.05, label_smoothing_below=25)
    assert spec.for_labeled(60, 4).label_smoothing == 0.05  # 15 per class
    assert spec.for_labeled(99, 4).label_smoothing == 0.05
    assert spec.for_labeled(100, 4).label_smoothing == 0.0  # 25 per class: plain cross-entropy again
    assert spec.for_labeled(100, 10).label_smoothing == 0.05  # the same count over 10 classes is 10 each
    always = TrainSpec(label_smoothing=0.05)
    assert always.for_labeled(10_000, 2).label_smoothing == 0.05
    with pytest.raises(RecipeError, match="label_smoothing_below"):
        TrainSpec(label_smoothing_below=-1).validate()
    with pytest.raises(RecipeError, match="label_smoothing_for"):
        TrainSpec(label_smoothing_for="teacher").validate()


def test_pretraining_and_typiclust_settings_are_checked():
    from napari_ktal.core.errors import RecipeError
    from napari_ktal.core.recipe import recipe_from_dict

    with pytest.raises(RecipeError, match="active.initial.*needs pretrained features"):
        recipe_from_dict({"active": {"initial": "typiclust"}})
    r = recipe_from_dict({"active": {"initial": "typiclust"}, "pretrain": {"method": "simclr", "epochs": 3}})
    assert r.pretrain.epochs == 3 and "[pretrain]" in r.to_toml()
    assert "[pretrain]" not in recipe_from_dict({}).to_toml()  # the default is not written
    with pytest.raises(RecipeError, match="pretrain.method"):
        recipe_from_dict({"pretrain": {"method": "mae"}})


def test_speed_table_is_checked_and_recorded_with_the_recipe():
    from napari_ktal.core.recipe import SpeedSpec, recipe_from_dict

    assert recipe_from_dict({}).speed == SpeedSpec(precision="auto", channels_last="auto", compile=False)
    r = recipe_from_dict({"speed": {"precision": "fp32", "channels_last": False}})
    assert r.speed == SpeedSpec("fp32", False)
    assert "[speed]" in r.to_toml() and recipe_from_dict(tomllib.loads(r.to_toml())) == r
    with pytest.raises(RecipeError, match="speed.precision.*auto, bf16, fp32"):
        recipe_from_dict({"speed": {"precision": "fp16"}})
    with pytest.raises(RecipeError, match="speed.channels_last"):
        recipe_from_dict({"speed": {"channels_last": "yes"}})
    with pytest.raises(RecipeError, match="speed.channel_last.*did you mean 'channels_last'"):
        recipe_from_dict({"speed": {"channel_last": True}})
