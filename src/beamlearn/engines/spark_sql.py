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


def _name(c: str) -> Any:
    from pyspark.sql import functions as F

    return F.col("`" + c.replace("`", "``") + "`")


def _lit(v: Any) -> Any:
    from pyspark.sql import functions as F

    return F.lit(float(v)) if isinstance(v, (float, np.floating)) else F.lit(v.item() if isinstance(v, np.generic)
                                                                              else v)


class Columns:
    """The columns between two steps: name -> (Spark Column, the local engine's Arrow type of it), and the
    unknown-value checks of the step being converted."""

    def __init__(self, types: dict[str, pa.DataType]) -> None:
        self.cols = {c: (_name(c), t) for c, t in types.items()}
        self.checks: list[Any] = []  # string Columns: the message tail of a bad value, else null
        self.pre: dict[str, Any] = {}  # columns computed in a projection before the step's own

    def value(self, c: str) -> Any:
        """The column as it is."""
        return self.cols[c][0]

    def kind(self, c: str) -> str:
        """``numeric``, ``boolean``, ``string``... (:func:`~beamlearn.batches.column_kind`)."""
        return column_kind(self.cols[c][1])

    def floating(self, c: str) -> bool:
        """Whether the column holds floats (whose NaN is missing)."""
        return pa.types.is_floating(self.cols[c][1])

    def double(self, c: str) -> Any:
        """The column as float64 (numpy's cast of integers and booleans)."""
        x, t = self.cols[c]
        return x if t == pa.float64() else x.cast("double")

    def missing(self, c: str) -> Any:
        """True where the value is null, or NaN in a float column."""
        from pyspark.sql import functions as F

        x = self.value(c)
        return (x.isNull() | F.isnan(x)) if self.floating(c) else x.isNull()

    def before(self, name: str, col: Any) -> Any:
        """``col`` computed once per row in a projection before the step's (Spark would otherwise inline an
        expression into every output that reads it); returns the column that reads it."""
        self.pre[name] = col
        return _name(name)

    def replace(self, inputs: list[str], outputs: list[tuple[str, Any, pa.DataType]]) -> None:
        """``inputs`` removed (those present), ``outputs`` added."""
        for c in inputs:
            self.cols.pop(c, None)
        for name, col, typ in outputs:
            self.cols[name] = (col, typ)


# ---------------------------------------------------------------------------------------------- converters
def _clip(y: Any, lo: float, hi: float) -> Any:
    """numpy's clip: ``lo if y < lo else y``, then ``hi if y > hi else y``; NaN and null stay."""
    from pyspark.sql import functions as F

    return F.when(F.isnan(y), y).when(y < _lit(lo), _lit(lo)).when(y > _lit(hi), _lit(hi)).otherwise(y)


@register_converter(StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler)
def _affine(step: Step, state: dict[str, Any], cols: Columns) -> str | None:
    a = step.affine(state)  # type: ignore[attr-defined]
    outputs = []
    for i, c in enumerate(step.input_columns()):
        y = cols.double(c) - _lit(a.offset[i])
        y = y / _lit(a.scale[i]) if a.divide else y * _lit(a.scale[i])
        if a.shift is not None:
            y = y + _lit(a.shift[i])
        if a.clip is not None:
            y = _clip(y, float(a.clip[0]), float(a.clip[1]))
        outputs.append((c, y, pa.float64()))
    cols.replace(step.input_columns(), outputs)
    return None


@register_converter(Clip)
def _clip_step(step: Clip, state: dict[str, Any], cols: Columns) -> str | None:
    bounds = step.describe(state)  # the parsed bounds: {column: {"lower": lo, "upper": hi}}
    cols.replace(step.input_columns(), [(c, _clip(cols.double(c), bounds[c]["lower"], bounds[c]["upper"]),
                                         pa.float64()) for c in step.input_columns()])
    return None


@register_converter(Drop)
def _drop(step: Drop, state: dict[str, Any], cols: Columns) -> str | None:
    cols.replace(step.input_columns(), [])
    return None


@register_converter(SimpleImputer)
def _imputer(step: SimpleImputer, state: dict[str, Any], cols: Columns) -> str | None:
    from pyspark.sql import functions as F

    schema = pa.schema([(c, cols.cols[c][1]) for c in step.input_columns()])
    if any(pa.types.is_null(t) for t in schema.types):
        return "a column of nulls only"
    plan = step.fill_plan(state, schema)
    outputs = []
    for c, value, string in plan.fills:
        if string:
            outputs.append((c, F.coalesce(cols.value(c), F.lit(value)), pa.string()))
        else:
            outputs.append((c, F.when(cols.missing(c), _lit(value)).otherwise(cols.double(c)), pa.float64()))
    for c in plan.indicators:
        outputs.append((f"missingindicator_{c}", cols.missing(c).cast("short"), pa.uint8()))
    cols.replace(step.input_columns(), outputs)
    return None


def _py_repr(x: Any, kind: str) -> Any:
    """Python's ``repr`` of a value (None, a bool, an int, or a string of printable text) as a SQL string."""
    from pyspark.sql import functions as F

    if kind == "boolean":
        text = F.when(x, F.lit("True")).otherwise(F.lit("False"))
    elif kind != "string":
        text = x.cast("string")
    else:
        s = F.replace(x, F.lit("\\"), F.lit("\\\\"))
        for raw, esc in (("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
            s = F.replace(s, F.lit(raw), F.lit(esc))
        quote, dquote = F.lit("'"), F.lit('"')
        single = F.contains(x, quote)
        text = (F.when(single & ~F.contains(x, dquote), F.concat(dquote, s, dquote))
                .when(single, F.concat(quote, F.replace(s, quote, F.lit("\\'")), quote))
                .otherwise(F.concat(quote, s, quote)))
    return F.when(x.isNull(), F.lit("None")).otherwise(text)


class _Lookup:
    """A column's categories as SQL: which rows get each code (``layout.codes`` of their category, of the missing
    category, or of unknown values), and the unknown-value check of ``handle_unknown="error"``."""

    def __init__(self, step: Step, cols: Columns, c: str, layout: Any, counts: Any) -> None:
        from pyspark.sql import functions as F

        self.x, self.missing = cols.value(c), cols.missing(c)
        self.codes = [v.item() if isinstance(v, np.generic) else v for v in layout.codes.tolist()]
        self.missing_code = self.codes[layout.missing_index] if layout.missing_index >= 0 else self.codes[-1]
        self.by_code: dict[Any, list[Any]] = {}  # the most frequent categories first: the fewest comparisons
        for k in np.argsort(-np.asarray(counts, dtype=np.int64), kind="stable").tolist():
            self.by_code.setdefault(self.codes[k], []).append(layout.values[k])
        known = self.x.isin(*[_lit(v) for v in layout.values]) if layout.values else F.lit(False)
        if step.handle_unknown == "error":  # type: ignore[attr-defined]
            # a missing value is unknown unless the missing category was seen at fit
            bad = ~self.missing & ~known if layout.missing_index >= 0 else self.missing | ~known
            reason = F.concat(F.lit(f", column {c!r}: unknown category "), _py_repr(self.x, cols.kind(c)),
                              F.lit(" (not seen at fit; handle_unknown='error')"))
            cols.checks.append(F.when(F.coalesce(bad, F.lit(True)), reason))

    def code(self) -> Any:
        """Each row's code (a CASE over the codes; NaN codes are null: the local engine's ``from_float``)."""
        from pyspark.sql import functions as F

        expr = F.when(self.missing, _code_lit(self.missing_code))
        for code, values in self.by_code.items():
            expr = expr.when(self.x.isin(*[_lit(v) for v in values]), _code_lit(code))
        return expr.otherwise(_code_lit(self.codes[-1]))


def _code_lit(code: Any) -> Any:
    from pyspark.sql import functions as F

    if isinstance(code, float):
        return F.lit(None).cast("double") if math.isnan(code) else F.lit(code)
    return F.lit(int(code))


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
            outputs.append((c, lookup.code().cast("double"), pa.float64()))
        else:  # the code once per row (a projection of its own), then one integer comparison per output
            code = cols.before(f"__beamlearn_code_{len(cols.pre)}__", lookup.code())
            outputs += [(name, (code == k).cast("short"), pa.uint8()) for k, name in enumerate(layout.names)]
    cols.replace(columns, outputs)
    return None


@register_converter(KBinsDiscretizer)
def _bins(step: KBinsDiscretizer, state: dict[str, Any], cols: Columns) -> str | None:
    from pyspark.sql import functions as F

    outputs = []
    for c, edges, n in zip(step.input_columns(), state["bins"]["edges"], state["bins"]["n_bins"]):
        x, inner = cols.double(c), np.asarray(edges, dtype=np.float64)[1:-1]
        code = None  # searchsorted(inner, x, side="right"): the first inner edge above x
        for j, e in enumerate(inner.tolist()):
            code = (F.when(x < _lit(e), F.lit(j)) if code is None else code.when(x < _lit(e), F.lit(j)))
        code = F.lit(len(inner)) if code is None else code.otherwise(F.lit(len(inner)))
        code = F.when(cols.missing(c), F.lit(-1)).otherwise(code)
        if step.encode == "ordinal":
            outputs.append((c, F.when(code >= 0, code.cast("double")), pa.float64()))
        else:
            outputs += [(f"{c}_{float(j)}", (code == j).cast("short"), pa.uint8()) for j in range(int(n))]
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
        column."""
        from pyspark.sql import functions as F

        if self.reasons:
            raise ValueError("this pipeline does not compile: " + "; ".join(self.reasons))
        checked = any(checks for _, _, checks in self._stages)
        if checked:  # each row's number, before any step (evaluated on every row: the id counts evaluations)
            frame = frame.select("*", F.monotonically_increasing_id().alias(_ROW))
        for k, (pre, columns, checks) in enumerate(self._stages):
            if pre:
                frame = frame.select("*", *[col.alias(c) for c, col in pre.items()])
            select = [col.alias(c) for c, col in columns.items()]
            if checked:  # the first bad value of the row so far
                errs = ([_name(_ERR)] if k else []) + checks
                err = F.coalesce(*errs) if len(errs) > 1 else errs[0] if errs else F.lit(None).cast("string")
                select += [_name(_ROW), err.alias(_ERR)]
            frame = frame.select(*select)
        if checked:
            row = _name(_ROW).bitwiseAND(F.lit(_ROW_MASK))
            message = F.concat(F.lit("beamlearn.errors.UnknownCategoryError: <spark partition "),
                               F.spark_partition_id().cast("string"), F.lit(">, row "), row.cast("string"),
                               _name(_ERR), F.lit("\n"))
            frame = frame.where(F.when(_name(_ERR).isNotNull(), F.raise_error(message)).otherwise(F.lit(True)))
        return frame.select(*[_name(f.name).cast(f.dataType).alias(f.name) for f in out.fields])


def _plain(t: pa.DataType) -> pa.DataType:
    """The fitted form of a Spark column's Arrow type (large and view strings are strings)."""
    if pa.types.is_large_string(t) or str(t) == "string_view":
        return pa.string()
    return t
