"""Extraction at known positions, one test per coordinate convention: every box centred within a voxel.

A synthetic tomogram holds dark Gaussian blobs at random sub-voxel positions; the same positions
are written the way each format writes them (tests/pickfiles.py); every extracted box must have
its blob's darkest voxel within one voxel of the box centre, and the plan's positions must equal
the true ones (which pins each convention exactly, e.g. RELION 5's float centre on odd sizes).
"""

from __future__ import annotations

import csv
import json

import mrcfile
import numpy as np
import pytest
from mrcfiles import write_mrc
from pickfiles import (
    VOXEL,
    blob_tomogram,
    copick_project,
    dynamo_table,
    pick_csv,
    random_positions,
    relion4_star,
    relion5_star,
    warp_star,
    write_tomograms,
    write_tomograms_star,
)

from napari_ktal.core.data import PickOptions, plan_extraction
from napari_ktal.core.data.extract import extract_to_folder, fourier_crop, iter_boxes, read_box
from napari_ktal.core.errors import InputError

SHAPES = {"TS_01": (40, 52, 71), "TS_02": (36, 61, 48)}  # odd sizes: RELION's float centre matters
BOX = 16


def _crosses_edge(names, positions, box=BOX) -> np.ndarray:
    out = []
    for name, p in zip(names, positions):
        nz, ny, nx = SHAPES[name]
        lo = np.rint(p).astype(int) - box // 2
        out.append(bool(((lo < 0) | (lo + box > np.array([nx, ny, nz]))).any()))
    return np.array(out)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tomos")
    rng = np.random.default_rng(7)
    names, positions, volumes = [], [], {}
    for k, (name, shape) in enumerate(SHAPES.items()):
        pos = random_positions(shape, 6, rng)
        pos[0] = [1.2, 2.6, shape[0] - 2.3]  # a box that crosses the edge: kept, padded, flagged
        volumes[name] = blob_tomogram(shape, pos, seed=k)
        names += [name] * len(pos)
        positions.append(pos)
    positions = np.concatenate(positions)
    order = rng.permutation(len(names))  # lists are not sorted by tomogram
    names = [names[i] for i in order]
    positions = positions[order]
    files = write_tomograms(tmp / "tomograms", volumes)
    return tmp, names, positions, files, volumes


def _blob_centre(box: np.ndarray, radius: float = 4.0) -> np.ndarray:
    """(x, y, z) of the dark blob near the box centre: the darkness-weighted mean within ``radius``."""
    c = box.shape[0] // 2
    g = np.arange(box.shape[0]) - c
    zz, yy, xx = np.meshgrid(g, g, g, indexing="ij")
    near = zz**2 + yy**2 + xx**2 <= radius**2
    w = np.clip(-box, 0, None) * near
    return np.array([(xx * w).sum(), (yy * w).sum(), (zz * w).sum()]) / w.sum() + c


def _check_centred(plan, positions, box=BOX):
    np.testing.assert_allclose(plan.voxels, positions, atol=1e-4)
    seen = 0
    for row, volume, clipped in iter_boxes(plan):
        found = _blob_centre(volume, 4.0 * box / BOX)
        assert np.all(np.abs(found - box // 2) <= 1.0), (row, found)  # centred within one voxel
        # and it is where the pick is: the box centre is the voxel nearest the pick
        expected = box // 2 + (positions[row] - np.rint(positions[row])) * box / plan.box_in
        assert np.all(np.abs(found - expected) <= 0.25), (row, found, expected)
        seen += 1
    assert seen == len(positions)


def test_relion5_with_tomograms_star_uses_the_float_centre(world, tmp_path):
    tmp, names, positions, files, _ = world
    tomos = write_tomograms_star(tmp_path / "tomograms.star", files, SHAPES, binning=1.0)
    picks = relion5_star(tmp_path / "p.star", names, positions, SHAPES, binning=1.0)
    plan = plan_extraction(picks, tomos, box=BOX, invert="no")
    _check_centred(plan, positions)
    # RELION's projection code's int(size / 2) would put odd axes half a voxel off: not what we read
    assert SHAPES["TS_01"][2] % 2 == 1
    np.testing.assert_array_equal(plan.clipped(), _crosses_edge(names, positions))
    assert plan.clipped()[[n == "TS_01" for n in names]].any()


def test_relion5_binned_tomograms(world, tmp_path):
    tmp, names, positions, files, _ = world
    tomos = write_tomograms_star(tmp_path / "tomograms.star", files, SHAPES, binning=2.0)
    picks = relion5_star(tmp_path / "p.star", names, positions, SHAPES, binning=2.0)
    _check_centred(plan_extraction(picks, tomos, box=BOX, invert="no"), positions)


def test_relion5_with_a_folder_centre_is_half_the_shape(world, tmp_path):
    tmp, names, positions, files, _ = world
    picks = relion5_star(tmp_path / "p.star", names, positions, SHAPES, binning=1.0)
    _check_centred(plan_extraction(picks, tmp / "tomograms", box=BOX, invert="no"), positions)


def test_relion4_tilt_series_pixels(world, tmp_path):
    tmp, names, positions, _, _ = world
    picks = relion4_star(tmp_path / "p.star", names, positions, binning=4.0)
    _check_centred(plan_extraction(picks, tmp / "tomograms", box=BOX, invert="no"), positions)


def test_warp_pixels_at_a_given_pixel_size(world, tmp_path):
    tmp, names, positions, _, _ = world
    picks = warp_star(tmp_path / "p.star", names, positions * 2)  # picked at 5 A
    plan = plan_extraction(picks, tmp / "tomograms", box=BOX, invert="no",
                           options=PickOptions(pick_pixel_size=VOXEL / 2))
    _check_centred(plan, positions)


def test_warp_pixels_default_to_the_tomogram_voxels(world, tmp_path):
    tmp, names, positions, _, _ = world
    picks = warp_star(tmp_path / "p.star", names, positions)
    _check_centred(plan_extraction(picks, tmp / "tomograms", box=BOX, invert="no"), positions)


def test_warp_fractions_are_detected(world, tmp_path):
    tmp, names, positions, _, _ = world
    extent = np.array([[SHAPES[n][2] - 1, SHAPES[n][1] - 1, SHAPES[n][0] - 1] for n in names], float)
    picks = warp_star(tmp_path / "p.star", names, positions / extent)
    plan = plan_extraction(picks, tmp / "tomograms", box=BOX, invert="no")
    assert any("normalised" in n for n in plan.notes)
    _check_centred(plan, positions)


def test_dynamo_one_based_with_shifts_and_doc(world, tmp_path):
    tmp, names, positions, files, _ = world
    numbers = {n: k + 1 for k, n in enumerate(SHAPES)}
    table = dynamo_table(tmp_path / "picks.tbl", [numbers[n] for n in names], positions,
                         doc={k: files[n] for n, k in numbers.items()})
    _check_centred(plan_extraction(table, None, box=BOX, invert="no"), positions)  # the .doc names the files


def test_copick_angstrom_with_transform_shifts(world, tmp_path):
    pytest.importorskip("copick")  # an optional dependency: pip install napari-ktal[copick]
    _, names, positions, _, volumes = world
    picks = {}
    for name in SHAPES:
        sel = [i for i, n in enumerate(names) if n == name]
        picks[name] = [("ribosome", positions[sel[:3]]), ("proteasome", positions[sel[3:]])]
    config = copick_project(tmp_path, volumes, picks)
    plan = plan_extraction(config, None, box=BOX, invert="no")  # the runs' own (zarr) tomograms
    order = [np.flatnonzero([n == name for n in names]) for name in sorted(SHAPES)]
    expected = np.concatenate([np.concatenate([positions[o[3:]], positions[o[:3]]]) for o in order])  # object order
    assert plan.picks.classes[:3] == ["proteasome"] * 3
    _check_centred(plan, expected)


@pytest.mark.parametrize("units", ["px", "A"])
def test_csv_pixels_and_angstrom(world, tmp_path, units):
    tmp, names, positions, _, _ = world
    picks = pick_csv(tmp_path / "p.csv", names, positions * (VOXEL if units == "A" else 1.0))
    _check_centred(plan_extraction(picks, tmp / "tomograms", box=BOX, invert="no",
                                   options=PickOptions(units=units)), positions)


def test_coarser_voxel_size_by_fourier_cropping(world, tmp_path):
    tmp, names, positions, _, _ = world
    picks = pick_csv(tmp_path / "p.csv", names, positions)
    plan = plan_extraction(picks, tmp / "tomograms", box=8, voxel_size=2 * VOXEL, invert="no")
    assert (plan.box_in, plan.voxel_size) == (16, 2 * VOXEL)
    _check_centred(plan, positions, box=8)
    result = extract_to_folder(plan, tmp_path / "out")
    with mrcfile.open(next((result.folder / "subtomograms").iterdir())) as mrc:
        assert mrc.data.shape == (8, 8, 8) and float(mrc.voxel_size.x) == pytest.approx(2 * VOXEL)
    assert json.loads((result.folder / "extraction.json").read_text())["voxel_size"] == pytest.approx(2 * VOXEL)


def test_fourier_crop_matches_sampling_at_the_coarser_size():
    n, box = 32, 16
    g = np.arange(n) - n // 2
    zz, yy, xx = np.meshgrid(g, g, g, indexing="ij")
    fine = np.exp(-(zz**2 + yy**2 + xx**2) / (2 * 4.0**2))
    g2 = (np.arange(box) - box // 2) * 2.0
    zz, yy, xx = np.meshgrid(g2, g2, g2, indexing="ij")
    coarse = np.exp(-(zz**2 + yy**2 + xx**2) / (2 * 4.0**2))
    assert np.abs(fourier_crop(fine, box) - coarse).max() < 1e-3
    assert np.allclose(fourier_crop(np.full((n, n, n), 3.0), box), 3.0, atol=1e-5)


def test_unreachable_and_finer_voxel_sizes_name_both_numbers(world, tmp_path):
    tmp, names, positions, _, _ = world
    picks = pick_csv(tmp_path / "p.csv", names, positions)
    with pytest.raises(InputError, match=r"5 A is finer than the tomograms' 10 A"):
        plan_extraction(picks, tmp / "tomograms", box=16, voxel_size=5)
    with pytest.raises(InputError, match=r"13\.3 A cannot be reached from 10 A"):
        plan_extraction(picks, tmp / "tomograms", box=8, voxel_size=13.3)


def test_particles_csv_in_row_order_with_box_centres(world, tmp_path):
    tmp, names, positions, _, volumes = world
    picks = pick_csv(tmp_path / "p.csv", names, positions)
    plan = plan_extraction(picks, tmp / "tomograms", box=BOX, invert="no")
    result = extract_to_folder(plan, tmp_path / "out")
    with open(result.table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["tomogram"] for r in rows] == names
    assert {"path", "tomogram", "x", "y", "z", "clipped"} <= set(rows[0])
    for r, p in zip(rows, positions):
        assert [int(r[a]) for a in "xyz"] == [int(round(v)) for v in p]
        with mrcfile.open(result.folder / r["path"]) as mrc:
            box = mrc.data
            assert float(mrc.voxel_size.x) == VOXEL
        np.testing.assert_array_equal(box, read_box(plan, rows.index(r)))
    assert [r["clipped"] == "1" for r in rows] == _crosses_edge(names, positions).tolist()
    assert result.n_clipped == _crosses_edge(names, positions).sum() > 0
    # an unclipped box is exactly the tomogram's voxels
    i = next(k for k, r in enumerate(rows) if r["clipped"] == "0")
    x, y, z = (int(rows[i][a]) for a in "xyz")
    with mrcfile.open(result.folder / rows[i]["path"]) as mrc:
        np.testing.assert_array_equal(mrc.data, volumes[names[i]][z - 8: z + 8, y - 8: y + 8, x - 8: x + 8])


def test_invert_auto_decides_from_the_data(world, tmp_path):
    tmp, names, positions, _, volumes = world
    picks = pick_csv(tmp_path / "p.csv", names, positions)
    dark = plan_extraction(picks, tmp / "tomograms", box=BOX)
    assert not dark.contrast.invert and "dark" in dark.contrast.message
    write_tomograms(tmp_path / "bright", {n: -v for n, v in volumes.items()})
    bright = plan_extraction(picks, tmp_path / "bright", box=BOX)
    assert bright.contrast.invert and "bright" in bright.contrast.message
    row, box, _ = next(iter_boxes(bright))
    assert box[BOX // 2, BOX // 2, BOX // 2] < box.mean()  # stored dark, like raw data


def test_relion_subtomogram_matrix_is_relions_closed_form():
    """ParticleSet::getPosition rotates rlnOrigin*Angst by Euler_angles2matrix(rot, tilt, psi)."""
    import pandas as pd

    from napari_ktal.core.data.particles.star import _subtomogram_matrices

    rot, tilt, psi = np.deg2rad([30.0, 50.0, -70.0])
    cp, sp, ct, st, cc, sc = np.cos(rot), np.sin(rot), np.cos(tilt), np.sin(tilt), np.cos(psi), np.sin(psi)
    relion = np.array([[cc * ct * cp - sc * sp, cc * ct * sp + sc * cp, -cc * st],
                       [-sc * ct * cp - cc * sp, -sc * ct * sp + cc * cp, sc * st],
                       [st * cp, st * sp, ct]])
    table = pd.DataFrame({"rlnTomoSubtomogramRot": [30.0], "rlnTomoSubtomogramTilt": [50.0],
                          "rlnTomoSubtomogramPsi": [-70.0]})
    np.testing.assert_allclose(_subtomogram_matrices(table)[0], relion, atol=1e-12)


def test_pixels_read_as_angstrom_are_refused_but_picks_of_one_region_are_not(world, tmp_path):
    """Read in the wrong unit the picks crowd one corner, and the other unit spreads them over the tomograms."""
    tmp, names, positions, _, _ = world
    pixels = pick_csv(tmp_path / "px.csv", names, positions)
    with pytest.raises(InputError, match=r"read as Angstrom \(--units A\), all 12 picks lie within \d+% of one "
                                         r"corner .* read as pixels they spread over them \(pass --units px"):
        plan_extraction(pixels, tmp / "tomograms", box=BOX, options=PickOptions(units="A"))
    # the same region as Angstrom, correctly: two picks near the first corner, too far out to fit 10x further
    corner = [i for i, p in enumerate(positions) if (p < 0.25 * np.array(SHAPES[names[i]][::-1])).all()]
    near = np.array([[6.3, 5.1, 4.4], [9.8, 7.6, 6.2]])
    assert not corner and (near * VOXEL > np.array(SHAPES["TS_01"][::-1])).any(axis=1).all()
    region = pick_csv(tmp_path / "region.csv", ["TS_01", "TS_01"], near * VOXEL)
    plan = plan_extraction(region, tmp / "tomograms", box=BOX, invert="no", options=PickOptions(units="A"))
    np.testing.assert_allclose(plan.voxels, near)
    one = pick_csv(tmp_path / "one.csv", ["TS_01"], positions[:1] / VOXEL)  # a single pick says nothing
    plan_extraction(one, tmp / "tomograms", box=BOX, invert="no", options=PickOptions(units="A"))


def test_a_warp_list_of_fractions_forced_to_pixels_is_refused_naming_fractions(world, tmp_path):
    tmp, names, positions, _, _ = world
    extent = np.array([[SHAPES[n][2] - 1, SHAPES[n][1] - 1, SHAPES[n][0] - 1] for n in names], float)
    picks = warp_star(tmp_path / "p.star", names, positions / extent)
    with pytest.raises(InputError, match=r"read as pixels \(--units px\).*\(pass --units fraction"):
        plan_extraction(picks, tmp / "tomograms", box=BOX, options=PickOptions(units="px"))


def test_boxes_with_nan_voxels_are_not_cut(world, tmp_path):
    """Every box of the tomogram is checked and its rows named; none with a NaN is ever yielded."""
    tmp, names, positions, _, volumes = world
    broken = volumes["TS_02"].copy()
    broken[:, :, :20] = np.nan
    write_tomograms(tmp_path / "tomos", {"TS_01": volumes["TS_01"], "TS_02": broken})
    picks = pick_csv(tmp_path / "p.csv", names, positions)
    plan = plan_extraction(picks, tmp_path / "tomos", box=BOX, invert="no")
    hit = sorted(i for i, (n, p) in enumerate(zip(names, positions)) if n == "TS_02" and round(p[0]) - BOX // 2 < 20)
    assert hit
    yielded = []
    with pytest.raises(InputError, match=r"TS_02\.mrc: holds NaN or Inf voxels in the boxes of p\.csv lines "
                                         + ", ".join(str(i + 2) for i in hit) + rf" \({len(hit)} of the 6 picks"):
        for row, volume, _ in iter_boxes(plan):
            assert np.isfinite(volume).all()
            yielded.append(row)
    assert not set(hit) & set(yielded)


def test_an_unset_tomogram_voxel_size_is_given_by_the_option(world, tmp_path):
    tmp, names, positions, files, volumes = world
    for name, volume in volumes.items():
        write_mrc(tmp_path / "tomos" / f"{name}.mrc", volume)  # voxel size 0 in the header
    picks = relion5_star(tmp_path / "p.star", names, positions, SHAPES)
    with pytest.raises(InputError, match=r"the header leaves the voxel size unset \(0\), and p\.star's coordinates "
                                         r"are Angstrom from the tomogram centre.*--tomogram-voxel-size"):
        plan_extraction(picks, tmp_path / "tomos", box=BOX)
    plan = plan_extraction(picks, tmp_path / "tomos", box=BOX, invert="no",
                           options=PickOptions(tomogram_voxel_size=VOXEL))
    _check_centred(plan, positions)
    pixels = plan_extraction(pick_csv(tmp_path / "p.csv", names, positions), tmp_path / "tomos", box=BOX, invert="no")
    assert "unset size (0 in the header)" in pixels.summary()  # plain voxels need no voxel size: cut, and said
    assert any("--tomogram-voxel-size" in note for note in pixels.notes)
    with pytest.raises(InputError, match="voxel size 10 A in the header, but --tomogram-voxel-size 5"):
        plan_extraction(picks, tmp / "tomograms", box=BOX, options=PickOptions(tomogram_voxel_size=5.0))


def test_particles_csv_row_is_the_picks_place_in_the_list_in_every_format(world, tmp_path):
    """1-based, as STAR and Dynamo rows are counted; a CSV's row 1 is its line 2 (and messages say line 2)."""
    tmp, names, positions, files, _ = world
    numbers = {n: k + 1 for k, n in enumerate(SHAPES)}
    lists = [pick_csv(tmp_path / "p.csv", names, positions),
             relion5_star(tmp_path / "p.star", names, positions, SHAPES),
             dynamo_table(tmp_path / "p.tbl", [numbers[n] for n in names], positions,
                          doc={k: files[n] for n, k in numbers.items()})]
    for k, picks in enumerate(lists):
        result = extract_to_folder(plan_extraction(picks, tmp / "tomograms", box=BOX, invert="no"), tmp_path / f"o{k}")
        with open(result.table, newline="") as f:
            assert [r["row"] for r in csv.DictReader(f)] == [str(i + 1) for i in range(len(names))]
