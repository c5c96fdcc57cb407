"""Junk in the simulator: every kind renders, junk is mixed in at the fraction asked, the particles
do not change, and a configuration without junk writes what it always wrote."""

import csv
import dataclasses
from collections import Counter
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from napari_ktal.core.errors import KtalError
from napari_ktal.core.project import JUNK_CLASS
from napari_ktal.core.simulate import JUNK_KINDS, JUNK_LABEL, SimulationConfig, make_templates, simulate_dataset
from napari_ktal.core.simulate.junk import junk_count, junk_density, junk_kind


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _volumes(split: Path) -> dict[bytes, str]:
    out = {}
    for row in _rows(split / "labels.csv"):
        with mrcfile.open(split / row["path"]) as mrc:
            out[mrc.data.tobytes()] = row["label"]
    return out


def test_the_junk_label_is_the_projects_junk_class():
    assert JUNK_LABEL == JUNK_CLASS


@pytest.mark.parametrize("kind", JUNK_KINDS)
def test_every_kind_renders_a_density_that_depends_only_on_its_seed(kind):
    templates = make_templates(2, 16, np.random.default_rng(0))
    a = junk_density(kind, np.random.default_rng(5), 32, templates, scale=16)
    b = junk_density(kind, np.random.default_rng(5), 32, templates, scale=16)
    c = junk_density(kind, np.random.default_rng(6), 32, templates, scale=16)
    assert a.shape == (32, 32, 32) and np.isfinite(a).all() and np.ptp(a) > 0
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_junk_counts_give_the_fraction_and_kinds_take_turns():
    assert junk_count(100, 0.0) == 0 and junk_count(100, 0.5) == 100 and junk_count(30, 0.25) == 10
    assert [junk_kind(j) for j in range(8)] == [*JUNK_KINDS, JUNK_KINDS[0]]
    cfg = SimulationConfig(classes=3, per_class=4, test_per_class=2, box=16, junk_fraction=0.5)
    assert cfg.junk_counts() == (12, 6)
    assert SimulationConfig(classes=3, per_class=4, box=16, junk_fraction=0.5).junk_counts() == (12, 0)
    with pytest.raises(KtalError, match="junk_fraction"):
        SimulationConfig(classes=3, per_class=4, junk_fraction=1.0)


def test_junk_is_mixed_into_both_splits_and_the_particles_stay_the_same(tmp_path):
    clean = SimulationConfig(classes=2, per_class=4, test_per_class=2, box=16, snr=1.0, seed=2)
    junky = dataclasses.replace(clean, junk_fraction=0.6)  # 8 particles + 12 junk; 4 + 6 in the test split
    simulate_dataset(tmp_path / "clean", clean)
    simulate_dataset(tmp_path / "junky", junky)
    for split, n_particles, n_junk in (("train", 8, 12), ("test", 4, 6)):
        rows = _rows(tmp_path / "junky" / split / "labels.csv")
        counts = Counter(r["label"] for r in rows)
        assert counts[JUNK_LABEL] == n_junk and sum(counts.values()) == n_particles + n_junk
        kinds = _rows(tmp_path / "junky" / split / "junk_kinds.csv")
        assert {r["path"] for r in kinds} == {r["path"] for r in rows if r["label"] == JUNK_LABEL}
        assert {r["kind"] for r in kinds} == set(JUNK_KINDS[:n_junk])
        assert [r["label"] for r in rows] != sorted(r["label"] for r in rows)  # junk is shuffled in, not appended
        # each particle volume is the one the clean set has, with its label (its own child seed)
        clean_volumes = _volumes(tmp_path / "clean" / split)
        particles = {k: v for k, v in _volumes(tmp_path / "junky" / split).items() if v != JUNK_LABEL}
        assert particles == clean_volumes
    assert not (tmp_path / "clean" / "train" / "junk_kinds.csv").exists()


def test_junk_volumes_are_noisy_boxes_like_the_particles(tmp_path):
    cfg = SimulationConfig(classes=2, per_class=7, box=16, snr=0.5, seed=1, junk_fraction=0.5)
    simulate_dataset(tmp_path, cfg)
    vols = _volumes(tmp_path / "train")
    for data, label in vols.items():
        v = np.frombuffer(data, np.float32)
        # in units of the noise sd: total variance 1 + snr * contrast, never a blank or exploding box
        assert np.isfinite(v).all() and 0.9 < v.var() < 1.0 + 0.5 * 6.0 + 0.5


def test_a_zero_junk_fraction_writes_the_files_of_a_configuration_without_it(tmp_path):
    base = SimulationConfig(classes=2, per_class=2, test_per_class=1, box=16, seed=7)
    simulate_dataset(tmp_path / "a", base)
    simulate_dataset(tmp_path / "b", dataclasses.replace(base, junk_fraction=0.0))
    names = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert all((tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n in names)
    assert sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file()) == names
