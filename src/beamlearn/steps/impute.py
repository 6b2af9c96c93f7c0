"""Imputation: SimpleImputer.

Missing values (nulls, and NaN in float columns) are replaced by a per-column statistic fitted in full passes:
the mean (:class:`~beamlearn.analyzers.Moments`), the exact median (:class:`~beamlearn.analyzers.Quantiles`,
two passes), the most frequent value (value counts) or a constant.  Results match
:class:`sklearn.impute.SimpleImputer` applied to each column, including its handling of columns without any
value at fit (dropped, or filled with 0 / ``fill_value`` under ``keep_empty_features``) and of
``add_indicator``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beamlearn.analyzers import Analyzer, Moments, Quantiles, RowCount, ValueCounts
from beamlearn.batches import column_kind, raw_values
from beamlearn.errors import SchemaError, SpecError
from beamlearn.steps.base import RowFn, Step, register_step, replace_columns

__all__ = ["SimpleImputer"]

STRATEGIES = ("mean", "median", "most_frequent", "constant")
_STRING_DEFAULT = "missing_value"


class MostFrequent(ValueCounts):
    """The most frequent value of each column, ties broken toward the smallest value (scikit-learn's rule).

    Counts like :class:`~beamlearn.analyzers.ValueCounts` but keeps only the mode in its state, so a fitted
    artifact does not grow with the number of distinct values.  State: one dict per column,
    ``{"value": the mode or None (no values), "count": its count, "missing": missing values}``.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from beamlearn.analyzers import run_analyzer
    >>> run_analyzer(MostFrequent(["c"]), [pa.record_batch({"c": ["b", "a", "b", "a", None]})])
    [{'value': 'a', 'count': 2, 'missing': 1}]
    """

    def extract(self, acc: list[list[Any]]) -> list[dict[str, Any]]:  # type: ignore[override]
        out = []
        for st in super().extract(acc):
            if len(st["counts"]):
                best = int(np.argmax(st["counts"]))  # first maximum = smallest value (values are sorted)
                out.append({"value": st["values"][best], "count": int(st["counts"][best]),
                            "missing": st["missing"]})
            else:
                out.append({"value": None, "count": 0, "missing": st["missing"]})
        return out


class _Fill(NamedTuple):
    column: str
    value: Any          # the fill value (float for numeric columns, str for string columns)
    string: bool        # the column is imputed as a string column


class _Plan(NamedTuple):
    fills: list[_Fill]      # kept columns, in input order
    dropped: list[str]      # columns without any value at fit (keep_empty_features=False)
    indicators: list[str]   # columns that had missing values at fit (add_indicator=True)


def _is_string_fill(value: Any) -> bool:
    return isinstance(value, str)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (str, bytes))


@register_step
class SimpleImputer(Step):
    """Replace missing values by a per-column statistic, as :class:`sklearn.impute.SimpleImputer`.

    Numeric (and boolean) columns come out float64; string columns (``most_frequent`` and ``constant`` only)
    come out as strings.  A column without any value at fit is dropped from the output, unless
    ``keep_empty_features`` (it is then filled with 0, or ``fill_value`` for ``constant``).

    Parameters
    ----------
    columns:
        The columns to impute (replaced in place).
    strategy:
        ``"mean"``, ``"median"`` (exact, two passes), ``"most_frequent"`` (ties go to the smallest value) or
        ``"constant"``.
    fill_value:
        The value of ``"constant"``; by default 0 for numeric columns and ``"missing_value"`` for string
        columns.
        A string fill value needs string columns, a number numeric ones.
    add_indicator:
        Also output ``missingindicator_{col}`` (uint8, 1 where the input was missing) for each column that had
        missing values at fit, after the imputed columns, in input order.
    keep_empty_features:
        Keep columns without any value at fit, filled with 0 (``fill_value`` for ``"constant"``).

    Attributes
    ----------
    The fitted state holds ``count`` (rows and missing values per column, :class:`RowCount`) and the
    statistic: ``moments`` (mean), ``median`` (quantiles) or ``mode`` (:class:`MostFrequent`).

    Examples
    --------
    >>> import beamlearn as bl
    >>> data = {"x": [1.0, None, 5.0, float("nan")], "c": ["a", "b", None, "b"]}
    >>> f = bl.Pipeline([bl.SimpleImputer(["x"], add_indicator=True),
    ...                  bl.SimpleImputer(["c"], strategy="most_frequent")]).fit(data)
    >>> f.transform({"x": [None, 2.0], "c": [None, "z"]}).to_pydict()
    {'x': [3.0, 2.0], 'missingindicator_x': [1, 0], 'c': ['b', 'z']}
    >>> f.transform_one({"x": None, "c": "a"})
    {'x': 3.0, 'missingindicator_x': 1, 'c': 'a'}
    """

    def __init__(self, columns: str | Sequence[str], *, strategy: str = "mean", fill_value: Any = None,
                 add_indicator: bool = False, keep_empty_features: bool = False) -> None:
        self.columns, self.strategy, self.fill_value = columns, strategy, fill_value
        self.add_indicator, self.keep_empty_features = add_indicator, keep_empty_features

    # -------------------------------------------------------------------- fit
    def check(self, schema: pa.Schema) -> None:
        self._check_choice("strategy", STRATEGIES)
        for name in ("add_indicator", "keep_empty_features"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise SpecError(f"SimpleImputer: {name}={getattr(self, name)!r} must be True or False")
        fv = self.fill_value
        if fv is not None and not (_is_string_fill(fv) or _is_number(fv)):
            raise SpecError(f"SimpleImputer: fill_value={fv!r} must be a number or a string")
        super().check(schema)
        numeric_only = self.strategy in ("mean", "median")
        self._check_kind(schema, ["numeric", "boolean"] if numeric_only else ["numeric", "boolean", "string"])
        if self.strategy == "constant" and fv is not None:
            for c in self.input_columns():
                kind = column_kind(schema.field(c).type)
                if (kind == "string") != _is_string_fill(fv) and not pa.types.is_null(schema.field(c).type):
                    raise SchemaError(f"SimpleImputer: fill_value={fv!r} cannot fill a {kind} column "
                                      f"({schema.field(c).type}); pass a fill_value of the column's kind",
                                      column=c)

    def analyzers(self) -> dict[str, Analyzer]:
        cols = self.input_columns()
        stats: dict[str, Analyzer] = {"count": RowCount(cols)}
        if self.strategy == "mean":
            stats["moments"] = Moments(cols)
        elif self.strategy == "median":
            stats["median"] = Quantiles(cols, [0.5])
        elif self.strategy == "most_frequent":
            stats["mode"] = MostFrequent(cols)
        return stats

    def derive(self, analyzer: Analyzer, state: dict[str, Any]) -> dict[str, np.ndarray] | None:
        """The :class:`Moments` of mean-imputed columns, from the fitted state (no pass over the data).

        Imputing ``m`` missing values with ``f`` merges ``(n, mean, M2)`` with ``(m, f, 0)`` (Chan et al.); for
        the mean, ``f == mean`` and only the count grows.  Unweighted moments of the mean strategy only.

        >>> from beamlearn.analyzers import run_analyzer
        >>> imp = SimpleImputer(["x"])
        >>> state = {k: run_analyzer(a, [pa.record_batch({"x": [1.0, None, 4.0]})])
        ...          for k, a in imp.analyzers().items()}
        >>> d = imp.derive(Moments(["x"]), state)
        >>> d["count"].tolist(), d["mean"].tolist(), round(float(d["var"][0]), 12)
        ([3.0], [2.5], 1.5)
        >>> run_analyzer(Moments(["x"]), [pa.record_batch({"x": [1.0, 2.5, 4.0]})])["var"].tolist()
        [1.5]
        """
        if (type(analyzer) is not Moments or analyzer.weight is not None or self.strategy != "mean"
                or not set(analyzer.columns) <= set(self.input_columns())):
            return None
        cols, rows = self.input_columns(), float(state["count"]["rows"])
        out = np.full((3, len(analyzer.columns)), np.nan)
        for j, c in enumerate(analyzer.columns):
            i = cols.index(c)
            fill = self._statistic(state, i, False)
            if fill is None:  # dropped: not an output column
                return None
            n = float(state["moments"]["count"][i])
            m = rows - n
            if n == 0:
                out[:, j] = rows, fill if rows else np.nan, 0.0 if rows else np.nan
                continue
            mean, m2 = float(state["moments"]["mean"][i]), float(state["moments"]["var"][i]) * n
            delta = fill - mean
            with np.errstate(invalid="ignore", over="ignore"):
                out[:, j] = rows, mean + delta * (m / rows), (m2 + delta * delta * n * m / rows) / rows
        return {"count": out[0], "mean": out[1], "var": out[2]}

    def _statistic(self, state: dict[str, Any], i: int, string: bool) -> Any:
        """The fill value of column ``i`` as fitted (None: no value at fit, the column is dropped)."""
        if int(state["count"]["missing"][i]) >= int(state["count"]["rows"]):  # no value at fit
            if not self.keep_empty_features:
                return None
            return self._constant(string) if self.strategy == "constant" else 0
        if self.strategy == "mean":
            return float(state["moments"]["mean"][i])
        if self.strategy == "median":
            return float(state["median"]["quantiles"][i][0])
        if self.strategy == "most_frequent":
            return state["mode"][i]["value"]
        return self._constant(string)

    def _constant(self, string: bool) -> Any:
        if self.fill_value is not None:
            return self.fill_value
        return _STRING_DEFAULT if string else 0

    def _plan(self, state: dict[str, Any], schema: pa.Schema) -> _Plan:
        """What to do with each input column, given the fitted state and the step's input schema."""
        fills, dropped = [], []
        for i, c in enumerate(self.input_columns()):
            typ = schema.field(c).type
            string = column_kind(typ) == "string" or (
                pa.types.is_null(typ) and self.strategy == "constant" and _is_string_fill(self.fill_value))
            value = self._statistic(state, i, string)
            if value is None:
                dropped.append(c)
            else:
                fills.append(_Fill(c, str(value) if string else float(value), string))
        missing = state["count"]["missing"]
        indicators = [c for c, m in zip(self.input_columns(), missing) if m > 0] if self.add_indicator else []
        return _Plan(fills, dropped, indicators)

    def fill_plan(self, state: dict[str, Any], schema: pa.Schema) -> Any:
        """What the fitted step does to each column of an input ``schema``: ``fills`` (column, fill value,
        imputed as a string), ``dropped`` columns (no value at fit) and ``indicators`` (columns that get a
        ``missingindicator_`` output), as exporters (:mod:`beamlearn.interop`) read it."""
        return self._plan(state, schema)

    # -------------------------------------------------------------------- transform
    def apply(self, batch: pa.RecordBatch, state: dict[str, Any]) -> pa.RecordBatch:
        plan = self._plan(state, batch.schema)
        outputs: list[tuple[str, pa.Array]] = []
        for c, value, string in plan.fills:
            arr = batch.column(c)
            if string:
                if not pa.types.is_string(arr.type):
                    arr = arr.cast(pa.string())
                outputs.append((c, pc.fill_null(arr, value) if arr.null_count else arr))
            else:
                x, valid = raw_values(arr)
                y = x if valid is None else np.where(valid, x, value)
                outputs.append((c, pa.array(y, type=pa.float64())))
        for c in plan.indicators:
            arr = batch.column(c)
            if pa.types.is_floating(arr.type):
                _, valid = raw_values(arr)
                ind = np.zeros(len(arr), np.uint8) if valid is None else (~valid).view(np.uint8)
            else:
                ind = arr.is_null().to_numpy(zero_copy_only=False).view(np.uint8)
            outputs.append((f"missingindicator_{c}", pa.array(ind, type=pa.uint8())))
        return replace_columns(batch, self.input_columns(), outputs)

    def row_function(self, state: dict[str, Any], schema: pa.Schema) -> RowFn:
        plan = self._plan(state, schema)
        numeric = [(c, v) for c, v, s in plan.fills if not s and schema.field(c).type == pa.float64()]
        converted = [(c, v) for c, v, s in plan.fills if not s and schema.field(c).type != pa.float64()]
        strings = [(c, v) for c, v, s in plan.fills if s]
        indicators = [(c, f"missingindicator_{c}") for c in plan.indicators]
        dropped = plan.dropped

        def fn(row: dict) -> dict:
            for c, name in indicators:
                v = row[c]
                row[name] = 1 if v is None or v != v else 0  # noqa: PLR0124 - NaN test
            for c in dropped:
                del row[c]
            for c, fill in numeric:
                v = row[c]
                if v is None or v != v:  # noqa: PLR0124 - NaN test
                    row[c] = fill
            for c, fill in converted:  # other numeric and boolean columns come out float64
                v = row[c]
                row[c] = fill if v is None or v != v else float(v)  # noqa: PLR0124 - NaN test
            for c, fill in strings:
                if row[c] is None:
                    row[c] = fill
            return row

        return fn

    def describe(self, state: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for i, c in enumerate(self.input_columns()):
            missing = int(state["count"]["missing"][i])
            fill = self._statistic(state, i, string=False)
            if self.strategy == "constant" and self.fill_value is None and fill is not None:
                fill = "0 (numbers) or 'missing_value' (strings)"
            entry: dict[str, Any] = {"strategy": self.strategy, "fill": fill, "missing_at_fit": missing,
                                     "dropped": fill is None,
                                     "indicator": bool(self.add_indicator and missing)}
            empty = missing >= int(state["count"]["rows"])
            if self.strategy == "most_frequent" and not empty:
                entry["count"] = int(state["mode"][i]["count"])
            out[c] = entry
        return out
