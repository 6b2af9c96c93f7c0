"""Batch schemas: where each batch came from, the input schema captured at fit, and conforming later batches.

Provenance (a batch's source and the row offset of its first row, or the source row of every row) is kept in the
batch's schema metadata, so that every error can name the source, row and line of a bad value.  At fit the
input schema is captured (:func:`capture_schema`); :func:`conform` casts later batches to it, naming the column,
source and row of any value that cannot be cast, or collecting such rows for dead letters.

Every name here is also importable from :mod:`beamlearn.batches`, the data edge that uses them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beamlearn.errors import DataError, SchemaError

_SOURCE_KEY, _OFFSET_KEY, _ROWS_KEY = b"beamlearn.source", b"beamlearn.offset", b"beamlearn.rows"

__all__ = [
    "BadRows",
    "batch_origin",
    "batch_rows",
    "capture_schema",
    "column_kind",
    "conform",
    "empty_batch",
    "is_csv_source",
    "source_line",
    "normalize_type",
    "schema_from_bytes",
    "schema_to_bytes",
    "schema_to_json",
    "tag_batch",
    "tag_rows",
]


# ---------------------------------------------------------------------------------------------- provenance
def tag_batch(batch: pa.RecordBatch, source: str, offset: int) -> pa.RecordBatch:
    """Record where ``batch`` came from (a source name and the row offset of its first row) in its metadata."""
    meta = dict(batch.schema.metadata or {})
    meta[_SOURCE_KEY], meta[_OFFSET_KEY] = source.encode(), str(offset).encode()
    return batch.replace_schema_metadata(meta)


def batch_origin(batch: pa.RecordBatch) -> tuple[str | None, int]:
    """The ``(source, offset)`` stored by :func:`tag_batch`, or ``(None, 0)``."""
    meta = batch.schema.metadata or {}
    src = meta.get(_SOURCE_KEY)
    return (src.decode() if src is not None else None), int(meta.get(_OFFSET_KEY, b"0"))


def tag_rows(batch: pa.RecordBatch, rows: np.ndarray) -> pa.RecordBatch:
    """Record the row index (in its source) of every row of ``batch``, for batches whose rows are not
    contiguous in their source because bad rows were dropped; see :func:`batch_rows`."""
    meta = dict(batch.schema.metadata or {})
    meta[_ROWS_KEY] = np.ascontiguousarray(rows, dtype="<i8").tobytes()
    return batch.replace_schema_metadata(meta)


def batch_rows(batch: pa.RecordBatch) -> np.ndarray:
    """The row index in its source of every row of ``batch``: from :func:`tag_rows`, else ``offset + i``."""
    meta = batch.schema.metadata or {}
    raw = meta.get(_ROWS_KEY)
    if raw is not None:
        rows = np.frombuffer(raw, dtype="<i8")
        if len(rows) == batch.num_rows:
            return rows
    return batch_origin(batch)[1] + np.arange(batch.num_rows, dtype=np.int64)


def is_csv_source(source: str | None) -> bool:
    """True for CSV/TSV file names, whose rows have line numbers (``row + 2``: one header line)."""
    return bool(source) and source.lower().endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz"))  # type: ignore


def source_line(source: str | None, row: int) -> int | None:
    """The 1-based line of row ``row`` (0-based) of ``source``: ``row + 2`` in CSV/TSV (a header line), ``row + 1``
    in JSON lines (a row is its line: blank lines count), None for other sources.

    >>> source_line("a.csv", 0), source_line("b.jsonl.gz", 2), source_line("c.parquet", 2)
    (2, 3, None)
    """
    if is_csv_source(source):
        return row + 2
    if bool(source) and source.lower().endswith((".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")):  # type: ignore
        return row + 1
    return None



# ---------------------------------------------------------------------------------------------- schema
def empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    """A zero-row batch of ``schema`` (used to derive output schemas without data)."""
    return pa.RecordBatch.from_pylist([], schema=schema)


def schema_to_json(schema: pa.Schema) -> list[dict[str, Any]]:
    """A human-readable description of ``schema``: name, Arrow type and nullability of each field."""
    return [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]


def schema_to_bytes(schema: pa.Schema) -> bytes:
    """Serialize ``schema`` (without metadata) with Arrow IPC: exact types, and safe to read back."""
    return schema.remove_metadata().serialize().to_pybytes()


def schema_from_bytes(data: bytes) -> pa.Schema:
    """Read a schema written by :func:`schema_to_bytes`."""
    return pa.ipc.read_schema(pa.py_buffer(data))


_FLOAT_RE = r"^\s*[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|inf|infinity|nan)\s*$"
_INT_RE = r"^\s*[+-]?\d+\s*$"


@dataclass
class BadRows:
    """Rows of one batch that failed validation: their indices in the batch, the column and reason of each."""

    indices: np.ndarray
    columns: list[str]
    reasons: list[str]

    @classmethod
    def none(cls) -> BadRows:
        return cls(np.zeros(0, dtype=np.int64), [], [])

    def __len__(self) -> int:
        return len(self.indices)


def _bad_cast_mask(arr: pa.Array, typ: pa.DataType) -> np.ndarray:
    """Mask of the non-null values of ``arr`` that cannot be cast to ``typ`` (vectorized where it can be)."""
    valid = ~arr.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        pattern = _FLOAT_RE if pa.types.is_floating(typ) else _INT_RE if pa.types.is_integer(typ) else None
        if pattern is not None:
            ok = pc.match_substring_regex(arr, pattern, ignore_case=True).fill_null(True)
            bad = valid & ~ok.to_numpy(zero_copy_only=False)
            rest = pc.if_else(pa.array(bad), pa.nulls(len(arr), arr.type), arr) if bad.any() else arr
            try:
                pc.cast(rest, typ)
                return bad
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return bad | _bisect_bad(rest, typ)
    return _bisect_bad(arr, typ)


def _bisect_bad(arr: pa.Array, typ: pa.DataType) -> np.ndarray:
    bad = np.zeros(len(arr), dtype=bool)
    stack = [(0, len(arr))]
    while stack:
        lo, hi = stack.pop()
        try:
            pc.cast(arr.slice(lo, hi - lo), typ)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            if hi - lo == 1:
                bad[lo] = True
            else:
                mid = (lo + hi) // 2
                stack += [(mid, hi), (lo, mid)]
    return bad


def _cast(arr: pa.Array, typ: pa.DataType) -> tuple[pa.Array, np.ndarray | None]:
    """Cast ``arr`` to ``typ``; on failure return the array with the bad values nulled and their mask."""
    if arr.type == typ:
        return arr, None
    if pa.types.is_null(typ):  # a column seen empty at fit: missing values fit, any value is bad
        bad_values = arr.is_valid().to_numpy(zero_copy_only=False)
        return pa.nulls(len(arr)), (bad_values if bad_values.any() else None)
    try:
        return pc.cast(arr, typ), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        pass
    bad = _bad_cast_mask(arr, typ)
    if not bad.any():  # the cast itself is impossible (e.g. list -> double): every non-null value is bad
        bad = ~arr.is_null().to_numpy(zero_copy_only=False)
    cleaned = pc.if_else(pa.array(bad), pa.nulls(len(arr), arr.type), arr)
    try:
        return pc.cast(cleaned, typ), bad
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):  # no cast at all (list -> double)
        return pa.nulls(len(arr), typ), bad


def conform(
    batch: pa.RecordBatch, schema: pa.Schema, *, required: Iterable[str], collect: bool = False,
    encoded: Iterable[str] = (),
) -> tuple[pa.RecordBatch, BadRows]:
    """Cast the columns of ``batch`` that ``schema`` knows to their fitted types; other columns pass through.

    A column of ``encoded`` may stay dictionary-encoded when its values have the fitted type (an engine read it
    so for consumers that take dictionaries: :func:`beamlearn.io.read_file`).

    A column of ``required`` missing from the batch raises :class:`SchemaError`.  A value that cannot be cast
    raises :class:`DataError` naming the source, row and column, unless ``collect`` is true: the bad rows are
    then returned (the first reason per row) and their values nulled in the returned batch, for the caller to
    route to dead letters.
    """
    source, _ = batch_origin(batch)
    names = set(batch.schema.names)
    for col in required:
        if col not in names:
            raise SchemaError("required column is missing (present: " + ", ".join(batch.schema.names) + ")",
                              column=col, source=source)
    bad_rows: dict[int, tuple[str, str]] = {}
    arrays, fields = [], []
    encoded = set(encoded)
    for field, arr in zip(batch.schema, batch.columns):
        if field.name in schema.names:
            typ = schema.field(field.name).type
            if field.name in encoded and pa.types.is_dictionary(arr.type) and arr.type.value_type == typ:
                arrays.append(arr)
                fields.append(field)
                continue
            new, bad = _cast(arr, typ)
            if bad is not None:
                idx = np.flatnonzero(bad)
                val = arr[int(idx[0])].as_py()
                reason = f"cannot cast {val!r} from {arr.type} to {typ}"
                if not collect:
                    row = int(batch_rows(batch)[idx[0]])
                    raise DataError(reason, column=field.name, source=source, row=row, value=val,
                                    line=source_line(source, row))
                values = arr.take(pa.array(idx)).to_pylist()
                for i, v in zip(idx.tolist(), values):
                    bad_rows.setdefault(i, (field.name, f"cannot cast {v!r} from {arr.type} to {typ}"))
            arr, field = new, pa.field(field.name, typ)
        arrays.append(arr)
        fields.append(field)
    out = pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields, metadata=batch.schema.metadata))
    if not bad_rows:
        return out, BadRows.none()
    order = sorted(bad_rows)
    return out, BadRows(np.array(order, dtype=np.int64), [bad_rows[i][0] for i in order],
                        [bad_rows[i][1] for i in order])


def normalize_type(typ: pa.DataType) -> pa.DataType:
    """The type a column is fitted with: large/view strings become string, dictionaries their value type."""
    if pa.types.is_dictionary(typ):
        return normalize_type(typ.value_type)
    if pa.types.is_large_string(typ) or str(typ) == "string_view":
        return pa.string()
    return typ


def capture_schema(batch: pa.RecordBatch, columns: Iterable[str] | None = None) -> pa.Schema:
    """The input schema to record at fit: the batch's fields (normalized types), restricted to ``columns``."""
    keep = None if columns is None else set(columns)
    return pa.schema([pa.field(f.name, normalize_type(f.type), f.nullable) for f in batch.schema
                      if keep is None or f.name in keep])


def column_kind(typ: pa.DataType) -> str:
    """``"numeric"``, ``"string"``, ``"boolean"``, ``"temporal"`` or ``"other"``."""
    if pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ):
        return "numeric"
    if pa.types.is_string(typ) or pa.types.is_large_string(typ) or re.match("string_view", str(typ)):
        return "string"
    if pa.types.is_boolean(typ):
        return "boolean"
    if pa.types.is_temporal(typ):
        return "temporal"
    return "other"
