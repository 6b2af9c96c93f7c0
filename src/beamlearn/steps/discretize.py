"""Discretizers: KBinsDiscretizer.

Bin edges are fitted from mergeable statistics (exact extrema, and exact or sketched quantiles), exactly as
:class:`sklearn.preprocessing.KBinsDiscretizer` computes them with ``subsample=None``; the transform is
sklearn's ``searchsorted(edges[1:-1], x, side="right")``.

Missing values (null or NaN) are not part of any statistic.  scikit-learn rejects them; here they stay missing:
null in the ordinal encoding, an all-zero row in the one-hot encoding.

Examples
--------
>>> import beamlearn as bl
>>> f = bl.Pipeline([bl.KBinsDiscretizer("x", n_bins=2, encode="ordinal")]).fit({"x": [1.0, 2.0, 3.0, 4.0]})
>>> f.transform({"x": [1.0, 4.0, None]}).column("x").to_pylist()
[0.0, 1.0, None]
"""

from __future__ import annotations

import warnings
from bisect import bisect_right
from collections.abc import Sequence
from numbers import Integral
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn.analyzers import Analyzer, MinMax, Quantiles
from beamlearn.batches import raw_values
from beamlearn.errors import DataWarning, SpecError
from beamlearn.steps.base import RowFn, Step, register_step, replace_columns
from beamlearn.steps.encode import one_hot_columns, one_hot_row

__all__ = ["KBinsDiscretizer"]

_ENCODES = ("onehot", "onehot-dense", "ordinal")
_STRATEGIES = ("uniform", "quantile")
_QUANTILE_METHODS = ("inverted_cdf", "averaged_inverted_cdf", "closest_observation", "interpolated_inverted_cdf",
                     "hazen", "weibull", "linear", "median_unbiased", "normal_unbiased")


class _BinEdges(Analyzer):
    """Bin edges of numeric columns: extrema (and quantiles) in as many passes as they need, then sklearn's
    edge computation, narrow-bin removal and warnings.

    State: ``{"edges": [float64 array per column], "n_bins": int64 array}``.
    """

    def __init__(self, columns: Sequence[str], n_bins: Sequence[int], strategy: str, method: str, approx: bool,
                 parts: dict[str, Analyzer] | None = None, done: dict[str, Any] | None = None) -> None:
        self.columns, self.n_bins = tuple(columns), tuple(int(n) for n in n_bins)
        self.strategy, self.method, self.approx = strategy, method, approx
        if parts is None:
            parts = {"range": MinMax(self.columns)}
            if strategy == "quantile":
                for n in sorted(set(self.n_bins)):
                    cols = [c for c, k in zip(self.columns, self.n_bins) if k == n]
                    parts[f"q{n}"] = Quantiles(cols, np.linspace(0, 100, n + 1) / 100, method=method,
                                               approx=approx)
        self.parts, self.done = parts, dict(done or {})

    def create(self) -> dict[str, Any]:
        return {name: a.create() for name, a in self.parts.items()}

    def add(self, acc: dict[str, Any], batch: pa.RecordBatch) -> dict[str, Any]:
        for name, a in self.parts.items():
            acc[name] = a.add(acc[name], batch)
        return acc

    def merge(self, accs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {name: a.merge([acc[name] for acc in accs]) for name, a in self.parts.items()}

    @property
    def mergeable_state(self) -> bool:  # type: ignore[override]
        return all(a.mergeable_state for a in self.parts.values())

    def dump(self, acc: dict[str, Any]) -> dict[str, Any]:
        return {name: a.dump(acc[name]) for name, a in self.parts.items()}

    def load(self, plain: dict[str, Any]) -> dict[str, Any]:
        return {name: a.load(plain[name]) for name, a in self.parts.items()}

    def decay(self, acc: dict[str, Any], factor: float) -> dict[str, Any] | None:
        out = {name: a.decay(acc[name], factor) for name, a in self.parts.items()}
        return None if any(v is None for v in out.values()) else out

    def extract(self, acc: dict[str, Any]) -> dict[str, Any]:
        states = {name: a.extract(acc[name]) for name, a in self.parts.items()}
        if any(a.then(states[name]) is not None for name, a in self.parts.items()):
            return {"pending": states}
        return self._finish({**self.done, **states})

    def then(self, state: dict[str, Any]) -> Analyzer | None:
        if "pending" not in state:
            return None
        parts, done = {}, dict(self.done)
        for name, a in self.parts.items():
            nxt = a.then(state["pending"][name])
            if nxt is None:
                done[name] = state["pending"][name]
            else:
                parts[name] = nxt
        return _BinEdges(self.columns, self.n_bins, self.strategy, self.method, self.approx, parts, done)

    def _finish(self, states: dict[str, Any]) -> dict[str, Any]:
        lo, hi = states["range"]["min"], states["range"]["max"]
        edges, n_bins = [], []
        for i, (c, n) in enumerate(zip(self.columns, self.n_bins)):
            if np.isnan(lo[i]) or lo[i] == hi[i]:
                what = "has no values" if np.isnan(lo[i]) else "is constant"
                warnings.warn(f"KBinsDiscretizer: column {c!r} {what}; it gets a single bin (0)", DataWarning,
                              stacklevel=2)
                edges.append(np.array([-np.inf, np.inf]))
                n_bins.append(1)
                continue
            if self.strategy == "uniform":
                e = np.linspace(lo[i], hi[i], n + 1)
            else:
                q = states[f"q{n}"]
                row = [k for k, k_n in zip(self.columns, self.n_bins) if k_n == n].index(c)
                e = np.array(q["quantiles"][row], dtype=np.float64)
                e[0], e[-1] = lo[i], hi[i]  # exact already, unless approx (the sketch's ends are not the extrema)
                e = np.maximum.accumulate(e)
                keep = np.ediff1d(e, to_begin=np.inf) > 1e-8
                e = e[keep]
                if len(e) - 1 != n:
                    warnings.warn(f"KBinsDiscretizer: bins whose width is too small (<= 1e-8) in column {c!r} "
                                  f"are removed ({len(e) - 1} of {n} kept); consider decreasing the number of "
                                  "bins", DataWarning, stacklevel=2)
            edges.append(e)
            n_bins.append(len(e) - 1)
        return {"edges": edges, "n_bins": np.array(n_bins, dtype=np.int64)}


@register_step
class KBinsDiscretizer(Step):
    """Bin numeric columns into intervals, as :class:`sklearn.preprocessing.KBinsDiscretizer` (``subsample=None``).

    Parameters
    ----------
    columns:
        Numeric (or boolean) columns to bin; each is replaced by its encoding.
    n_bins:
        The number of bins (at least 2), or one per column.
    encode:
        ``"onehot"`` (or ``"onehot-dense"``, the same here): uint8 indicator columns named ``{col}_{bin}.0`` as
        sklearn's ``get_feature_names_out``; ``"ordinal"``: the bin index as float64 under the input name.
    strategy:
        ``"uniform"`` (equal widths between the extrema) or ``"quantile"`` (equal counts).  sklearn's
        ``"kmeans"`` is not supported.
    quantile_method:
        :func:`numpy.percentile`'s method for ``strategy="quantile"`` (sklearn's choices).
    approx:
        Quantile edges from a KLL sketch alone (one pass, randomized, within the sketch's rank error) instead
        of exact ones (two passes).

    Notes
    -----
    As in sklearn, a constant column gets one bin (index 0), and quantile bins narrower than 1e-8 are removed;
    both emit a :class:`~beamlearn.errors.DataWarning`.  Missing values stay missing (null ordinal, all-zero
    one-hot), where sklearn would reject them.  The fitted state holds ``edges`` (one array per column) and
    ``n_bins`` (after removals).

    Examples
    --------
    >>> import beamlearn as bl
    >>> f = bl.Pipeline([bl.KBinsDiscretizer(["x"], n_bins=3, strategy="uniform")]).fit(
    ...     {"x": [0.0, 1.0, 2.0, 3.0]})
    >>> f.transform_one({"x": 1.5})
    {'x_0.0': 0, 'x_1.0': 1, 'x_2.0': 0}
    >>> f.transform_one({"x": None})
    {'x_0.0': 0, 'x_1.0': 0, 'x_2.0': 0}
    """

    def __init__(self, columns: str | Sequence[str], *, n_bins: int | Sequence[int] = 5, encode: str = "onehot",
                 strategy: str = "quantile", quantile_method: str = "averaged_inverted_cdf",
                 approx: bool = False) -> None:
        self.columns, self.n_bins, self.encode, self.strategy = columns, n_bins, encode, strategy
        self.quantile_method, self.approx = quantile_method, approx

    # -------------------------------------------------------------------- validation and fit
    def _bins_per_column(self) -> list[int]:
        cols = self.input_columns()
        n = self.n_bins
        if isinstance(n, Integral) and not isinstance(n, bool):
            per = [int(n)] * len(cols)
        elif isinstance(n, (list, tuple)) and len(n) == len(cols):
            per = list(n)
        else:
            raise SpecError(f"KBinsDiscretizer: n_bins={n!r} must be an integer or a list with one integer per "
                            f"column ({len(cols)} columns)")
        for c, k in zip(cols, per):
            if not isinstance(k, Integral) or isinstance(k, bool) or k < 2:
                raise SpecError(f"KBinsDiscretizer: n_bins for column {c!r} is {k!r}; it must be an integer >= 2")
        return [int(k) for k in per]

    def _validate(self) -> list[int]:
        self._check_choice("encode", _ENCODES)
        self._check_choice("strategy", _STRATEGIES)
        self._check_choice("quantile_method", _QUANTILE_METHODS)
        self._check_choice("approx", (False, True))
        return self._bins_per_column()

    def check(self, schema: pa.Schema) -> None:
        self._validate()
        super().check(schema)
        self._check_kind(schema, ["numeric", "boolean"])

    def analyzers(self) -> dict[str, Analyzer]:
        return {"bins": _BinEdges(self.input_columns(), self._validate(), self.strategy, self.quantile_method,
                                  bool(self.approx))}

    # -------------------------------------------------------------------- transform
    def _names(self, c: str, n: int) -> list[str]:
        return [c] if self.encode == "ordinal" else [f"{c}_{float(j)}" for j in range(n)]

    def apply(self, batch: pa.RecordBatch, state: dict[str, Any]) -> pa.RecordBatch:
        bins = state["bins"]
        outputs: list[tuple[str, pa.Array]] = []
        for c, edges, n in zip(self.input_columns(), bins["edges"], bins["n_bins"]):
            arr = batch.column(c)
            x, valid = raw_values(arr)
            codes = np.searchsorted(np.asarray(edges, dtype=np.float64)[1:-1], x, side="right")
            if self.encode == "ordinal":
                out = codes.astype(np.float64)
                outputs.append((c, pa.array(out, mask=None if valid is None else ~valid, type=pa.float64())))
                continue
            if valid is not None:
                codes[~valid] = -1
            outputs += one_hot_columns(codes, int(n), self._names(c, int(n)))
        return replace_columns(batch, self.input_columns(), outputs)

    def row_function(self, state: dict[str, Any], schema: pa.Schema) -> RowFn:
        bins = state["bins"]
        spec = [(c, [float(e) for e in edges[1:-1]], one_hot_row(self._names(c, int(n))))
                for c, edges, n in zip(self.input_columns(), bins["edges"], bins["n_bins"])]
        if self.encode == "ordinal":
            def ordinal(row: dict) -> dict:
                for c, inner, _ in spec:
                    v = row[c]
                    row[c] = None if v is None or v != v else float(bisect_right(inner, float(v)))
                return row
            return ordinal

        def onehot(row: dict) -> dict:
            for c, inner, set_bin in spec:
                v = row.pop(c)
                set_bin(row, -1 if v is None or v != v else bisect_right(inner, float(v)))
            return row
        return onehot

    def describe(self, state: dict[str, Any]) -> dict[str, Any]:
        bins = state["bins"]
        return {c: {"n_bins": int(n), "bin_edges": [float(e) for e in edges]}
                for c, edges, n in zip(self.input_columns(), bins["edges"], bins["n_bins"])}
