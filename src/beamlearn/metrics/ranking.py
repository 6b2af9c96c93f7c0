"""Score-based metrics: ROC AUC, average precision, curves, calibration, threshold sweep, decision threshold.

Both the exact path (the scores are kept) and the binned path (a histogram of positive and negative weight over
fixed score bins, mergeable at any scale) reduce to the same input: positive and negative weight per *distinct
threshold*, in decreasing score order.  Exact scores give sklearn's values (``roc_auc_score``,
``average_precision_score``); bins treat all scores in a bin as tied, which changes ROC AUC by at most
``½·Σ_b pos_b·neg_b / (P·N)`` — the bound reported next to the binned value.

Score bins are ``[edges[k], edges[k+1])`` over ``edges = linspace(0, 1, n_bins + 1)``, plus one bin for scores of
exactly 1; scores below 0 count in the first bin and above 1 in the last (scores are probabilities).  The
threshold sweep uses thresholds on these edges, so its counts are exact at any scale.

Examples
--------
>>> import numpy as np
>>> pos, neg = np.array([2.0, 1.0, 0.0]), np.array([0.0, 1.0, 2.0])
>>> round(roc_auc(pos, neg), 4), round(average_precision(pos, neg), 4)
(0.9444, 0.9167)
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "average_precision",
    "calibration_table",
    "decision_threshold",
    "downsample",
    "pr_points",
    "roc_auc",
    "roc_auc_bound",
    "roc_points",
    "score_bins",
    "threshold_sweep",
    "tied_weights",
]


def score_bins(s: np.ndarray, n_bins: int) -> np.ndarray:
    """The bin of each score: ``k`` with ``edges[k] <= s < edges[k+1]``, ``n_bins`` for ``s >= 1``."""
    edges = np.append(np.linspace(0.0, 1.0, n_bins + 1), np.inf)
    with np.errstate(invalid="ignore"):
        idx = np.clip(np.floor(s * n_bins), 0, n_bins).astype(np.int64)
    idx -= (s < edges[idx]) & (idx > 0)
    idx += s >= edges[idx + 1]
    return np.clip(idx, 0, n_bins)


def tied_weights(score: np.ndarray, is_pos: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative weight per distinct score, in decreasing score order (exact path)."""
    if len(score) == 0:
        return np.zeros(0), np.zeros(0)
    order = np.argsort(score, kind="mergesort")[::-1]
    s = score[order]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    wp = np.where(is_pos[order], w[order], 0.0)
    wn = np.where(is_pos[order], 0.0, w[order])
    return np.add.reduceat(wp, starts), np.add.reduceat(wn, starts)


def roc_points(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` of the ROC curve (starting at (0, 0)); NaN arrays when a class has no weight."""
    tps, fps = np.r_[0.0, np.cumsum(pos)], np.r_[0.0, np.cumsum(neg)]
    if tps[-1] <= 0 or fps[-1] <= 0:
        return np.array([np.nan]), np.array([np.nan])
    return fps / fps[-1], tps / tps[-1]


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Area under the ROC curve (trapezoidal over tied thresholds, as sklearn); NaN with one class."""
    fpr, tpr = roc_points(pos, neg)
    if np.isnan(fpr[0]):
        return float("nan")
    return float(np.trapezoid(tpr, fpr))


def roc_auc_bound(pos: np.ndarray, neg: np.ndarray) -> float:
    """The largest change of ROC AUC that resolving the ties inside the bins could make."""
    p, n = pos.sum(), neg.sum()
    return float(0.5 * np.dot(pos, neg) / (p * n)) if p > 0 and n > 0 else float("nan")


def pr_points(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(precision, recall)`` at each threshold, in decreasing threshold order (no end point)."""
    tps, fps = np.cumsum(pos), np.cumsum(neg)
    ps = tps + fps
    precision = np.divide(tps, ps, out=np.zeros_like(tps), where=ps != 0)
    recall = tps / tps[-1] if len(tps) and tps[-1] > 0 else np.full_like(tps, np.nan)
    return precision, recall


def average_precision(pos: np.ndarray, neg: np.ndarray) -> float:
    """sklearn's average precision: ``Σ_n (R_n − R_{n−1})·P_n``; NaN without positive weight."""
    if len(pos) == 0 or pos.sum() <= 0:
        return float("nan")
    precision, recall = pr_points(pos, neg)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def downsample(*arrays: np.ndarray, limit: int = 400) -> list[list[float]]:
    """At most ``limit`` evenly spaced points of parallel arrays (always keeping the ends), as lists."""
    n = len(arrays[0])
    idx = np.unique(np.linspace(0, n - 1, min(n, limit)).round().astype(int)) if n else np.zeros(0, int)
    return [[float(v) for v in a[idx]] for a in arrays]


def threshold_sweep(pos: np.ndarray, neg: np.ndarray, n_bins: int, n_thresholds: int) -> dict[str, list[float]]:
    """Precision, recall and F1 of ``score >= t`` for thresholds on the bin edges.

    ``pos``/``neg`` are histograms over the ``n_bins + 1`` score bins (increasing).  ``n_thresholds - 1`` must
    divide ``n_bins``.
    """
    step = n_bins // (n_thresholds - 1)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    tp_at = np.cumsum(pos[::-1])[::-1]  # weight of positives with bin >= k
    fp_at = np.cumsum(neg[::-1])[::-1]
    ks = np.arange(0, n_bins + 1, step)
    tp, fp = tp_at[ks], fp_at[ks]
    p_total = pos.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = tp / p_total if p_total > 0 else np.full(len(ks), np.nan)
        f1 = np.where(tp > 0, 2 * tp / (2 * tp + fp + (p_total - tp)), 0.0)
    return {"threshold": edges[ks].tolist(), "precision": precision.tolist(), "recall": recall.tolist(),
            "f1": f1.tolist()}


def decision_threshold(sweep: dict[str, list[float]], criterion: str = "f1") -> dict[str, Any] | None:
    """Choose a threshold from a sweep.

    ``"f1"``: the threshold of maximal F1 (the lowest on ties).  ``"precision>=X"``: the lowest threshold whose
    precision reaches X (the most recall at that precision).  ``"recall>=X"``: the highest threshold whose recall
    reaches X (the most precision at that recall).  ``None`` when no threshold qualifies.
    """
    t, p, r, f = (np.asarray(sweep[k], dtype=np.float64) for k in ("threshold", "precision", "recall", "f1"))
    crit = criterion.replace(" ", "")
    if crit == "f1":
        ok = np.flatnonzero(f == np.nanmax(f)) if np.isfinite(f).any() else np.zeros(0, int)
        i = ok[0] if len(ok) else None
    elif crit.startswith(("precision>=", "recall>=")):
        name, value = crit.split(">=")
        ok = np.flatnonzero((p if name == "precision" else r) >= float(value))
        i = (ok[0] if name == "precision" else ok[-1]) if len(ok) else None
    else:
        raise ValueError(f"unknown threshold criterion {criterion!r}; use 'f1', 'precision>=X' or 'recall>=X'")
    if i is None:
        return None
    return {"criterion": crit, "threshold": float(t[i]), "precision": float(p[i]), "recall": float(r[i]),
            "f1": float(f[i])}


def calibration_table(pos: np.ndarray, weight: np.ndarray, psum: np.ndarray, n_bins: int,
                      n_cal: int) -> dict[str, list[float]]:
    """Reliability table over ``n_cal`` equal-width probability bins ``[a, b)`` (the last includes 1): mean
    predicted probability, observed positive fraction and weight of each non-empty bin."""
    group = np.minimum(np.arange(n_bins + 1) * n_cal // n_bins, n_cal - 1)
    w = np.bincount(group, weight, minlength=n_cal)
    pp = np.bincount(group, psum, minlength=n_cal)
    pt = np.bincount(group, pos, minlength=n_cal)
    keep = w > 0
    edges = np.linspace(0.0, 1.0, n_cal + 1)
    return {"bin_lower": edges[:-1][keep].tolist(), "bin_upper": edges[1:][keep].tolist(),
            "prob_pred": (pp[keep] / w[keep]).tolist(), "prob_true": (pt[keep] / w[keep]).tolist(),
            "weight": w[keep].tolist()}
