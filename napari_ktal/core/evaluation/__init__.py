"""Judging a run: numbers from predictions and histories, no training and no cycles.

- :mod:`.metrics`  accuracy, balanced accuracy, per-class recall, particle accuracy of predictions
- :mod:`.stats`    paired comparisons of strategies over seeds: bootstrap intervals, Wilcoxon p
- :mod:`.summary`  per-cycle numbers of a project for the widget's plot; labeling times
- :mod:`.plots`    learning curves as PNG (matplotlib, imported only when drawing)

The loop (:mod:`napari_ktal.core.loop`) scores each cycle and compares strategies with these;
nothing here imports the loop.
"""

from .metrics import score_predictions
from .stats import bootstrap_ci, paired_comparison

__all__ = ["bootstrap_ci", "paired_comparison", "score_predictions"]
