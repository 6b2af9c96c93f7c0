"""Scalers: StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler.

Each is a thin composition of analyzers (moments, extrema, quantiles) and a vectorized affine map.  Outputs are
float64 under the input names; missing values (null or NaN) stay missing (null).  Results match
scikit-learn's scalers on the same data, including their handling of constant columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn.analyzers import Analyzer, Moments
from beamlearn.steps.base import RowFn, Step, map_columns, register_step

__all__ = ["StandardScaler"]

_EPS = np.finfo(np.float64).eps


def affine_row_function(columns: Sequence[str], offset: np.ndarray, scale: np.ndarray,
                        divide: bool = True) -> RowFn:
    """Row function computing ``(x - offset) / scale`` (or ``* scale``) per column; None stays None, NaN NaN.

    The arithmetic is the same IEEE operations as the vectorized path, so both give identical floats.
    """
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


@register_step
class StandardScaler(Step):
    """Standardize columns: ``(x - mean) / std``, as :class:`sklearn.preprocessing.StandardScaler`.

    Parameters
    ----------
    columns:
        Numeric columns to scale (replaced in place, float64).
    with_mean:
        Subtract the mean (else the offset is 0).
    with_std:
        Divide by the population standard deviation (else the scale is 1).  A constant column gets scale 1.

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

    def __init__(self, columns: str | Sequence[str], *, with_mean: bool = True, with_std: bool = True) -> None:
        self.columns, self.with_mean, self.with_std = columns, with_mean, with_std

    def check(self, schema: pa.Schema) -> None:
        super().check(schema)
        self._check_kind(schema, ["numeric", "boolean"])

    def analyzers(self) -> dict[str, Analyzer]:
        return {"moments": Moments(self.input_columns())}

    def _offset_scale(self, state: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        m = state["moments"]
        n, mean, var = (np.asarray(m[k], dtype=np.float64) for k in ("count", "mean", "var"))
        offset = np.nan_to_num(mean, nan=0.0) if self.with_mean else np.zeros_like(mean)
        if not self.with_std:
            return offset, np.ones_like(mean)
        var = np.nan_to_num(var, nan=0.0)
        scale = np.sqrt(var)
        constant = var <= n * _EPS * var + (n * np.nan_to_num(mean) * _EPS) ** 2
        scale[constant | (scale < 10 * _EPS)] = 1.0
        return offset, scale

    def apply(self, batch: pa.RecordBatch, state: dict[str, Any]) -> pa.RecordBatch:
        offset, scale = self._offset_scale(state)
        def scaled(x: np.ndarray, i: int) -> np.ndarray:
            y = np.subtract(x, offset[i])
            return np.divide(y, scale[i], out=y)

        return map_columns(batch, self.input_columns(), scaled)

    def row_function(self, state: dict[str, Any], schema: pa.Schema) -> RowFn:
        offset, scale = self._offset_scale(state)
        return affine_row_function(self.input_columns(), offset, scale)

    def describe(self, state: dict[str, Any]) -> dict[str, Any]:
        offset, scale = self._offset_scale(state)
        return {c: {"mean": float(o), "scale": float(s), "count": float(n)} for c, o, s, n in
                zip(self.input_columns(), offset, scale, state["moments"]["count"])}
