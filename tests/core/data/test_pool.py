"""The pool: normalised float16 volumes in source order; at scale, chunked import equals
per-volume normalisation, pread reads equal the memory map, and reading a whole pool does not
grow the resident set (benchmarks/pool_scale.py measures the same at 10^5 volumes)."""

import csv
import json
import sys

import mrcfile
import numpy as np
import pytest

from napari_ktal.core.data import pool as pool_mod
from napari_ktal.core.data.mrc import find_volumes, iter_volumes, normalize, read_volumes
from napari_ktal.core.data.pool import Pool, _KeyCache, import_pool, normalize_many
from napari_ktal.core.errors import InputError
from napari_ktal.core.progress import RunContext


def _stack(path, n, box=16, seed=0, offset=0.0):
    rng = np.random.default_rng(seed)
    data = (rng.standard_normal((n, box, box, box)) * rng.uniform(0.5, 3, (n, 1, 1, 1)) + offset).astype(np.float32)
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
    return data


def test_pool_is_normalised_float16_memmap_in_source_order(new_project, sim_with_test):
    pool = new_project().pool
    assert isinstance(pool.volumes, np.memmap) and pool.volumes.dtype == np.float16
    assert len(pool) == 30 and pool.box == 32 and pool.voxel_size == pytest.approx(10.0)
    v = pool.read([5, 1])
    assert v.dtype == np.float32 and v.shape == (2, 32, 32, 32)
    assert abs(v[0].mean()) < 1e-2 and v[0].std() == pytest.approx(1.0, abs=1e-2)
    raw = read_volumes(sim_with_test[0] / "train" / pool.keys[1])[0]
    np.testing.assert_allclose(v[1], (raw - raw.mean()) / raw.std(), atol=5e-3)


def test_chunked_import_equals_per_volume_normalisation(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    _stack(src / "a.mrcs", 23, seed=1, offset=100.0)
    _stack(src / "b.mrcs", 6, seed=2)
    with mrcfile.new(src / "c.mrc") as m:
        m.set_data(np.random.default_rng(3).normal(size=(16, 16, 16)).astype(np.float32))
    monkeypatch.setattr(pool_mod, "IMPORT_CHUNK", 7)  # chunks that straddle files, and a short last one
    events = []
    pool = import_pool(tmp_path / "pool", src, run=RunContext(events.append))
    assert len(pool) == 30 and events[-1].done == 30 == events[-1].total
    refs = find_volumes(src)
    expected = np.stack([normalize(v, r.path).astype(np.float16) for r, v in iter_volumes(refs)])
    got = np.load(tmp_path / "pool" / "volumes.npy")  # a standard .npy file
    assert got.dtype == np.float16 and got.shape == expected.shape
    # float32 statistics instead of float64: at most one float16 step apart, almost always equal
    diff = np.abs(got.astype(np.float32) - expected.astype(np.float32))
    assert (diff <= 4e-3).all() and (got == expected).mean() > 0.99
    assert pool.keys == [r.label_key(src.resolve()) for r in refs]


def test_normalize_many_falls_back_to_normalize_for_constant_and_extreme_volumes():
    rng = np.random.default_rng(0)
    vols = rng.normal(size=(4, 8, 8, 8)).astype(np.float32)
    vols[1] = 1e30 * rng.normal(size=(8, 8, 8))  # float32 squares overflow: normalize's float64 path
    vols[2] = 5.0 + 1e-9 * rng.normal(size=(8, 8, 8))  # below normalize's noise floor
    out = np.empty(vols.shape, np.float16)
    with pytest.raises(InputError, match="volume is constant") as err:
        normalize_many(vols, out, ["v0.mrc", "v1.mrc", "v2.mrc", "v3.mrc"])
    assert "v2.mrc" in str(err.value)
    keep = vols[[0, 1, 3]]
    before = keep.copy()
    out = np.empty(keep.shape, np.float16)
    normalize_many(keep, out, ["a", "b", "c"])
    assert np.array_equal(keep, before)  # the input is left as it was
    for i in range(3):
        np.testing.assert_allclose(out[i].astype(np.float32), normalize(keep[i]), atol=4e-3)


def test_key_cache_agrees_with_label_key(tmp_path):
    src = tmp_path / "d"
    (src / "sub").mkdir(parents=True)
    _stack(src / "sub" / "s.mrcs", 3)
    with mrcfile.new(src / "one.mrc") as m:
        m.set_data(np.ones((8, 8, 8), np.float32))
    refs = find_volumes(src / "sub" / "s.mrcs") + find_volumes(src / "one.mrc")
    for root in (src.resolve(), (src / "sub").resolve(), tmp_path / "elsewhere"):
        keys = _KeyCache(root)
        assert [keys(r) for r in refs] == [r.label_key(root) for r in refs]


def _write_pool(directory, n, box, seed=0):
    """A pool folder written directly (no import): a float16 .npy, index.csv, info.json."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    arr = np.lib.format.open_memmap(directory / "volumes.npy", mode="w+", dtype=np.float16, shape=(n, box, box, box))
    for s in range(0, n, 4096):
        arr[s : s + 4096] = rng.standard_normal((min(4096, n - s), box, box, box), dtype=np.float32)
    arr.flush()
    del arr
    with open(directory / "index.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "key", "path", "frame"])
        w.writerows([i, f"{i + 1}@s.mrcs", "/data/s.mrcs", i] for i in range(n))
    (directory / "info.json").write_text(json.dumps({"n": n, "box": box, "dtype": "float16", "voxel_size": 1.0}))
    return Pool.open(directory)


def test_pool_read_equals_the_memory_map_in_any_order(tmp_path):
    pool = _write_pool(tmp_path / "pool", 300, 8)
    mm = np.load(tmp_path / "pool" / "volumes.npy", mmap_mode="r")
    rng = np.random.default_rng(1)
    for idx in (rng.choice(300, 50, replace=False), np.array([5, 5, 299, 0, 5, 1, 2, 3]), np.arange(300),
                np.array([], dtype=np.int64), np.array([7])):
        got = pool.read(idx)
        assert got.dtype == np.float32 and got.shape == (len(idx), 8, 8, 8)
        np.testing.assert_array_equal(got, mm[idx].astype(np.float32))
        raw = pool.read(idx, dtype=None)
        assert raw.dtype == np.float16
        np.testing.assert_array_equal(raw, mm[idx])
    assert len(pool.refs) == 300 and pool.refs[0].path is pool.refs[299].path  # one Path per file
    with pytest.raises(IndexError):
        pool.read([300])
    pool.close()


def _rss_file_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_reading_a_whole_pool_does_not_grow_the_resident_set(tmp_path):
    n, box = 2400, 32  # 150 MiB of float16, in the page cache after writing
    pool = _write_pool(tmp_path / "pool", n, box)
    size_kb = n * box**3 * 2 // 1024
    before = _rss_file_kb()
    total = 0.0
    for s in range(0, n, 256):
        total += float(pool.read(np.arange(s, min(n, s + 256)))[:, 0, 0, 0].sum())
    grown_pread = _rss_file_kb() - before
    assert grown_pread < size_kb / 10, (grown_pread, size_kb)
    # the memory map, touched page by page, would have grown it by the whole pool
    mm = np.load(tmp_path / "pool" / "volumes.npy", mmap_mode="r")
    before = _rss_file_kb()
    for s in range(0, n, 256):
        np.asarray(mm[s : s + 256], dtype=np.float32)
    grown_mmap = _rss_file_kb() - before
    assert grown_mmap > size_kb / 2, (grown_mmap, size_kb)
    del mm
    pool.close()
