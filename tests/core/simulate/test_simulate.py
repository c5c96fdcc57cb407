"""Tests for the cryo-ET subtomogram simulator (napari_ktal.core.simulate.dataset)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
from collections import Counter
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from napari_ktal.core.errors import KtalError
from napari_ktal.core.simulate import (
    SimulationConfig,
    Template,
    class_name,
    simulate_dataset,
    simulate_volume,
)
from napari_ktal.core.simulate.dataset import random_pose, simulate_parts
from napari_ktal.core.simulate.optics import ctf_3d, missing_wedge_mask
from napari_ktal.core.simulate.templates import make_templates, render

BOX = 32


@pytest.fixture(scope="module")
def templates() -> list[Template]:
    return make_templates(8, BOX, np.random.default_rng(1))


@pytest.fixture(scope="module")
def config() -> SimulationConfig:
    return SimulationConfig(classes=3, per_class=2, snr=0.05, box=BOX, seed=7)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    return float(np.sum(a * b) / math.sqrt(np.sum(a * a) * np.sum(b * b)))


def _rotation_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rendered_rg(volume: np.ndarray) -> float:
    """Radius of gyration of a sampled density, in voxels."""
    grid = np.indices(volume.shape, dtype=np.float64).reshape(3, -1)
    w = volume.astype(np.float64).ravel()
    w = w / w.sum()
    com = grid @ w
    return float(np.sqrt(np.sum((grid - com[:, None]) ** 2, axis=0) @ w))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("box", {"box": 20}),
        ("box", {"box": 8}),
        ("snr", {"snr": 0.0}),
        ("snr", {"snr": -1.0}),
        ("classes", {"classes": 0}),
        ("per_class", {"per_class": 0}),
        ("test_per_class", {"test_per_class": -1}),
        ("amplitude_contrast", {"amplitude_contrast": 1.0}),
        ("tilt_range_deg", {"tilt_range_deg": 95.0}),
        ("max_shift", {"max_shift": 5.0}),  # > box / 8 for box 32
        ("seed", {"seed": -3}),
        ("classes", {"classes": 2.5}),
        ("classes", {"classes": True}),
    ],
)
def test_config_validation_names_the_field(field: str, kwargs: dict) -> None:
    args = {"classes": 3, "per_class": 2} | kwargs
    with pytest.raises(KtalError, match=rf"SimulationConfig\.{field}\b"):
        SimulationConfig(**args)


def test_config_accepts_numpy_scalars_and_stores_plain_types() -> None:
    cfg = SimulationConfig(classes=np.int64(3), per_class=2, snr=np.float32(0.1))
    assert type(cfg.classes) is int and type(cfg.snr) is float
    json.dumps(dataclasses.asdict(cfg))  # serialisable as written by simulate_dataset


def test_class_name_padding() -> None:
    assert class_name(3, 5) == "class_03"
    assert class_name(7, 150) == "class_007"
    assert class_name(99, 100) == "class_99"


# ----------------------------------------------------------------------------- templates


def test_templates_have_equal_size_and_mass(templates: list[Template]) -> None:
    volumes = [render(t, np.eye(3), np.zeros(3), BOX) for t in templates]
    rgs = np.array([_rendered_rg(v) for v in volumes])
    assert np.all(np.abs(rgs / (0.2 * BOX) - 1) < 0.05), rgs
    assert np.allclose([t.radius_of_gyration for t in templates], rgs, rtol=0.01)
    assert np.allclose([v.sum(dtype=np.float64) for v in volumes], 1.0, rtol=1e-3)
    assert all(v.dtype == np.float32 and v.shape == (BOX,) * 3 for v in volumes)


def test_templates_stay_inside_the_box_with_margin(templates: list[Template]) -> None:
    for t in templates:
        extent = np.linalg.norm(t.centres, axis=1) + 3 * t.sigmas
        assert extent.max() <= BOX / 2 - BOX / 8 + 1e-9


def test_templates_are_pairwise_distinct(templates: list[Template]) -> None:
    rotations = [random_pose(np.random.default_rng(100 + i), 0.0)[0] for i in range(16)]
    references = [render(t, np.eye(3), np.zeros(3), BOX) for t in templates]
    worst = -1.0
    for i, ref in enumerate(references):
        for j, other in enumerate(templates):
            if i != j:
                for r in [np.eye(3), *rotations]:
                    worst = max(worst, _ncc(ref, render(other, r, np.zeros(3), BOX)))
    assert worst < 0.9


def test_templates_include_symmetric_ones_that_are_invariant(templates: list[Template]) -> None:
    symmetric = [t for t in templates if t.symmetry > 1]
    assert len(symmetric) == round(0.4 * len(templates))
    for t in symmetric:
        assert 2 <= t.symmetry <= 6
        still = render(t, np.eye(3), np.zeros(3), BOX)
        turned = render(t, _rotation_z(2 * np.pi / t.symmetry), np.zeros(3), BOX)
        np.testing.assert_allclose(turned, still, atol=1e-6 * still.max())
        # ... and not trivially: a half-step turn changes it
        half = render(t, _rotation_z(np.pi / t.symmetry), np.zeros(3), BOX)
        assert np.abs(half - still).max() > 0.05 * still.max()


def test_make_templates_is_deterministic() -> None:
    a = make_templates(4, 16, np.random.default_rng(5))
    b = make_templates(4, 16, np.random.default_rng(5))
    c = make_templates(4, 16, np.random.default_rng(6))
    assert all(np.array_equal(x.centres, y.centres) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].centres, c[0].centres)


def test_render_follows_axis_and_shift_conventions() -> None:
    t = Template(centres=[[0.0, 0.0, 0.0]], sigmas=[1.0], weights=[1.0])
    # a shift of +3 along x moves the peak along the last array axis
    v = render(t, np.eye(3), np.array([3.0, -2.0, 1.0]), 16)
    assert np.unravel_index(np.argmax(v), v.shape) == (8 + 1, 8 - 2, 8 + 3)
    # a blob on the x axis turned 90 degrees about z ends up on the y axis
    t = Template(centres=[[4.0, 0.0, 0.0]], sigmas=[1.0], weights=[1.0])
    v = render(t, _rotation_z(np.pi / 2), np.zeros(3), 16)
    assert np.unravel_index(np.argmax(v), v.shape) == (8, 12, 8)


# ----------------------------------------------------------------------------- Fourier filters


def test_missing_wedge_mask_geometry() -> None:
    mask = missing_wedge_mask(32, 60.0)
    assert mask.shape == (32, 32, 17) and mask.dtype == bool
    assert mask[0, 0, 0]  # k = 0 kept
    assert mask[0, 5, 0]  # ky axis (tilt axis) kept
    assert mask[0, 0, 5]  # kx axis kept
    assert not mask[5, 0, 0] and not mask[-5, 3, 0]  # kz axis (beam) missing
    # tan(60 deg) * 5 = 8.66: kz = 8 sampled, kz = 9 missing, at both signs of kz
    assert mask[8, 0, 5] and mask[-8, 7, 5]
    assert not mask[9, 0, 5] and not mask[-9, 7, 5]
    # the sampled fraction of the (kx, kz) plane is 120/180 degrees
    kz = np.fft.fftfreq(32)[:, None]
    kx = np.fft.fftfreq(32)[None, :]
    full_plane = np.abs(kz) <= np.tan(np.radians(60)) * np.abs(kx) + 1e-12
    np.testing.assert_array_equal(mask[:, 0, :], full_plane[:, :17])
    assert missing_wedge_mask(16, 90.0).all()


def _wavelength_angstrom(voltage_kv: float) -> float:
    """Relativistic electron wavelength, from CODATA constants written out here."""
    h, m0, e, c = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 299792458.0
    v = voltage_kv * 1e3
    return h / math.sqrt(2 * m0 * e * v * (1 + e * v / (2 * m0 * c * c))) * 1e10


def test_ctf_value_at_zero_and_first_zero() -> None:
    box, voxel, amp = 128, 10.0, 0.07
    ctf = ctf_3d(box, voxel, -5.0, 300.0, 2.0, amp)
    assert ctf.shape == (box, box, box // 2 + 1)
    # sign convention: CTF(0) = -A, negative (dark protein) up to the first zero in underfocus
    assert ctf[0, 0, 0] == pytest.approx(-amp, abs=1e-12)
    # first zero: chi(k) = pi - asin(A), chi = pi lam df k^2 - pi/2 Cs lam^3 k^4, df = 5e4 A
    lam = _wavelength_angstrom(300.0)
    assert lam == pytest.approx(0.019687, rel=1e-4)
    df, cs = 5.0e4, 2.0e7
    a, b, c = -0.5 * np.pi * cs * lam**3, np.pi * lam * df, -(np.pi - math.asin(amp))
    k2 = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)  # smaller positive root in k^2
    k_zero = math.sqrt(k2)  # 1 / Angstrom (about 1 / 31.6 A)
    assert 1 / 33 < k_zero < 1 / 30
    # along kx (kz = ky = 0), the sign change is where theory puts it
    line = ctf[0, 0, :]
    k_line = np.fft.rfftfreq(box) / voxel
    first = int(np.argmax(line > 0))
    assert np.all(line[:first] < 0)
    crossing = k_line[first - 1] + (k_line[first] - k_line[first - 1]) * (
        -line[first - 1] / (line[first] - line[first - 1])
    )
    step = k_line[1]
    assert abs(crossing - k_zero) < 0.05 * step
    # the same zero along kz: the CTF is isotropic
    assert ctf[first, 0, 0] > 0 and ctf[first - 1, 0, 0] < 0


def test_ctf_defocus_sign_convention() -> None:
    under = ctf_3d(32, 10.0, -3.0, 300.0, 2.0, 0.1)
    over = ctf_3d(32, 10.0, +3.0, 300.0, 2.0, 0.1)
    assert under[0, 0, 4] < -0.1  # underfocus: negative at low frequency
    assert over[0, 0, 4] > 0.1  # overfocus: the phase-contrast term flips sign


# ----------------------------------------------------------------------------- one volume


def test_measured_snr_is_exact(templates: list[Template], config: SimulationConfig) -> None:
    for snr in (0.05, 1.0, 20.0):
        cfg = dataclasses.replace(config, snr=snr)
        signal, noise = simulate_parts(templates[0], np.random.default_rng(3), cfg)
        assert signal.dtype == noise.dtype == np.float32
        ratio = np.var(signal, dtype=np.float64) / np.var(noise, dtype=np.float64)
        assert ratio == pytest.approx(snr, rel=1e-3)
        volume = simulate_volume(templates[0], np.random.default_rng(3), cfg)
        np.testing.assert_allclose(volume, signal + noise, atol=1e-5)


def test_signal_is_the_filtered_posed_template(
    templates: list[Template], config: SimulationConfig
) -> None:
    """The signal part is render(pose) filtered by ctf * wedge, up to its scale."""
    rng = np.random.default_rng(11)
    rotation, shift = random_pose(np.random.default_rng(11), config.max_shift)
    signal, _ = simulate_parts(templates[2], rng, config)
    density = render(templates[2], rotation, shift, BOX).astype(np.float64)
    ctf = ctf_3d(BOX, 10.0, -5.0, 300.0, 2.0, 0.07)
    transfer = ctf * missing_wedge_mask(BOX, 60.0)
    expected = np.fft.irfftn(np.fft.rfftn(density) * transfer, s=(BOX,) * 3, axes=(0, 1, 2))
    assert _ncc(signal, expected) > 0.9999
    assert np.all(np.abs(shift) <= config.max_shift)


def test_simulated_volume_lacks_the_missing_wedge(
    templates: list[Template], config: SimulationConfig
) -> None:
    volume = simulate_volume(templates[1], np.random.default_rng(0), config)
    spectrum = np.abs(np.fft.rfftn(volume.astype(np.float64)))
    mask = missing_wedge_mask(BOX, config.tilt_range_deg)
    missing, sampled = spectrum[~mask], spectrum[mask]
    assert missing.max() < 1e-4 * sampled.max()
    # ... while the sampled region carries power everywhere (the noise is white there)
    assert np.median(sampled) > 1e3 * missing.max()
    # a wider tilt range leaves less out
    wide_config = dataclasses.replace(config, tilt_range_deg=80.0)
    wide = simulate_volume(templates[1], np.random.default_rng(0), wide_config)
    wide_spectrum = np.abs(np.fft.rfftn(wide.astype(np.float64)))
    gained = ~mask & missing_wedge_mask(BOX, 80.0)
    assert gained.any() and np.median(wide_spectrum[gained]) > 1e3 * missing.max()


def test_simulate_volume_is_deterministic(
    templates: list[Template], config: SimulationConfig
) -> None:
    a = simulate_volume(templates[0], np.random.default_rng(42), config)
    b = simulate_volume(templates[0], np.random.default_rng(42), config)
    c = simulate_volume(templates[0], np.random.default_rng(43), config)
    assert a.dtype == np.float32 and a.shape == (BOX,) * 3
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_precomputed_filters_give_the_same_volume(
    templates: list[Template], config: SimulationConfig
) -> None:
    ctf = ctf_3d(BOX, 10.0, -5.0, 300.0, 2.0, 0.07)
    wedge = missing_wedge_mask(BOX, 60.0)
    a = simulate_volume(templates[0], np.random.default_rng(9), config, ctf=ctf, wedge=wedge)
    b = simulate_volume(templates[0], np.random.default_rng(9), config)
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- data set


def _read_labels(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["path", "label"]
        return list(reader)


def test_simulate_dataset_layout(tmp_path: Path) -> None:
    cfg = SimulationConfig(classes=3, per_class=2, test_per_class=1, box=16, seed=3)
    calls: list[tuple[int, int]] = []
    train_csv, test_csv = simulate_dataset(
        tmp_path, cfg, progress=lambda done, total: calls.append((done, total))
    )
    assert train_csv == tmp_path / "train" / "labels.csv"
    assert test_csv == tmp_path / "test" / "labels.csv"
    assert calls == [(i, 9) for i in range(1, 10)]

    for csv_path, per_class in ((train_csv, 2), (test_csv, 1)):
        rows = _read_labels(csv_path)
        assert len(rows) == 3 * per_class
        assert Counter(r["label"] for r in rows) == {f"class_0{k}": per_class for k in range(3)}
        files = sorted(p.name for p in csv_path.parent.glob("*.mrc"))
        assert files == sorted(r["path"] for r in rows)
        for row in rows:
            assert "class" not in row["path"] and row["label"] not in row["path"]
            with mrcfile.open(csv_path.parent / row["path"], permissive=False) as mrc:
                assert mrc.data.dtype == np.float32
                assert mrc.data.shape == (16, 16, 16)
                assert float(mrc.voxel_size.x) == pytest.approx(10.0)
                assert float(mrc.voxel_size.z) == pytest.approx(10.0)
    # the file order is shuffled (with this seed, the labels are not in class order)
    labels = [r["label"] for r in _read_labels(train_csv)]
    assert labels != sorted(labels)

    saved = json.loads((tmp_path / "simulation.json").read_text())
    assert SimulationConfig(**saved) == cfg


def test_simulate_dataset_without_test_split(tmp_path: Path) -> None:
    cfg = SimulationConfig(classes=2, per_class=1, box=16)
    train_csv, test_csv = simulate_dataset(tmp_path, cfg)
    assert test_csv is None and not (tmp_path / "test").exists()
    assert len(_read_labels(train_csv)) == 2


def test_simulate_dataset_is_byte_reproducible(tmp_path: Path) -> None:
    cfg = SimulationConfig(classes=3, per_class=2, test_per_class=1, box=16, seed=3)
    simulate_dataset(tmp_path / "a", cfg)
    simulate_dataset(tmp_path / "b", cfg)
    simulate_dataset(tmp_path / "c", dataclasses.replace(cfg, seed=4))
    root = tmp_path / "a"
    names = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert len(names) == 2 + 6 + 3 + 1  # labels.csv x2, train + test volumes, simulation.json
    for name in names:
        assert _sha(tmp_path / "a" / name) == _sha(tmp_path / "b" / name), name
    volumes = [n for n in names if n.suffix == ".mrc"]
    assert all(_sha(tmp_path / "a" / n) != _sha(tmp_path / "c" / n) for n in volumes)


def test_volumes_do_not_depend_on_data_set_size(tmp_path: Path) -> None:
    """Each volume has its own child seed: growing per_class keeps the existing volumes."""
    small = SimulationConfig(classes=2, per_class=2, box=16, seed=5)
    large = dataclasses.replace(small, per_class=3)

    def volumes(root: Path) -> dict[bytes, str]:
        rows = _read_labels(root / "train" / "labels.csv")
        out = {}
        for row in rows:
            with mrcfile.open(root / "train" / row["path"]) as mrc:
                out[mrc.data.tobytes()] = row["label"]
        return out

    simulate_dataset(tmp_path / "small", small)
    simulate_dataset(tmp_path / "large", large)
    a, b = volumes(tmp_path / "small"), volumes(tmp_path / "large")
    assert len(a) == 4 and len(b) == 6
    assert all(b.get(data) == label for data, label in a.items())
