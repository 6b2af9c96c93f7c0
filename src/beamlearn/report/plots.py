"""The report's plots, drawn with matplotlib's Agg canvas (no display, no pyplot state) and returned as PNG
bytes: confusion-matrix heatmap, ROC and precision-recall curves, calibration, per-slice bars, residuals.

Examples
--------
>>> png = confusion_png({"labels": [0, 1], "matrix": [[5.0, 1.0], [2.0, 7.0]]})
>>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
True
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

__all__ = ["calibration_png", "confusion_png", "correlation_png", "pr_png", "residuals_png", "roc_png", "slice_bars_png"]


def _figure(w: float = 4.2, h: float = 3.4) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=96)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def confusion_png(cm: dict[str, Any]) -> bytes:
    """Heatmap of a confusion matrix (rows: true class, columns: predicted), row-normalized colours."""
    labels, m = [str(x) for x in cm["labels"]], np.asarray(cm["matrix"], dtype=float)
    k = len(labels)
    fig = _figure(max(3.6, 0.5 * k + 2.5), max(3.0, 0.5 * k + 2.0))
    ax = fig.add_subplot()
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                v = m[i, j]  # counts (weights may be fractional): 26,120 rather than 2.612e+04
                text = f"{v:,.0f}" if float(v).is_integer() else f"{v:,.1f}"
                ax.text(j, i, f"{text}\n{norm[i, j]:.0%}", ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.6 else "black")
    ticks = range(k)
    ax.set_xticks(list(ticks), labels if k <= 30 else [""] * k, rotation=45 if k > 6 else 0)
    ax.set_yticks(list(ticks), labels if k <= 30 else [""] * k)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of true class")
    return _png(fig)


def roc_png(roc: dict[str, list[float]], auc: float | None) -> bytes:
    """The ROC curve with the chance diagonal."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(roc["fpr"], roc["tpr"], lw=1.5, label=f"AUC {auc:.4f}" if auc is not None else None)
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    if auc is not None:
        ax.legend(loc="lower right")
    return _png(fig)


def pr_png(pr: dict[str, list[float]], ap: float | None) -> bytes:
    """The precision-recall curve."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.step(pr["recall"], pr["precision"], where="post", lw=1.5, label=f"AP {ap:.4f}" if ap is not None else None)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    if ap is not None:
        ax.legend(loc="lower left")
    return _png(fig)


def calibration_png(cal: dict[str, list[float]]) -> bytes:
    """Reliability diagram: observed positive fraction against mean predicted probability."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
    ax.plot(cal["prob_pred"], cal["prob_true"], marker="o", lw=1.5)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed positive fraction")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    return _png(fig)


def slice_bars_png(names: list[str], values: list[float | None], flagged: list[bool], metric: str,
                   overall: float | None) -> bytes:
    """Horizontal bars of ``metric`` per slice; slices below the minimum count are hatched and grey."""
    n = len(names)
    fig = _figure(6.0, max(2.0, 0.28 * n + 1.2))
    ax = fig.add_subplot()
    vals = [np.nan if v is None else v for v in values]
    colors = ["#bbbbbb" if f else "#4c72b0" for f in flagged]
    bars = ax.barh(range(n), np.nan_to_num(vals), color=colors)
    for bar, f in zip(bars, flagged):
        if f:
            bar.set_hatch("//")
    if overall is not None:
        ax.axvline(overall, color="black", lw=0.8, ls="--", label="overall")
        ax.legend(loc="lower right", fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(metric + " (grey, hatched: below the minimum slice count)")
    return _png(fig)


def residuals_png(hist: dict[str, list[float]]) -> bytes:
    """Histogram of residuals (label − prediction)."""
    fig = _figure(5.0, 3.2)
    ax = fig.add_subplot()
    edges, counts = np.asarray(hist["edges"]), np.asarray(hist["counts"])
    if len(counts):
        ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#4c72b0", edgecolor="white")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("residual (label − prediction)")
    ax.set_ylabel("rows")
    return _png(fig)


def correlation_png(names: list[str], matrix: list[list[float | None]]) -> bytes:
    """Heatmap of a correlation matrix (-1 blue to +1 red); values written in when there are few columns."""
    m = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
    k = len(names)
    side = min(9.0, max(3.6, 0.35 * k + 2.0))
    fig = _figure(side + 0.8, side)
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap="RdBu_r", vmin=-1, vmax=1)
    if k <= 12:
        for i in range(k):
            for j in range(k):
                if not np.isnan(m[i, j]):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(k), names if k <= 40 else [""] * k, rotation=90, fontsize=7)
    ax.set_yticks(range(k), names if k <= 40 else [""] * k, fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.046, label="Pearson r")
    return _png(fig)
