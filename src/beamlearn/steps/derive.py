"""Derive: a new column computed from one or more numeric columns by a registered function.

Unlike the other steps, :class:`Derive` *appends* its output and keeps its inputs (``month`` stays a feature
when ``weekday`` is derived from ``year, month, day``).  Built-in functions (registered with
:func:`~beamlearn.steps.expr.register_function`, usable from specs and artifacts by name):

- ``greater_than`` (``x``, ``value``): 1 when ``x > value``, 0 otherwise (a label such as "late");
- ``hhmm_hour`` (``x``): the hour of an HHMM integer time (``1545`` -> 15);
- ``weekday`` (``year, month, day``): the ISO weekday, Monday = 0 ... Sunday = 6 (an invalid date is missing).

Missing inputs (null or NaN) give a missing output.  ``training_only=True`` marks an output needed only to
train and evaluate (a label): its inputs are then optional when serving, and a record without them gets a
missing output.

Examples
--------
>>> import beamlearn as bl
>>> f = bl.Pipeline([bl.Derive(["year", "month", "day"], output="weekday", func="weekday", dtype="int64")]).fit(
...     {"year": [2013, 2013], "month": [1, 11], "day": [1, 1]})
>>> f.transform({"year": [2013], "month": [11], "day": [1]}).column("weekday").to_pylist()
[4]
>>> f.transform_one({"year": 2013, "month": 1, "day": 1})["weekday"]
1
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn.batches import raw_values
from beamlearn.errors import ArtifactError, SchemaError, SpecError
from beamlearn.steps.base import RowFn, Step, register_step, replace_columns
from beamlearn.steps.expr import lookup_function, register_function

__all__ = ["Derive"]

_DTYPES = {"float64": pa.float64(), "int64": pa.int64(), "bool": pa.bool_()}


@register_function("greater_than")
def greater_than(x: np.ndarray, value: float = 0.0) -> np.ndarray:
    """1.0 where ``x > value``, 0.0 elsewhere, NaN where ``x`` is NaN."""
    return np.where(np.isnan(x), np.nan, (x > value).astype(np.float64))


@register_function("hhmm_hour")
def hhmm_hour(x: np.ndarray) -> np.ndarray:
    """The hour of HHMM integer times (``545`` -> 5, ``2359`` -> 23)."""
    return np.floor(x / 100.0)


@register_function("weekday")
def weekday(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """ISO weekday (Monday = 0) of the dates; NaN where a part is missing or the date does not exist."""
    ok = ~(np.isnan(year) | np.isnan(month) | np.isnan(day))
    y, m, d = (np.where(ok, v, 1).astype(np.int64) for v in (year, month, day))
    ok &= (m >= 1) & (m <= 12) & (d >= 1) & (y >= 1) & (y <= 9999)
    m, y = np.where(ok, m, 1), np.where(ok, y, 1970)
    first = (y - 1970).astype("datetime64[Y]").astype("datetime64[M]") + (m - 1).astype("timedelta64[M]")
    days = first.astype("datetime64[D]") + (np.where(ok, d, 1) - 1).astype("timedelta64[D]")
    ok &= days.astype("datetime64[M]") == first  # day 31 of a 30-day month does not exist
    wd = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday (3)
    return np.where(ok, wd, np.nan).astype(np.float64)


@register_step
class Derive(Step):
    """Append a column computed by a registered function of one or more numeric columns.

    Parameters
    ----------
    columns:
        Numeric (or boolean) input columns, passed to the function in this order as float64 arrays (NaN for
        missing values).  They stay in the output.
    output:
        The name of the new column (an existing column name is an error).
    func:
        The registered function's name (see :func:`~beamlearn.register_function`); built-ins: ``greater_than``,
        ``hhmm_hour``, ``weekday``.
    kw_args:
        Keyword arguments for the function (plain data).
    dtype:
        ``"float64"`` (default), ``"int64"`` or ``"bool"``: the output type (NaN becomes missing).
    training_only:
        The output is only needed to train and evaluate (a label): serving does not require the inputs.

    Examples
    --------
    >>> import beamlearn as bl
    >>> f = bl.Pipeline([bl.Derive("arr_delay", output="late", func="greater_than", kw_args={"value": 15},
    ...                            dtype="int64", training_only=True)]).fit({"arr_delay": [3.0, 40.0, None]})
    >>> f.transform({"arr_delay": [3.0, 40.0, None]}).column("late").to_pylist()
    [0, 1, None]
    >>> f.required_columns
    []
    """

    def __init__(self, columns: str | Sequence[str], *, output: str, func: str,
                 kw_args: Mapping[str, Any] | None = None, dtype: str = "float64",
                 training_only: bool = False) -> None:
        self.columns, self.output, self.func, self.kw_args = columns, output, func, kw_args
        self.dtype, self.training_only = dtype, training_only

    def serving_columns(self) -> list[str]:
        return [] if self.training_only else self.input_columns()

    def check(self, schema: pa.Schema) -> None:
        fn = lookup_function(self.func, SpecError)
        try:  # the columns and kw_args must fit the function's parameters (a wrong count is a spec mistake)
            inspect.signature(fn).bind(*self.input_columns(), **dict(self.kw_args or {}))
        except TypeError as exc:
            raise SpecError(f"Derive: {self.func!r} cannot take the columns {self.input_columns()} and kw_args "
                            f"{dict(self.kw_args or {})} ({exc})") from None
        except ValueError:  # no signature to read (a builtin): the call itself will tell
            pass
        self._check_choice("dtype", tuple(_DTYPES))
        if self.output in schema.names:
            raise SchemaError("Derive: the output column already exists; choose another output name",
                              column=self.output)
        super().check(schema)
        self._check_kind(schema, ["numeric", "boolean"])

    def _compute(self, xs: list[np.ndarray]) -> np.ndarray:
        fn = lookup_function(self.func, ArtifactError)
        with np.errstate(all="ignore"):
            out = np.asarray(fn(*xs, **dict(self.kw_args or {})), dtype=np.float64)
        if out.shape != xs[0].shape:
            raise SpecError(f"Derive: {self.func!r} returned shape {out.shape} for inputs of shape {xs[0].shape}")
        return out

    def _column(self, batch: pa.RecordBatch, name: str) -> np.ndarray:
        if name not in batch.schema.names:  # a training-only input absent when serving
            return np.full(batch.num_rows, np.nan)
        x, valid = raw_values(batch.column(name))
        return np.array(x, dtype=np.float64) if valid is None else np.where(valid, x, np.nan)

    def apply(self, batch: pa.RecordBatch, state: dict[str, Any]) -> pa.RecordBatch:
        out = self._compute([self._column(batch, c) for c in self.input_columns()])
        typ = _DTYPES[self.dtype]
        missing = np.isnan(out)
        values = np.where(missing, 0, out).astype(typ.to_pandas_dtype())
        arr = pa.array(values, type=typ, mask=missing if missing.any() else None)
        return replace_columns(batch, [], [(self.output, arr)])

    def row_function(self, state: dict[str, Any], schema: pa.Schema) -> RowFn:
        cols, name, kind = self.input_columns(), self.output, {"float64": float, "int64": int, "bool": bool}[self.dtype]
        compute = self._compute

        def fn(row: dict) -> dict:
            xs = [np.array([math.nan if row.get(c) is None else row[c]], dtype=np.float64) for c in cols]
            v = float(compute(xs)[0])
            row[name] = None if math.isnan(v) else kind(v)
            return row

        return fn

    def describe(self, state: dict[str, Any]) -> dict[str, Any]:
        return {"output": self.output, "func": self.func, "kw_args": dict(self.kw_args or {}),
                "columns": self.input_columns(), "training_only": self.training_only}
