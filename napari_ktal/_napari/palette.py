"""Class colours: one palette for the gallery, the class buttons, the examples and the plot.

A class keeps its colour for as long as it keeps its place in the project's class list (a
rename keeps it). The colours are a Glasbey palette (Glasbey, van der Heijden, Toh & Gray,
"Colour displays for categorical images", Color Res. Appl. 2007), made for many categories:
each next colour is the candidate farthest, in CIELAB, from every colour before it, so the 31
classes that have a key (and any beyond) are told apart pairwise, not only from their
neighbours in the list. The candidates are an sRGB grid restricted to a lightness that reads as
a frame or a swatch on napari's dark and light themes and to a chroma that keeps them off the
grey of unlabeled volumes; that grey and both theme backgrounds count as colours already taken.
The palette is computed (once, in milliseconds) from these fixed settings, not from napari's
theme, so a project's colours do not change with napari's version. No Qt here: colours are
``#rrggbb`` strings.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

UNLABELED = "#5a626c"  # a volume without a label (napari's dark-theme grey)
THEME_BACKGROUNDS = ("#262930", "#efebe9")  # napari's dark and light themes
GRID_STEPS = 21  # candidate sRGB levels per channel (every 0.05)
LIGHTNESS = (45.0, 85.0)  # CIELAB L* of the candidates
MIN_CHROMA = 25.0  # CIELAB chroma of the candidates: no greys


def class_color(k: int) -> str:
    """The colour of the class at position ``k`` (0-based) of the project's classes."""
    if k < 0:
        return UNLABELED
    palette = _palette(max(32, 1 << (k + 1).bit_length()))  # grown in powers of two: a few cached sizes
    return palette[k % len(palette)]  # (more classes than candidate colours: never in practice)


def class_colors(classes: list[str]) -> dict[str, str]:
    """{class name: colour} for a project's class list."""
    return {name: class_color(k) for k, name in enumerate(classes)}


def text_color_on(hex_color: str) -> str:
    """Black or white, whichever has the higher contrast ratio on ``hex_color`` (at least 4.58: WCAG AA)."""
    return max(("#000000", "#ffffff"), key=lambda text: contrast_ratio(text, hex_color))


def contrast_ratio(a: str, b: str) -> float:
    """WCAG 2's contrast ratio of two colours, 1 (none) to 21 (black on white)."""
    hi, lo = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def relative_luminance(hex_color: str) -> float:
    """WCAG 2's relative luminance of an sRGB colour (CIE Y), 0 (black) to 1 (white)."""
    return float(_linear(np.array(_rgb(hex_color))) @ _SRGB_TO_XYZ[1])


@lru_cache(maxsize=8)
def _palette(n: int) -> tuple[str, ...]:
    """The first ``n`` Glasbey colours (greedy: the first ``m`` are the same for any ``n >= m``)."""
    levels = np.linspace(0.0, 1.0, GRID_STEPS)
    candidates = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    lab = srgb_to_lab(candidates)
    chroma = np.hypot(lab[:, 1], lab[:, 2])
    keep = (lab[:, 0] >= LIGHTNESS[0]) & (lab[:, 0] <= LIGHTNESS[1]) & (chroma >= MIN_CHROMA)
    candidates, lab = candidates[keep], lab[keep]
    taken = srgb_to_lab(np.array([_rgb(c) for c in (UNLABELED, *THEME_BACKGROUNDS)]))
    nearest = np.min(np.linalg.norm(lab[:, None, :] - taken[None, :, :], axis=-1), axis=1)
    chosen = []
    for _ in range(min(n, len(candidates))):
        i = int(np.argmax(nearest))  # the first of equals: deterministic
        chosen.append(candidates[i])
        nearest = np.minimum(nearest, np.linalg.norm(lab - lab[i], axis=1))
    return tuple("#" + "".join(f"{round(255 * v):02x}" for v in rgb) for rgb in chosen)


_SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],  # linear sRGB -> CIE XYZ (D65)
                         [0.2126729, 0.7151522, 0.0721750],
                         [0.0193339, 0.1191920, 0.9503041]])
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])


def _linear(rgb: np.ndarray) -> np.ndarray:
    """sRGB channel values in [0, 1] without their gamma."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB colours with channels in [0, 1] (the last axis)."""
    xyz = _linear(rgb) @ _SRGB_TO_XYZ.T / _D65_WHITE
    eps = (6 / 29) ** 3
    f = np.where(xyz > eps, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def _rgb(hex_color: str) -> tuple[float, float, float]:
    return tuple(int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5))
