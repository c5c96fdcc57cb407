"""Finding tomograms by name, reading them by slabs (each plane once), and their voxel sizes."""

from __future__ import annotations

import numpy as np
import pytest
from mrcfiles import noise, write_mrc
from pickfiles import write_tomograms_star

from napari_ktal.core.data.tomograms import PlaneStream, catalogue, open_tomogram
from napari_ktal.core.errors import InputError


@pytest.fixture
def folder(tmp_path):
    for name in ("TS_1_10.00Apx", "TS_10_10.00Apx", "TS_2.rec", "tomo_a.mrc", "tomo_a_half1.mrc"):
        write_mrc(tmp_path / (name if "." in name[-4:] else name + ".mrc"), noise(4, 8, 8), (10.0, 10.0, 10.0))
    return tmp_path


@pytest.mark.parametrize("name, stem", [
    ("TS_1", "TS_1_10.00Apx"),  # Warp's reconstruction names
    ("TS_10.tomostar", "TS_10_10.00Apx"),  # a Warp STAR's rlnMicrographName
    ("TS_2", "TS_2"),  # .rec files
    ("/elsewhere/TS_2.mrc", "TS_2"),  # a path written on another machine
    ("tomo_a", "tomo_a"),  # the exact name wins over the longer tomo_a_half1
])
def test_names_match_their_tomogram(folder, name, stem):
    assert catalogue(folder).match(name).name == stem


def test_a_prefix_never_matches_a_longer_number(folder):
    cat = catalogue(folder)
    assert cat.match("TS_3") is None
    assert cat.match("TS_1").name != "TS_10_10.00Apx"


def test_an_ambiguous_name_is_an_error(tmp_path):
    for name in ("TS_1_a.mrc", "TS_1_b.mrc"):
        write_mrc(tmp_path / name, noise(4, 8, 8))
    with pytest.raises(InputError, match="matches 2 tomograms"):
        catalogue(tmp_path).match("TS_1")


def test_planes_are_read_once_in_order_through_the_ring(tmp_path):
    data = np.random.default_rng(0).standard_normal((50, 12, 10)).astype(np.float32)
    path = write_mrc(tmp_path / "t.mrc", data)
    tomo = open_tomogram(catalogue(tmp_path).match("t"))
    reads = []
    original = tomo.read_planes

    def counting(z0, z1, out=None):
        reads.append((z0, z1))
        return original(z0, z1, out)

    tomo.read_planes = counting
    stream = PlaneStream(tomo, 3, capacity=9, chunk=4)  # the ring wraps many times
    for z0 in range(3, 45, 2):
        stream.release(z0)
        np.testing.assert_array_equal(stream.planes(z0, z0 + 6), data[z0: z0 + 6])
    stream.close()
    read = [z for a, b in reads for z in range(a, b)]
    assert read == sorted(set(read)) and read[0] == 3  # every plane at most once, in order
    assert path.exists()


def test_regions_read_only_what_is_inside(tmp_path):
    data = np.random.default_rng(1).standard_normal((20, 30, 40)).astype(np.float32)
    write_mrc(tmp_path / "t.mrc", data)
    tomo = open_tomogram(catalogue(tmp_path).match("t"))
    np.testing.assert_array_equal(tomo.read_region((-3, 5), (25, 35), (10, 20)), data[0:5, 25:30, 10:20])


def test_tomograms_star_voxel_size_and_paths(tmp_path):
    vol = noise(8, 16, 16)
    write_mrc(tmp_path / "rec" / "TS_01.mrc", vol, (10.0, 10.0, 10.0))
    write_mrc(tmp_path / "rec" / "TS_02.mrc", vol)  # the header leaves the voxel size unset
    star = write_tomograms_star(tmp_path / "sub" / "tomograms.star",
                                {"TS_01": "rec/TS_01.mrc", "TS_02": "rec/TS_02.mrc"},
                                {"TS_01": (8, 16, 16), "TS_02": (8, 16, 16)}, binning=4.0)
    cat = catalogue(star)  # paths relative to the RELION project folder above the STAR file
    assert open_tomogram(cat.match("TS_01")).voxel_size == 10.0
    with pytest.warns(UserWarning, match="using tomograms.star's 2.5 x 4 = 10 A"):
        assert open_tomogram(cat.match("TS_02")).voxel_size == 10.0
    assert cat.match("TS_01").size_xyz == (64.0, 64.0, 32.0)
