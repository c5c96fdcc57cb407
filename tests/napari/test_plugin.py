"""The npe2 contributions: manifest, reader, sample data (no viewer needed)."""

from pathlib import Path

import mrcfile
import numpy as np
import pytest
from npe2 import PluginManager, PluginManifest

from napari_ktal._napari.reader import get_reader, read_mrc
from napari_ktal._napari.sample_data import simulated_subtomograms
from napari_ktal.core.errors import InputError

MANIFEST = Path(__file__).resolve().parents[2] / "napari_ktal" / "napari.yaml"


def _write(path, data, voxel_size=(1.0, 1.0, 1.0)):
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = voxel_size  # (x, y, z)
    return str(path)


# -- manifest -----------------------------------------------------------------------------
def test_manifest_is_valid_and_its_commands_import():
    manifest = PluginManifest.from_file(MANIFEST)
    assert manifest.name == "napari-ktal" and manifest.display_name == "napari-ktal"
    manifest.validate_imports()  # every python_name resolves
    contrib = manifest.contributions
    assert {w.display_name for w in contrib.widgets} == {"Active learning"}
    assert {s.display_name for s in contrib.sample_data} == {"Simulated subtomograms (4 classes)"}
    assert set(contrib.readers[0].filename_patterns) >= {"*.mrc", "*.mrcs", "*.map", "*.rec"}


def test_npe2_picks_our_reader_for_mrc_files(tmp_path):
    pm = PluginManager()  # a private manager: the global one is left alone
    pm.register(PluginManifest.from_file(MANIFEST))
    path = _write(tmp_path / "vol.mrc", np.zeros((8, 8, 8), np.float32))
    readers = [r.command for r in pm.iter_compatible_readers([path])]
    assert readers == ["napari-ktal.get_reader"]
    assert not list(pm.iter_compatible_readers([str(tmp_path / "image.tif")]))


# -- reader -------------------------------------------------------------------------------
def test_reader_volume_gets_the_voxel_size_as_scale(tmp_path):
    data = np.random.default_rng(0).normal(size=(16, 24, 32)).astype(np.float32)
    path = _write(tmp_path / "tomo.rec", data, voxel_size=(13.0, 12.0, 11.0))  # x, y, z
    assert get_reader(path) is read_mrc
    [(layer_data, kwargs, kind)] = read_mrc(path)
    assert kind == "image" and layer_data.shape == (16, 24, 32)
    np.testing.assert_array_equal(layer_data, data)
    assert kwargs["scale"] == (11.0, 12.0, 13.0)  # (z, y, x)
    lo, hi = kwargs["contrast_limits"]
    assert data.min() < lo < hi < data.max()  # robust percentiles, not min/max
    assert kwargs["name"] == "tomo"


def test_reader_volume_stack_is_4d_with_unit_scale_on_the_stack_axis(tmp_path):
    data = np.random.default_rng(1).normal(size=(5, 16, 16, 16)).astype(np.float32)
    path = _write(tmp_path / "particles.mrcs", data, voxel_size=4.5)
    with mrcfile.open(path, header_only=True) as mrc:
        assert int(mrc.header.ispg) == 401
    [(layer_data, kwargs, _)] = read_mrc(path)
    assert layer_data.shape == (5, 16, 16, 16)
    np.testing.assert_array_equal(layer_data, data)
    assert kwargs["scale"] == (1.0, 4.5, 4.5, 4.5)
    assert kwargs["metadata"]["n_volumes"] == 5


def test_reader_handles_big_endian_files_and_lists(tmp_path):
    data = np.arange(8 * 8 * 8, dtype=np.int16).reshape(8, 8, 8)
    big = _write(tmp_path / "big.map", data.astype(">i2"))
    little = _write(tmp_path / "little.MRC", data)
    layers = get_reader([big, little])([big, little])
    for layer_data, _, _ in layers:
        np.testing.assert_array_equal(layer_data, data)
    assert get_reader([big, str(tmp_path / "x.tif")]) is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello", "not an MRC file (only 5 bytes"),
        (bytes(2048), "not an MRC file (no 'MAP ' ID"),
    ],
)
def test_reader_refuses_non_mrc_files_with_one_clear_line(tmp_path, content, message):
    path = tmp_path / "broken.mrc"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message.replace("(", r"\(")) as err:
        read_mrc(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_reader_refuses_truncated_and_complex_files(tmp_path):
    path = _write(tmp_path / "vol.mrc", np.zeros((16, 16, 16), np.float32))
    cut = tmp_path / "cut.mrc"
    cut.write_bytes(Path(path).read_bytes()[:5000])
    with pytest.raises(InputError, match="truncated: the header describes"):
        read_mrc(str(cut))
    cplx = _write(tmp_path / "fft.mrc", np.zeros((8, 8, 8), np.complex64))
    with pytest.raises(InputError, match="complex"):
        read_mrc(cplx)


# -- sample data -----------------------------------------------------------------------------
def test_sample_data_is_deterministic_and_labelled():
    [(data, kwargs, kind)] = simulated_subtomograms()
    again = simulated_subtomograms()[0][0]
    np.testing.assert_array_equal(data, again)
    assert kind == "image" and data.shape == (12, 32, 32, 32) and data.dtype == np.float32
    meta = kwargs["metadata"]
    assert meta["classes"] == ["class_00", "class_01", "class_02", "class_03"]
    assert meta["labels"] == [c for c in meta["classes"] for _ in range(3)]
    assert kwargs["scale"] == (1.0, 10.0, 10.0, 10.0)
