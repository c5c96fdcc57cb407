"""Deterministic simulation of realistic cryo-ET subtomograms.

The simulator follows the recipe of the synthetic "50c-snr005" data set of
*Boosting Active Learning with Knowledge Transfer*: ``K`` distinct
macromolecule-like density templates; every sample is its class template under
a uniformly random 3D rotation and a small shift, filtered by a contrast
transfer function (CTF) and a missing wedge, plus noise at a target
signal-to-noise ratio.

Conventions used throughout this module
---------------------------------------
* Volumes are ``float32`` arrays of shape ``(box, box, box)`` with axes
  ``(z, y, x)``. The beam runs along ``z``; the tilt axis is ``y``.
* Points (template blob centres, shifts) are ``(x, y, z)`` vectors in voxels,
  relative to the box centre, which is the voxel with index ``box // 2`` on
  every axis (the origin of ``numpy.fft.fftshift``).
* A rotation is a 3x3 matrix acting on ``(x, y, z)`` column vectors.
* Fourier-space arrays use the ``numpy.fft.rfftn`` layout of a ``(z, y, x)``
  volume: shape ``(box, box, box // 2 + 1)``, unshifted (zero frequency at
  index ``[0, 0, 0]``), the last axis holding the non-negative ``kx``.
* Spatial frequencies are in cycles per Angstrom unless a name says otherwise.

Everything is a pure function of its arguments; randomness comes only from the
``numpy.random.Generator`` passed in, and :func:`simulate_dataset` derives an
independent child seed for every volume with :meth:`numpy.random.SeedSequence.spawn`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import mrcfile
import numpy as np
from numpy.typing import NDArray
from scipy import constants
from scipy import fft as sfft
from scipy.spatial.transform import Rotation

from napari_ktal.core.errors import KtalError

__all__ = [
    "SimulationConfig",
    "Template",
    "VolumeParts",
    "class_name",
    "ctf_3d",
    "electron_wavelength",
    "make_templates",
    "missing_wedge_mask",
    "random_pose",
    "render",
    "simulate_dataset",
    "simulate_parts",
    "simulate_volume",
]

#: Radius of gyration every template is rescaled to, as a fraction of the box side.
RG_FRACTION = 0.2
#: Relative jitter (uniform, +-) applied to the target radius of gyration.
RG_JITTER = 0.03
#: Fraction of the classes that get a cyclic symmetry C2..C6.
SYMMETRIC_FRACTION = 0.4
#: All template density (centre + 3 sigma) stays within this fraction of the box side from
#: the centre; the remaining ``box / 8`` is the margin for shifts (see ``max_shift``).
EXTENT_FRACTION = 0.375
#: Blob standard deviations are drawn uniformly from this range, as fractions of the box
#: side (0.8-1.6 voxels in a 32-voxel box): small enough for distinct shapes ...
SIGMA_FRACTION = (0.025, 0.05)
#: ... and never below this many voxels, so every blob is well sampled by the grid.
MIN_SIGMA = 0.6
#: Longest / shortest principal radius of a template at most this: globular-ish particles
#: rather than rods or plates, which look alike once their length is fixed by the Rg.
MAX_ASPECT = 2.5
#: Templates are redrawn while their NCC with an earlier template, maximised over
#: ``SIMILARITY_PROBES`` random rotations, exceeds ``MAX_SIMILARITY`` (``MAX_TRIES`` at most).
MAX_SIMILARITY = 0.8
SIMILARITY_PROBES = 24
MAX_TRIES = 50
#: Label written into the MRC header (fixed, so that files are byte-reproducible).
MRC_LABEL = "napari-ktal simulated subtomogram"


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that determines a simulated data set.

    Attributes:
        classes: number of classes ``K`` (>= 1).
        per_class: training volumes per class (>= 1).
        test_per_class: test volumes per class (>= 0; 0 writes no test split).
        snr: signal variance / noise variance of every volume (> 0).
        box: cubic side in voxels, a multiple of 8 and >= 16.
        seed: non-negative integer seed; the same config gives byte-identical files.
        voxel_size: Angstrom per voxel.
        defocus_um: defocus in micrometres, negative for underfocus (as cryo-ET papers
            write it; e.g. -5.0 is 5 um underfocus).
        voltage_kv: acceleration voltage in kV.
        cs_mm: spherical aberration in mm (>= 0).
        amplitude_contrast: fraction of amplitude contrast ``A`` in [0, 1).
        tilt_range_deg: the tilt series spans ``-tilt_range_deg .. +tilt_range_deg``
            about the y axis; in (0, 90], 90 meaning no missing wedge.
        max_shift: each coordinate of the random shift is uniform in
            ``[-max_shift, max_shift]`` voxels; at most ``box / 8``.
    """

    classes: int
    per_class: int
    test_per_class: int = 0
    snr: float = 0.05
    box: int = 32
    seed: int = 0
    voxel_size: float = 10.0
    defocus_um: float = -5.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.0
    amplitude_contrast: float = 0.07
    tilt_range_deg: float = 60.0
    max_shift: float = 2.0

    def __post_init__(self) -> None:
        _check_int(self, "classes", minimum=1)
        _check_int(self, "per_class", minimum=1)
        _check_int(self, "test_per_class", minimum=0)
        _check_int(self, "box", minimum=16)
        if self.box % 8:
            raise KtalError(f"SimulationConfig.box must be a multiple of 8, got {self.box}")
        _check_int(self, "seed", minimum=0)
        _check_float(self, "snr", low=0.0, low_inclusive=False)
        _check_float(self, "voxel_size", low=0.0, low_inclusive=False)
        _check_float(self, "defocus_um")
        _check_float(self, "voltage_kv", low=0.0, low_inclusive=False)
        _check_float(self, "cs_mm", low=0.0)
        _check_float(self, "amplitude_contrast", low=0.0, high=1.0, high_inclusive=False)
        _check_float(self, "tilt_range_deg", low=0.0, low_inclusive=False, high=90.0)
        _check_float(self, "max_shift", low=0.0, high=self.box / 8)


def _check_int(config: SimulationConfig, name: str, minimum: int) -> None:
    """Require ``config.<name>`` to be an integer >= ``minimum``; store it as a plain int."""
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise KtalError(f"SimulationConfig.{name} must be an integer, got {value!r}")
    if value < minimum:
        raise KtalError(f"SimulationConfig.{name} must be >= {minimum}, got {value}")
    object.__setattr__(config, name, int(value))


def _check_float(
    config: SimulationConfig,
    name: str,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
    """Require ``config.<name>`` to be a finite real in the given range; store it as a float."""
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise KtalError(f"SimulationConfig.{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise KtalError(f"SimulationConfig.{name} must be finite, got {value}")
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        lo = "(-inf" if low is None else ("[" if low_inclusive else "(") + f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}" + ("]" if high_inclusive else ")")
        raise KtalError(f"SimulationConfig.{name} must be in {lo}, {hi}, got {value:g}")
    object.__setattr__(config, name, value)


def class_name(index: int, n_classes: int) -> str:
    """Label of class ``index`` among ``n_classes``: ``class_00``, ``class_01``, ...

    The number is zero-padded to the width of ``n_classes - 1``, at least 2 digits.
    """
    width = max(2, len(str(n_classes - 1)))
    return f"class_{index:0{width}d}"


# --------------------------------------------------------------------------- templates


@dataclass(frozen=True, eq=False)
class Template:
    """A macromolecule-like density: a sum of isotropic 3D Gaussian blobs.

    Blob ``i`` contributes ``weights[i] * N(r; centres[i], sigmas[i]**2 I)``, a normalised
    Gaussian, so ``weights.sum()`` is the total mass (density integrated over voxels).

    Attributes:
        centres: ``(n, 3)`` blob centres, ``(x, y, z)`` in voxels from the box centre.
        sigmas: ``(n,)`` blob standard deviations in voxels.
        weights: ``(n,)`` blob masses (> 0).
        symmetry: 1 for none, ``n`` for cyclic ``Cn`` symmetry about the template's z axis.
    """

    centres: NDArray[np.float64]
    sigmas: NDArray[np.float64]
    weights: NDArray[np.float64]
    symmetry: int = 1

    def __post_init__(self) -> None:
        centres = np.array(self.centres, dtype=np.float64)
        sigmas = np.array(self.sigmas, dtype=np.float64)
        weights = np.array(self.weights, dtype=np.float64)
        n = len(sigmas)
        if centres.shape != (n, 3) or weights.shape != (n,) or n == 0:
            raise ValueError(
                f"Template needs centres (n, 3), sigmas (n,), weights (n,) with n >= 1; got "
                f"{centres.shape}, {sigmas.shape}, {weights.shape}"
            )
        if np.any(sigmas <= 0) or np.any(weights <= 0):
            raise ValueError("Template sigmas and weights must be positive")
        if int(self.symmetry) < 1:
            raise ValueError(f"Template symmetry must be >= 1, got {self.symmetry}")
        for name, array in (("centres", centres), ("sigmas", sigmas), ("weights", weights)):
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        object.__setattr__(self, "symmetry", int(self.symmetry))

    @property
    def mass(self) -> float:
        """Total mass, the integral of the density over all space (voxel units)."""
        return float(self.weights.sum())

    @property
    def radius_of_gyration(self) -> float:
        """Radius of gyration of the continuous density, in voxels.

        ``Rg**2 = sum_i w_i (|c_i - c|**2 + 3 sigma_i**2) / sum_i w_i`` with ``c`` the
        centre of mass.
        """
        return _radius_of_gyration(self.centres, self.sigmas, self.weights)


def _radius_of_gyration(
    centres: NDArray[np.float64], sigmas: NDArray[np.float64], weights: NDArray[np.float64]
) -> float:
    """Radius of gyration of a sum of normalised isotropic Gaussians (same units as input)."""
    w = weights / weights.sum()
    com = w @ centres
    spread = np.sum((centres - com) ** 2, axis=1) + 3.0 * sigmas**2
    return float(np.sqrt(w @ spread))


def _aspect_ratio(
    centres: NDArray[np.float64], sigmas: NDArray[np.float64], weights: NDArray[np.float64]
) -> float:
    """Longest over shortest principal radius of gyration of a centred, unit-mass density."""
    inertia = (weights[:, None] * centres).T @ centres + (weights @ sigmas**2) * np.eye(3)
    eig = np.linalg.eigvalsh(inertia)
    return float(np.sqrt(eig[-1] / eig[0]))


def _rotation_about_z(angle: float) -> NDArray[np.float64]:
    """3x3 matrix rotating ``(x, y, z)`` vectors by ``angle`` radians about the z axis."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _blob_cluster(
    n_blobs: int, n_clusters: int, rng: np.random.Generator
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Blobs scattered around ``n_clusters`` sub-cluster centres.

    Returns centres in arbitrary units (rescaled later), sigmas as fractions of the box
    side, and relative masses.
    """
    cluster_centres = rng.normal(0.0, 1.0, size=(n_clusters, 3))
    # every sub-cluster gets at least one blob
    membership = np.concatenate(
        [np.arange(n_clusters), rng.integers(0, n_clusters, size=n_blobs - n_clusters)]
    )
    centres = cluster_centres[membership] + rng.normal(0.0, 0.35, size=(n_blobs, 3))
    sigmas = rng.uniform(*SIGMA_FRACTION, size=n_blobs)
    weights = rng.uniform(0.5, 1.5, size=n_blobs) * sigmas**3  # peak densities vary 3-fold
    return centres, sigmas, weights


def _raw_layout(
    symmetry: int, rng: np.random.Generator
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Blob centres (arbitrary units), sigmas (fractions of the box) and relative masses.

    Asymmetric templates have 8-20 blobs from 3-5 sub-clusters. A ``Cn`` template repeats
    an off-axis asymmetric unit of 2-10 blobs ``n`` times about the z axis, optionally with
    an on-axis core.
    """
    if symmetry == 1:
        n_blobs = int(rng.integers(8, 21))
        n_clusters = int(rng.integers(3, 6))
        return _blob_cluster(n_blobs, n_clusters, rng)
    per_unit = int(rng.integers(max(2, math.ceil(6 / symmetry)), max(3, 20 // symmetry) + 1))
    unit_c, unit_s, unit_w = _blob_cluster(per_unit, int(rng.integers(1, 3)), rng)
    unit_c *= 0.6
    unit_c[:, 2] *= rng.uniform(0.8, 2.0)  # from flat rings to tall barrels
    unit_c[:, 0] += rng.uniform(0.4, 1.4)  # move the unit off the symmetry axis
    copies = [unit_c @ _rotation_about_z(2 * np.pi * k / symmetry).T for k in range(symmetry)]
    centres = np.concatenate(copies)
    sigmas = np.tile(unit_s, symmetry)
    weights = np.tile(unit_w, symmetry)
    if rng.random() < 0.5:  # an on-axis core keeps the symmetry
        n_core = int(rng.integers(1, 3))
        core_c = np.zeros((n_core, 3))
        core_c[:, 2] = rng.normal(0.0, 0.6, size=n_core)
        core_s = rng.uniform(*SIGMA_FRACTION, size=n_core)
        centres = np.concatenate([centres, core_c])
        sigmas = np.concatenate([sigmas, core_s])
        weights = np.concatenate([weights, rng.uniform(0.5, 1.5, size=n_core) * core_s**3])
    return centres, sigmas, weights


def _make_template(symmetry: int, box: int, rng: np.random.Generator) -> Template:
    """One template with the target radius of gyration and unit mass, fitting the box."""
    max_extent = EXTENT_FRACTION * box
    for _ in range(1000):
        centres, sigma_fractions, weights = _raw_layout(symmetry, rng)
        sigmas = np.maximum(sigma_fractions * box, MIN_SIGMA)
        weights = weights / weights.sum()
        centres = centres - weights @ centres  # centre of mass at the origin (stays on the axis)
        target_rg = RG_FRACTION * box * (1.0 + rng.uniform(-RG_JITTER, RG_JITTER))
        # Rg**2 = sum w |c|**2 + 3 sum w sigma**2: scale the centres to make up the rest
        blob_part = 3.0 * (weights @ sigmas**2)
        spread = weights @ np.sum(centres**2, axis=1)
        centres = centres * math.sqrt((target_rg**2 - blob_part) / spread)
        extent = np.max(np.linalg.norm(centres, axis=1) + 3.0 * sigmas)
        if extent <= max_extent and _aspect_ratio(centres, sigmas, weights) <= MAX_ASPECT:
            return Template(centres, sigmas, weights, symmetry)
    raise RuntimeError("could not build a template that fits the box")  # pragma: no cover


def make_templates(n_classes: int, box: int, rng: np.random.Generator) -> list[Template]:
    """Build ``n_classes`` distinct procedural macromolecule-like templates.

    Each template is a cluster of Gaussian blobs (see :class:`Template`). About
    ``SYMMETRIC_FRACTION`` of the classes (``round(0.4 * n_classes)``, chosen at random)
    get cyclic symmetry ``C2..C6`` about their z axis. Every template is rescaled so its
    radius of gyration is ``RG_FRACTION * box`` (+- ``RG_JITTER`` relative) and its mass
    is 1, so classes cannot be told apart by size or total intensity; all density
    (blob centre + 3 sigma) lies within ``EXTENT_FRACTION * box`` voxels of the centre,
    leaving ``box / 8`` voxels of margin for shifts.

    Distinctness: a candidate whose normalised cross-correlation with an accepted
    template, maximised over ``SIMILARITY_PROBES`` random rotations, exceeds
    ``MAX_SIMILARITY`` is redrawn (up to ``MAX_TRIES`` times; then the least similar
    candidate is kept).

    Args:
        n_classes: number of templates, >= 1.
        box: cubic box side in voxels the templates are designed for.
        rng: source of randomness; the result is a pure function of its state.
    """
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    n_symmetric = round(SYMMETRIC_FRACTION * n_classes)
    symmetric = np.zeros(n_classes, dtype=bool)
    symmetric[rng.permutation(n_classes)[:n_symmetric]] = True
    orders = [int(rng.integers(2, 7)) if s else 1 for s in symmetric]
    probes = [_random_rotation(rng) for _ in range(SIMILARITY_PROBES)]
    templates: list[Template] = []
    accepted = np.empty((n_classes, box**3), dtype=np.float32)  # normalised renderings
    for k, order in enumerate(orders):
        best_similarity, best = np.inf, None
        for _ in range(MAX_TRIES):
            candidate = _make_template(order, box, rng)
            similarity = _max_similarity(candidate, accepted[:k], probes, box)
            if similarity < best_similarity:
                best_similarity, best = similarity, candidate
            if similarity <= MAX_SIMILARITY:
                break
        assert best is not None
        templates.append(best)
        accepted[k] = _normalised(_render64(best, np.eye(3), np.zeros(3), box))
    return templates


def _normalised(volume: NDArray[np.float64]) -> NDArray[np.float32]:
    """``volume`` flattened, mean-subtracted and scaled to unit norm (for NCC by dot product)."""
    flat = volume.ravel() - volume.mean()
    return (flat / np.linalg.norm(flat)).astype(np.float32)


def _max_similarity(
    candidate: Template,
    accepted: NDArray[np.float32],
    probes: list[NDArray[np.float64]],
    box: int,
) -> float:
    """Largest NCC between ``candidate`` under any probe rotation and any accepted rendering."""
    if len(accepted) == 0:
        return -1.0
    rotated = np.stack([_normalised(_render64(candidate, r, np.zeros(3), box)) for r in probes])
    return float(np.max(rotated @ accepted.T))


# --------------------------------------------------------------------------- rendering


def _render64(
    template: Template, rotation: NDArray[np.float64], shift: NDArray[np.float64], box: int
) -> NDArray[np.float64]:
    """Float64 version of :func:`render`."""
    rotation = np.asarray(rotation, dtype=np.float64)
    shift = np.asarray(shift, dtype=np.float64)
    if rotation.shape != (3, 3) or shift.shape != (3,):
        raise ValueError(
            f"rotation must be (3, 3) and shift (3,), got {rotation.shape}, {shift.shape}"
        )
    centres = template.centres @ rotation.T + shift  # (n, 3) as (x, y, z)
    coords = np.arange(box, dtype=np.float64) - box // 2
    two_var = 2.0 * template.sigmas**2
    # separable Gaussians: g[i, j, a] = exp(-(coords[j] - centres[i, a])**2 / (2 sigma_i**2))
    g = np.exp(-((coords[None, :, None] - centres[:, None, :]) ** 2) / two_var[:, None, None])
    amplitude = template.weights * (np.pi * two_var) ** -1.5
    gx, gy, gz = g[:, :, 0], g[:, :, 1], g[:, :, 2]
    zy = (amplitude[:, None, None] * gz[:, :, None]) * gy[:, None, :]  # (n, z, y)
    n = len(amplitude)
    return (zy.reshape(n, box * box).T @ gx).reshape(box, box, box)


def render(
    template: Template, rotation: NDArray[np.float64], shift: NDArray[np.float64], box: int
) -> NDArray[np.float32]:
    """Sample a rotated and shifted template on a ``(box, box, box)`` ``(z, y, x)`` grid.

    The density is evaluated analytically (sum of Gaussians at voxel centres), not by
    interpolating a grid, so rotations lose nothing.

    Args:
        template: the density.
        rotation: 3x3 rotation matrix acting on ``(x, y, z)`` column vectors; blob centre
            ``c`` moves to ``rotation @ c + shift``.
        shift: ``(x, y, z)`` translation in voxels.
        box: cubic side in voxels; the template origin lands on voxel ``box // 2``.
    """
    return _render64(template, rotation, shift, box).astype(np.float32)


# --------------------------------------------------------------------------- Fourier filters


def _rfft_frequencies(
    box: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """``(kz, ky, kx)`` in cycles per voxel, broadcastable to the rfftn layout of ``box**3``."""
    k_full = np.fft.fftfreq(box)
    return (
        k_full[:, None, None],
        k_full[None, :, None],
        np.fft.rfftfreq(box)[None, None, :],
    )


def electron_wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Angstrom for an acceleration voltage in kV.

    ``lambda = h / sqrt(2 m0 e V (1 + e V / (2 m0 c**2)))`` (0.0197 A at 300 kV).
    """
    m0, e, c = constants.m_e, constants.e, constants.c
    volts = voltage_kv * 1e3
    momentum = math.sqrt(2.0 * m0 * e * volts * (1.0 + e * volts / (2.0 * m0 * c**2)))
    return constants.h / momentum * 1e10


def ctf_3d(
    box: int,
    voxel_size: float,
    defocus_um: float,
    voltage_kv: float,
    cs_mm: float,
    amplitude_contrast: float,
) -> NDArray[np.float64]:
    """Isotropic 3D phase-contrast CTF sampled on the rfftn grid of a ``box**3`` volume.

    ``CTF(k) = -sqrt(1 - A**2) sin(chi) - A cos(chi)`` with
    ``chi = pi lambda df k**2 - pi/2 Cs lambda**3 k**4``, all lengths in Angstrom:
    ``k = |k|`` in 1/Angstrom, ``lambda`` the relativistic wavelength
    (:func:`electron_wavelength`), ``Cs = cs_mm * 1e7`` and ``df = -defocus_um * 1e4``,
    **positive for underfocus** internally, while ``defocus_um`` follows the cryo-ET
    habit of negative underfocus.

    Sign: ``CTF(0) = -A``, and for underfocus the CTF is negative up to its first zero,
    so a positive density comes out dark, as protein does in raw cryo-ET data.

    The same CTF is applied in every direction (no per-tilt defocus gradient), the usual
    simplification for subtomogram simulation.

    Args:
        box: cubic side of the volume in voxels.
        voxel_size: Angstrom per voxel (Nyquist is ``1 / (2 voxel_size)``).
        defocus_um: defocus in micrometres, negative for underfocus.
        voltage_kv: acceleration voltage in kV.
        cs_mm: spherical aberration in mm.
        amplitude_contrast: amplitude contrast fraction ``A`` in [0, 1).

    Returns:
        float64 array of shape ``(box, box, box // 2 + 1)`` in the unshifted
        ``numpy.fft.rfftn`` layout of a ``(z, y, x)`` volume.
    """
    kz, ky, kx = _rfft_frequencies(box)
    k2 = (kz**2 + ky**2 + kx**2) / voxel_size**2  # (1/Angstrom)**2
    wavelength = electron_wavelength(voltage_kv)
    df = -defocus_um * 1e4
    cs = cs_mm * 1e7
    chi = np.pi * wavelength * df * k2 - 0.5 * np.pi * cs * wavelength**3 * k2**2
    a = amplitude_contrast
    return -math.sqrt(1.0 - a * a) * np.sin(chi) - a * np.cos(chi)


def missing_wedge_mask(box: int, tilt_range_deg: float) -> NDArray[np.bool_]:
    """Fourier coefficients a +-``tilt_range_deg`` single-axis tilt series samples.

    The beam runs along z and the tilt axis is y, so each tilt contributes a central
    slice containing the ky axis, at an angle up to ``tilt_range_deg`` from the kx axis
    in the (kx, kz) plane. A coefficient is sampled (True) when
    ``|kz| <= tan(tilt_range) |kx|``; this keeps ``k = 0`` and the whole ky axis and
    loses the rest of the kz axis. ``tilt_range_deg = 90`` samples everything.

    Returns:
        bool array of shape ``(box, box, box // 2 + 1)``, the rfftn layout of a
        ``(z, y, x)`` volume (unshifted).
    """
    kz, ky, kx = _rfft_frequencies(box)
    tilt = math.radians(tilt_range_deg)
    # |kz| cos(t) <= |kx| sin(t) avoids tan(90 deg); the epsilon keeps boundary points
    sampled = np.abs(kz) * math.cos(tilt) <= np.abs(kx) * math.sin(tilt) + 1e-12
    return np.broadcast_to(sampled, (box, box, box // 2 + 1)).copy()


def _transfer(config: SimulationConfig) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """The CTF and missing-wedge mask a config describes."""
    ctf = ctf_3d(
        config.box,
        config.voxel_size,
        config.defocus_um,
        config.voltage_kv,
        config.cs_mm,
        config.amplitude_contrast,
    )
    return ctf, missing_wedge_mask(config.box, config.tilt_range_deg)


# --------------------------------------------------------------------------- one volume


class VolumeParts(NamedTuple):
    """The two additive parts of a simulated volume (each ``float32`` ``(z, y, x)``).

    ``var(signal) / var(noise) == snr``; volumes are in units of the noise standard
    deviation (``var(noise) == 1``).
    """

    signal: NDArray[np.float32]
    noise: NDArray[np.float32]


def random_pose(
    rng: np.random.Generator, max_shift: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """A uniformly random rotation (Haar measure on SO(3)) and shift.

    Returns:
        ``(rotation, shift)``: a 3x3 matrix acting on ``(x, y, z)`` vectors, and an
        ``(x, y, z)`` shift with each coordinate uniform in ``[-max_shift, max_shift]``
        voxels.
    """
    rotation = _random_rotation(rng)
    shift = rng.uniform(-max_shift, max_shift, size=3)
    return rotation, shift


def _random_rotation(rng: np.random.Generator) -> NDArray[np.float64]:
    """A Haar-uniform random rotation matrix (acting on ``(x, y, z)`` vectors).

    A normalised 4D Gaussian is a uniform unit quaternion: the construction of
    ``Rotation.random``, written out so the draws (and so the files) do not depend on the
    scipy version (its keyword changed from ``random_state`` to ``rng`` in 1.15).
    """
    return Rotation.from_quat(rng.standard_normal(4)).as_matrix()


def _simulate_parts64(
    template: Template,
    rng: np.random.Generator,
    config: SimulationConfig,
    signal_filter: NDArray[np.float64],
    noise_filter: NDArray[np.bool_],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Filtered signal and noise (float64) scaled to ``var(noise) = 1``, ``var(signal) = snr``."""
    box = config.box
    shape = (box, box, box)
    rotation, shift = random_pose(rng, config.max_shift)
    density = _render64(template, rotation, shift, box)
    signal = sfft.irfftn(sfft.rfftn(density) * signal_filter, s=shape)
    noise = sfft.irfftn(sfft.rfftn(rng.standard_normal(shape)) * noise_filter, s=shape)
    signal *= math.sqrt(config.snr / np.var(signal))
    noise *= 1.0 / math.sqrt(np.var(noise))
    return signal, noise


def _filters(
    config: SimulationConfig,
    ctf: NDArray[np.float64] | None,
    wedge: NDArray[np.bool_] | None,
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Signal filter ``wedge * ctf`` and noise filter ``wedge``, defaults from the config."""
    if ctf is None or wedge is None:
        default_ctf, default_wedge = _transfer(config)
        ctf = default_ctf if ctf is None else ctf
        wedge = default_wedge if wedge is None else wedge
    return ctf * wedge, wedge


def simulate_parts(
    template: Template,
    rng: np.random.Generator,
    config: SimulationConfig,
    ctf: NDArray[np.float64] | None = None,
    wedge: NDArray[np.bool_] | None = None,
) -> VolumeParts:
    """The signal and noise parts of :func:`simulate_volume` (same arguments, same draws).

    ``simulate_volume(t, rng_a, c)`` equals ``sum(simulate_parts(t, rng_b, c))`` up to
    float32 rounding when ``rng_a`` and ``rng_b`` start in the same state.
    """
    signal, noise = _simulate_parts64(template, rng, config, *_filters(config, ctf, wedge))
    return VolumeParts(signal.astype(np.float32), noise.astype(np.float32))


def simulate_volume(
    template: Template,
    rng: np.random.Generator,
    config: SimulationConfig,
    ctf: NDArray[np.float64] | None = None,
    wedge: NDArray[np.bool_] | None = None,
) -> NDArray[np.float32]:
    """One simulated subtomogram of ``template``: a ``float32`` ``(z, y, x)`` box.

    Steps: a uniformly random rotation and shift (:func:`random_pose`); the analytic
    rendering (:func:`render`); the signal filtered by ``wedge * ctf`` in Fourier space;
    white Gaussian noise filtered by ``wedge`` (the reconstruction lacks the wedge for
    noise too, but the noise is not CTF-modulated); noise scaled so that
    ``var(signal) / var(noise) == config.snr`` exactly for this volume. The output is in
    units of the noise standard deviation.

    Args:
        template: the class template.
        rng: source of randomness (advanced by this call).
        config: box, SNR, shift range and, when ``ctf``/``wedge`` are not given, the optics.
        ctf: precomputed :func:`ctf_3d` for ``config`` (rfftn layout), to save time.
        wedge: precomputed :func:`missing_wedge_mask` for ``config``.
    """
    signal, noise = _simulate_parts64(template, rng, config, *_filters(config, ctf, wedge))
    return (signal + noise).astype(np.float32)


# --------------------------------------------------------------------------- data set


def _write_mrc(path: Path, volume: NDArray[np.float32], voxel_size: float) -> None:
    """Write ``volume`` to ``path`` as a reproducible float32 MRC with ``voxel_size`` Angstrom."""
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(volume)
        mrc.voxel_size = voxel_size
        # mrcfile stamps the creation time into label 0; a fixed label keeps files byte-identical
        mrc.header.label[0] = MRC_LABEL
        mrc.header.nlabl = 1


def _write_split(
    folder: Path,
    templates: list[Template],
    count_per_class: int,
    seed_sequence: np.random.SeedSequence,
    order_rng: np.random.Generator,
    config: SimulationConfig,
    filters: tuple[NDArray[np.float64], NDArray[np.bool_]],
    tick: Callable[[], None],
) -> Path:
    """Write one split (train or test) into ``folder``; return its ``labels.csv``.

    Volume ``j`` of class ``c`` is drawn from child seed
    ``seed_sequence.spawn(K)[c].spawn(count_per_class)[j]``, so its content depends on
    neither the file order nor on how many volumes other classes have. Files are named
    ``sub_NNNNNN.mrc`` in a random order so the name does not reveal the class.
    """
    folder.mkdir(parents=True, exist_ok=True)
    n_classes = len(templates)
    total = n_classes * count_per_class
    class_seeds = seed_sequence.spawn(n_classes)
    volume_seeds = [s.spawn(count_per_class) for s in class_seeds]
    order = order_rng.permutation(total)  # file position -> volume index (c * count + j)
    width = max(6, len(str(total - 1)))
    rows = []
    for position, volume_index in enumerate(order):
        c, j = divmod(int(volume_index), count_per_class)
        rng = np.random.default_rng(volume_seeds[c][j])
        signal, noise = _simulate_parts64(templates[c], rng, config, *filters)
        name = f"sub_{position:0{width}d}.mrc"
        _write_mrc(folder / name, (signal + noise).astype(np.float32), config.voxel_size)
        rows.append((name, class_name(c, n_classes)))
        tick()
    labels = folder / "labels.csv"
    with labels.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("path", "label"))
        writer.writerows(rows)
    return labels


def simulate_dataset(
    out_dir: Path,
    config: SimulationConfig,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Path, Path | None]:
    """Simulate a labelled data set of subtomograms into ``out_dir``.

    Layout::

        out_dir/simulation.json        dataclasses.asdict(config)
        out_dir/train/sub_000000.mrc   ... K * per_class volumes, shuffled
        out_dir/train/labels.csv       header "path,label"; paths relative to train/
        out_dir/test/...               only when test_per_class > 0

    Labels are :func:`class_name` strings (``class_00``, ...). Every MRC is float32 with
    ``voxel_size`` Angstrom in its header. The same config gives byte-identical files:
    ``SeedSequence(config.seed).spawn(4)`` seeds the templates, the file order, the train
    volumes and the test volumes, and every volume has its own child seed.

    Args:
        out_dir: destination folder (created; existing files of the same name are overwritten).
        config: what to simulate.
        progress: called as ``progress(done, total)`` after each volume is written; it may
            raise (e.g. :class:`~napari_ktal.core.errors.Cancelled`) to stop early.

    Returns:
        ``(train_labels_csv, test_labels_csv)``; the second is None when
        ``config.test_per_class == 0``.

    Raises:
        KtalError: when ``out_dir`` cannot be written.
    """
    out_dir = Path(out_dir)
    template_ss, order_ss, train_ss, test_ss = np.random.SeedSequence(config.seed).spawn(4)
    templates = make_templates(config.classes, config.box, np.random.default_rng(template_ss))
    order_rng = np.random.default_rng(order_ss)
    ctf, wedge = _transfer(config)
    filters = (ctf * wedge, wedge)
    total = config.classes * (config.per_class + config.test_per_class)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "simulation.json").write_text(
            json.dumps(dataclasses.asdict(config), indent=2) + "\n", encoding="utf-8"
        )
        train = _write_split(
            out_dir / "train", templates, config.per_class, train_ss, order_rng, config,
            filters, tick,
        )
        test = None
        if config.test_per_class > 0:
            test = _write_split(
                out_dir / "test", templates, config.test_per_class, test_ss, order_rng, config,
                filters, tick,
            )
    except OSError as exc:
        raise KtalError(f"cannot write the simulated data set to {out_dir}: {exc}") from exc
    return train, test
