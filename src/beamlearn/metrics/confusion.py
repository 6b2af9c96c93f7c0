"""Metrics that are functions of a (weighted) confusion matrix, with scikit-learn's definitions.

``cm[i, j]`` is the weight of rows whose true class is ``classes[i]`` and predicted class ``classes[j]``.
Precision, recall and F-beta follow :func:`sklearn.metrics.precision_recall_fscore_support`, including its
``zero_division`` rule (``"warn"`` acts as 0 here, without the warning; ``np.nan`` values are left out of the
averages).

Examples
--------
>>> import numpy as np
>>> cm = np.array([[3.0, 1.0], [0.0, 2.0]])
>>> m = confusion_metrics(cm, [0, 1], pos_label=1)
>>> round(m["accuracy"], 4), round(m["f1_macro"], 4), m["recall"]
(0.8333, 0.8286, 1.0)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["CM_SCALARS", "confusion_metrics", "prf", "zero_division_value"]

#: The scalar metrics :func:`confusion_metrics` returns (binary ones only for two-class problems).
CM_SCALARS = ("accuracy", "balanced_accuracy", "precision_micro", "precision_macro", "precision_weighted",
              "recall_micro", "recall_macro", "recall_weighted", "f1_micro", "f1_macro", "f1_weighted",
              "fbeta_micro", "fbeta_macro", "fbeta_weighted", "precision", "recall", "f1", "fbeta")


def zero_division_value(zero_division: Any) -> float:
    """The value sklearn substitutes for 0/0: 0 for ``"warn"`` and 0, 1 for 1, NaN for ``np.nan``."""
    if isinstance(zero_division, str):
        if zero_division != "warn":
            raise ValueError(f"zero_division must be 'warn', 0, 1 or nan, got {zero_division!r}")
        return 0.0
    if zero_division in (0, 1):
        return float(zero_division)
    if isinstance(zero_division, float) and math.isnan(zero_division):
        return float("nan")
    raise ValueError(f"zero_division must be 'warn', 0, 1 or nan, got {zero_division!r}")


def _divide(num: np.ndarray, den: np.ndarray, zd: float) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    mask = den == 0
    out = num / np.where(mask, 1.0, den)
    out[mask] = zd
    return out


def _nanaverage(a: np.ndarray, weights: np.ndarray | None = None) -> float:
    """sklearn's ``_nanaverage``: NaN entries are ignored; all-zero weights fall back to the plain mean."""
    if a.shape[0] == 0:
        return float("nan")
    mask = np.isnan(a)
    if mask.all():
        return float("nan")
    if weights is None:
        return float(np.mean(a[~mask]))
    a, weights = a[~mask], np.asarray(weights, dtype=np.float64)[~mask]
    if weights.sum() == 0:
        return float(np.mean(a))
    return float(np.average(a, weights=weights))


def prf(tp: np.ndarray, pred: np.ndarray, true: np.ndarray, beta: float, zd: float
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F-beta from true-positive, predicted and true sums (sklearn's formulas)."""
    precision = _divide(tp, pred, zd)
    recall = _divide(tp, true, zd)
    if np.isposinf(beta):
        f = recall
    elif beta == 0:
        f = precision
    else:
        b2 = beta * beta
        f = _divide((1 + b2) * np.asarray(tp, dtype=np.float64), b2 * np.asarray(true, dtype=np.float64)
                    + np.asarray(pred, dtype=np.float64), zd)
    return precision, recall, f


def confusion_metrics(cm: np.ndarray, classes: list, *, pos_label: Any = None, beta: float = 1.0,
                      zero_division: Any = "warn") -> dict[str, Any]:
    """Accuracy, balanced accuracy, and precision / recall / F1 / F-beta per class and averaged.

    ``cm`` must be restricted to the classes present (as true or predicted) in the rows it summarizes, as
    sklearn's label set is.  Returns scalars (NaN when undefined) and ``per_class``.  The binary metrics
    ``precision``, ``recall``, ``f1``, ``fbeta`` (sklearn's ``average="binary"``) appear when ``pos_label`` is one
    of ``classes`` and there are at most two classes.
    """
    zd = zero_division_value(zero_division)
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    tp = np.diag(cm).copy()
    pred, true = cm.sum(axis=0), cm.sum(axis=1)
    out: dict[str, Any] = {}
    out["accuracy"] = float(tp.sum() / total) if total > 0 else float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        per = tp / true
    per = per[~np.isnan(per)]
    out["balanced_accuracy"] = float(np.mean(per)) if len(per) else float("nan")
    p, r, f1 = prf(tp, pred, true, 1.0, zd)
    _, _, fb = prf(tp, pred, true, beta, zd)
    mp, mr, mf1 = prf(tp.sum(keepdims=True), pred.sum(keepdims=True), true.sum(keepdims=True), 1.0, zd)
    _, _, mfb = prf(tp.sum(keepdims=True), pred.sum(keepdims=True), true.sum(keepdims=True), beta, zd)
    for name, per_class, micro in (("precision", p, mp), ("recall", r, mr), ("f1", f1, mf1), ("fbeta", fb, mfb)):
        out[f"{name}_micro"] = _nanaverage(micro)
        out[f"{name}_macro"] = _nanaverage(per_class)
        out[f"{name}_weighted"] = _nanaverage(per_class, true)
    if pos_label is not None and len(classes) <= 2:
        if pos_label in classes:
            i = classes.index(pos_label)
            out.update(precision=float(p[i]), recall=float(r[i]), f1=float(f1[i]), fbeta=float(fb[i]))
        else:  # sklearn scores an absent pos_label as 0/0 everywhere
            out.update(precision=zd, recall=zd, f1=zd, fbeta=zd)
    out["per_class"] = {str(c): {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f1[i]),
                                 "fbeta": float(fb[i]), "support": float(true[i])}
                        for i, c in enumerate(classes)}
    return out
