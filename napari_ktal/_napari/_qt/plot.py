"""The plot across cycles in the dock: labeled volumes per class, batch uncertainty, accuracy.

The numbers come from :func:`napari_ktal.core.evaluation.summary.cycle_summary`; :class:`CyclePlot`
draws them with QPainter, in napari's theme colours and the classes' colours. (It was a
matplotlib canvas: a redraw cost 0.3-0.5 s of the GUI thread on a 2-core laptop at every
cycle's end, so the event loop stalled just when the new batch arrived. QPainter draws it
in a few milliseconds.)
"""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

from ...core.evaluation.summary import CycleRow
from ...core.progress import clock
from ..palette import class_color

DEFAULT_THEME = {"background": "#262930", "text": "#f0f1f2", "grid": "#5a626c"}
GREEN, BLUE, ORANGE = "#2ca02c", "#1f77b4", "#ff7f0e"
TOOLTIP = (
    "Top: labeled volumes per class after each cycle's batch (the classes' colours, as on their buttons).\n"
    "Bottom, green: how often the previous cycle's teacher predicted the label you gave, on the\n"
    "batch it queried (the volumes it was least sure of: a pessimistic accuracy estimate).\n"
    "Blue: test accuracy (dashed: balanced), when the project is trained with a test set (ktal-cryo train --test).\n"
    "Orange, dashed (right axis): mean knowledge-transfer uncertainty of the batch.")


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


class CyclePlot(QWidget):
    """Two panels: labeled volumes per class (stacked bars); accuracy and uncertainty (lines)."""

    HEIGHT = 250

    def __init__(self, theme: dict | None = None, parent=None):
        super().__init__(parent)
        self._theme = dict(theme or DEFAULT_THEME)
        self.setFixedHeight(self.HEIGHT)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip(TOOLTIP)
        self.rows: list[CycleRow] = []

    def set_theme(self, theme: dict) -> None:
        self._theme = dict(theme)
        self.update()

    def update_rows(self, rows: list[CycleRow]) -> None:
        if repr(rows) == repr(self.rows):  # NaN != NaN: compare what is drawn by its text
            return
        self.rows = list(rows)
        times = times_text(self.rows)
        self.setToolTip(TOOLTIP + ("\n\n" + times if times else ""))
        self.update()

    # -- drawing ----------------------------------------------------------------------------------------
    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        t = self._theme
        p.fillRect(self.rect(), QColor(t["background"]))
        font = QFont(self.font())
        font.setPointSizeF(7.0)
        p.setFont(font)
        fm = p.fontMetrics()
        left, right, top, bottom = fm.horizontalAdvance("100%") + 8, fm.horizontalAdvance("0.000") + 10, 4, \
            fm.height() + 6
        w, h = self.width() - left - right, self.height() - top - bottom
        bars = QRectF(left, top, w, 0.58 * h - 4)
        lines = QRectF(left, top + 0.58 * h + 4, w, 0.42 * h - 4)
        rows = self.rows
        n = max(1, len(rows))
        step = w / n

        def x_of(k: int) -> float:
            return left + (k + 0.5) * step

        self._axes(p, bars, lines, fm)
        if rows:
            classes = list(rows[-1].counts)
            total = max(1, max(sum(r.counts.values()) for r in rows))
            legend_rows = min((len(classes) + 1) // 2, int(0.45 * bars.height() / fm.height()))
            scale = (bars.height() - fm.height() * legend_rows) / total  # room for the legend
            for k, r in enumerate(rows):
                base = bars.bottom()
                for c, name in enumerate(classes):
                    v = r.counts.get(name, 0) * scale
                    if v > 0:
                        p.fillRect(QRectF(x_of(k) - 0.35 * step, base - v, 0.7 * step, v), QColor(class_color(c)))
                        base -= v
            self._legend(p, bars, classes[:2 * legend_rows], fm)
            p.setPen(QColor(t["text"]))
            for k, r in enumerate(rows):
                p.drawText(QRectF(x_of(k) - step / 2, lines.bottom() + 2, step, fm.height()),
                           Qt.AlignmentFlag.AlignHCenter, str(r.cycle))
            p.drawText(QRectF(left, top, w - 2, fm.height()), Qt.AlignmentFlag.AlignRight,
                       f"{sum(rows[-1].counts.values())} labeled")
        pct = [lines.bottom() - lines.height() * v for v in (0.0, 0.5, 1.0)]
        p.setPen(QColor(t["text"]))
        for y, text in zip(pct, ("0%", "50%", "100%")):
            p.drawText(QRectF(0, y - fm.height() / 2, left - 4, fm.height()), Qt.AlignmentFlag.AlignRight, text)
        unc = [r.mean_score for r in rows if not math.isnan(r.mean_score)]
        u_max = max(unc) * 1.1 if unc else 1.0
        if unc:
            p.setPen(QColor(ORANGE))
            p.drawText(QRectF(lines.right() + 4, lines.top() - 2, right, fm.height()), Qt.AlignmentFlag.AlignLeft,
                       f"{u_max:.3g}")
        series = [
            ([r.agreement for r in rows], GREEN, Qt.PenStyle.SolidLine, 1.0),
            ([r.test_accuracy for r in rows], BLUE, Qt.PenStyle.SolidLine, 1.0),
            ([r.test_balanced_accuracy for r in rows], BLUE, Qt.PenStyle.DashLine, 1.0),
            ([r.mean_score for r in rows], ORANGE, Qt.PenStyle.DashLine, u_max),
        ]
        for values, color, style, top_value in series:
            pts = [QPointF(x_of(k), lines.bottom() - lines.height() * min(1.0, v / top_value))
                   for k, v in enumerate(values) if not math.isnan(v)]
            if not pts:
                continue
            p.setPen(QPen(QColor(color), 1.5, style))
            if len(pts) > 1:
                p.drawPolyline(QPolygonF(pts))
            p.setBrush(QColor(color))
            for pt in pts:
                p.drawEllipse(pt, 2.2, 2.2)
            p.setBrush(Qt.BrushStyle.NoBrush)
        p.end()

    def _axes(self, p: QPainter, bars: QRectF, lines: QRectF, fm) -> None:
        p.setPen(QPen(QColor(self._theme["grid"]), 1))
        for r in (bars, lines):
            p.drawLine(r.bottomLeft(), r.bottomRight())
            p.drawLine(r.bottomLeft(), r.topLeft())
        p.drawLine(lines.bottomRight(), lines.topRight())
        p.setPen(QPen(QColor(self._theme["grid"]), 1, Qt.PenStyle.DotLine))
        y = lines.bottom() - lines.height() / 2
        p.drawLine(QPointF(lines.left(), y), QPointF(lines.right(), y))

    def _legend(self, p: QPainter, bars: QRectF, classes: list[str], fm) -> None:
        col_w = bars.width() / 2
        for c, name in enumerate(classes):
            x = bars.left() + 4 + (c % 2) * col_w
            y = bars.top() + (c // 2) * fm.height()
            p.fillRect(QRectF(x, y + fm.height() / 4, fm.height() / 2, fm.height() / 2), QColor(class_color(c)))
            p.setPen(QColor(self._theme["text"]))
            p.drawText(QRectF(x + fm.height() * 0.7, y, col_w - fm.height(), fm.height()), Qt.AlignmentFlag.AlignLeft,
                       fm.elidedText(name, Qt.TextElideMode.ElideRight, int(col_w - fm.height())))
