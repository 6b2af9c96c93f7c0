"""The single-record path: a fitted pipeline compiled into one function from a dict to a dense dict.

It validates and casts the record as ``transform``'s conform does, runs each step's row function (which makes
the same floating-point operations as the step's vectorized ``apply``, so serving equals batch bit for bit) and
lays the output in ``output_schema`` order.  It imports numpy and pyarrow only: a serving process needs nothing
else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn.errors import DataError, SchemaError

__all__ = ["compile_row"]


def _validator(name: str, typ: pa.DataType) -> Callable[[Any], Any]:
    if pa.types.is_floating(typ):
        def check(v: Any) -> Any:
            t = type(v)
            if t is float or v is None:
                return v
            if t is int or (isinstance(v, (int, float, np.number)) and not isinstance(v, bool)):
                return float(v)
            raise DataError(f"expected a number, got {t.__name__} {v!r}", column=name, value=v)
    elif pa.types.is_integer(typ):
        def check(v: Any) -> Any:
            t = type(v)
            if t is int or v is None:
                return v
            if isinstance(v, (float, np.floating)) and float(v).is_integer():
                return int(v)
            if isinstance(v, float) and v != v:
                return None
            if isinstance(v, np.integer):
                return int(v)
            raise DataError(f"expected an integer, got {t.__name__} {v!r}", column=name, value=v)
    elif pa.types.is_string(typ) or pa.types.is_large_string(typ):
        def check(v: Any) -> Any:
            if type(v) is str or v is None:
                return v
            if isinstance(v, str):  # numpy's str_
                return str(v)
            if isinstance(v, float) and v != v:  # NaN means missing everywhere
                return None
            raise DataError(f"expected a string, got {type(v).__name__} {v!r}", column=name, value=v)
    elif pa.types.is_boolean(typ):
        def check(v: Any) -> Any:
            if type(v) is bool or v is None:
                return v
            if isinstance(v, np.bool_):
                return bool(v)
            if isinstance(v, float) and v != v:  # NaN means missing everywhere
                return None
            raise DataError(f"expected a boolean, got {type(v).__name__} {v!r}", column=name, value=v)
    else:
        def check(v: Any) -> Any:
            return v
    return check


_MISSING = object()


def compile_row(fitted: Any) -> Callable[[dict], dict]:
    """Compile the single-record path of ``fitted`` (a :class:`~beamlearn.FittedPipeline`): validation, each step's row function, and a dense dict
    in ``output_schema`` order.

    The record is first laid into input-schema order (a copy of a small template), so the steps always see the
    same key order and produce the same output order: it is compared with ``output_schema`` once, after which a
    record with exactly the input columns needs no reordering at all.
    """
    # every input column is checked and cast as transform's conform does (pass-through ones too); only the
    # required ones must be present
    checks = {c: _validator(c, fitted.input_schema.field(c).type) for c in fitted.input_schema.names}
    by_type: dict[type, list[str]] = {float: [], str: [], int: [], bool: []}
    other: list[str] = []
    for c in fitted.input_schema.names:
        typ = fitted.input_schema.field(c).type
        kind = (float if pa.types.is_floating(typ) else str if pa.types.is_string(typ) or pa.types.is_large_string(
            typ) else int if pa.types.is_integer(typ) else bool if pa.types.is_boolean(typ) else None)
        (by_type[kind] if kind is not None else other).append(c)
    groups = [(t, cols) for t, cols in by_type.items() if cols]
    fns = [s.row_function(st, schema) for s, st, schema in zip(fitted.steps, fitted.states, fitted.step_schemas)]
    names = list(fitted.output_schema.names)
    template = dict.fromkeys(names)
    in_template: dict[str, Any] = dict.fromkeys(fitted.input_schema.names)
    for c in fitted.required_columns:
        in_template[c] = _MISSING
    n_in = len(in_template)
    ordered: list[bool] = []  # [] until the first record tells whether the steps emit output order

    def transform_one(record: dict) -> dict:
        if not isinstance(record, dict):
            raise DataError(f"a record must be a dict, got {type(record).__name__}")
        row = in_template.copy()
        row.update(record)
        for t, cols in groups:  # the common case costs one type() test per column
            for c in cols:
                v = row[c]
                if type(v) is not t and v is not None:
                    if v is _MISSING:
                        raise SchemaError("required column is missing from the record", column=c)
                    row[c] = checks[c](v)
        for c in other:
            v = row[c]
            if v is _MISSING:
                raise SchemaError("required column is missing from the record", column=c)
            row[c] = checks[c](v)
        exact = len(row) == n_in
        for f in fns:
            row = f(row)
        if exact:
            if not ordered:
                ordered.append(list(row) == names)
            if ordered[0]:
                return row
        out = template.copy()
        out.update(row)
        return out

    return transform_one
