"""Class colours: one palette for the gallery, the class buttons, the examples and the plot.

A class keeps its colour for as long as it keeps its place in the project's class list (a
rename keeps it). The first ten are matplotlib's ``tab10`` (distinct on napari's dark and
light themes); after that, hues spaced by the golden angle, so any number of classes get
colours that differ from their neighbours. No Qt here: colours are ``#rrggbb`` strings.
"""

from __future__ import annotations

import colorsys

TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
         "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
UNLABELED = "#5a626c"  # a volume without a label (napari's dark-theme grey)


def class_color(k: int) -> str:
    """The colour of the class at position ``k`` (0-based) of the project's classes."""
    if k < 0:
        return UNLABELED
    if k < len(TAB10):
        return TAB10[k]
    hue = (0.11 + 0.381966 * (k - len(TAB10))) % 1.0  # golden-angle steps
    light = 0.55 if (k // 3) % 2 else 0.45
    r, g, b = colorsys.hls_to_rgb(hue, light, 0.65)
    return f"#{round(255 * r):02x}{round(255 * g):02x}{round(255 * b):02x}"


def class_colors(classes: list[str]) -> dict[str, str]:
    """{class name: colour} for a project's class list."""
    return {name: class_color(k) for k, name in enumerate(classes)}


def text_color_on(hex_color: str) -> str:
    """Black or white, whichever reads better on ``hex_color``."""
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "#ffffff"
