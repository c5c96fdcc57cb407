"""Procedural macromolecule-like density templates, and rendering them in any pose.

A template is a cluster of Gaussian blobs (some classes with cyclic symmetry), rescaled so
every class has the same radius of gyration and mass: classes differ in shape, not in size.
Rendering is analytic (a sum of Gaussians at the rotated, shifted centres), so no grid is
ever interpolated.

Conventions: volumes are ``(z, y, x)``; points and shifts are ``(x, y, z)`` vectors in voxels
from the box centre (index ``box // 2``); a rotation is a 3x3 matrix acting on ``(x, y, z)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

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
    probes = [random_rotation(rng) for _ in range(SIMILARITY_PROBES)]
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
        accepted[k] = _normalised(render_density(best, np.eye(3), np.zeros(3), box))
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
    rotated = np.stack([_normalised(render_density(candidate, r, np.zeros(3), box)) for r in probes])
    return float(np.max(rotated @ accepted.T))


# --------------------------------------------------------------------------- rendering


def render_density(
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
    return render_density(template, rotation, shift, box).astype(np.float32)


def random_rotation(rng: np.random.Generator) -> NDArray[np.float64]:
    """A Haar-uniform random rotation matrix (acting on ``(x, y, z)`` vectors).

    A normalised 4D Gaussian is a uniform unit quaternion: the construction of
    ``Rotation.random``, written out so the draws (and so the files) do not depend on the
    scipy version (its keyword changed from ``random_state`` to ``rng`` in 1.15).
    """
    return Rotation.from_quat(rng.standard_normal(4)).as_matrix()
