"""Scalers: StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler.

Each is a thin composition of analyzers (moments, extrema, quantiles) and a vectorized affine map
``y = (x - offset) / scale`` (MinMaxScaler: ``x * scale + min``, as scikit-learn computes it).  Outputs are
float64 under the input names; missing values stay missing (null stays null, NaN stays NaN).  Results match
scikit-learn's scalers on the same data, including their handling of constant columns (scale 1).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from beamlearn.analyzers import Analyzer, MinMax, Moments, Quantiles
from beamlearn.errors import SpecError
from beamlearn.steps.base import RowFn, Step, map_columns, register_step

__all__ = ["MaxAbsScaler", "MinMaxScaler", "RobustScaler", "StandardScaler", "affine_row_function"]

_EPS = np.finfo(np.float64).eps


def affine_row_function(columns: Sequence[str], offset: np.ndarray, scale: np.ndarray,
                        divide: bool = True, *, shift: np.ndarray | None = None,
                        clip: tuple[float, float] | None = None) -> RowFn:
    """Row function computing ``(x - offset) / scale`` (or ``* scale``), then ``+ shift`` and ``clip`` if
    given, per column; None stays None, NaN NaN.

    The arithmetic is the same IEEE operations as :func:`affine_map`, so both paths give identical floats.

    Examples
    --------
    >>> fn = affine_row_function(["x"], np.array([1.0]), np.array([2.0]))
    >>> fn({"x": 5.0, "y": "kept"})
    {'x': 2.0, 'y': 'kept'}
    """
    if shift is None and clip is None:
        spec = [(c, float(o), float(s)) for c, o, s in zip(columns, offset, scale)]
        if divide:
            def fn(row: dict) -> dict:
                for c, o, s in spec:
                    v = row[c]
                    row[c] = None if v is None else (v - o) / s
                return row
        else:
            def fn(row: dict) -> dict:
                for c, o, s in spec:
                    v = row[c]
                    row[c] = None if v is None else (v - o) * s
                return row
        return fn
    shifts = np.zeros(len(offset)) if shift is None else shift
    full = [(c, float(o), float(s), float(m)) for c, o, s, m in zip(columns, offset, scale, shifts)]
    if clip is None and not divide:  # MinMaxScaler's x * scale + min
        def fn_shift(row: dict) -> dict:
            for c, o, s, m in full:
                v = row[c]
                if v is not None:
                    row[c] = (v - o) * s + m
            return row

        return fn_shift
    lo, hi = (float(clip[0]), float(clip[1])) if clip is not None else (-np.inf, np.inf)

    def fn_general(row: dict) -> dict:
        for c, o, s, m in full:
            v = row[c]
            if v is not None:
                y = ((v - o) / s if divide else (v - o) * s) + m
                row[c] = lo if y < lo else hi if y > hi else y  # noqa: FURB136 - NaN compares false: stays NaN
        return row

    return fn_general


class Affine(NamedTuple):
    """The fitted parameters of an affine scaler: ``clip((x - offset) / scale + shift)`` (``* scale`` when
    ``divide`` is false); ``shift`` and ``clip`` are optional.

    Examples
    --------
    >>> a = Affine(np.array([1.0]), np.array([2.0]), shift=np.array([10.0]), clip=(0.0, 11.0))
    >>> affine_map(a)(np.array([3.0, 9.0]), 0).tolist()
    [11.0, 11.0]
    """

    offset: np.ndarray
    scale: np.ndarray
    divide: bool = True
    shift: np.ndarray | None = None
    clip: tuple[float, float] | None = None


def affine_map(a: Affine) -> Any:
    """The vectorized ``fn(x, i)`` of :func:`~beamlearn.steps.base.map_columns` for column ``i`` of ``a``.

    Examples
    --------
    >>> affine_map(Affine(np.array([1.0]), np.array([2.0])))(np.array([1.0, 5.0, np.nan]), 0).tolist()
    [0.0, 2.0, nan]
    """
    def fn(x: np.ndarray, i: int) -> np.ndarray:
        y = np.subtract(x, a.offset[i])
        (np.divide if a.divide else np.multiply)(y, a.scale[i], out=y)
        if a.shift is not None:
            np.add(y, a.shift[i], out=y)
        if a.clip is not None:
            np.clip(y, a.clip[0], a.clip[1], out=y)
        return y

    return fn


def handle_zeros_in_scale(scale: np.ndarray) -> np.ndarray:
    """scikit-learn's rule for near-constant columns: a scale below ``10 * eps`` becomes 1 (NaN stays NaN).

    Examples
    --------
    >>> handle_zeros_in_scale(np.array([0.0, 1e-20, 2.0, np.nan])).tolist()
    [1.0, 1.0, 2.0, nan]
    """
    scale = np.array(scale, dtype=np.float64, copy=True)
    scale[scale < 10 * _EPS] = 1.0
    return scale


class _AffineScaler(Step):
    """Shared parts of the scalers: numeric input check, the vectorized map and the row function of an
    :class:`Affine` that subclasses derive from their fitted state in :meth:`affine`."""

    def check(self, schema: pa.Schema) -> None:
        super().check(schema)
        self._check_kind(schema, ["numeric", "boolean"])

    def affine(self, state: dict[str, Any]) -> Affine:
        raise NotImplementedError

    def apply(self, batch: pa.RecordBatch, state: dict[str, Any]) -> pa.RecordBatch:
        return map_columns(batch, self.input_columns(), affine_map(self.affine(state)))

    def row_function(self, state: dict[str, Any], schema: pa.Schema) -> RowFn:
        a = self.affine(state)
        return affine_row_function(self.input_columns(), a.offset, a.scale, a.divide, shift=a.shift,
                                   clip=a.clip)


@register_step
class StandardScaler(_AffineScaler):
    """Standardize columns: ``(x - mean) / std``, as :class:`sklearn.preprocessing.StandardScaler`.

    Parameters
    ----------
    columns:
        Numeric columns to scale (replaced in place, float64).
    with_mean:
        Subtract the mean (else the offset is 0).
    with_std:
        Divide by the population standard deviation (else the scale is 1).  A constant column gets scale 1;
        a column without any value at fit maps everything to NaN (as scikit-learn).

    Attributes
    ----------
    The fitted state holds the ``moments`` analyzer's ``count``, ``mean`` and ``var`` per column.

    Examples
    --------
    >>> import beamlearn as bl
    >>> f = bl.Pipeline([bl.StandardScaler(["x"])]).fit({"x": [1.0, 2.0, 3.0, None]})
    >>> f.transform({"x": [1.0, 3.0, None]}).column("x").to_pylist()
    [-1.224744871391589, 1.224744871391589, None]
    >>> f.transform_one({"x": 2.0})
    {'x': 0.0}
    """

    def __init__(self, columns: str | Sequence[str], *, with_mean: bool = True,
                 with_std: bool = True) -> None:
        self.columns, self.with_mean, self.with_std = columns, with_mean, with_std

    def analyzers(self) -> dict[str, Analyzer]:
        return {"moments": Moments(self.input_columns())}

    def _offset_scale(self, state: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        m = state["moments"]
        n, mean, var = (np.asarray(m[k], dtype=np.float64) for k in ("count", "mean", "var"))
        offset = mean if self.with_mean else np.zeros_like(mean)  # NaN for a column without values
        if not self.with_std:
            return offset, np.ones_like(mean)
        var = np.nan_to_num(var, nan=0.0)
        scale = np.sqrt(var)
        constant = var <= n * _EPS * var + (n * np.nan_to_num(mean) * _EPS) ** 2
        scale[constant | (scale < 10 * _EPS)] = 1.0
        scale[n == 0] = np.nan
        return offset, scale

    def affine(self, state: dict[str, Any]) -> Affine:
        return Affine(*self._offset_scale(state))

    def describe(self, state: dict[str, Any]) -> dict[str, Any]:
        offset, scale = self._offset_scale(state)
        return {c: {"mean": float(o), "scale": float(s), "count": float(n)} for c, o, s, n in
                zip(self.input_columns(), offset, scale, state["moments"]["count"])}


@register_step
class MinMaxScaler(_AffineScaler):
    """Scale columns to ``feature_range``: ``x * scale + min``, as :class:`sklearn.preprocessing.MinMaxScaler`
    does.

    ``scale = (hi - lo) / (data_max - data_min)`` and ``min = lo - data_min * scale``, computed in the same
    order as scikit-learn, so outputs are identical.  A constant column gets range 1 (sklearn's rule); a
    column without values at fit maps everything to NaN.

    Parameters
    ----------
    columns:
        Numeric columns to scale (replaced in place, float64).
    feature_range:
        ``(lo, hi)`` with ``lo < hi``: the range the fitted minimum and maximum map to.
    clip:
        Clip transformed values to ``feature_range`` (values outside the fitted range otherwise map outside
        it).

    Attributes
    ----------
    The fitted state holds the ``range`` analyzer's ``min`` and ``max`` per column.

    Examples
    --------
    >>> import beamlearn as bl
    >>> f = bl.Pipeline([bl.MinMaxScaler(["x"], clip=True)]).fit({"x": [2.0, 4.0, None, 6.0]})
    >>> f.transform({"x": [4.0, 10.0, None]}).column("x").to_pylist()
    [0.5, 1.0, None]
    >>> f.transform_one({"x": 3.0})
    {'x': 0.25}
    """

    def __init__(self, columns: str | Sequence[str], *, feature_range: tuple[float, float] = (0, 1),
                 clip: bool = False) -> None:
        self.columns, self.feature_range, self.clip = columns, feature_range, clip

    def check(self, schema: pa.Schema) -> None:
        fr = self.feature_range
        if (not isinstance(fr, (tuple, list)) or len(fr) != 2
                or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in fr)):
            raise SpecError(f"MinMaxScaler: feature_range={fr!r} must be a pair of numbers (lo, hi)")
        if not fr[0] < fr[1]:
            raise SpecError(f"MinMaxScaler: feature_range={tuple(fr)!r}: the minimum of the desired feature "
                            "range must be smaller than its maximum")
        super().check(schema)

    def analyzers(self) -> dict[str, Analyzer]:
        return {"range": MinMax(self.input_columns())}

    def affine(self, state: dict[str, Any]) -> Affine:
        lo, hi = self.feature_range
        data_min = np.asarray(state["range"]["min"], dtype=np.float64)
        data_max = np.asarray(state["range"]["max"], dtype=np.float64)
        scale = (hi - lo) / handle_zeros_in_scale(data_max - data_min)
        shift = lo - data_min * scale
        return Affine(np.zeros_like(scale), scale, False, shift, (lo, hi) if self.clip else None)

    def describe(self, state: dict[str, Any]) -> dict[str, Any]:
        a = self.affine(state)
        return {c: {"data_min": float(lo), "data_max": float(hi), "scale": float(s), "min": float(m)}
                for c, lo, hi, s, m in zip(self.input_columns(), state["range"]["min"], state["range"]["max"],
                                           a.scale, a.shift)}


@register_step
class MaxAbsScaler(_AffineScaler):
    """Scale columns by their maximum absolute value, as :class:`sklearn.preprocessing.MaxAbsScaler`.

    Values map into ``[-1, 1]``; zero stays zero (sparsity is kept).  A column of zeros gets scale 1.

    Parameters
    ----------
    columns:
        Numeric columns to scale (replaced in place, float64).

    Attributes
    ----------
    The fitted state holds the ``range`` analyzer's ``min`` and ``max``; the scale is the larger magnitude.

    Examples
    --------
    >>> import beamlearn as bl
    >>> f = bl.Pipeline([bl.MaxAbsScaler(["x"])]).fit({"x": [-4.0, 2.0, None]})
    >>> f.transform({"x": [-4.0, 1.0, None]}).column("x").to_pylist()
    [-1.0, 0.25, None]
    >>> f.transform_one({"x": 2.0})
    {'x': 0.5}
    """

    def __init__(self, columns: str | Sequence[str]) -> None:
        self.columns = columns

    def analyzers(self) -> dict[str, Analyzer]:
        return {"range": MinMax(self.input_columns())}

    def affine(self, state: dict[str, Any]) -> Affine:
        lo = np.asarray(state["range"]["min"], dtype=np.float64)
        hi = np.asarray(state["range"]["max"], dtype=np.float64)
        scale = handle_zeros_in_scale(np.fmax(np.abs(lo), np.abs(hi)))
        return Affine(np.zeros_like(scale), scale)

    def describe(self, state: dict[str, Any]) -> dict[str, Any]:
        a = self.affine(state)
        return {c: {"max_abs": float(s)} for c, s in zip(self.input_columns(), a.scale)}


@register_step
class RobustScaler(_AffineScaler):
    """Center on the median and scale by a quantile range, as :class:`sklearn.preprocessing.RobustScaler`.

    Quantiles are exact by default (two passes over the data, equal to :func:`numpy.nanpercentile`'s linear
    method that scikit-learn uses).  ``approx=True`` takes them from a KLL sketch in one pass instead: within
    the sketch's rank error (about 0.7% of the rows, at 99% confidence, for its default size) and not
    deterministic.  A zero
    quantile range gives scale 1 (sklearn's rule).

    Parameters
    ----------
    columns:
        Numeric columns to scale (replaced in place, float64).
    with_centering:
        Subtract the median.
    with_scaling:
        Divide by the quantile range ``q_max - q_min``.
    quantile_range:
        ``(q_min, q_max)`` in percent, ``0 <= q_min <= q_max <= 100``.
    unit_variance:
        Also divide by the quantile range of a standard normal, so normal data gets unit variance.
    approx:
        Use the one-pass sketch quantiles (non-deterministic, rank error bounded) instead of exact ones.

    Attributes
    ----------
    The fitted state holds the ``quantiles`` analyzer's ``quantiles`` per column: the median (with centering)
    followed by ``q_min`` and ``q_max`` (with scaling).

    Examples
    --------
    >>> import beamlearn as bl
    >>> f = bl.Pipeline([bl.RobustScaler(["x"])]).fit({"x": [1.0, 2.0, 3.0, 4.0, 100.0, None]})
    >>> f.transform({"x": [3.0, 5.0, None]}).column("x").to_pylist()
    [0.0, 1.0, None]
    >>> f.transform_one({"x": 1.0})
    {'x': -1.0}
    """

    def __init__(self, columns: str | Sequence[str], *, with_centering: bool = True,
                 with_scaling: bool = True, quantile_range: tuple[float, float] = (25.0, 75.0),
                 unit_variance: bool = False, approx: bool = False) -> None:
        self.columns, self.with_centering, self.with_scaling = columns, with_centering, with_scaling
        self.quantile_range, self.unit_variance, self.approx = quantile_range, unit_variance, approx

    def check(self, schema: pa.Schema) -> None:
        self._quantiles()  # validates quantile_range
        super().check(schema)

    def _quantiles(self) -> list[float]:
        """The quantiles to fit (median, q_min, q_max as fractions); SpecError on a bad quantile_range."""
        qr = self.quantile_range
        if (not isinstance(qr, (tuple, list)) or len(qr) != 2
                or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in qr)
                or not 0 <= qr[0] <= qr[1] <= 100):
            raise SpecError(f"RobustScaler: quantile_range={qr!r} must be a pair (q_min, q_max) of "
                            "percentages with 0 <= q_min <= q_max <= 100")
        if self.unit_variance and self.with_scaling and not 0 < qr[0] < qr[1] < 100:
            raise SpecError(f"RobustScaler: unit_variance=True needs 0 < q_min < q_max < 100 (got "
                            f"quantile_range={tuple(qr)!r}): the normal quantile range would be infinite "
                            "or zero")
        qs = [0.5] if self.with_centering else []
        if self.with_scaling:
            qs += [float(self.quantile_range[0]) / 100, float(self.quantile_range[1]) / 100]
        return qs

    def analyzers(self) -> dict[str, Analyzer]:
        qs = self._quantiles()
        return {"quantiles": Quantiles(self.input_columns(), qs, approx=self.approx)} if qs else {}

    def affine(self, state: dict[str, Any]) -> Affine:
        k = len(self.input_columns())
        q = np.asarray(state["quantiles"]["quantiles"], dtype=np.float64) if "quantiles" in state else None
        center = q[:, 0] if self.with_centering else np.zeros(k)
        scale = np.ones(k)
        if self.with_scaling:
            j = 1 if self.with_centering else 0
            scale = handle_zeros_in_scale(q[:, j + 1] - q[:, j])
            if self.unit_variance:
                scale = scale / (_norm_ppf(self.quantile_range[1] / 100.0)
                                 - _norm_ppf(self.quantile_range[0] / 100.0))
        return Affine(center, scale)

    def describe(self, state: dict[str, Any]) -> dict[str, Any]:
        a = self.affine(state)
        return {c: {"center": float(o), "scale": float(s)} for c, o, s in zip(self.input_columns(), *a[:2])}


def _norm_ppf(p: float) -> float:
    """The standard normal quantile function (scipy's ``norm.ppf``): ``ppf(0) = -inf``, ``ppf(1) = inf``."""
    if p <= 0:
        return -np.inf
    if p >= 1:
        return np.inf
    return NormalDist().inv_cdf(p)
