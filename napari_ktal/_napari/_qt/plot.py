"""The plot across cycles in the dock: labeled volumes per class, batch uncertainty, accuracy.

The numbers come from :func:`napari_ktal.core.loop.summary.cycle_summary`; :class:`CyclePlot`
draws them with matplotlib's Qt canvas, in napari's theme colours.
"""

from __future__ import annotations

import math

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

from ...core.loop.summary import CycleRow
from ...core.progress import clock
from ..palette import class_color

DEFAULT_THEME = {"background": "#262930", "text": "#f0f1f2", "grid": "#5a626c"}
TOOLTIP = (
    "Top: labeled volumes per class after each cycle's batch (the classes' colours, as on their buttons).\n"
    "Bottom, green: how often the previous cycle's teacher predicted the label you gave, on the\n"
    "batch it queried (the volumes it was least sure of: a pessimistic accuracy estimate).\n"
    "Blue: test accuracy (dashed: balanced), when the project is trained with a test set (ktal-cryo train --test).\n"
    "Orange (right axis): mean knowledge-transfer uncertainty of the batch.")


def theme_colors(viewer) -> dict:
    """The plot's colours from the viewer's napari theme."""
    try:
        from napari.utils.theme import get_theme

        theme = get_theme(viewer.theme)
        return {"background": theme.background.as_hex(), "text": theme.text.as_hex(),
                "grid": theme.primary.as_hex()}
    except (KeyError, AttributeError, ValueError):  # an unknown theme: the plot keeps its defaults
        return dict(DEFAULT_THEME)


def times_text(rows: list[CycleRow], last: int = 4) -> str:
    """Per cycle: how long labeling its batch and training it took (the last few cycles)."""
    lines = []
    for r in rows[-last:]:
        lab = "—" if math.isnan(r.labeling_seconds) else clock(r.labeling_seconds)
        train = "not trained yet" if math.isnan(r.train_seconds) else clock(r.train_seconds)
        lines.append(f"cycle {r.cycle}: labeling {lab}, training {train}")
    return "\n".join(lines)


def _key(rows: list[CycleRow]) -> str:
    return repr(rows)  # NaN != NaN: compare what is drawn by its text


class CyclePlot(FigureCanvasQTAgg):
    """Two small panels: labeled volumes per class (stacked bars); accuracy and uncertainty.

    A matplotlib redraw costs a few hundred ms on a slow CPU, all of it on the GUI thread,
    so the canvas has a fixed height (a relayout of the dock must not resize and redraw it),
    a fixed layout (no constrained-layout solve) and redraws only when its numbers change.
    """

    HEIGHT = 250

    def __init__(self, theme: dict | None = None, parent=None):
        self._theme = dict(theme or DEFAULT_THEME)
        fig = Figure(figsize=(3.6, self.HEIGHT / 90), dpi=90)
        super().__init__(fig)
        self.setParent(parent)
        self.setFixedHeight(self.HEIGHT)
        self.setToolTip(TOOLTIP)
        self.rows: list[CycleRow] | None = None
        self.update_rows([])

    def set_theme(self, theme: dict) -> None:
        self._theme = dict(theme)
        rows, self.rows = self.rows or [], None
        self.update_rows(rows)

    def _style(self, ax) -> None:
        t = self._theme
        ax.set_facecolor(t["background"])
        ax.tick_params(colors=t["text"], labelsize=7)
        for spine in ax.spines.values():
            spine.set_color(t["grid"])
        ax.yaxis.label.set_color(t["text"])
        ax.xaxis.label.set_color(t["text"])

    def update_rows(self, rows: list[CycleRow]) -> None:
        if self.rows is not None and _key(rows) == _key(self.rows):
            return
        self.rows = rows
        times = times_text(rows)
        self.setToolTip(TOOLTIP + ("\n\n" + times if times else ""))
        fig = self.figure
        fig.clear()
        fig.patch.set_facecolor(self._theme["background"])
        top, acc = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
        fig.subplots_adjust(left=0.15, right=0.85, top=0.97, bottom=0.17, hspace=0.12)
        for ax in (top, acc):
            self._style(ax)
        cycles = [r.cycle for r in rows]
        legend = {"fontsize": 6, "frameon": False, "labelcolor": self._theme["text"]}
        if rows:
            base = [0] * len(rows)
            for k, name in enumerate(rows[-1].counts):
                values = [r.counts.get(name, 0) for r in rows]
                top.bar(cycles, values, bottom=base, label=name, width=0.7, color=class_color(k))
                base = [b + v for b, v in zip(base, values)]
            top.legend(ncols=2, loc="upper left", **legend)
            top.set_xticks(cycles)
            top.set_xlim(min(cycles) - 0.6, max(cycles) + 0.6)
            top.set_ylim(0, max(base) * 1.6 + 1)  # room for the legend
        top.set_ylabel("labeled", fontsize=7)
        acc.set_ylim(0, 105)
        acc.set_xlabel("cycle", fontsize=7, labelpad=1)
        acc.plot(cycles, [100 * r.agreement for r in rows], "o-", ms=3, color="tab:green", label="agreed")
        if any(not math.isnan(r.test_accuracy) for r in rows):
            acc.plot(cycles, [100 * r.test_accuracy for r in rows], "s-", ms=3, color="tab:blue", label="test")
            if any(not math.isnan(r.test_balanced_accuracy) for r in rows):
                acc.plot(cycles, [100 * r.test_balanced_accuracy for r in rows], "s--", ms=2, color="tab:blue",
                         alpha=0.7, label="balanced")
            acc.legend(loc="lower right", **legend)
            acc.set_ylabel("accuracy %", fontsize=7)
        else:
            acc.set_ylabel("agreed %", fontsize=7, color="tab:green")
        unc = acc.twinx()
        self._style(unc)
        unc.plot(cycles, [r.mean_score for r in rows], "^--", ms=3, color="tab:orange")
        unc.set_ylabel("uncertainty", fontsize=7, color="tab:orange")
        unc.set_ylim(bottom=0)
        self.draw_idle()
