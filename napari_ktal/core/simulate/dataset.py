"""Deterministic simulation of realistic cryo-ET subtomograms.

The simulator follows the recipe of the synthetic "50c-snr005" data set of
*Boosting Active Learning with Knowledge Transfer*: ``K`` distinct
macromolecule-like density templates; every sample is its class template under
a uniformly random 3D rotation and a small shift, filtered by a contrast
transfer function (CTF) and a missing wedge, plus noise at a target
signal-to-noise ratio.

The parts live beside this module: :mod:`.templates` (the densities and how they are
rendered in a pose) and :mod:`.optics` (CTF and missing wedge); this module adds the
poses, the noise and the data-set writer, and re-exports the public names.

Conventions
-----------
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
import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import mrcfile
import numpy as np
from numpy.typing import NDArray
from scipy import fft as sfft

from ..errors import KtalError
from .junk import CONTRAST as JUNK_CONTRAST
from .junk import JUNK_KINDS, JUNK_LABEL, junk_count, junk_density, junk_kind
from .optics import ctf_3d, electron_wavelength, missing_wedge_mask
from .templates import Template, make_templates, random_rotation, render, render_density

__all__ = [
    "JUNK_KINDS",
    "JUNK_LABEL",
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
        imbalance: training volumes per class fall geometrically from ``per_class`` (class 0)
            to ``per_class / imbalance`` (the last class); 1 is balanced. Test splits stay
            balanced (``test_per_class`` each), so every class is measured alike.
        neighbours: other particles (of random classes, in random poses) around each one,
            centred 0.45-0.7 box sides away from it so that they reach into its box: a
            crowded cytoplasm or a dense picking.
        junk_fraction: share of each split that is junk (label ``junk``): boxes a picker returns
            that hold no particle (empty ice, ice contamination, membrane fragments, carbon edges,
            gold beads, off-centre or broken particles, aggregates; :mod:`.junk`), under the same
            CTF, wedge and noise. In [0, 0.95]; 0 (the default) writes exactly the files of a
            configuration without it. The particle counts stay as given: junk is added to them.
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
    imbalance: float = 1.0
    neighbours: int = 0
    junk_fraction: float = 0.0

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
        _check_float(self, "imbalance", low=1.0, high=1000.0)
        _check_int(self, "neighbours", minimum=0)
        _check_float(self, "junk_fraction", low=0.0, high=0.95)

    def class_counts(self) -> list[int]:
        """Training volumes of each class (``per_class`` each when balanced)."""
        if self.classes == 1 or self.imbalance == 1.0:
            return [self.per_class] * self.classes
        return [max(1, round(self.per_class * self.imbalance ** (-c / (self.classes - 1))))
                for c in range(self.classes)]

    def junk_counts(self) -> tuple[int, int]:
        """Junk volumes of the training and the test split (0 and 0 without ``junk_fraction``)."""
        n_test = self.classes * self.test_per_class
        return (junk_count(sum(self.class_counts()), self.junk_fraction),
                junk_count(n_test, self.junk_fraction) if n_test else 0)


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
    rotation = random_rotation(rng)
    shift = rng.uniform(-max_shift, max_shift, size=3)
    return rotation, shift




def _simulate_parts64(
    template: Template,
    rng: np.random.Generator,
    config: SimulationConfig,
    signal_filter: NDArray[np.float64],
    noise_filter: NDArray[np.bool_],
    neighbours: list[Template] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Filtered signal and noise (float64) scaled to ``var(noise) = 1``, ``var(signal) = snr``.

    ``neighbours``: the templates ``config.neighbours`` neighbouring particles are drawn from.
    """
    box = config.box
    shape = (box, box, box)
    rotation, shift = random_pose(rng, config.max_shift)
    density = render_density(template, rotation, shift, box)
    for _ in range(config.neighbours if neighbours else 0):
        other = neighbours[rng.integers(len(neighbours))]
        direction = rng.standard_normal(3)
        offset = direction / np.linalg.norm(direction) * rng.uniform(0.45, 0.7) * box
        density += render_density(other, random_rotation(rng), offset, box)
    signal = sfft.irfftn(sfft.rfftn(density) * signal_filter, s=shape)
    noise = sfft.irfftn(sfft.rfftn(rng.standard_normal(shape)) * noise_filter, s=shape)
    signal *= math.sqrt(config.snr / np.var(signal))
    noise *= 1.0 / math.sqrt(np.var(noise))
    return signal, noise


def _simulate_junk64(
    kind: str,
    rng: np.random.Generator,
    config: SimulationConfig,
    noise_filter: NDArray[np.bool_],
    templates: list[Template],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """A junk volume of ``kind`` (:mod:`.junk`) with the particles' optics and noise, signal
    variance ``snr * CONTRAST[kind]``, neighbours as around a particle.

    Junk reaches beyond the box (a carbon film, a membrane, ice at the edge), so its density is
    rendered on a box twice as large, filtered there and cropped: filtering the box alone would
    wrap the film's far edge around and draw box-edge features no tomogram has.
    """
    box = config.box
    shape = (box, box, box)
    big = 2 * box
    density = junk_density(kind, rng, big, templates, scale=box)
    for _ in range(config.neighbours):
        other = templates[rng.integers(len(templates))]
        direction = rng.standard_normal(3)
        offset = direction / np.linalg.norm(direction) * rng.uniform(0.45, 0.7) * box
        density += render_density(other, random_rotation(rng), offset, big)
    crop = slice(big // 2 - box // 2, big // 2 - box // 2 + box)  # voxel big//2 -> box//2
    signal = sfft.irfftn(sfft.rfftn(density) * _padded_filter(config), s=density.shape)[crop, crop, crop]
    noise = sfft.irfftn(sfft.rfftn(rng.standard_normal(shape)) * noise_filter, s=shape)
    signal *= math.sqrt(config.snr * JUNK_CONTRAST[kind] / np.var(signal))
    noise *= 1.0 / math.sqrt(np.var(noise))
    return signal, noise


@functools.lru_cache(maxsize=4)
def _padded_filter(config: SimulationConfig) -> NDArray[np.float64]:
    """``wedge * ctf`` of ``config``'s optics on a box twice the size."""
    padded = dataclasses.replace(config, box=2 * config.box, max_shift=0.0)
    ctf, wedge = _transfer(padded)
    return ctf * wedge


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
    counts: list[int],
    seed_sequence: np.random.SeedSequence,
    order_rng: np.random.Generator,
    config: SimulationConfig,
    filters: tuple[NDArray[np.float64], NDArray[np.bool_]],
    tick: Callable[[], None],
    n_junk: int = 0,
) -> Path:
    """Write one split (train or test) into ``folder``; return its ``labels.csv``.

    Volume ``j`` of class ``c`` is drawn from child seed
    ``seed_sequence.spawn(K)[c].spawn(counts[c])[j]``, so its content depends on neither
    the file order nor on how many volumes other classes have. Files are named
    ``sub_NNNNNN.mrc`` in a random order so the name does not reveal the class.
    Junk volume ``j`` (of ``n_junk``, kind :func:`.junk.junk_kind`) is drawn from child seed
    ``seed_sequence.spawn(K + 1)[K].spawn(n_junk)[j]`` (the spawn after the classes', so the
    particles do not change), and ``junk_kinds.csv`` records each junk file's kind.
    """
    folder.mkdir(parents=True, exist_ok=True)
    n_classes = len(templates)
    n_particles = sum(counts)
    total = n_particles + n_junk
    class_seeds = seed_sequence.spawn(n_classes)
    volume_seeds = [s.spawn(n) for s, n in zip(class_seeds, counts)]
    junk_seeds = seed_sequence.spawn(1)[0].spawn(n_junk) if n_junk else []
    starts = np.cumsum([0, *counts])
    order = order_rng.permutation(total)  # file position -> volume index (classes one after the other, then junk)
    width = max(6, len(str(total - 1)))
    rows, kinds = [], []
    for position, volume_index in enumerate(order):
        name = f"sub_{position:0{width}d}.mrc"
        if volume_index >= n_particles:
            j = int(volume_index) - n_particles
            kind = junk_kind(j)
            rng = np.random.default_rng(junk_seeds[j])
            signal, noise = _simulate_junk64(kind, rng, config, filters[1], templates)
            label = JUNK_LABEL
            kinds.append((name, kind))
        else:
            c = int(np.searchsorted(starts, volume_index, side="right")) - 1
            j = int(volume_index) - int(starts[c])
            rng = np.random.default_rng(volume_seeds[c][j])
            signal, noise = _simulate_parts64(templates[c], rng, config, *filters, neighbours=templates)
            label = class_name(c, n_classes)
        _write_mrc(folder / name, (signal + noise).astype(np.float32), config.voxel_size)
        rows.append((name, label))
        tick()
    labels = folder / "labels.csv"
    _write_csv(labels, ("path", "label"), rows)
    if kinds:
        _write_csv(folder / "junk_kinds.csv", ("path", "kind"), kinds)
    return labels


def _write_csv(path: Path, header: tuple[str, str], rows: list[tuple[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


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

    Labels are :func:`class_name` strings (``class_00``, ...), and ``junk`` for the junk volumes
    of ``config.junk_fraction`` (whose kinds ``junk_kinds.csv`` lists beside ``labels.csv``). Every MRC is float32 with
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
    counts = config.class_counts()
    train_junk, test_junk = config.junk_counts()
    total = sum(counts) + config.classes * config.test_per_class + train_junk + test_junk
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
        train = _write_split(out_dir / "train", templates, counts, train_ss, order_rng, config, filters, tick,
                             n_junk=train_junk)
        test = None
        if config.test_per_class > 0:
            test = _write_split(out_dir / "test", templates, [config.test_per_class] * config.classes, test_ss,
                                order_rng, config, filters, tick, n_junk=test_junk)
    except OSError as exc:
        raise KtalError(f"cannot write the simulated data set to {out_dir}: {exc}") from exc
    return train, test
