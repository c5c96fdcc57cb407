"""Learning-curve figures written as PNG (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_open


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def learning_curve_png(history: list[dict], path: str | Path, n_pool: int | None = None, title: str = "") -> Path:
    """:func:`learning_curve_figure` written to ``path`` (atomically)."""
    fig = learning_curve_figure(history, n_pool, title)
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    return path


def learning_curve_figure(history: list[dict], n_pool: int | None = None, title: str = ""):
    """Test accuracy (left axis) and mean queried uncertainty (right axis) against labeled volumes;
    where history has it, the accuracy estimated from the audit slices, with its interval, beside the
    test accuracy (on real data, the only accuracy there is)."""
    from matplotlib.figure import Figure  # imported here: keeps `import napari_ktal.core` light

    n = [_num(r["n_labeled"]) for r in history]
    acc = [_num(r["test_accuracy"]) * 100 for r in history]
    bal = [_num(r.get("test_balanced_accuracy")) * 100 for r in history]
    unc = [_num(r["mean_uncertainty"]) for r in history]
    est, low, high = ([_num(r.get(k)) * 100 for r in history]
                      for k in ("estimated_accuracy", "estimated_accuracy_low", "estimated_accuracy_high"))
    fig = Figure(figsize=(6, 4), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    if any(a == a for a in acc):  # any non-NaN: there is a test set
        ax.plot(n, acc, "o-", color="tab:blue", label="teacher test accuracy")
    if any(b == b for b in bal):
        ax.plot(n, bal, "s:", color="tab:blue", alpha=0.7, label="balanced accuracy (mean recall per class)")
    if any(e == e for e in est):
        ax.fill_between(n, low, high, color="tab:green", alpha=0.15, linewidth=0, label="95% interval of the estimate")
        ax.plot(n, est, "d-", color="tab:green", label="estimated accuracy (audit volumes)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize="small")
    ax.set_xlabel("labeled volumes" + (f" (pool of {n_pool})" if n_pool else ""))
    ax.set_ylabel("accuracy (%)", color="tab:blue")
    ax.grid(alpha=0.3)
    if any(u == u for u in unc):  # any non-NaN
        ax2 = ax.twinx()
        ax2.plot(n, unc, "s--", color="tab:orange", label="mean uncertainty of queried batch")
        ax2.set_ylabel("mean uncertainty of queried batch", color="tab:orange")
        ax.set_zorder(ax2.get_zorder() + 1)  # the accuracies and their legend above the uncertainty
        ax.patch.set_visible(False)
    ax.set_title(title or "napari-ktal learning curve")
    return fig
