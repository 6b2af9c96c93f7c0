"""Classification metrics as one mergeable reduction over batches, overall and per slice.

One pass accumulates, per group (the whole data and every slice value): a weighted confusion matrix over the
classes seen (labels and predictions), for a binary score a histogram of score bins per true class plus
log-loss sums, for per-class probability columns one-vs-rest histograms, and optionally Poisson-bootstrap
confusion matrices.  While the data has at most ``exact_max_rows`` rows the scores are also kept, and ROC AUC
and average precision are exact (equal to sklearn's); beyond, they come from the bins with the ROC AUC error
bound reported beside them.  Rows whose label or prediction is missing are skipped (and counted).

Examples
--------
>>> import pyarrow as pa
>>> from beamlearn.analyzers import run_analyzer
>>> batch = pa.record_batch({"y": [0, 1, 1, 0], "yhat": [0, 1, 0, 0], "p": [0.1, 0.9, 0.4, 0.2]})
>>> m = run_analyzer(ClassificationMetrics("y", "yhat", score="p"), [batch])
>>> m["overall"]["accuracy"], m["overall"]["recall"], m["overall"]["roc_auc"]
(0.75, 0.5, 1.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beamlearn.batches import column_kind, float_values
from beamlearn.errors import SchemaError, SpecError
from beamlearn.metrics import ranking as rk
from beamlearn.metrics._accumulate import MetricAcc, MetricReduction
from beamlearn.metrics._core import class_codes, label_text, python_value
from beamlearn.metrics.confusion import confusion_metrics, zero_division_value

__all__ = ["CI_METRICS", "ClassificationMetrics"]

#: Metrics given a bootstrap confidence interval (when present).
CI_METRICS = ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_micro",
              "f1_weighted", "precision", "recall", "f1")
_EPS = np.finfo(np.float64).eps


def _common(y: pa.Array, p: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Labels and predictions in one type (integers as int64, other numbers float64, else the label's)."""
    ky, kp = column_kind(y.type), column_kind(p.type)
    if ky == kp == "numeric":
        both_int = pa.types.is_integer(y.type) and pa.types.is_integer(p.type)
        t = pa.int64() if both_int else pa.float64()
        return pc.cast(y, t), pc.cast(p, t)
    if ky == "string" or kp == "string":
        return pc.cast(y, pa.string()), pc.cast(p, pa.string())
    try:
        return y, pc.cast(p, y.type)
    except pa.ArrowInvalid:
        raise SchemaError(f"predictions of type {p.type} cannot be compared with labels of type {y.type}") from None


class ClassificationMetrics(MetricReduction):
    """Classification metrics overall and per slice, from one pass (see the module docstring).

    Parameters
    ----------
    label, prediction:
        Columns of the true and the predicted class.
    score:
        ``None``; one column with the probability of ``pos_label`` (binary problems); or a mapping
        ``{class: column}`` of per-class probabilities (multiclass; one-vs-rest AUC, macro averaged).
    sample_weight:
        A column of row weights (missing = 0).
    slices:
        Column names to slice by; an item with a comma (``"carrier,origin"``) or a tuple crosses columns.
    pos_label:
        The positive class of binary metrics; default: the larger of two numeric or boolean classes.
    beta, zero_division:
        As in :func:`sklearn.metrics.fbeta_score` (``"warn"`` acts as 0, silently).
    min_slice_count:
        Slices with fewer rows are flagged (``"insufficient": true``); they are still reported.
    n_bootstrap, confidence:
        Poisson-bootstrap replicates (0 = no intervals) and the interval's coverage.
    exact_max_rows:
        Keep scores for exact ROC AUC / average precision up to this many rows.
    n_bins, n_thresholds, calibration_bins:
        Score bins of the mergeable histograms; points of the threshold sweep (``n_thresholds - 1`` must divide
        ``n_bins``); bins of the calibration table.
    threshold_criterion:
        How to choose the decision threshold: ``"f1"``, ``"precision>=X"`` or ``"recall>=X"``.
    """

    class_axes: ClassVar[dict[str, tuple[int, ...]]] = {"cm": (1, 2), "present": (1,), "hist": (1,), "ll1": (1,), "ll0": (1,), "bcm": (2, 3)}

    def __init__(self, label: str, prediction: str, *, score: str | Mapping[Any, str] | None = None,
                 sample_weight: str | None = None, slices: Any = (), pos_label: Any = None, beta: float = 1.0,
                 zero_division: Any = "warn", min_slice_count: int = 30, n_bootstrap: int = 0,
                 confidence: float = 0.95, exact_max_rows: int = 1_000_000, n_bins: int = 1000,
                 n_thresholds: int = 101, calibration_bins: int = 10, threshold_criterion: str = "f1") -> None:
        self.label, self.prediction, self.score, self.sample_weight = label, prediction, score, sample_weight
        self.slices, self.pos_label, self.beta, self.zero_division = slices, pos_label, beta, zero_division
        self.min_slice_count, self.n_bootstrap, self.confidence = min_slice_count, n_bootstrap, confidence
        self.exact_max_rows, self.n_bins, self.n_thresholds = exact_max_rows, n_bins, n_thresholds
        self.calibration_bins, self.threshold_criterion = calibration_bins, threshold_criterion

    def check(self) -> None:
        """Validate the parameters (before any data is read); :class:`SpecError` names the bad one."""
        try:
            zero_division_value(self.zero_division)
            rk.decision_threshold({"threshold": [0.5], "precision": [1.0], "recall": [1.0], "f1": [1.0]},
                                  self.threshold_criterion)
        except ValueError as exc:
            raise SpecError(str(exc)) from None
        if self.n_bins < 1 or self.n_thresholds < 2 or self.n_bins % (self.n_thresholds - 1):
            raise SpecError(f"n_thresholds - 1 ({self.n_thresholds - 1}) must divide n_bins ({self.n_bins})")
        if self.calibration_bins < 1 or not 0 < self.confidence < 1 or self.n_bootstrap < 0:
            raise SpecError("calibration_bins must be >= 1, confidence in (0, 1) and n_bootstrap >= 0")
        if not (self.beta >= 0):
            raise SpecError(f"beta must be >= 0, got {self.beta!r}")

    def score_columns(self) -> list[str]:
        if self.score is None:
            return []
        return [self.score] if isinstance(self.score, str) else list(self.score.values())

    # ------------------------------------------------------------------ per batch
    def _prepare(self, acc: MetricAcc, batch: pa.RecordBatch) -> tuple[np.ndarray, dict[str, Any]]:
        y, p = _common(batch.column(self.label), batch.column(self.prediction))
        codes = class_codes(pa.concat_arrays([y, p]), acc.classes, acc.class_index)
        n = batch.num_rows
        rows: dict[str, Any] = {"y": codes[:n], "p": codes[n:], "K": len(acc.classes)}
        if isinstance(self.score, str):
            s = float_values(batch.column(self.score))
            valid = ~np.isnan(s)
            rows["s"], rows["valid"] = s, (None if valid.all() else valid)
            rows["bin"] = rk.score_bins(np.nan_to_num(s), self.n_bins)
            with np.errstate(divide="ignore", invalid="ignore"):  # the terms of log loss, once per batch
                rows["nlp"] = -np.log(np.clip(s, _EPS, 1 - _EPS))
                rows["nl1p"] = -np.log(np.clip(1 - s, _EPS, 1 - _EPS))
        elif self.score is not None:
            keys = [str(k) for k in self.score]
            lookup = {k: i for i, k in enumerate(keys)}
            names = [str(v) for v in acc.classes]
            table = np.array([lookup.get(v, -1) for v in names], dtype=np.int64)
            rows["yc"] = table[rows["y"]]
            P = np.column_stack([float_values(batch.column(c)) for c in self.score.values()])
            rows["P"], rows["valid"] = P, ~np.isnan(P).any(axis=1)
        return np.arange(len(acc.classes)), rows

    def _arrays(self, rows: dict[str, Any], w: np.ndarray, boot: np.ndarray | None, g: np.ndarray,
                n_groups: int) -> dict[str, np.ndarray]:
        G, K, y, p = n_groups, rows["K"], rows["y"], rows["p"]
        cell = (g * K + y) * K + p
        wt = None if self.sample_weight is None else w  # unit weights: integer counts are faster
        count = np.bincount(g, minlength=G).astype(np.float64)
        out = {"count": count, "weight": count.copy() if wt is None else np.bincount(g, w, minlength=G),
               "cm": np.bincount(cell, wt, minlength=G * K * K).reshape(G, K, K).astype(np.float64),
               "present": (np.bincount(g * K + y, minlength=G * K)
                           + np.bincount(g * K + p, minlength=G * K)).reshape(G, K).astype(np.float64)}
        if boot is not None:
            out["bcm"] = np.stack([np.bincount(cell, b, minlength=G * K * K).reshape(G, K, K) for b in boot], axis=1)
        if "s" in rows:
            v = rows["valid"]
            sub = (lambda a: a) if v is None else (lambda a: a[v])
            gv, yv, wv, nb = sub(g), sub(y), sub(w), self.n_bins + 1
            unit = self.sample_weight is None
            out["hist"] = np.bincount((gv * K + yv) * nb + sub(rows["bin"]), None if unit else wv,
                                      minlength=G * K * nb).reshape(G, K, nb).astype(np.float64)
            out["psum"] = np.bincount(gv * nb + sub(rows["bin"]), sub(rows["s"]) if unit else wv * sub(rows["s"]),
                                      minlength=G * nb).reshape(G, nb)
            gy = gv * K + yv
            out["ll1"] = np.bincount(gy, sub(rows["nlp"]) if unit else wv * sub(rows["nlp"]),
                                     minlength=G * K).reshape(G, K)
            out["ll0"] = np.bincount(gy, sub(rows["nl1p"]) if unit else wv * sub(rows["nl1p"]),
                                     minlength=G * K).reshape(G, K)
        elif "P" in rows:
            v = rows["valid"]
            gv, wv, yc, P, nb = g[v], w[v], rows["yc"][v], rows["P"][v], self.n_bins + 1
            C = P.shape[1]
            hist = np.zeros((G, C, 2, nb))
            for c in range(C):
                key = (gv * 2 + (yc == c)) * nb + rk.score_bins(P[:, c], self.n_bins)
                hist[:, c] = np.bincount(key, wv, minlength=G * 2 * nb).reshape(G, 2, nb)
            out["mhist"] = hist
            known = yc >= 0
            py = np.clip(P[known, yc[known]], _EPS, 1 - _EPS)
            out["mll"] = np.bincount(gv[known], -wv[known] * np.log(py), minlength=G)
            out["mll_w"] = np.bincount(gv[known], wv[known], minlength=G)
        return out

    def _keep(self, rows: dict[str, Any], w: np.ndarray) -> dict[str, np.ndarray]:
        if "s" in rows:
            return {"y": rows["y"], "w": w, "s": rows["s"]}  # NaN scores are skipped at extract
        if "P" in rows:
            return {"y": rows["y"], "w": w, "yc": rows["yc"], "P": rows["P"]}
        return {}

    # ------------------------------------------------------------------ extract
    def extract(self, acc: MetricAcc) -> dict[str, Any]:
        classes = sorted(acc.classes)
        order = np.array([classes.index(c) for c in acc.classes], dtype=np.int64)
        perm = np.argsort(order) if len(order) else order  # sorted position -> old index
        kept = self._kept_arrays(acc, order)
        pos_label = self._pos_label(classes)
        result: dict[str, Any] = {"task": "classification", "rows": acc.rows, "skipped": acc.skipped,
                                  "classes": [python_value(c) for c in classes],
                                  "pos_label": None if pos_label is None else python_value(pos_label),
                                  "exact": kept is not None, "slices": {}}
        for si, groups in enumerate(acc.groups):
            arrays = {k: _sorted_classes(v, self.class_axes.get(k, ()), perm) for k, v in groups.arrays.items()}
            for gi, key in enumerate(groups.keys):
                rows_of = None if kept is None else kept["groups"][si] == gi
                block = self._group(arrays, gi, classes, pos_label, kept, rows_of, overall=si == 0)
                self.place(result, si, groups.columns, key, block)
        if "overall" not in result:
            result["overall"] = self._group({}, 0, classes, pos_label, None, None, overall=True)
        return result

    def _pos_label(self, classes: list) -> Any:
        if self.pos_label is not None:
            if self.pos_label not in classes:  # "1" from a command line names the class 1
                named = [c for c in classes if label_text(c) == str(self.pos_label)]
                return named[0] if len(named) == 1 else self.pos_label
            return self.pos_label
        if 0 < len(classes) <= 2 and all(isinstance(c, (bool, int, float, np.integer, np.floating))
                                         for c in classes):
            if len(classes) == 2:
                return max(classes)
            return True if isinstance(classes[0], bool) else 1  # sklearn's default pos_label
        return None

    def _group(self, arrays: dict[str, np.ndarray], gi: int, classes: list, pos_label: Any,
               kept: dict[str, Any] | None, rows_of: np.ndarray | None, *, overall: bool) -> dict[str, Any]:
        if "cm" not in arrays:
            return {"count": 0, "weight": 0.0}
        present = arrays["present"][gi] > 0
        names = [c for c, ok in zip(classes, present) if ok]
        cm = arrays["cm"][gi][np.ix_(present, present)]
        m = confusion_metrics(cm, names, pos_label=pos_label, beta=self.beta, zero_division=self.zero_division)
        block: dict[str, Any] = {"count": int(arrays["count"][gi]), "weight": float(arrays["weight"][gi]), **m}
        block["confusion_matrix"] = {"labels": [python_value(c) for c in names], "matrix": cm.tolist()}
        if "bcm" in arrays:
            block["ci"] = self._intervals(arrays["bcm"][gi], present, names, pos_label)
        if "hist" in arrays:
            self._binary_scores(block, arrays, gi, classes, pos_label, kept, rows_of, overall)
        elif "mhist" in arrays:
            self._multiclass_scores(block, arrays, gi, kept, rows_of)
        return block

    def _intervals(self, bcm: np.ndarray, present: np.ndarray, names: list, pos_label: Any) -> dict[str, list]:
        reps = [confusion_metrics(b[np.ix_(present, present)], names, pos_label=pos_label, beta=self.beta,
                                  zero_division=self.zero_division) for b in bcm if b.sum() > 0]
        alpha = (1 - self.confidence) / 2 * 100
        out = {}
        for k in CI_METRICS:
            vals = np.array([r.get(k, np.nan) for r in reps], dtype=np.float64)
            if np.isfinite(vals).any():
                out[k] = np.nanpercentile(vals, [alpha, 100 - alpha]).tolist()
        return out

    def _binary_scores(self, block: dict[str, Any], arrays: dict[str, np.ndarray], gi: int, classes: list,
                       pos_label: Any, kept: dict[str, Any] | None, rows_of: np.ndarray | None,
                       overall: bool) -> None:
        if pos_label is None:
            raise SpecError(f"a binary score needs pos_label: which of the classes {classes} is positive?")
        i = classes.index(pos_label) if pos_label in classes else -1  # -1: no positive row at all
        hist = arrays["hist"][gi]
        pos = hist[i] if i >= 0 else np.zeros(hist.shape[1])
        neg = hist.sum(axis=0) - pos
        wsum = hist.sum()
        ll = arrays["ll0"][gi].sum() + (arrays["ll1"][gi][i] - arrays["ll0"][gi][i] if i >= 0 else 0.0)
        block["log_loss"] = float(ll / wsum) if wsum > 0 else float("nan")
        if kept is not None:
            sel = rows_of & ~np.isnan(kept["s"])
            tp, tn = rk.tied_weights(kept["s"][sel], kept["y"][sel] == i, kept["w"][sel])
            block.update(roc_auc=rk.roc_auc(tp, tn), roc_auc_error_bound=0.0, roc_auc_method="exact",
                         average_precision=rk.average_precision(tp, tn), average_precision_method="exact")
        else:
            tp, tn = pos[::-1], neg[::-1]
            block.update(roc_auc=rk.roc_auc(tp, tn), roc_auc_error_bound=rk.roc_auc_bound(pos, neg),
                         roc_auc_method="binned", average_precision=rk.average_precision(tp, tn),
                         average_precision_method="binned")
        if not overall:
            return
        fpr, tpr = rk.roc_points(tp, tn)
        precision, recall = rk.pr_points(tp, tn)
        block["curves"] = {"roc": dict(zip(("fpr", "tpr"), rk.downsample(fpr, tpr))),
                           "pr": dict(zip(("precision", "recall"), rk.downsample(precision, recall)))}
        block["calibration"] = rk.calibration_table(pos, hist.sum(axis=0), arrays["psum"][gi], self.n_bins,
                                                    self.calibration_bins)
        sweep = rk.threshold_sweep(pos, neg, self.n_bins, self.n_thresholds)
        block["threshold_sweep"] = sweep
        block["decision_threshold"] = rk.decision_threshold(sweep, self.threshold_criterion)

    def _multiclass_scores(self, block: dict[str, Any], arrays: dict[str, np.ndarray], gi: int,
                           kept: dict[str, Any] | None, rows_of: np.ndarray | None) -> None:
        hist = arrays["mhist"][gi]
        block["log_loss"] = float(arrays["mll"][gi] / arrays["mll_w"][gi]) if arrays["mll_w"][gi] > 0 else float("nan")
        aucs, aps, bounds = [], [], []
        for c in range(hist.shape[0]):
            if kept is not None:
                sel = rows_of & ~np.isnan(kept["P"]).any(axis=1)
                tp, tn = rk.tied_weights(kept["P"][sel, c], kept["yc"][sel] == c, kept["w"][sel])
                bounds.append(0.0)
            else:
                tp, tn = hist[c, 1][::-1], hist[c, 0][::-1]
                bounds.append(rk.roc_auc_bound(hist[c, 1], hist[c, 0]))
            aucs.append(rk.roc_auc(tp, tn))
            aps.append(rk.average_precision(tp, tn))
        method = "exact" if kept is not None else "binned"
        block.update(roc_auc=float(np.mean(aucs)), roc_auc_error_bound=float(np.mean(bounds)),
                     roc_auc_method=method, average_precision=float(np.mean(aps)), average_precision_method=method)
        for key, auc in zip(self.score, aucs):  # type: ignore[union-attr]
            block["per_class"].setdefault(str(key), {})["roc_auc"] = auc


def _sorted_classes(a: np.ndarray, axes: tuple[int, ...], perm: np.ndarray) -> np.ndarray:
    for ax in axes:
        a = np.take(a, perm, axis=ax)
    return a
