"""Synthetic tomograms with dark blobs at known positions, and the same picks written in every format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import starfile
from mrcfiles import write_mrc

VOXEL = 10.0  # Angstrom


def blob_tomogram(shape, positions, *, sigma=1.5, amplitude=-5.0, noise=0.05, seed=0) -> np.ndarray:
    """(z, y, x) float32 with a Gaussian blob (dark: amplitude < 0) at each (x, y, z) position."""
    rng = np.random.default_rng(seed)
    vol = rng.normal(0, noise, shape).astype(np.float32)
    z, y, x = (np.arange(n, dtype=np.float64) for n in shape)
    for px, py, pz in positions:
        gz, gy, gx = (np.exp(-((a - p) ** 2) / (2 * sigma**2)) for a, p in ((z, pz), (y, py), (x, px)))
        vol += (amplitude * gz[:, None, None] * gy[None, :, None] * gx[None, None, :]).astype(np.float32)
    return vol


def random_positions(shape, n, rng, margin=4.0) -> np.ndarray:
    """``n`` (x, y, z) float positions at least ``margin`` voxels inside and 10 voxels apart."""
    nz, ny, nx = shape
    out = []
    while len(out) < n:
        p = rng.uniform([margin, margin, margin], [nx - 1 - margin, ny - 1 - margin, nz - 1 - margin])
        if all(np.linalg.norm(p - q) > 10 for q in out):
            out.append(p)
    return np.array(out)


def write_tomograms(folder: Path, volumes: dict[str, np.ndarray], voxel=VOXEL) -> dict[str, Path]:
    return {name: write_mrc(folder / f"{name}.mrc", vol, (voxel, voxel, voxel)) for name, vol in volumes.items()}


def write_tomograms_star(path: Path, files: dict[str, Path], shapes: dict[str, tuple], *, binning=1.0,
                         voxel=VOXEL) -> Path:
    names = list(files)
    df = pd.DataFrame({
        "rlnTomoName": names,
        "rlnTomoSizeX": [int(round(shapes[n][2] * binning)) for n in names],
        "rlnTomoSizeY": [int(round(shapes[n][1] * binning)) for n in names],
        "rlnTomoSizeZ": [int(round(shapes[n][0] * binning)) for n in names],
        "rlnTomoTiltSeriesPixelSize": voxel / binning,
        "rlnTomoTomogramBinning": binning,
        "rlnTomoReconstructedTomogram": [str(files[n]) for n in names],
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    starfile.write({"global": df}, path)
    return path


def relion5_star(path: Path, names, positions, shapes, *, binning=1.0, voxel=VOXEL, classes=None) -> Path:
    """Picks as RELION 5 writes them: Angstrom from the centre rlnTomoSize / 2 (tilt-series pixels)."""
    px = voxel / binning
    rows = []
    for name, (x, y, z) in zip(names, positions):
        nz, ny, nx = shapes[name]
        size = np.array([round(nx * binning), round(ny * binning), round(nz * binning)])
        rows.append(np.array([x, y, z]) * voxel - size / 2.0 * px)
    rows = np.array(rows)
    df = pd.DataFrame({"rlnTomoName": list(names), "rlnCenteredCoordinateXAngst": rows[:, 0],
                       "rlnCenteredCoordinateYAngst": rows[:, 1], "rlnCenteredCoordinateZAngst": rows[:, 2],
                       "rlnOpticsGroup": 1})
    if classes is not None:
        df["rlnClassNumber"] = classes
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                           "rlnTomoTiltSeriesPixelSize": [px]})
    starfile.write({"optics": optics, "particles": df}, path, float_format="%.6f")
    return path


def relion4_star(path: Path, names, positions, *, binning=2.0, voxel=VOXEL) -> Path:
    px = voxel / binning
    c = np.asarray(positions) * binning  # unbinned tilt-series pixels
    df = pd.DataFrame({"rlnTomoName": list(names), "rlnCoordinateX": c[:, 0], "rlnCoordinateY": c[:, 1],
                       "rlnCoordinateZ": c[:, 2], "rlnOpticsGroup": 1})
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                           "rlnTomoTiltSeriesPixelSize": [px], "rlnTomoSubtomogramBinning": [1.0]})
    starfile.write({"optics": optics, "particles": df}, path, float_format="%.6f")
    return path


def warp_star(path: Path, names, coords) -> Path:
    c = np.asarray(coords)
    df = pd.DataFrame({"rlnCoordinateX": c[:, 0], "rlnCoordinateY": c[:, 1], "rlnCoordinateZ": c[:, 2],
                       "rlnAngleRot": 0.0, "rlnAngleTilt": 0.0, "rlnAnglePsi": 0.0,
                       "rlnMicrographName": [f"{n}.tomostar" for n in names]})
    starfile.write(df, path, float_format="%.8f")
    return path


def dynamo_table(path: Path, tomo_numbers, positions, *, doc: dict[int, Path] | None = None, classes=None,
                 n_cols=35) -> Path:
    """A Dynamo table: 1-based positions split into x (whole voxels) + dx (the rest)."""
    p1 = np.asarray(positions) + 1.0
    whole = np.floor(p1)
    rows = np.zeros((len(p1), n_cols))
    rows[:, 0] = np.arange(1, len(p1) + 1)
    rows[:, 1] = 1
    rows[:, 3:6] = p1 - whole
    rows[:, 19] = tomo_numbers
    rows[:, 21] = 0 if classes is None else classes
    rows[:, 23:26] = whole
    lines = [" ".join(f"{v:.6g}" if abs(v - round(v)) > 1e-9 else str(int(round(v))) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    if doc is not None:
        path.with_suffix(".doc").write_text("".join(f"{k} {v}\n" for k, v in doc.items()))
    return path


def pick_csv(path: Path, names, coords, labels=None) -> Path:
    lines = ["tomogram,x,y,z" + (",label" if labels is not None else "")]
    for i, (n, c) in enumerate(zip(names, coords)):
        lines.append(f"{n},{float(c[0])!r},{float(c[1])!r},{float(c[2])!r}" + (f",{labels[i]}" if labels is not None else ""))
    path.write_text("\n".join(lines) + "\n")
    return path


def copick_project(folder: Path, volumes: dict[str, np.ndarray], picks: dict[str, list[tuple[str, np.ndarray]]],
                   *, voxel=VOXEL, user="picker", session="0", objects=("ribosome", "proteasome")) -> Path:
    """A filesystem copick project: one run per tomogram (its zarr tomogram too), picks in Angstrom.

    ``picks[run] = [(object, (n, 3) x y z voxels), ...]``; half of each position goes into the
    point's transform (a refined shift), as copick's full_positions() adds them.
    """
    import copick
    from copick.models import PickableObject

    config = folder / "copick.json"
    root = copick.new_config(str(config), str(folder / "overlay"), pickable_objects=[
        PickableObject(name=o, is_particle=True, label=k + 1, radius=60.0) for k, o in enumerate(objects)])
    for run_name, vol in volumes.items():
        run = root.new_run(run_name)
        run.new_voxel_spacing(voxel).new_tomogram("wbp").from_numpy(vol, levels=1)
        for obj, pos in picks.get(run_name, []):
            angstrom = np.asarray(pos) * voxel
            shifts = np.zeros((len(angstrom), 4, 4))
            shifts[:] = np.eye(4)
            shifts[:, :3, 3] = 0.5 * angstrom
            run.new_picks(obj, session_id=session, user_id=user).from_numpy(angstrom - 0.5 * angstrom, shifts)
    json.loads(config.read_text())
    return config
