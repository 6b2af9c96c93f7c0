"""A fitted pipeline compiled to Spark SQL column expressions: a transform that runs in the JVM, no Python worker.

:func:`~beamlearn.engines.spark_transform.transform` uses it when every step has a converter here (registered
per step type with :func:`register_converter`, as :mod:`beamlearn.interop.onnx` exports step by step from the
same public accessors: ``affine``, ``fill_plan``, ``layouts``), else it runs the whole transform in Python
(``mapInArrow``).  Converted: StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler, SimpleImputer (every
strategy, numbers and strings, indicators, dropped columns), OneHotEncoder and OrdinalEncoder (string, integer and
boolean columns; every ``handle_unknown``), KBinsDiscretizer, Clip and Drop; columns no step reads pass through.
Anything transcendental or made of Python code (Log1p, Function, Derive, text steps, models) is not.

Every converter repeats its step's numpy operations one for one with IEEE doubles (``(x - offset) / scale``, not
``x * (1 / scale)``; ``clip`` as ``lo if y < lo else y``), so the JVM gives the local engine's bits.  Spark SQL
orders NaN above every number and calls NaN equal to NaN: every comparison that may see a NaN tests ``isnan``
first.  Missing values are the local engine's: null stays null in numeric maps, NaN stays NaN; "missing" (imputer,
encoders, bins) is null or NaN.

Bad values: the compiled plan needs the DataFrame's columns to have the fitted types (then conforming casts
nothing and no row can be bad); an encoder's unknown category with ``handle_unknown="error"`` fails the job with
the local engine's :class:`~beamlearn.errors.UnknownCategoryError` message (``<spark partition P>, row R, column
'c': unknown category 'v' ...``: :func:`~beamlearn.engines.spark.run_action` raises it), from ``raise_error`` in a
filter no column pruning can remove.  Dead letters of such a step (``with_errors=True``) are left to the Python
path.  A string value's ``repr`` in that message is Python's for printable text, quotes and ``\\ \\n \\r \\t``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn.batches import column_kind
from beamlearn.pipeline import FittedPipeline
from beamlearn.steps import (
    Clip,
    Drop,
    KBinsDiscretizer,
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    RobustScaler,
    SimpleImputer,
    StandardScaler,
    Step,
)

__all__ = ["Columns", "SqlPlan", "register_converter"]

Converter = Callable[[Step, dict[str, Any], "Columns"], "str | None"]
_CONVERTERS: dict[type, Converter] = {}
_ERR = "__beamlearn_err__"  # a stage's first bad value of a row (the error message's tail), or null
_ROW = "__beamlearn_row__"  # monotonically_increasing_id() of each input row
_ROW_MASK = (1 << 33) - 1  # monotonically_increasing_id(): partition << 33 | row within the partition


def register_converter(*types: type) -> Callable[[Converter], Converter]:
    """Class decorator of a converter ``fn(step, state, cols) -> None | reason``: it rewrites ``cols`` (a
    :class:`Columns`) as ``step`` transforms them, or returns why it cannot (the pipeline then runs in Python)."""
    def decorate(fn: Converter) -> Converter:
        for t in types:
            _CONVERTERS[t] = fn
        return fn

    return decorate


def _name(c: str) -> str:
    """A column name as SQL."""
    return "`" + c.replace("`", "``") + "`"


def _lit(v: Any) -> str:
    """A value as an exact SQL literal: doubles by their shortest repr (round-trips), strings as UTF-8 bytes
    (whatever the parser's escaping)."""
    v = v.item() if isinstance(v, np.generic) else v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return f"CAST('{'NaN' if math.isnan(v) else 'Infinity' if v > 0 else '-Infinity'}' AS DOUBLE)"
        return f"({v!r}D)"
    if isinstance(v, int):
        return f"({v}L)"
    if isinstance(v, str):
        return f"CAST(X'{v.encode('utf-8').hex()}' AS STRING)"
    raise TypeError(f"no SQL literal for {v!r}")


def _isin(x: str, values: list[Any]) -> str:
    return f"({x} IN ({', '.join(_lit(v) for v in values)}))" if values else "false"


class Columns:
    """The columns between two steps: name -> (SQL expression, the local engine's Arrow type of it), and the
    unknown-value checks of the step being converted."""

    def __init__(self, types: dict[str, pa.DataType]) -> None:
        self.cols = {c: (_name(c), t) for c, t in types.items()}
        self.checks: list[str] = []  # string SQL: the message tail of a bad value, else null
        self.pre: dict[str, str] = {}  # columns computed in a projection before the step's own

    def value(self, c: str) -> str:
        """The column as it is."""
        return self.cols[c][0]

    def kind(self, c: str) -> str:
        """``numeric``, ``boolean``, ``string``... (:func:`~beamlearn.batches.column_kind`)."""
        return column_kind(self.cols[c][1])

    def double(self, c: str) -> str:
        """The column as float64 (numpy's cast of integers and booleans)."""
        x, t = self.cols[c]
        return x if t == pa.float64() else f"CAST({x} AS DOUBLE)"

    def missing(self, c: str) -> str:
        """True where the value is null, or NaN in a float column."""
        x, t = self.cols[c]
        return f"({x} IS NULL OR isnan({x}))" if pa.types.is_floating(t) else f"({x} IS NULL)"

    def before(self, name: str, sql: str) -> str:
        """``sql`` computed once per row in a projection before the step's (Spark would otherwise inline an
        expression into every output that reads it); returns the column that reads it."""
        self.pre[name] = sql
        return _name(name)

    def replace(self, inputs: list[str], outputs: list[tuple[str, str, pa.DataType]]) -> None:
        """``inputs`` removed (those present), ``outputs`` added."""
        for c in inputs:
            self.cols.pop(c, None)
        for name, sql, typ in outputs:
            self.cols[name] = (sql, typ)


# ---------------------------------------------------------------------------------------------- converters
def _clip(y: str, lo: float, hi: float) -> str:
    """numpy's clip: ``lo if y < lo else y``, then ``hi if y > hi else y``; NaN and null stay."""
    return (f"(CASE WHEN isnan({y}) THEN {y} WHEN {y} < {_lit(lo)} THEN {_lit(lo)} WHEN {y} > {_lit(hi)} "
            f"THEN {_lit(hi)} ELSE {y} END)")


@register_converter(StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler)
def _affine(step: Step, state: dict[str, Any], cols: Columns) -> str | None:
    a = step.affine(state)  # type: ignore[attr-defined]
    outputs = []
    for i, c in enumerate(step.input_columns()):
        y = f"({cols.double(c)} - {_lit(float(a.offset[i]))})"
        y = f"({y} {'/' if a.divide else '*'} {_lit(float(a.scale[i]))})"
        if a.shift is not None:
            y = f"({y} + {_lit(float(a.shift[i]))})"
        if a.clip is not None:
            y = _clip(y, float(a.clip[0]), float(a.clip[1]))
        outputs.append((c, y, pa.float64()))
    cols.replace(step.input_columns(), outputs)
    return None


@register_converter(Clip)
def _clip_step(step: Clip, state: dict[str, Any], cols: Columns) -> str | None:
    bounds = step.describe(state)  # the parsed bounds: {column: {"lower": lo, "upper": hi}}
    cols.replace(step.input_columns(), [(c, _clip(cols.double(c), float(bounds[c]["lower"]),
                                                  float(bounds[c]["upper"])), pa.float64())
                                        for c in step.input_columns()])
    return None


@register_converter(Drop)
def _drop(step: Drop, state: dict[str, Any], cols: Columns) -> str | None:
    cols.replace(step.input_columns(), [])
    return None


@register_converter(SimpleImputer)
def _imputer(step: SimpleImputer, state: dict[str, Any], cols: Columns) -> str | None:
    schema = pa.schema([(c, cols.cols[c][1]) for c in step.input_columns()])
    if any(pa.types.is_null(t) for t in schema.types):
        return "a column of nulls only"
    plan = step.fill_plan(state, schema)
    outputs = []
    for c, value, string in plan.fills:
        if string:
            outputs.append((c, f"coalesce({cols.value(c)}, {_lit(str(value))})", pa.string()))
        else:
            outputs.append((c, f"(CASE WHEN {cols.missing(c)} THEN {_lit(float(value))} ELSE {cols.double(c)} END)",
                            pa.float64()))
    for c in plan.indicators:
        outputs.append((f"missingindicator_{c}", f"CAST({cols.missing(c)} AS SMALLINT)", pa.uint8()))
    cols.replace(step.input_columns(), outputs)
    return None


def _py_repr(x: str, kind: str) -> str:
    """Python's ``repr`` of a value (None, a bool, an int, or a string of printable text) as SQL."""
    if kind == "boolean":
        text = f"(CASE WHEN {x} THEN 'True' ELSE 'False' END)"
    elif kind != "string":
        text = f"CAST({x} AS STRING)"
    else:
        esc = x
        for raw, out in (("\\", "\\\\"), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
            esc = f"replace({esc}, {_lit(raw)}, {_lit(out)})"
        q, dq = _lit("'"), _lit('"')
        text = (f"(CASE WHEN contains({x}, {q}) AND NOT contains({x}, {dq}) THEN concat({dq}, {esc}, {dq}) "
                f"WHEN contains({x}, {q}) THEN concat({q}, replace({esc}, {q}, {_lit(chr(92) + chr(39))}), {q}) "
                f"ELSE concat({q}, {esc}, {q}) END)")
    return f"(CASE WHEN {x} IS NULL THEN 'None' ELSE {text} END)"


class _Lookup:
    """A column's categories as SQL: each row's code (``layout.codes`` of its category, of the missing category,
    or of unknown values), and the unknown-value check of ``handle_unknown="error"``."""

    def __init__(self, step: Step, cols: Columns, c: str, layout: Any, counts: Any) -> None:
        self.x, self.missing = cols.value(c), cols.missing(c)
        self.codes = [v.item() if isinstance(v, np.generic) else v for v in layout.codes.tolist()]
        self.missing_code = self.codes[layout.missing_index] if layout.missing_index >= 0 else self.codes[-1]
        self.by_code: dict[Any, list[Any]] = {}  # the most frequent categories first: the fewest comparisons
        for k in np.argsort(-np.asarray(counts, dtype=np.int64), kind="stable").tolist():
            self.by_code.setdefault(self.codes[k], []).append(layout.values[k])
        if step.handle_unknown == "error":  # type: ignore[attr-defined]
            known = _isin(self.x, list(layout.values))
            # a missing value is unknown unless the missing category was seen at fit
            bad = f"(NOT {self.missing} AND NOT {known})" if layout.missing_index >= 0 else \
                f"({self.missing} OR NOT {known})"
            reason = (f"concat({_lit(f', column {c!r}: unknown category ')}, {_py_repr(self.x, cols.kind(c))}, "
                      f"{_lit(' (not seen at fit; handle_unknown=' + repr('error') + ')')})")
            cols.checks.append(f"(CASE WHEN coalesce({bad}, true) THEN {reason} END)")

    def code(self) -> str:
        """Each row's code (a CASE over the codes; NaN codes are null: the local engine's ``from_float``)."""
        whens = [f"WHEN {self.missing} THEN {_code_lit(self.missing_code)}"]
        whens += [f"WHEN {_isin(self.x, values)} THEN {_code_lit(code)}" for code, values in self.by_code.items()]
        return f"(CASE {' '.join(whens)} ELSE {_code_lit(self.codes[-1])} END)"


def _code_lit(code: Any) -> str:
    if isinstance(code, float):
        return "CAST(NULL AS DOUBLE)" if math.isnan(code) else _lit(code)
    return str(int(code))


@register_converter(OneHotEncoder, OrdinalEncoder)
def _encoder(step: Step, state: dict[str, Any], cols: Columns) -> str | None:
    columns = step.input_columns()
    bad = [c for c in columns if cols.kind(c) not in ("string", "boolean") and
           not pa.types.is_integer(cols.cols[c][1])]
    if bad:
        return f"columns {bad} are not string, integer or boolean (float categories stay in Python)"
    layouts = step.layouts(state, [cols.cols[c][1] for c in columns])  # type: ignore[attr-defined]
    outputs = []
    for c, layout, vocab in zip(columns, layouts, state["vocabulary"]):
        lookup = _Lookup(step, cols, c, layout, vocab["counts"])
        if isinstance(step, OrdinalEncoder):
            outputs.append((c, f"CAST({lookup.code()} AS DOUBLE)", pa.float64()))
        else:  # the code once per row (a projection of its own), then one integer comparison per output
            code = cols.before(f"__beamlearn_code_{len(cols.pre)}__", lookup.code())
            outputs += [(name, f"CAST({code} = {k} AS SMALLINT)", pa.uint8()) for k, name in enumerate(layout.names)]
    cols.replace(columns, outputs)
    return None


@register_converter(KBinsDiscretizer)
def _bins(step: KBinsDiscretizer, state: dict[str, Any], cols: Columns) -> str | None:
    outputs = []
    for c, edges, n in zip(step.input_columns(), state["bins"]["edges"], state["bins"]["n_bins"]):
        x, inner = cols.double(c), np.asarray(edges, dtype=np.float64)[1:-1].tolist()
        # searchsorted(inner, x, side="right"): the index of the first inner edge above x; missing: -1
        whens = [f"WHEN {cols.missing(c)} THEN -1"] + [f"WHEN {x} < {_lit(e)} THEN {j}" for j, e in enumerate(inner)]
        code = f"(CASE {' '.join(whens)} ELSE {len(inner)} END)"
        if step.encode == "ordinal":
            outputs.append((c, f"(CASE WHEN {cols.missing(c)} THEN NULL ELSE CAST({code} AS DOUBLE) END)",
                            pa.float64()))
        else:
            code = cols.before(f"__beamlearn_code_{len(cols.pre)}__", code)
            outputs += [(f"{c}_{float(j)}", f"CAST({code} = {j} AS SMALLINT)", pa.uint8()) for j in range(int(n))]
    cols.replace(step.input_columns(), outputs)
    return None


# ---------------------------------------------------------------------------------------------- the plan
class SqlPlan:
    """``fitted`` compiled for data of Arrow ``schema`` (the DataFrame's): :attr:`reasons` lists why it cannot
    be (one line per step or column; empty when it can), :meth:`apply` builds the transformed DataFrame."""

    def __init__(self, fitted: FittedPipeline, schema: pa.Schema, *, collect: bool = False) -> None:
        self.fitted, self.schema, self.reasons = fitted, schema, []
        for f in schema:
            if pa.types.is_decimal(f.type) and f.name in fitted.required_columns:
                self.reasons.append(f"column {f.name!r} is {f.type}: decimals stay in Python (Arrow and Spark may "
                                    "round them to float64 differently)")
            elif f.name in fitted.input_schema.names:
                want = fitted.input_schema.field(f.name).type
                if _plain(f.type) != _plain(want):
                    self.reasons.append(f"column {f.name!r} is {f.type} in the data, {want} at fit (casting it "
                                        "may find bad values)")
        for i, step in enumerate(fitted.steps):
            if type(step) not in _CONVERTERS:
                self.reasons.append(f"step {i} ({type(step).__name__}) has no Spark SQL converter")
            elif collect and getattr(step, "handle_unknown", None) == "error":
                self.reasons.append(f"step {i} ({type(step).__name__}): the dead letters of handle_unknown="
                                    "'error' need the Python path")
        if not self.reasons:  # the converters' own limits (column types)
            self._stages = self._convert()

    def _convert(self) -> list[tuple[dict[str, Any], dict[str, Any], list[Any]]]:
        """Per step: the columns it computes first, the columns after it, and its unknown-value checks."""
        cols = Columns({f.name: _plain(f.type) for f in self.schema})
        stages = []
        for i, (step, state) in enumerate(zip(self.fitted.steps, self.fitted.states)):
            reason = _CONVERTERS[type(step)](step, state, cols)
            if reason:
                self.reasons.append(f"step {i} ({type(step).__name__}): {reason}")
                return []
            stages.append((cols.pre, {c: v[0] for c, v in cols.cols.items()}, cols.checks))
            cols = Columns({c: v[1] for c, v in cols.cols.items()})
        return stages

    def apply(self, frame: Any, out: Any) -> Any:
        """``frame`` transformed: one projection per step (Spark collapses the cheap ones), then the columns of
        the Spark schema ``out`` in its order and types; a bad value fails the job naming its partition, row and
        column.  Each projection is one SQL select list (one call into the JVM, not one per expression)."""
        if self.reasons:
            raise ValueError("this pipeline does not compile: " + "; ".join(self.reasons))
        checked = any(checks for _, _, checks in self._stages)
        if checked:  # each row's number, before any step (evaluated on every row: the id counts evaluations)
            frame = frame.selectExpr("*", f"monotonically_increasing_id() AS {_name(_ROW)}")
        for k, (pre, columns, checks) in enumerate(self._stages):
            if pre:
                frame = frame.selectExpr("*", *[f"{sql} AS {_name(c)}" for c, sql in pre.items()])
            select = [f"{sql} AS {_name(c)}" for c, sql in columns.items()]
            if checked:  # the first bad value of the row so far
                errs = ([_name(_ERR)] if k else []) + checks
                err = f"coalesce({', '.join(errs)})" if errs else "CAST(NULL AS STRING)"
                select += [_name(_ROW), f"{err} AS {_name(_ERR)}"]
            frame = frame.selectExpr(*select)
        if checked:
            message = (f"concat('beamlearn.errors.UnknownCategoryError: <spark partition ', "
                       f"CAST(spark_partition_id() AS STRING), '>, row ', CAST({_name(_ROW)} & {_ROW_MASK} AS STRING), "
                       f"{_name(_ERR)}, {_lit(chr(10))})")
            frame = frame.where(f"CASE WHEN {_name(_ERR)} IS NOT NULL THEN raise_error({message}) ELSE true END")
        now = {f.name: f.dataType for f in frame.schema.fields}
        return frame.selectExpr(*[_name(f.name) if now[f.name] == f.dataType else
                                  f"CAST({_name(f.name)} AS {f.dataType.simpleString()}) AS {_name(f.name)}"
                                  for f in out.fields])


def _plain(t: pa.DataType) -> pa.DataType:
    """The fitted form of a Spark column's Arrow type (large and view strings are strings)."""
    if pa.types.is_large_string(t) or str(t) == "string_view":
        return pa.string()
    return t
