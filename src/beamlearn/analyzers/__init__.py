"""Mergeable reductions: the full-pass statistics every fit is made of.

Each analyzer follows Beam's ``CombineFn`` contract, so one implementation serves every engine::

    acc   = analyzer.create()
    acc   = analyzer.add(acc, batch)          # per batch, any order, any partition
    acc   = analyzer.merge([acc1, acc2, ...]) # associative and commutative
    state = analyzer.extract(acc)             # plain data: numbers, strings, lists, numpy arrays
    nxt   = analyzer.then(state)              # another analyzer for a further pass, or None

Accumulators pickle (Beam moves them between workers).  Counts, extrema and vocabularies are identical under
any split of the data; floating sums and moments agree within a relative 1e-12, because float addition is not
associative and engines combine partial results in varying order.  Missing values (nulls and NaN) are never
part of a statistic; they are counted separately.

Quantiles are exact by default: a first pass with a KLL sketch brackets each wanted order statistic, a second
pass collects the values inside the bracket and selects exactly, reproducing :func:`numpy.quantile` for the
chosen ``method``.  ``approx=True`` answers from the sketch alone, within its rank error, non-deterministically
(KLL is randomized).

Examples
--------
>>> import pyarrow as pa
>>> m = Moments(["x"])
>>> acc = m.merge([m.add(m.create(), pa.record_batch({"x": [1.0, 2.0]})),
...                m.add(m.create(), pa.record_batch({"x": [3.0, None]}))])
>>> state = m.extract(acc)
>>> state["count"].tolist(), state["mean"].tolist(), state["var"].tolist()
([3.0], [2.0], [0.6666666666666666])
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beamlearn.batches import float_values, missing_mask, raw_values

__all__ = ["Analyzer", "Constant", "RowCount", "Moments", "MinMax", "ValueCounts", "Quantiles", "run_analyzer",
           "quantile_plan", "CoMoments", "GroupedMoments"]


class Analyzer:
    """Base class of mergeable reductions (see the module docstring for the contract).

    Subclasses store their parameters verbatim in ``__init__``; :meth:`key` is derived from them, so two
    analyzers with equal keys compute the same state and an engine may compute it once.
    """

    columns: tuple[str, ...] = ()
    reads_dictionary: bool = False
    """True when :meth:`add` takes a dictionary-encoded string column exactly as the decoded strings (an engine
    may then read such columns encoded: no string is built; :meth:`~beamlearn.pipeline.Pass.encoded_columns`)."""

    def key(self) -> tuple:
        """A hashable identity: the class and its parameters."""
        return (type(self).__name__,) + tuple(sorted((k, _freeze(v)) for k, v in vars(self).items()))

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"

    def create(self) -> Any:
        raise NotImplementedError

    def add(self, acc: Any, batch: pa.RecordBatch) -> Any:
        raise NotImplementedError

    def merge(self, accs: Sequence[Any]) -> Any:
        raise NotImplementedError

    def extract(self, acc: Any) -> Any:
        raise NotImplementedError

    def then(self, state: Any) -> Analyzer | None:
        """The analyzer of the next pass, given this pass's state; ``None`` when the statistic is complete."""
        return None

    def reads(self) -> tuple[str, ...] | None:
        """Every column :meth:`add` reads, or None when the analyzer does not declare them (an engine then
        reads every column).  Engines use it to read only the columns a pass needs."""
        return None

    def _reads(self, *extra: str | None) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self.columns, *(c for c in extra if c)]))


class Constant(Analyzer):
    """A statistic known at planning time (e.g. an estimator's resolved feature list): no data is read, the
    state is ``value``.  It lets plan-time facts travel with the fitted state through every engine.

    >>> run_analyzer(Constant(["a", "b"]), [])
    ['a', 'b']
    """

    def __init__(self, value: Any) -> None:
        self.value = value

    def reads(self) -> tuple[str, ...]:
        return ()

    def create(self) -> None:
        return None

    def add(self, acc: None, batch: pa.RecordBatch) -> None:
        return None

    def merge(self, accs: Sequence[None]) -> None:
        return None

    def extract(self, acc: None) -> Any:
        return self.value


def _freeze(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, np.ndarray):
        return ("ndarray", v.dtype.str, v.shape, v.tobytes())
    return v


def run_analyzer(analyzer: Analyzer, batches: Sequence[pa.RecordBatch]) -> Any:
    """Run ``analyzer`` (and the passes it asks for) over in-memory batches; a convenience for tests and docs."""
    state = None
    current: Analyzer | None = analyzer
    while current is not None:
        acc = current.create()
        for b in batches:
            acc = current.add(acc, b)
        state = current.extract(acc)
        current = current.then(state)
    return state


def _weights(batch: pa.RecordBatch, weight: str | None) -> np.ndarray | None:
    if weight is None:
        return None
    w = float_values(batch.column(weight))
    return np.where(np.isnan(w), 0.0, w)


# ---------------------------------------------------------------------------------------------- counts
class RowCount(Analyzer):
    """Rows, and missing values per column.

    State: ``{"rows": int, "missing": int64 array (one per column)}``.
    """

    reads_dictionary = True  # only null counts of strings

    def __init__(self, columns: Sequence[str] = ()) -> None:
        self.columns = tuple(columns)

    def reads(self) -> tuple[str, ...]:
        return self._reads()

    def create(self) -> list[int]:
        return [0] * (len(self.columns) + 1)

    def add(self, acc: list[int], batch: pa.RecordBatch) -> list[int]:
        acc[0] += batch.num_rows
        for i, c in enumerate(self.columns, 1):
            arr = batch.column(c)
            if pa.types.is_floating(arr.type):
                _, ok = raw_values(arr)
                acc[i] += 0 if ok is None else len(arr) - int(np.count_nonzero(ok))
            else:
                acc[i] += arr.null_count
        return acc

    def merge(self, accs: Sequence[list[int]]) -> list[int]:
        return [sum(x) for x in zip(*accs)]

    def extract(self, acc: list[int]) -> dict[str, Any]:
        return {"rows": acc[0], "missing": np.array(acc[1:], dtype=np.int64)}


# ---------------------------------------------------------------------------------------------- moments
class Moments(Analyzer):
    """Count, mean and (population) variance of numeric columns, merged with Chan et al.'s formulas.

    With ``weight`` (a column name) every statistic is weighted and ``count`` is the sum of weights.
    State: ``{"count", "mean", "var"}``, float64 arrays with one entry per column (NaN where count is 0).
    """

    def __init__(self, columns: Sequence[str], *, weight: str | None = None) -> None:
        self.columns, self.weight = tuple(columns), weight

    def reads(self) -> tuple[str, ...]:
        return self._reads(self.weight)

    def create(self) -> np.ndarray:
        return np.zeros((3, len(self.columns)))  # rows: n, mean, M2

    def add(self, acc: np.ndarray, batch: pa.RecordBatch) -> np.ndarray:
        if batch.num_rows == 0:
            return acc
        w = _weights(batch, self.weight)
        part = np.zeros_like(acc)
        with np.errstate(invalid="ignore", over="ignore"):  # +-inf data gives inf/NaN moments, as numpy does
            self._add_columns(batch, w, part)
        return self.merge([acc, part])

    def _add_columns(self, batch: pa.RecordBatch, w: np.ndarray | None, part: np.ndarray) -> None:
        for i, c in enumerate(self.columns):
            x, ok = raw_values(batch.column(c))
            if w is None:
                xs = x if ok is None else x[ok]
                n = float(len(xs))
                if n:
                    mean = xs.sum() / n
                    d = xs - mean
                    part[:, i] = n, mean, np.einsum("i,i->", d, d)
            else:
                ww = w if ok is None else np.where(ok, w, 0.0)
                n = float(ww.sum())
                if n:
                    xs = x if ok is None else np.where(ok, x, 0.0)
                    mean = np.einsum("i,i->", ww, xs) / n
                    d = xs - mean
                    part[:, i] = n, mean, np.einsum("i,i,i->", ww, d, d)

    def merge(self, accs: Sequence[np.ndarray]) -> np.ndarray:
        out = np.array(accs[0], dtype=np.float64, copy=True)
        for b in accs[1:]:
            na, ma, qa = out
            nb, mb, qb = b
            n = na + nb
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                delta = mb - ma
                frac = np.where(n > 0, nb / np.where(n > 0, n, 1), 0.0)
                out = np.stack([n, ma + delta * frac, qa + qb + delta * delta * na * frac])
        return out

    def extract(self, acc: np.ndarray) -> dict[str, np.ndarray]:
        n, mean, m2 = acc
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"count": n.copy(), "mean": np.where(n > 0, mean, np.nan),
                    "var": np.where(n > 0, m2 / np.where(n > 0, n, 1), np.nan)}


class MinMax(Analyzer):
    """Minimum and maximum of numeric columns (NaN when a column has no values). State: ``{"min", "max"}``."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = tuple(columns)

    def reads(self) -> tuple[str, ...]:
        return self._reads()

    def create(self) -> np.ndarray:
        return np.full((2, len(self.columns)), np.nan)

    def add(self, acc: np.ndarray, batch: pa.RecordBatch) -> np.ndarray:
        part = np.full_like(acc, np.nan)
        for i, c in enumerate(self.columns):
            x, ok = raw_values(batch.column(c))
            xs = x if ok is None else x[ok]
            if len(xs):
                part[:, i] = xs.min(), xs.max()
        return self.merge([acc, part])

    def merge(self, accs: Sequence[np.ndarray]) -> np.ndarray:
        out = np.array(accs[0], copy=True)
        for b in accs[1:]:
            out[0] = np.fmin(out[0], b[0])
            out[1] = np.fmax(out[1], b[1])
        return out

    def extract(self, acc: np.ndarray) -> dict[str, np.ndarray]:
        return {"min": acc[0].copy(), "max": acc[1].copy()}


# ---------------------------------------------------------------------------------------------- vocabularies
def _distinct_counts(arr: pa.Array) -> tuple[list[Any], list[int]]:
    """Distinct values (nulls included, as None) and their counts.  Strings go through dictionary encoding and
    ``np.bincount`` (about 20% faster than ``value_counts``'s hash aggregation)."""
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) or pa.types.is_dictionary(arr.type):
        d = arr if pa.types.is_dictionary(arr.type) else pc.dictionary_encode(arr)
        k = len(d.dictionary)
        idx = d.indices.fill_null(k) if d.null_count else d.indices
        counts = np.bincount(idx.to_numpy(zero_copy_only=False), minlength=k + 1)
        values = d.dictionary.to_pylist() + [None]
        keep = np.flatnonzero(counts)
        return [values[i] for i in keep], counts[keep].tolist()
    vc = pc.value_counts(arr)
    return vc.field("values").to_pylist(), vc.field("counts").to_pylist()


class ValueCounts(Analyzer):
    """How often each distinct value occurs, per column (missing values counted apart).

    State: one dict per column, ``{"values": [sorted distinct values], "counts": int64 array (or float64 with
    ``weight``), "missing": count}``.  Values sort in their natural order (strings by code point).
    """

    reads_dictionary = True  # counts the dictionary's indices

    def __init__(self, columns: Sequence[str], *, weight: str | None = None) -> None:
        self.columns, self.weight = tuple(columns), weight

    def reads(self) -> tuple[str, ...]:
        return self._reads(self.weight)

    def create(self) -> list[list[Any]]:
        return [[Counter(), 0] for _ in self.columns]

    def add(self, acc: list[list[Any]], batch: pa.RecordBatch) -> list[list[Any]]:
        if batch.num_rows == 0:
            return acc
        w = _weights(batch, self.weight)
        for slot, c in zip(acc, self.columns):
            arr = batch.column(c)
            if w is None:
                values, counts = _distinct_counts(arr)
                counter = slot[0]
                for v, k in zip(values, counts):
                    if v is None or v != v:  # null or NaN
                        slot[1] += k
                    else:
                        counter[v] += k
            else:
                if pa.types.is_dictionary(arr.type):
                    arr = arr.dictionary_decode()
                miss = missing_mask(arr) if (arr.null_count or pa.types.is_floating(arr.type)) else None
                keep = ~miss if miss is not None else np.ones(len(arr), bool)
                t = pa.table({"v": arr.filter(pa.array(keep)), "w": pa.array(w[keep])})
                g = t.group_by("v").aggregate([("w", "sum")])
                for v, k in zip(g.column("v").to_pylist(), g.column("w_sum").to_pylist()):
                    slot[0][v] += k
                if miss is not None:
                    slot[1] += float(w[miss].sum())
        return acc

    def merge(self, accs: Sequence[list[list[Any]]]) -> list[list[Any]]:
        out = [[Counter(), 0] for _ in self.columns]
        for acc in accs:
            for o, a in zip(out, acc):
                o[0].update(a[0])
                o[1] += a[1]
        return out

    def extract(self, acc: list[list[Any]]) -> list[dict[str, Any]]:
        states = []
        for counter, missing in acc:
            values = sorted(counter)
            dtype = np.float64 if self.weight else np.int64
            states.append({"values": values, "counts": np.array([counter[v] for v in values], dtype=dtype),
                           "missing": missing})
        return states


# ---------------------------------------------------------------------------------------------- quantiles
_METHODS = ("linear", "lower", "higher", "midpoint", "nearest", "inverted_cdf", "averaged_inverted_cdf",
            "closest_observation", "interpolated_inverted_cdf", "hazen", "weibull", "median_unbiased",
            "normal_unbiased")
_ALPHA_BETA = {"interpolated_inverted_cdf": (0, 1), "hazen": (0.5, 0.5), "weibull": (0, 0),
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
    elif method in _ALPHA_BETA:
        a, b = _ALPHA_BETA[method]
        v = n * qa + (a + qa * (1 - a - b)) - 1
    else:
        raise ValueError(f"unknown quantile method {method!r}; choose one of {', '.join(_METHODS)}")
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


def _lerp(a: float, b: float, t: float) -> float:
    """numpy's ``_lerp`` (monotone, exact at the ends), so results match :func:`numpy.quantile` to the bit."""
    a, b, t = np.float64(a), np.float64(b), np.float64(t)
    diff = b - a
    return float(b - diff * (1 - t) if t >= 0.5 else a + diff * t)


class _KLL:
    """A picklable wrapper around ``datasketches.kll_doubles_sketch``."""

    def __init__(self, k: int) -> None:
        from datasketches import kll_doubles_sketch

        self.sketch = kll_doubles_sketch(k)

    def __getstate__(self) -> bytes:
        return self.sketch.serialize()

    def __setstate__(self, data: bytes) -> None:
        from datasketches import kll_doubles_sketch

        self.sketch = kll_doubles_sketch.deserialize(data)


class Quantiles(Analyzer):
    """Quantiles of numeric columns, exact by default (two passes), or from a KLL sketch with ``approx=True``.

    State: ``{"quantiles": float64 array of shape (n_columns, n_quantiles), "count": int64 array}``; NaN for a
    column without values.  ``method`` is any of :func:`numpy.quantile`'s methods.
    """

    def __init__(self, columns: Sequence[str], quantiles: Sequence[float], *, method: str = "linear",
                 approx: bool = False, k: int = 400) -> None:
        self.columns, self.quantiles, self.method, self.approx, self.k = (
            tuple(columns), tuple(float(q) for q in quantiles), method, approx, k)
        if method not in _METHODS:
            raise ValueError(f"unknown quantile method {method!r}; choose one of {', '.join(_METHODS)}")

    def reads(self) -> tuple[str, ...]:
        return self._reads()

    def create(self) -> list[_KLL]:
        return [_KLL(self.k) for _ in self.columns]

    def add(self, acc: list[_KLL], batch: pa.RecordBatch) -> list[_KLL]:
        for sk, c in zip(acc, self.columns):
            x = float_values(batch.column(c))
            x = x[~np.isnan(x)]
            if len(x):
                sk.sketch.update(x)
        return acc

    def merge(self, accs: Sequence[list[_KLL]]) -> list[_KLL]:
        out = self.create()
        for acc in accs:
            for o, a in zip(out, acc):
                if a.sketch.n:
                    o.sketch.merge(a.sketch)
        return out

    def extract(self, acc: list[_KLL]) -> dict[str, Any]:
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
        return _QuantileSelect(self.columns, state["count"].tolist(), state["brackets"])


class _QuantileSelect(Analyzer):
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
                    result[ci, qi] = _lerp(vals[i - below], vals[j - below], g)
                else:  # the sketch's probabilistic bound failed: widen the bracket on the side that missed
                    missed = True
                    new_col[-1] = (i, j, g, -np.inf if below > i else lo, np.inf if j >= below + len(vals) else hi)
            retry.append(new_col)
        state: dict[str, Any] = {"quantiles": result, "count": np.array(self.counts, dtype=np.int64)}
        if missed:
            state["retry"] = retry
        return state

    def then(self, state: dict[str, Any]) -> Analyzer | None:
        return _QuantileSelect(self.columns, self.counts, state["retry"]) if "retry" in state else None


# ---------------------------------------------------------------------------------------------- co-moments
class CoMoments(Analyzer):
    """Count, mean vector and centred cross-product matrix of numeric columns (rows with any missing value
    skipped), merged with Chan et al.'s formula ``C = Ca + Cb + outer(d, d) * na * nb / n``.

    Centring before the cross products keeps the conditioning of the centred data (plain ``XᵀX`` of
    uncentred columns mixes the means in and loses precision).  With ``weight`` (a column; a missing weight
    is 0) every statistic is weighted and ``count`` is the sum of weights.
    State: ``{"count": float, "rows": int (complete rows), "skipped": int (rows with a missing value),
    "mean": (d,) array, "comoment": (d, d) array}``; ``comoment / count`` is the population covariance.

    >>> import pyarrow as pa
    >>> c = CoMoments(["x", "y"])
    >>> acc = c.merge([c.add(c.create(), pa.record_batch({"x": [1.0, 2.0], "y": [2.0, 4.0]})),
    ...                c.add(c.create(), pa.record_batch({"x": [3.0, None], "y": [6.0, 1.0]}))])
    >>> s = c.extract(acc)
    >>> s["count"], s["skipped"], s["mean"].tolist(), s["comoment"].tolist()
    (3.0, 1, [2.0, 4.0], [[2.0, 4.0], [4.0, 8.0]])
    """

    def __init__(self, columns: Sequence[str], *, weight: str | None = None) -> None:
        self.columns, self.weight = tuple(columns), weight

    def reads(self) -> tuple[str, ...]:
        return self._reads(self.weight)

    def create(self) -> list[Any]:
        d = len(self.columns)
        return [0.0, np.zeros(d), np.zeros((d, d)), 0, 0]  # count, mean, comoment, rows, skipped

    def add(self, acc: list[Any], batch: pa.RecordBatch) -> list[Any]:
        n = batch.num_rows
        if n == 0:
            return acc
        X = np.empty((n, len(self.columns)))
        ok: np.ndarray | None = None
        for j, c in enumerate(self.columns):
            x, valid = raw_values(batch.column(c))
            X[:, j] = x
            if valid is not None:
                ok = valid.copy() if ok is None else ok & valid
        w = _weights(batch, self.weight)
        skipped = 0
        if ok is not None:
            skipped = n - int(np.count_nonzero(ok))
            X = X[ok]
            w = None if w is None else w[ok]
        return self.merge([acc, self._moments(X, w, skipped)])

    @staticmethod
    def _moments(X: np.ndarray, w: np.ndarray | None, skipped: int) -> list[Any]:
        rows, d = X.shape
        count = float(rows) if w is None else float(w.sum())
        if count <= 0:
            return [0.0, np.zeros(d), np.zeros((d, d)), rows, skipped]
        with np.errstate(invalid="ignore", over="ignore"):
            mean = X.sum(axis=0) / count if w is None else (w @ X) / count
            D = X - mean
            C = D.T @ D if w is None else (D * w[:, None]).T @ D
        return [count, mean, (C + C.T) / 2, rows, skipped]

    def merge(self, accs: Sequence[list[Any]]) -> list[Any]:
        na, ma, ca, ra, sa = accs[0]
        ma, ca = np.array(ma, dtype=np.float64, copy=True), np.array(ca, dtype=np.float64, copy=True)
        for nb, mb, cb, rb, sb in accs[1:]:
            ra, sa = ra + rb, sa + sb
            if nb <= 0:
                continue
            if na <= 0:
                na, ma, ca = nb, np.array(mb, dtype=np.float64, copy=True), np.array(cb, dtype=np.float64, copy=True)
                continue
            n = na + nb
            delta = mb - ma
            ca = ca + cb + np.outer(delta, delta) * (na * nb / n)
            ma = ma + delta * (nb / n)
            na = n
        return [na, ma, ca, ra, sa]

    def extract(self, acc: list[Any]) -> dict[str, Any]:
        count, mean, C, rows, skipped = acc
        if count <= 0:
            mean = np.full(len(self.columns), np.nan)
        return {"count": float(count), "rows": int(rows), "skipped": int(skipped), "mean": np.array(mean),
                "comoment": np.array(C)}


# ---------------------------------------------------------------------------------------------- grouped moments
class GroupedMoments(Analyzer):
    """Weighted count, sum, mean and (population) variance of numeric columns per value of a ``by`` column.

    Only complete rows count: a row with a missing value in any of ``columns`` is skipped (``skipped``), and
    a row whose ``by`` value is missing is skipped too (``missing_by``).  Without ``by`` there is one group,
    keyed ``None``.  With ``weight`` every statistic is weighted (a missing weight is 0).  Sums and squared
    deviations are merged with Chan et al.'s formulas, so any split of the data agrees within rtol 1e-12.
    Subclasses may override :meth:`matrix` to reduce a function of the columns instead (e.g. binarized).

    State: ``{"groups": [sorted values], "rows": int64 (g,), "count": float64 (g,) (sum of weights),
    "sum", "mean", "var": float64 (g, d), "skipped": int, "missing_by": int}``.

    Examples
    --------
    >>> g = GroupedMoments(["x"], by="y")
    >>> s = run_analyzer(g, [pa.record_batch({"x": [1.0, 3.0, 5.0, None], "y": ["a", "a", "b", "b"]})])
    >>> s["groups"], s["mean"].tolist(), s["var"].tolist(), s["skipped"]
    (['a', 'b'], [[2.0], [5.0]], [[1.0], [0.0]], 1)
    """

    def __init__(self, columns: Sequence[str], *, by: str | None = None, weight: str | None = None) -> None:
        self.columns, self.by, self.weight = tuple(columns), by, weight

    def reads(self) -> tuple[str, ...]:
        return self._reads(self.by, self.weight)

    def matrix(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray | None]:
        """``(X, complete)``: the (n, d) float64 values of ``columns`` and the mask of complete rows (None
        when every row is complete)."""
        X = np.empty((batch.num_rows, len(self.columns)))
        complete: np.ndarray | None = None
        for j, c in enumerate(self.columns):
            x, ok = raw_values(batch.column(c))
            X[:, j] = x
            if ok is not None:
                complete = ok.copy() if complete is None else complete & ok
        return X, complete

    def create(self) -> dict[str, Any]:
        return {"groups": {}, "skipped": 0, "missing_by": 0}

    def add(self, acc: dict[str, Any], batch: pa.RecordBatch) -> dict[str, Any]:
        if batch.num_rows == 0:
            return acc
        X, keep = self.matrix(batch)
        if keep is not None:
            acc["skipped"] += int(batch.num_rows - np.count_nonzero(keep))
        keep = np.ones(batch.num_rows, bool) if keep is None else keep
        if self.by is None:
            codes, keys = np.zeros(batch.num_rows, np.int64), [None]
        else:
            arr = batch.column(self.by)
            miss = missing_mask(arr)
            acc["missing_by"] += int(np.count_nonzero(miss & keep))
            keep &= ~miss
            enc = arr.dictionary_encode()
            codes = enc.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
            keys = enc.dictionary.to_pylist()
        w = _weights(batch, self.weight)
        if not keep.all():
            X, codes, w = X[keep], codes[keep], (None if w is None else w[keep])
        if len(codes) == 0:
            return acc
        order = np.argsort(codes, kind="stable")
        present, starts = np.unique(codes[order], return_index=True)
        rows = np.diff(np.append(starts, len(codes)))
        Xs = X[order]
        if w is None:
            n = rows.astype(np.float64)
            S = np.add.reduceat(Xs, starts, axis=0)
        else:
            ws = w[order]
            n = np.add.reduceat(ws, starts)
            S = np.add.reduceat(Xs * ws[:, None], starts, axis=0)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            mean = np.where(n[:, None] > 0, S / np.where(n > 0, n, 1.0)[:, None], 0.0)
            D = Xs - np.repeat(mean, rows, axis=0)
            M2 = np.add.reduceat(D * D if w is None else D * D * ws[:, None], starts, axis=0)
        groups = acc["groups"]
        for g, code in enumerate(present):
            part = [int(rows[g]), float(n[g]), S[g], M2[g]]
            key = keys[code]
            groups[key] = part if key not in groups else self._chan(groups[key], part)
        return acc

    @staticmethod
    def _chan(a: list, b: list) -> list:
        ra, na, sa, qa = a
        rb, nb, sb, qb = b
        n = na + nb
        q = qa + qb
        if na > 0 and nb > 0:
            with np.errstate(invalid="ignore", over="ignore"):
                delta = sb / nb - sa / na
                q = q + delta * delta * (na * nb / n)
        return [ra + rb, n, sa + sb, q]

    def merge(self, accs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        out = self.create()
        for acc in accs:
            out["skipped"] += acc["skipped"]
            out["missing_by"] += acc["missing_by"]
            for key, part in acc["groups"].items():
                out["groups"][key] = part if key not in out["groups"] else self._chan(out["groups"][key], part)
        return out

    def extract(self, acc: dict[str, Any]) -> dict[str, Any]:
        keys = sorted(acc["groups"], key=lambda k: (k is not None, k))
        d = len(self.columns)
        parts = [acc["groups"][k] for k in keys]
        rows = np.array([p[0] for p in parts], dtype=np.int64)
        n = np.array([p[1] for p in parts], dtype=np.float64)
        S = np.array([p[2] for p in parts], dtype=np.float64).reshape(len(keys), d)
        M2 = np.array([p[3] for p in parts], dtype=np.float64).reshape(len(keys), d)
        with np.errstate(invalid="ignore", divide="ignore"):
            pos = (n > 0)[:, None]
            mean = np.where(pos, S / np.where(n > 0, n, 1.0)[:, None], np.nan)
            var = np.where(pos, M2 / np.where(n > 0, n, 1.0)[:, None], np.nan)
        return {"groups": keys, "rows": rows, "count": n, "sum": S, "mean": mean, "var": var,
                "skipped": acc["skipped"], "missing_by": acc["missing_by"]}
