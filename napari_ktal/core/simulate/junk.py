"""Junk: what a particle picker returns besides particles, as noise-free densities.

Template matching and pickers return, besides the particles, 30-70% of boxes that hold none:
empty ice, ice contamination, membrane patches, carbon edges, gold fiducials, particles cut by
the box edge or broken, clumps of several particles. Each kind here is one function of a
random generator that renders such a density on the ``(z, y, x)`` grid of a box; the data-set
writer (:mod:`.dataset`) then sends it through the same CTF, missing wedge and noise as the
particles, with the signal variance scaled to ``snr * CONTRAST[kind]`` (ice and gold scatter
far more than protein; an empty box has only faint thickness variations of the ice).

Conventions as in :mod:`.templates`: points are ``(x, y, z)`` voxels from the box centre (the
voxel ``box // 2``); every length is a fraction of the box side, so a kind looks the same at
any box size (at 1 nm voxels and a 32-voxel box: a 4 nm bilayer, 5-10 nm gold beads). Each
function renders on a grid of side ``n`` (``>= box``; the writer pads) at the sizes of ``box``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import fft as sfft

from .templates import Template, random_rotation, render_density

#: the label every junk volume carries (equal to ``core.project.JUNK_CLASS``; a test checks it)
JUNK_LABEL = "junk"

#: the kinds, in the order junk volume j takes them (kind ``j % 7``): every split holds all kinds alike
JUNK_KINDS = ("empty", "ice", "membrane", "carbon", "gold", "fragment", "aggregate")

#: signal variance relative to a particle's (``snr``), per kind
CONTRAST = {"empty": 0.15, "ice": 3.0, "membrane": 1.0, "carbon": 2.0, "gold": 6.0, "fragment": 1.0,
            "aggregate": 1.5}


def _grid(box: int) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """x, y, z coordinates (voxels from the centre) of every voxel, each shaped ``(box, box, box)``."""
    c = np.arange(box, dtype=np.float64) - box // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    return x, y, z


def _unit(rng: np.random.Generator) -> NDArray[np.float64]:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def empty(rng: np.random.Generator, n: int, box: int, templates: Sequence[Template]) -> NDArray[np.float64]:
    """An empty box: smooth thickness variations of the ice (white noise low-passed at box/6)."""
    white = rng.standard_normal((n, n, n))
    k = np.fft.fftfreq(n)
    kz, ky, kx = np.meshgrid(k, k, np.fft.rfftfreq(n), indexing="ij")
    cutoff = 6.0 / box  # cycles per voxel: features of about box/6
    low = np.exp(-(kx**2 + ky**2 + kz**2) / (2 * cutoff**2))
    return sfft.irfftn(sfft.rfftn(white) * low, s=white.shape)


def ice(rng: np.random.Generator, n: int, box: int, templates: Sequence[Template]) -> NDArray[np.float64]:
    """Ice contamination: 1-3 large, dense, round blobs (sigma 0.1-0.22 box) near the centre."""
    x, y, z = _grid(n)
    out = np.zeros((n, n, n))
    for _ in range(int(rng.integers(1, 4))):
        c = rng.uniform(-0.3, 0.3, size=3) * box
        s = rng.uniform(0.1, 0.22) * box
        out += rng.uniform(0.5, 1.0) * np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (2 * s**2))
    return out


def membrane(rng: np.random.Generator, n: int, box: int, templates: Sequence[Template]) -> NDArray[np.float64]:
    """A membrane fragment: a curved bilayer (two leaflets 0.12 box apart, radius of curvature
    0.6-3 box) passing near the centre, fading out over a patch 0.3-0.6 box wide."""
    x, y, z = _grid(n)
    normal = _unit(rng)
    radius = rng.uniform(0.6, 3.0) * box
    through = normal * rng.uniform(-0.2, 0.2) * box  # where the surface passes the centre region
    centre = through - normal * radius  # sphere centre behind that point
    rho = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2)
    half, width = 0.06 * box, max(0.6, 0.03 * box)
    bilayer = sum(np.exp(-((rho - radius - d) ** 2) / (2 * width**2)) for d in (-half, half))
    # the patch: distance from the point `through`, measured along the surface (roughly)
    patch = rng.uniform(0.3, 0.6) * box
    along = np.sqrt((x - through[0]) ** 2 + (y - through[1]) ** 2 + (z - through[2]) ** 2)
    return bilayer * np.exp(-(along**2) / (2 * patch**2))


def carbon(rng: np.random.Generator, n: int, box: int, templates: Sequence[Template]) -> NDArray[np.float64]:
    """A carbon-film edge: a half space of density with a soft edge (0.5-2 voxels) through the
    box at a random angle, thickening along the film (a gradient)."""
    x, y, z = _grid(n)
    n, t = _unit(rng), _unit(rng)
    offset = rng.uniform(-0.3, 0.3) * box
    soft = rng.uniform(0.5, 2.0)
    side = (x * n[0] + y * n[1] + z * n[2] - offset) / soft
    film = 0.5 * (1.0 + np.tanh(side / 2))  # logistic, without overflow
    gradient = 1.0 + rng.uniform(0.0, 1.0) * (x * t[0] + y * t[1] + z * t[2]) / box
    return film * gradient


def gold(rng: np.random.Generator, n: int, box: int, templates: Sequence[Template]) -> NDArray[np.float64]:
    """Gold fiducials: 1-2 solid beads (radius 0.08-0.15 box) with a sharp edge."""
    x, y, z = _grid(n)
    out = np.zeros((n, n, n))
    for _ in range(int(rng.integers(1, 3))):
        c = rng.uniform(-0.25, 0.25, size=3) * box
        r = rng.uniform(0.08, 0.15) * box
        d = np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2)
        out += 0.5 * (1.0 - np.tanh((d - r) / 0.6))
    return out


def fragment(rng: np.random.Generator, n: int, box: int, templates: Sequence[Template]) -> NDArray[np.float64]:
    """A particle that is no particle pick: half the time off-centre (its centre 0.3-0.5 box away,
    cut by the box edge), half the time broken (only the blobs on one side of a random plane)."""
    t = templates[int(rng.integers(len(templates)))]
    rotation = random_rotation(rng)
    if rng.random() < 0.5:
        return render_density(t, rotation, _unit(rng) * rng.uniform(0.3, 0.5) * box, n)
    side = t.centres @ _unit(rng)
    keep = side >= np.quantile(side, rng.uniform(0.3, 0.6))
    broken = Template(t.centres[keep], t.sigmas[keep], t.weights[keep])
    return render_density(broken, rotation, rng.uniform(-2, 2, size=3), n)


def aggregate(rng: np.random.Generator, n: int, box: int, templates: Sequence[Template]) -> NDArray[np.float64]:
    """An aggregate: 3-6 particles of random classes clumped 0.12-0.3 box around the centre."""
    out = np.zeros((n, n, n))
    for _ in range(int(rng.integers(3, 7))):
        t = templates[int(rng.integers(len(templates)))]
        out += render_density(t, random_rotation(rng), _unit(rng) * rng.uniform(0.12, 0.3) * box, n)
    return out


RENDER = {"empty": empty, "ice": ice, "membrane": membrane, "carbon": carbon, "gold": gold, "fragment": fragment,
          "aggregate": aggregate}


def junk_kind(j: int) -> str:
    """The kind of junk volume ``j`` of a split (the kinds in turn)."""
    return JUNK_KINDS[j % len(JUNK_KINDS)]


def junk_density(kind: str, rng: np.random.Generator, n: int, templates: Sequence[Template],
                 scale: int | None = None) -> NDArray[np.float64]:
    """The noise-free density of one junk volume of ``kind`` (not yet filtered or scaled) on a
    grid of side ``n``, its sizes those of a box of side ``scale`` (default ``n``): the data-set
    writer renders on a grid twice the box, filters and crops."""
    density = RENDER[kind](rng, n, n if scale is None else scale, templates)
    if not np.isfinite(density).all() or float(np.ptp(density)) <= 0.0:  # pragma: no cover (a kind's bug)
        raise ValueError(f"junk kind {kind!r} rendered no density")
    return density


def junk_count(n_particles: int, fraction: float) -> int:
    """Junk volumes to add to ``n_particles`` so that junk is ``fraction`` of the split."""
    return 0 if fraction <= 0 else int(math.floor(n_particles * fraction / (1.0 - fraction) + 0.5))
