"""A simulated tomogram scene: whole tomograms with particles of K classes and junk, and their picks.

The particles are the data set's templates (:mod:`.templates`) under uniformly random rotations
at random, non-overlapping positions (sub-voxel too); junk picks are half empty ice, half a
featureless blob. The whole tomogram is imaged like a subtomogram of :mod:`.dataset`: the
signal filtered by the CTF and the missing wedge, white noise filtered by the wedge, the noise
scaled so that, inside the particles' boxes, var(signal) / var(noise) = ``snr``. Protein is dark
(raw reconstructions); ``invert`` makes it bright, as Warp writes tomograms.

What :func:`write_scene` writes, as a RELION 5 project would have it::

    OUT/tomograms/TS_01.mrc ...   float32, voxel size in the header
    OUT/tomograms.star            rlnTomoName, rlnTomoReconstructedTomogram, rlnTomoSizeX/Y/Z (unbinned
                                  tilt-series pixels), rlnTomoTiltSeriesPixelSize, rlnTomoTomogramBinning
    OUT/particles.star            the picks, as a picker gives them: rlnTomoName and
                                  rlnCenteredCoordinateX/Y/ZAngst (no classes), rows shuffled
    OUT/truth.star                the same file with rlnClassNumber: 1..K the classes, K + 1 junk
    OUT/classes.csv               number,name (class_00, ..., junk)
    OUT/scene.json                the configuration

The same configuration gives the same files.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import fft as sfft

from ..atomic import atomic_write_text
from ..errors import KtalError
from .dataset import MRC_LABEL, class_name
from .optics import ctf_3d, missing_wedge_mask
from .templates import Template, make_templates, random_rotation, render_density

JUNK = "junk"


@dataclass(frozen=True)
class SceneConfig:
    """Everything that determines a scene (see the module's docstring)."""

    classes: int = 3
    per_class: int = 40
    """particles of each class, over all tomograms"""
    junk: int = 20
    """junk picks, over all tomograms"""
    tomograms: int = 2
    shape: tuple[int, int, int] = (64, 256, 256)
    """(z, y, x) voxels of each tomogram"""
    box: int = 32
    snr: float = 1.0
    seed: int = 0
    voxel_size: float = 10.0
    binning: float = 2.0
    """the tomograms' binning of the (notional) tilt series: its pixel is voxel_size / binning"""
    defocus_um: float = -5.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.0
    amplitude_contrast: float = 0.07
    tilt_range_deg: float = 60.0
    invert: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        for name in ("classes", "per_class", "tomograms", "box"):
            if int(getattr(self, name)) < 1:
                raise KtalError(f"SceneConfig.{name} must be at least 1")
        if self.junk < 0 or self.snr <= 0 or self.voxel_size <= 0 or self.binning <= 0:
            raise KtalError("SceneConfig: junk >= 0, snr > 0, voxel_size > 0 and binning > 0 are required")
        if self.box % 8:
            raise KtalError(f"SceneConfig.box must be a multiple of 8, got {self.box}")
        if len(self.shape) != 3 or min(self.shape) < self.box:
            raise KtalError(f"SceneConfig.shape {self.shape} must be 3 sides of at least the box ({self.box})")

    @property
    def tilt_series_pixel(self) -> float:
        return self.voxel_size / self.binning

    def tomogram_name(self, t: int) -> str:
        return f"TS_{t + 1:02d}"


@dataclass(frozen=True)
class ScenePick:
    tomogram: int
    position: tuple[float, float, float]
    """x, y, z in 0-based voxels of the tomogram"""
    label: int
    """0..K-1 a class, K junk"""


def _positions(rng: np.random.Generator, shape, box: int, n: int, min_distance: float) -> np.ndarray:
    """``n`` random (x, y, z) positions whose boxes lie inside ``shape`` and that keep apart."""
    nz, ny, nx = shape
    lo = box / 2
    hi = np.array([nx, ny, nz], np.float64) - box / 2
    out: list[np.ndarray] = []
    for _ in range(200 * n):
        if len(out) == n:
            break
        p = rng.uniform(lo, np.maximum(hi, lo + 1e-6))
        if all(np.linalg.norm(p - q) >= min_distance for q in out):
            out.append(p)
    if len(out) < n:
        raise KtalError(f"cannot place {n} particles {min_distance:.0f} voxels apart in a {nx}x{ny}x{nz} tomogram; "
                        "make the tomograms larger or the particles fewer")
    return np.array(out)


def simulate_scene(config: SceneConfig) -> tuple[list[np.ndarray], list[ScenePick]]:
    """The tomograms (float32, (z, y, x)) and every pick with its true class."""
    K = config.classes
    tmpl_ss, place_ss, noise_ss = np.random.SeedSequence(config.seed).spawn(3)
    templates = make_templates(K, config.box, np.random.default_rng(tmpl_ss))
    mass = float(templates[0].weights.sum())
    blob = Template(np.zeros((1, 3)), np.array([0.1 * config.box]), np.array([mass]))
    rng = np.random.default_rng(place_ss)
    labels = np.concatenate([np.repeat(np.arange(K), config.per_class), np.full(config.junk, K)])
    rng.shuffle(labels)
    where = rng.integers(0, config.tomograms, len(labels))
    shape = config.shape
    ctf = ctf_3d(shape, config.voxel_size, config.defocus_um, config.voltage_kv, config.cs_mm,
                 config.amplitude_contrast)
    wedge = missing_wedge_mask(shape, config.tilt_range_deg)
    picks: list[ScenePick] = []
    volumes = []
    noise_rng = np.random.default_rng(noise_ss)
    for t in range(config.tomograms):
        mine = np.flatnonzero(where == t)
        positions = _positions(rng, shape, config.box, len(mine), 0.75 * config.box)
        density = np.zeros(shape, np.float64)
        half = config.box // 2
        for j, label in zip(range(len(mine)), labels[mine].tolist()):
            pos = positions[j]
            corner = np.floor(pos + 0.5).astype(np.int64)  # the voxel nearest the position
            shift = pos - corner
            empty = label == K and j % 2 == 0
            if not empty:
                template = templates[label] if label < K else blob
                box = render_density(template, random_rotation(rng), shift, config.box)
                x0, y0, z0 = corner - half
                density[z0: z0 + config.box, y0: y0 + config.box, x0: x0 + config.box] += box
            picks.append(ScenePick(t, tuple(float(v) for v in pos), int(label)))
        signal = sfft.irfftn(sfft.rfftn(density) * (ctf * wedge), s=shape)
        noise = sfft.irfftn(sfft.rfftn(noise_rng.standard_normal(shape)) * wedge, s=shape)
        noise /= noise.std()
        boxes = [signal[max(0, int(round(p[2])) - half): int(round(p[2])) + half,
                        max(0, int(round(p[1])) - half): int(round(p[1])) + half,
                        max(0, int(round(p[0])) - half): int(round(p[0])) + half]
                 for p, lab in zip(positions, labels[mine]) if lab < K]
        var = float(np.mean([b.var() for b in boxes])) if boxes else float(signal.var()) or 1.0
        signal *= math.sqrt(config.snr / var)
        volume = (signal + noise).astype(np.float32)
        volumes.append(-volume if config.invert else volume)
    return volumes, picks


def _star_text(blocks: dict) -> str:
    import starfile

    return starfile.to_string(blocks)


def write_scene(out: str | Path, config: SceneConfig, progress=None) -> Path:
    """Simulate and write a scene into ``out`` (see the module's docstring); returns particles.star."""
    import mrcfile
    import pandas as pd

    out = Path(out)
    volumes, picks = simulate_scene(config)
    K = config.classes
    try:
        (out / "tomograms").mkdir(parents=True, exist_ok=True)
        for t, volume in enumerate(volumes):
            with mrcfile.new(out / "tomograms" / f"{config.tomogram_name(t)}.mrc", overwrite=True) as mrc:
                mrc.set_data(volume)
                mrc.voxel_size = config.voxel_size
                mrc.header.label[0] = MRC_LABEL
                mrc.header.nlabl = 1
            if progress is not None:
                progress(t + 1, config.tomograms)
        nz, ny, nx = config.shape
        b, px = config.binning, config.tilt_series_pixel
        tomos = pd.DataFrame({
            "rlnTomoName": [config.tomogram_name(t) for t in range(config.tomograms)],
            "rlnVoltage": config.voltage_kv, "rlnSphericalAberration": config.cs_mm,
            "rlnAmplitudeContrast": config.amplitude_contrast,
            "rlnTomoSizeX": int(nx * b), "rlnTomoSizeY": int(ny * b), "rlnTomoSizeZ": int(nz * b),
            "rlnTomoTiltSeriesPixelSize": px, "rlnTomoTomogramBinning": b,
            "rlnTomoReconstructedTomogram": [f"tomograms/{config.tomogram_name(t)}.mrc"
                                             for t in range(config.tomograms)],
        })
        atomic_write_text(out / "tomograms.star", _star_text({"global": tomos}))
        order = np.random.default_rng(config.seed + 1).permutation(len(picks))
        centre = np.array([nx, ny, nz]) * b / 2 * px  # RELION's centre: size / 2 in tilt-series pixels
        rows = [picks[i] for i in order]
        coords = np.array([np.array(p.position) * config.voxel_size - centre for p in rows]).reshape(-1, 3)
        optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                               "rlnSphericalAberration": [config.cs_mm], "rlnVoltage": [config.voltage_kv],
                               "rlnAmplitudeContrast": [config.amplitude_contrast],
                               "rlnTomoTiltSeriesPixelSize": [px]})
        particles = pd.DataFrame({
            "rlnTomoName": [config.tomogram_name(p.tomogram) for p in rows],
            "rlnCenteredCoordinateXAngst": coords[:, 0], "rlnCenteredCoordinateYAngst": coords[:, 1],
            "rlnCenteredCoordinateZAngst": coords[:, 2], "rlnOpticsGroup": 1,
        })
        atomic_write_text(out / "particles.star", _star_text({"optics": optics, "particles": particles}))
        truth = particles.copy()
        truth["rlnClassNumber"] = [p.label + 1 for p in rows]
        atomic_write_text(out / "truth.star", _star_text({"optics": optics, "particles": truth}))
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["number", "name"])
        w.writerows([(k + 1, class_name(k, K)) for k in range(K)] + [(K + 1, JUNK)])
        atomic_write_text(out / "classes.csv", buf.getvalue())
        atomic_write_text(out / "scene.json", json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    except OSError as exc:
        raise KtalError(f"cannot write the simulated scene to {out}: {exc}") from exc
    return out / "particles.star"
