"""The simulated tomogram scene: reproducible, its picks where its particles are, its truth and names."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import starfile

from napari_ktal.core.data import plan_extraction
from napari_ktal.core.simulate import SceneConfig, simulate_scene, write_scene

SMALL = dict(classes=2, per_class=4, junk=2, tomograms=2, shape=(48, 96, 96), seed=3)


def test_the_same_config_gives_the_same_scene():
    a, picks_a = simulate_scene(SceneConfig(**SMALL))
    b, picks_b = simulate_scene(SceneConfig(**SMALL))
    assert picks_a == picks_b
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    inverted, _ = simulate_scene(SceneConfig(**SMALL, invert=True))
    np.testing.assert_array_equal(inverted[0], -a[0])
    other, _ = simulate_scene(SceneConfig(**(SMALL | {"seed": 4})))
    assert not np.array_equal(other[0], a[0])


def test_picks_in_the_star_files_are_the_particles(tmp_path):
    cfg = SceneConfig(**SMALL)
    particles = write_scene(tmp_path, cfg)
    _, truth_picks = simulate_scene(cfg)
    plan = plan_extraction(particles, tmp_path / "tomograms.star", box=32)
    truth = starfile.read(tmp_path / "truth.star")["particles"]
    assert len(plan) == len(truth_picks) == cfg.classes * cfg.per_class + cfg.junk
    for i in range(len(plan)):
        t = int(plan.picks.tomograms[i][-2:]) - 1
        d = [np.linalg.norm(np.array(p.position) - plan.voxels[i]) if p.tomogram == t else np.inf
             for p in truth_picks]
        k = int(np.argmin(d))
        assert d[k] < 1e-3  # RELION 5 centred coordinates, read back through tomograms.star
        assert truth["rlnClassNumber"][i] == truth_picks[k].label + 1
    assert not plan.contrast.invert and "dark" in plan.contrast.message
    with open(tmp_path / "classes.csv", newline="") as f:
        assert [r["name"] for r in csv.DictReader(f)] == ["class_00", "class_01", "junk"]
    assert "rlnClassNumber" not in starfile.read(particles)["particles"].columns


def test_a_scene_too_crowded_is_refused():
    from napari_ktal.core.errors import KtalError

    with pytest.raises(KtalError, match="cannot place"):
        simulate_scene(SceneConfig(classes=2, per_class=200, junk=0, tomograms=1, shape=(32, 64, 64)))
