"""Imaging physics of the simulator: the contrast transfer function and the missing wedge.

Fourier-space arrays use the ``numpy.fft.rfftn`` layout of a ``(z, y, x)`` volume: shape
``(box, box, box // 2 + 1)``, unshifted (zero frequency at ``[0, 0, 0]``), the last axis
holding the non-negative ``kx``. The beam runs along ``z``; the tilt axis is ``y``.
Spatial frequencies are in cycles per Angstrom unless a name says otherwise.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy import constants


def _shape(box: int | tuple[int, int, int]) -> tuple[int, int, int]:
    """A cubic side, or a (z, y, x) shape (a whole tomogram), as a (z, y, x) shape."""
    return (box, box, box) if np.isscalar(box) else tuple(int(s) for s in box)


def _rfft_frequencies(
    box: int | tuple[int, int, int],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """``(kz, ky, kx)`` in cycles per voxel, broadcastable to the rfftn layout of ``box**3``
    (or of a (z, y, x) shape)."""
    nz, ny, nx = _shape(box)
    return (
        np.fft.fftfreq(nz)[:, None, None],
        np.fft.fftfreq(ny)[None, :, None],
        np.fft.rfftfreq(nx)[None, None, :],
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
    box: int | tuple[int, int, int],
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
        box: cubic side of the volume in voxels, or a (z, y, x) shape.
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


def missing_wedge_mask(box: int | tuple[int, int, int], tilt_range_deg: float) -> NDArray[np.bool_]:
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
    nz, ny, nx = _shape(box)
    return np.broadcast_to(sampled, (nz, ny, nx // 2 + 1)).copy()
