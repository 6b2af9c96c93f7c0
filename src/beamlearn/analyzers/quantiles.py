"""Quantiles: exact in two passes (a KLL sketch brackets each order statistic, then an exact selection), or
approximate from the sketch alone (see the package docstring)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn.analyzers.base import Analyzer
from beamlearn.batches import float_values

# ---------------------------------------------------------------------------------------------- quantiles
QUANTILE_METHODS = ("linear", "lower", "higher", "midpoint", "nearest", "inverted_cdf", "averaged_inverted_cdf",
            "closest_observation", "interpolated_inverted_cdf", "hazen", "weibull", "median_unbiased",
            "normal_unbiased")
ALPHA_BETA = {"interpolated_inverted_cdf": (0, 1), "hazen": (0.5, 0.5), "weibull": (0, 0),
               "median_unbiased": (1 / 3.0, 1 / 3.0), "normal_unbiased": (3 / 8.0, 3 / 8.0)}


def quantile_plan(n: int, q: float, method: str = "linear") -> tuple[int, int, float]:
    """The order statistics ``(i, j)`` (0-based) and weight ``g`` that :func:`numpy.quantile` combines.

    The quantile is ``lerp(x[i], x[j], g)`` over the sorted values, with numpy's own ``lerp``.
    """
    qa = np.float64(q)
    if method in ("inverted_cdf", "closest_observation"):
        v = n * qa - 1 - (0.5 if method == "closest_observation" else 0.0)
        prev = np.floor(v)
        gamma = v - prev
        cond = (gamma == 0) if method == "inverted_cdf" else ((gamma == 0) & (prev % 2 == 1))
        idx = int(max(0, prev if cond else prev + 1))
        idx = min(idx, n - 1)
        return idx, idx, 0.0
    if method in ("lower", "higher", "nearest"):
        fn = {"lower": np.floor, "higher": np.ceil, "nearest": np.around}[method]
        idx = int(fn((n - 1) * qa))
        return idx, idx, 0.0
    if method == "linear":
        v = (n - 1) * qa
    elif method == "averaged_inverted_cdf":
        v = n * qa - 1
    elif method == "midpoint":
        v = 0.5 * (np.floor((n - 1) * qa) + np.ceil((n - 1) * qa))
    elif method in ALPHA_BETA:
        a, b = ALPHA_BETA[method]
        v = n * qa + (a + qa * (1 - a - b)) - 1
    else:
        raise ValueError(f"unknown quantile method {method!r}; choose one of {', '.join(QUANTILE_METHODS)}")
    if v >= n - 1:
        return n - 1, n - 1, 0.0
    if v < 0:
        return 0, 0, 0.0
    prev = np.floor(v)
    gamma = v - prev
    if method == "averaged_inverted_cdf":
        gamma = 0.5 if gamma == 0 else 1.0
    elif method == "midpoint":
        gamma = 0.0 if v % 1 == 0 else 0.5
    return int(prev), int(prev) + 1, float(gamma)


def lerp(a: float, b: float, t: float) -> float:
    """numpy's ``lerp`` (monotone, exact at the ends), so results match :func:`numpy.quantile` to the bit."""
    a, b, t = np.float64(a), np.float64(b), np.float64(t)
    diff = b - a
    return float(b - diff * (1 - t) if t >= 0.5 else a + diff * t)


class KllSketch:
    """A picklable wrapper around ``datasketches.kll_doubles_sketch``."""

    def __init__(self, k: int) -> None:
        from datasketches import kll_doubles_sketch

        self.sketch = kll_doubles_sketch(k)

    def __getstate__(self) -> bytes:
        return self.sketch.serialize()

    def __setstate__(self, data: bytes) -> None:
        from datasketches import kll_doubles_sketch

        self.sketch = kll_doubles_sketch.deserialize(data)

    def update(self, values: np.ndarray) -> None:
        """Feed ``values`` (float64, no NaN) to the sketch, sorted first.

        The sketch's rank-error guarantee holds for any order of its input, and a sorted run makes its
        compactions' own sorts cheap: 20-35 ns a value instead of 30-50 (numpy's sort, which releases the GIL,
        included; ``benchmarks/bench_profile.py``)."""
        if len(values):
            self.sketch.update(np.sort(values))


class Quantiles(Analyzer):
    """Quantiles of numeric columns, exact by default (two passes), or from a KLL sketch with ``approx=True``.

    State: ``{"quantiles": float64 array of shape (n_columns, n_quantiles), "count": int64 array}``; NaN for a
    column without values.  ``method`` is any of :func:`numpy.quantile`'s methods.
    """


    def __init__(self, columns: Sequence[str], quantiles: Sequence[float], *, method: str = "linear",
                 approx: bool = False, k: int = 400) -> None:
        self.columns, self.quantiles, self.method, self.approx, self.k = (
            tuple(columns), tuple(float(q) for q in quantiles), method, approx, k)
        if method not in QUANTILE_METHODS:
            raise ValueError(f"unknown quantile method {method!r}; choose one of {', '.join(QUANTILE_METHODS)}")

    @property
    def mergeable_state(self) -> bool:  # type: ignore[override]
        """The sketch merges; an exact selection needs the old data again."""
        return self.approx

    def dump(self, acc: list[KllSketch]) -> list[bytes]:
        """The serialized KLL sketches (Apache DataSketches' portable format)."""
        return [sk.sketch.serialize() for sk in acc]

    def load(self, plain: list[bytes]) -> list[KllSketch]:
        out = self.create()
        for sk, b in zip(out, plain):
            sk.__setstate__(bytes(b))
        return out

    def reads(self) -> tuple[str, ...]:
        return self._reads()

    def create(self) -> list[KllSketch]:
        return [KllSketch(self.k) for _ in self.columns]

    def add(self, acc: list[KllSketch], batch: pa.RecordBatch) -> list[KllSketch]:
        for sk, c in zip(acc, self.columns):
            x = float_values(batch.column(c))
            sk.update(x[~np.isnan(x)])
        return acc

    def merge(self, accs: Sequence[list[KllSketch]]) -> list[KllSketch]:
        out = self.create()
        for acc in accs:
            for o, a in zip(out, acc):
                if a.sketch.n:
                    o.sketch.merge(a.sketch)
        return out

    def extract(self, acc: list[KllSketch]) -> dict[str, Any]:
        counts = np.array([sk.sketch.n for sk in acc], dtype=np.int64)
        if self.approx:
            qs = np.array([sk.sketch.get_quantiles(list(self.quantiles)) if sk.sketch.n else
                           [np.nan] * len(self.quantiles) for sk in acc], dtype=np.float64)
            return {"quantiles": qs.reshape(len(self.columns), len(self.quantiles)), "count": counts}
        from datasketches import kll_doubles_sketch

        eps = 2 * kll_doubles_sketch.get_normalized_rank_error(self.k, False)
        brackets = []
        for sk in acc:
            n = sk.sketch.n
            col = []
            for q in self.quantiles:
                if n == 0:
                    col.append((0, 0, 0.0, -np.inf, np.inf))
                    continue
                i, j, g = quantile_plan(n, q, self.method)
                lo = -np.inf if i / n - eps <= 0 else sk.sketch.get_quantile(i / n - eps)
                hi = np.inf if (j + 1) / n + eps >= 1 else sk.sketch.get_quantile((j + 1) / n + eps)
                col.append((i, j, g, float(lo), float(hi)))
            brackets.append(col)
        return {"count": counts, "brackets": brackets}

    def then(self, state: dict[str, Any]) -> Analyzer | None:
        if self.approx:
            return None
        return QuantileSelect(self.columns, state["count"].tolist(), state["brackets"])


class QuantileSelect(Analyzer):
    """Second pass of exact quantiles: count values below each bracket and keep those inside it."""

    def __init__(self, columns: Sequence[str], counts: list[int], brackets: list[list[tuple]]) -> None:
        self.columns, self.counts, self.brackets = tuple(columns), counts, brackets

    def reads(self) -> tuple[str, ...]:
        return self._reads()

    def create(self) -> list[list[list[Any]]]:
        return [[[0, []] for _ in col] for col in self.brackets]

    def add(self, acc: list, batch: pa.RecordBatch) -> list:
        for slots, col, c in zip(acc, self.brackets, self.columns):
            x = float_values(batch.column(c))
            for slot, (_, _, _, lo, hi) in zip(slots, col):
                slot[0] += int(np.count_nonzero(x < lo))
                inside = x[(x >= lo) & (x <= hi)]
                if len(inside):
                    slot[1].append(inside)
        return acc

    def merge(self, accs: Sequence[list]) -> list:
        out = self.create()
        for acc in accs:
            for oslots, aslots in zip(out, acc):
                for o, a in zip(oslots, aslots):
                    o[0] += a[0]
                    o[1].extend(a[1])
        return out

    def extract(self, acc: list) -> dict[str, Any]:
        result = np.full((len(self.columns), len(self.brackets[0]) if self.brackets else 0), np.nan)
        retry: list[list[tuple]] = []
        missed = False
        for ci, (slots, col, n) in enumerate(zip(acc, self.brackets, self.counts)):
            new_col = []
            for qi, ((below, parts), (i, j, g, lo, hi)) in enumerate(zip(slots, col)):
                new_col.append((i, j, g, lo, hi))
                if n == 0:
                    continue
                vals = np.sort(np.concatenate(parts)) if parts else np.zeros(0)
                if below <= i and j < below + len(vals):
                    result[ci, qi] = lerp(vals[i - below], vals[j - below], g)
                else:  # the sketch's probabilistic bound failed: widen the bracket on the side that missed
                    missed = True
                    new_col[-1] = (i, j, g, -np.inf if below > i else lo, np.inf if j >= below + len(vals) else hi)
            retry.append(new_col)
        state: dict[str, Any] = {"quantiles": result, "count": np.array(self.counts, dtype=np.int64)}
        if missed:
            state["retry"] = retry
        return state

    def then(self, state: dict[str, Any]) -> Analyzer | None:
        return QuantileSelect(self.columns, self.counts, state["retry"]) if "retry" in state else None
