"""Regression metrics as one mergeable reduction: MAE, MSE, RMSE, R², MAPE and median absolute error.

Per group the pass keeps weighted sums of absolute, squared and relative errors and the label's weighted
moments (merged with Chan's formulas, so R² is stable at any scale).  The median absolute error is exact
(sklearn's weighted ``averaged_inverted_cdf``) while the data has at most ``exact_max_rows`` rows; beyond, it
is read from a KLL sketch of the absolute errors, unweighted and randomized, whose normalized rank error
(``median_absolute_error_rank_bound``, at 99% confidence) is reported beside it.

Examples
--------
>>> import pyarrow as pa
>>> from beamlearn.analyzers import run_analyzer
>>> b = pa.record_batch({"y": [3.0, -0.5, 2.0, 7.0], "yhat": [2.5, 0.0, 2.0, 8.0]})
>>> m = run_analyzer(RegressionMetrics("y", "yhat"), [b])["overall"]
>>> m["mae"], m["mse"], round(m["r2"], 6), m["median_absolute_error"]
(0.5, 0.375, 0.948608, 0.5)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn.analyzers import KllSketch
from beamlearn.batches import float_values
from beamlearn.metrics._accumulate import MetricAcc, MetricReduction
from beamlearn.metrics._core import slice_codes

__all__ = ["RegressionMetrics", "weighted_median"]

_EPS = np.finfo(np.float64).eps
_CI = ("mae", "mse", "rmse", "r2")


def weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    """sklearn's weighted median (``_weighted_percentile(..., average=True)``; ``np.median`` for unit weights)."""
    if len(x) == 0 or not (w > 0).any():
        return float("nan")
    order = np.argsort(x, kind="mergesort")
    xs, ws = x[order], w[order]
    cdf = np.cumsum(ws)
    rank = 0.5 * cdf[-1]
    i = min(int(np.searchsorted(cdf, rank)), len(xs) - 1)
    if cdf[i] - rank > _EPS:
        return float(xs[i])
    j = i + 1
    while j < len(xs) and ws[j] == 0:  # the next point that carries weight
        j += 1
    return float((xs[i] + xs[min(j, len(xs) - 1)]) / 2)


def _histogram(sketch: Any, bins: int = 40) -> dict[str, list[float]]:
    """An approximate histogram of the residuals ``label - prediction`` (unweighted, from their KLL sketch),
    over the range between their 0.5% and 99.5% quantiles; the outer bins also count what lies beyond."""
    if not sketch.n:
        return {"edges": [], "counts": []}
    lo, hi = sketch.get_quantiles([0.005, 0.995])
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    pmf = np.asarray(sketch.get_pmf(edges[1:-1].tolist()))  # one mass per bin, the outer ones open-ended
    counts = pmf * sketch.n
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def _r2(sse: float, moments: np.ndarray, count: float) -> float:
    """sklearn's ``r2_score`` with ``force_finite=True`` (NaN below two rows)."""
    if count < 2:
        return float("nan")
    denom = moments[2]
    if denom == 0:
        return 1.0 if sse == 0 else 0.0
    return float(1 - sse / denom)


class RegressionMetrics(MetricReduction):
    """Regression metrics overall and per slice, from one pass (see the module docstring).

    Parameters
    ----------
    label, prediction, sample_weight, slices, min_slice_count, n_bootstrap, confidence, exact_max_rows:
        As for :class:`~beamlearn.metrics.ClassificationMetrics`.
    k:
        Size parameter of the KLL sketch used beyond ``exact_max_rows``.
    """

    def __init__(self, label: str, prediction: str, *, sample_weight: str | None = None, slices: Any = (),
                 min_slice_count: int = 30, n_bootstrap: int = 0, confidence: float = 0.95,
                 exact_max_rows: int = 1_000_000, k: int = 400) -> None:
        self.label, self.prediction, self.sample_weight, self.slices = label, prediction, sample_weight, slices
        self.min_slice_count, self.n_bootstrap, self.confidence = min_slice_count, n_bootstrap, confidence
        self.exact_max_rows, self.k = exact_max_rows, k

    def create(self) -> MetricAcc:
        acc = super().create()
        acc.sketches = [{} for _ in acc.groups]  # type: ignore[attr-defined]
        acc.residuals = KllSketch(self.k)  # type: ignore[attr-defined]
        return acc

    def _prepare(self, acc: MetricAcc, batch: pa.RecordBatch) -> tuple[None, dict[str, Any]]:
        y, p = float_values(batch.column(self.label)), float_values(batch.column(self.prediction))
        e = np.abs(p - y)
        return None, {"y": y, "ae": e, "batch": batch, "acc": acc}

    def _arrays(self, rows: dict[str, Any], w: np.ndarray, boot: np.ndarray | None, g: np.ndarray,
                n_groups: int) -> dict[str, np.ndarray]:
        G, y, ae = n_groups, rows["y"], rows["ae"]
        se = ae * ae
        ape = ae / np.maximum(np.abs(y), _EPS)
        W = np.bincount(g, w, minlength=G)
        mean = np.divide(np.bincount(g, w * y, minlength=G), W, out=np.zeros(G), where=W > 0)
        d = y - mean[g]
        out = {"count": np.bincount(g, minlength=G).astype(np.float64), "weight": W,
               "sums": np.stack([np.bincount(g, w * v, minlength=G) for v in (ae, se, ape)], axis=1),
               "moments_y": np.stack([W, mean, np.bincount(g, w * d * d, minlength=G)], axis=1)}
        if boot is not None:
            out["boot"] = np.stack([np.stack([np.bincount(g, b * v, minlength=G) for v in (np.ones_like(y), ae, se,
                                                                                           y, y * y)], axis=1)
                                    for b in boot], axis=1)  # (G, B, 5)
        return out

    def add(self, acc: MetricAcc, batch: pa.RecordBatch) -> MetricAcc:
        acc = super().add(acc, batch)
        ok = ~(np.isnan(float_values(batch.column(self.label))) | np.isnan(float_values(batch.column(self.prediction))))
        if not ok.any():
            return acc
        b = batch.filter(pa.array(ok)) if not ok.all() else batch
        resid = float_values(b.column(self.label)) - float_values(b.column(self.prediction))
        acc.residuals.update(resid)  # type: ignore[attr-defined]
        ae = np.abs(resid)
        for sketches, groups in zip(acc.sketches, acc.groups):  # type: ignore[attr-defined]
            keys, g = slice_codes(b, groups.columns)
            order = np.argsort(g, kind="stable")
            cuts = np.searchsorted(g[order], np.arange(1, len(keys)))
            for key, part in zip(keys, np.split(ae[order], cuts)):
                if key not in sketches:
                    sketches[key] = KllSketch(self.k)
                sketches[key].update(part)
        return acc

    def _keep(self, rows: dict[str, Any], w: np.ndarray) -> dict[str, np.ndarray]:
        return {"ae": rows["ae"], "w": w}

    def merge(self, accs: Sequence[MetricAcc]) -> MetricAcc:
        out = super().merge(accs)
        out.sketches = [{} for _ in out.groups]  # type: ignore[attr-defined]
        out.residuals = KllSketch(self.k)  # type: ignore[attr-defined]
        for acc in accs:
            if acc.residuals.sketch.n:  # type: ignore[attr-defined]
                out.residuals.sketch.merge(acc.residuals.sketch)  # type: ignore[attr-defined]
            for mine, theirs in zip(out.sketches, acc.sketches):  # type: ignore[attr-defined]
                for key, sk in theirs.items():
                    if key not in mine:
                        mine[key] = KllSketch(self.k)
                    mine[key].sketch.merge(sk.sketch)
        return out

    def extract(self, acc: MetricAcc) -> dict[str, Any]:
        from datasketches import kll_doubles_sketch


        kept = self._kept_arrays(acc, None)
        bound = kll_doubles_sketch.get_normalized_rank_error(self.k, False)
        result: dict[str, Any] = {"task": "regression", "rows": acc.rows, "skipped": acc.skipped,
                                  "exact": kept is not None, "slices": {}}
        for si, groups in enumerate(acc.groups):
            a = groups.arrays
            for gi, key in enumerate(groups.keys):
                block = self._block(a, gi)
                if kept is not None:
                    sel = kept["groups"][si] == gi
                    block["median_absolute_error"] = weighted_median(kept["ae"][sel], kept["w"][sel])
                    block["median_absolute_error_method"] = "exact"
                else:
                    sk = acc.sketches[si][key].sketch  # type: ignore[attr-defined]
                    block["median_absolute_error"] = float(sk.get_quantile(0.5)) if sk.n else float("nan")
                    block["median_absolute_error_method"] = "kll"
                    block["median_absolute_error_rank_bound"] = bound
                self.place(result, si, groups.columns, key, block)
        result.setdefault("overall", {"count": 0, "weight": 0.0})
        result["overall"]["residual_histogram"] = _histogram(acc.residuals.sketch)  # type: ignore[attr-defined]
        return result

    def _block(self, a: dict[str, np.ndarray], gi: int) -> dict[str, Any]:
        W, count = float(a["weight"][gi]), float(a["count"][gi])
        sae, sse, sape = a["sums"][gi]
        nan = float("nan")
        mse = sse / W if W > 0 else nan
        block: dict[str, Any] = {"count": int(count), "weight": W, "mae": sae / W if W > 0 else nan, "mse": mse,
                                 "rmse": float(np.sqrt(mse)), "r2": _r2(sse, a["moments_y"][gi], count),
                                 "mape": sape / W if W > 0 else nan}
        if "boot" in a:
            reps = []
            for n, s1, s2, sy, syy in a["boot"][gi]:
                if n <= 0:
                    continue
                ss_tot = syy - sy * sy / n
                reps.append((s1 / n, s2 / n, np.sqrt(s2 / n), 1 - s2 / ss_tot if ss_tot > 0 else np.nan))
            alpha = (1 - self.confidence) / 2 * 100
            vals = np.array(reps, dtype=np.float64).reshape(-1, 4)
            block["ci"] = {k: np.nanpercentile(vals[:, i], [alpha, 100 - alpha]).tolist()
                           for i, k in enumerate(_CI) if np.isfinite(vals[:, i]).any()}
        for k in ("mae", "mse", "mape"):
            block[k] = float(block[k])
        return block
