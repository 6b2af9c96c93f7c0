"""The data edge: everything becomes a :class:`pyarrow.RecordBatch`, once.

In-memory inputs (Arrow tables and batches, pandas DataFrames, dicts of arrays, lists of dict rows) are
converted here; files are read by :mod:`beamlearn.io` and arrive here as batches too.  This module also
captures a pipeline's input schema at fit and conforms later batches to it, naming the column, source and row of
any value that cannot be cast.

Missing values: Arrow nulls and float NaN both mean "missing" everywhere in beamlearn.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beamlearn.errors import DataError, SchemaError

DEFAULT_BATCH_SIZE = 65_536
_SOURCE_KEY, _OFFSET_KEY, _ROWS_KEY = b"beamlearn.source", b"beamlearn.offset", b"beamlearn.rows"

__all__ = [
    "DEFAULT_BATCH_SIZE", "BadRows", "to_batches", "is_file_input", "tag_batch", "batch_origin",
    "float_values", "missing_mask", "from_float", "conform", "schema_to_json", "schema_from_bytes",
    "schema_to_bytes", "empty_batch", "tag_rows", "batch_rows", "is_csv_source",
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


# ---------------------------------------------------------------------------------------------- conversion
def is_file_input(data: Any) -> bool:
    """True when ``data`` names files (a path, a glob, or a list of them) rather than holding rows."""
    import os

    if isinstance(data, (str, os.PathLike)):
        return True
    return (isinstance(data, (list, tuple)) and len(data) > 0
            and all(isinstance(d, (str, os.PathLike)) for d in data))


def _split(batch: pa.RecordBatch, batch_size: int, source: str, offset: int) -> Iterator[pa.RecordBatch]:
    for start in range(0, max(batch.num_rows, 1), batch_size):
        yield tag_batch(batch.slice(start, batch_size), source, offset + start)


def _column(values: Any, name: str, source: str) -> pa.Array:
    """``pa.array(values)``, or a :class:`DataError` naming the column and the first value of another kind."""
    try:
        return pa.array(np.asarray(values) if isinstance(values, np.ndarray) else values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError) as exc:
        values = list(values)
        bad = _first_bad_row(values, None)
        raise DataError(f"value {values[bad]!r} does not fit the column ({exc})", column=name, source=source,
                        row=bad, value=values[bad]) from None


def _from_rows(rows: Sequence[Mapping[str, Any]], schema: pa.Schema | None, *, offset: int = 0,
               source: str | None = None) -> pa.RecordBatch:
    """Build a batch from dict rows, naming the row and column of a value that does not fit its column.

    With ``schema``, a value that does not fit its fitted type is kept (as text if need be) for :func:`conform`
    to reject with its row, or to route to dead letters.  ``offset`` is the index of the first row in its source.
    """
    names: list[str] = list(schema.names) if schema is not None else []
    seen = set(names)
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping):
            raise DataError(f"expected a dict row, got {type(r).__name__}", source=source, row=offset + i)
        for k in r:
            if k not in seen:
                seen.add(k)
                names.append(k)
    arrays = []
    for name in names:
        values = [r.get(name) for r in rows]
        typ = schema.field(name).type if schema is not None and name in schema.names else None
        try:
            arrays.append(pa.array(values, type=typ, from_pandas=True))
            continue
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError) as exc:
            if typ is None:
                bad = _first_bad_row(values, typ)
                raise DataError(f"value {values[bad]!r} does not fit the column ({exc})", column=name,
                                source=source, row=offset + bad, value=values[bad]) from None
        try:  # leave the bad values to conform(), which names their rows (or routes them to dead letters)
            arrays.append(pa.array(values, from_pandas=True))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
            arrays.append(pa.array([None if v is None else str(v) for v in values], type=pa.string()))
    return pa.RecordBatch.from_arrays(arrays, names=names) if names else pa.RecordBatch.from_pylist([])


def _first_bad_row(values: list[Any], typ: pa.DataType | None) -> int:
    if typ is None:  # inferred from the first non-null value: the first value of another kind is the culprit
        first = next((v for v in values if v is not None), None)
        kind = (int, float) if isinstance(first, (int, float)) and not isinstance(first, bool) else type(first)
        for i, v in enumerate(values):
            if v is not None and not isinstance(v, kind):
                return i
    for i, v in enumerate(values):
        try:
            pa.array([v], type=typ, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
            return i
    return 0


def to_batches(
    data: Any, *, batch_size: int = DEFAULT_BATCH_SIZE, schema: pa.Schema | None = None, source: str = "<data>"
) -> Iterator[pa.RecordBatch]:
    """Yield ``data`` as RecordBatches of at most ``batch_size`` rows, tagged with their source and offset.

    ``data`` may be a pyarrow Table or RecordBatch, a pandas DataFrame, a dict of column arrays, a list of dict
    rows, or an iterable of RecordBatches.  File paths are handled by :func:`beamlearn.io.read_batches`.

    Examples
    --------
    >>> [b.num_rows for b in to_batches({"x": [1.0, 2.0, 3.0]}, batch_size=2)]
    [2, 1]
    """
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    if isinstance(data, pa.RecordBatch):
        yield from _split(data, batch_size, source, 0)
        return
    if isinstance(data, pa.Table):
        offset = 0
        for b in data.to_batches(max_chunksize=batch_size):
            yield tag_batch(b, source, offset)
            offset += b.num_rows
        if data.num_rows == 0:
            yield tag_batch(pa.RecordBatch.from_pylist([], schema=data.schema), source, 0)
        return
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(data, pd.DataFrame):
        try:
            table = pa.Table.from_pandas(data, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            table = pa.table({str(k): _column(list(data[k]), str(k), source) for k in data.columns})
        yield from to_batches(table, batch_size=batch_size, source=source)
        return
    if isinstance(data, Mapping):
        arrays = {k: v if isinstance(v, (pa.Array, pa.ChunkedArray)) else _column(v, k, source)
                  for k, v in data.items()}
        lengths = {k: len(v) for k, v in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise DataError("the columns of a dict of arrays must have the same length, got "
                            + ", ".join(f"{k}: {n}" for k, n in lengths.items()), source=source)
        yield from to_batches(pa.table(arrays), batch_size=batch_size, source=source)
        return
    if isinstance(data, list) and (not data or isinstance(data[0], Mapping)):
        if schema is not None:  # a column no row has is missing (an error if required), not all-null
            present = {k for r in data if isinstance(r, Mapping) for k in r}
            schema = pa.schema([f for f in schema if f.name in present])
            for start in range(0, max(len(data), 1), batch_size):
                yield tag_batch(_from_rows(data[start:start + batch_size], schema, offset=start, source=source),
                                source, start)
        else:  # infer the types from every row at once, so that every batch has the same schema
            yield from _split(_from_rows(data, None, source=source), batch_size, source, 0)
        return
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
        offset = 0
        for item in data:
            if not isinstance(item, pa.RecordBatch):
                raise DataError(f"an iterable of data must yield pyarrow.RecordBatch, got {type(item).__name__}")
            src, off = batch_origin(item)
            if src is None:
                item, off = tag_batch(item, source, offset), offset
            offset = off + item.num_rows
            if item.num_rows > batch_size:  # batch_size bounds every batch, whatever the producer yields
                yield from _split(item, batch_size, src or source, off)
            else:
                yield item
        return
    raise DataError(f"cannot read data of type {type(data).__name__}: pass a pyarrow Table or RecordBatch, a "
                    "pandas DataFrame, a dict of arrays, a list of dict rows, or file paths")


def empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    """A zero-row batch of ``schema`` (used to derive output schemas without data)."""
    return pa.RecordBatch.from_pylist([], schema=schema)


# ---------------------------------------------------------------------------------------------- missing values
def missing_mask(arr: pa.Array) -> np.ndarray:
    """Boolean numpy mask of missing values: nulls, and NaN in floating columns."""
    mask = arr.is_null(nan_is_null=pa.types.is_floating(arr.type))
    return mask.to_numpy(zero_copy_only=False)


def float_values(arr: pa.Array) -> np.ndarray:
    """The column as a float64 numpy array with NaN for every missing value (zero-copy when possible)."""
    if not pa.types.is_floating(arr.type) or arr.type != pa.float64():
        if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(arr.type)
                or pa.types.is_null(arr.type) or pa.types.is_decimal(arr.type)):
            raise SchemaError(f"expected a numeric column, got {arr.type}")
        arr = pc.cast(arr, pa.float64())
    if arr.null_count:
        arr = arr.fill_null(np.nan)
    return arr.to_numpy(zero_copy_only=False)


def from_float(x: np.ndarray) -> pa.Array:
    """A float64 Arrow array from numpy, with NaN turned into null (missing stays missing)."""
    return pa.array(x, type=pa.float64(), from_pandas=True)


def raw_values(arr: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """``(x, valid)``: the column's values as float64 numpy (zero-copy for float64 columns; the slots of nulls
    hold arbitrary numbers) and a boolean mask of non-missing values (not null, not NaN), or ``None`` when every
    value is present.  The fast path of every numeric analyzer and transform.

    Both arrays are read-only.  Results are memoized for the few most recent columns (keyed by buffer address,
    holding a reference so the address cannot be reused), because the analyzers of one pass often read the
    same column of the same batch.
    """
    data = arr.buffers()[1] if len(arr.buffers()) > 1 else None
    key = (data.address if data is not None else id(arr), arr.offset, len(arr), arr.null_count, str(arr.type))
    hit = _RAW_MEMO.get(key)
    if hit is not None:
        return hit[1], hit[2]
    x, valid = _raw_values(arr)
    x.flags.writeable = False
    if valid is not None:
        valid.flags.writeable = False
    with _RAW_LOCK:  # engines run batches on several threads
        if len(_RAW_MEMO) >= 64:
            _RAW_MEMO.pop(next(iter(_RAW_MEMO)))
        _RAW_MEMO[key] = (arr, x, valid)
    return x, valid


_RAW_MEMO: dict[tuple, tuple[pa.Array, np.ndarray, np.ndarray | None]] = {}
_RAW_LOCK = threading.Lock()


def _raw_values(arr: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    if arr.type != pa.float64():
        if column_kind(arr.type) not in ("numeric", "boolean") and not pa.types.is_null(arr.type):
            raise SchemaError(f"expected a numeric column, got {arr.type}")
        arr = pc.cast(arr, pa.float64())
    n = len(arr)
    buf = arr.buffers()[1]
    x = np.frombuffer(buf, dtype=np.float64, count=n, offset=arr.offset * 8) if buf is not None else np.zeros(n)
    valid = None
    if arr.null_count:
        bits = np.frombuffer(arr.buffers()[0], dtype=np.uint8)
        valid = np.unpackbits(bits, bitorder="little", count=arr.offset + n)[arr.offset:].astype(bool)
    nan = np.isnan(x)
    if valid is None:
        if nan.any():
            valid = ~nan
    else:
        valid &= ~nan
    return x, valid


def with_validity(values: np.ndarray, like: pa.Array) -> pa.Array:
    """A float64 array of ``values`` that is null exactly where ``like`` is null (no NaN scan, no copy).

    NaN values stay NaN (still missing for every beamlearn step)."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    if like.null_count == 0:
        return pa.Array.from_buffers(pa.float64(), len(values), [None, pa.py_buffer(values)], null_count=0)
    if like.offset % 8:  # realign the bitmap (is_valid returns a fresh array at offset 0)
        validity = like.is_valid().buffers()[1]
    else:
        validity = like.buffers()[0].slice(like.offset // 8)
    return pa.Array.from_buffers(pa.float64(), len(values), [validity, pa.py_buffer(values)],
                                 null_count=like.null_count)


# ---------------------------------------------------------------------------------------------- schema
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
                                    line=row + 2 if is_csv_source(source) else None)
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
