"""The data edge: everything becomes a :class:`pyarrow.RecordBatch`, once.

In-memory inputs (Arrow tables and batches, pandas DataFrames, dicts of arrays, lists of dict rows) are
converted here; files are read by :mod:`beamlearn.io` and arrive here as batches too.  Batch provenance, the
input schema captured at fit and :func:`conform` (which casts later batches to it, naming the column, source and
row of any value that cannot be cast) live in :mod:`beamlearn.schema` and are re-exported here.

Missing values: Arrow nulls and float NaN both mean "missing" everywhere in beamlearn.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beamlearn.errors import DataError, SchemaError
from beamlearn.schema import (  # noqa: F401 - re-exported: imported from here
    BadRows,
    batch_origin,
    batch_rows,
    capture_schema,
    column_kind,
    conform,
    empty_batch,
    is_csv_source,
    source_line,
    normalize_type,
    schema_from_bytes,
    schema_to_bytes,
    schema_to_json,
    tag_batch,
    tag_rows,
)

DEFAULT_BATCH_SIZE = 65_536

__all__ = [
    "DEFAULT_BATCH_SIZE", "BadRows", "to_batches", "is_file_input", "tag_batch", "batch_origin",
    "float_values", "missing_mask", "from_float", "conform", "schema_to_json", "schema_from_bytes",
    "schema_to_bytes", "empty_batch", "tag_rows", "batch_rows", "is_csv_source", "source_line", "present_values",
    "to_float64",
]

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


def batch_from_rows(rows: Sequence[Mapping[str, Any]], schema: pa.Schema | None, *, offset: int = 0,
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

    ``data`` may be a pyarrow Table or RecordBatch, a pandas DataFrame (Arrow-backed dtypes read without a copy),
    a Polars DataFrame or LazyFrame, a DuckDB relation or result (:func:`arrow_stream`), a dict of column arrays,
    a list of dict rows, or an iterable of RecordBatches.  File paths are handled by :func:`beamlearn.io.read_batches`.

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
    pd = sys.modules.get("pandas")  # a DataFrame exists only where pandas was imported: serving never imports it
    if pd is not None and isinstance(data, pd.DataFrame):
        try:
            table = pa.Table.from_pandas(data, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            table = pa.table({str(k): _column(list(data[k]), str(k), source) for k in data.columns})
        yield from to_batches(table, batch_size=batch_size, source=source)
        return
    reader = arrow_stream(data, batch_size)
    if reader is not None:
        empty = True
        for batch in to_batches(reader, batch_size=batch_size, source=source):
            empty = False
            yield batch
        if empty:
            yield tag_batch(pa.RecordBatch.from_pylist([], schema=reader.schema), source, 0)
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
                yield tag_batch(batch_from_rows(data[start:start + batch_size], schema, offset=start, source=source),
                                source, start)
        else:  # infer the types from every row at once, so that every batch has the same schema
            yield from _split(batch_from_rows(data, None, source=source), batch_size, source, 0)
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
                    "pandas or Polars DataFrame, a DuckDB relation, a dict of arrays, a list of dict rows, or file "
                    "paths")


def arrow_stream(data: Any, batch_size: int = DEFAULT_BATCH_SIZE) -> pa.RecordBatchReader | None:
    """``data`` as a stream of RecordBatches when it is a DataFrame of another library that speaks Arrow: a Polars
    DataFrame (zero-copy) or LazyFrame (collected), a DuckDB relation or query result (streamed, ``batch_size``
    rows at a time), or any object with the Arrow PyCapsule stream interface (``__arrow_c_stream__``); else None.
    Nothing is imported: those objects exist only where their library was imported.

    Examples
    --------
    >>> arrow_stream([1, 2]) is None
    True
    """
    module = type(data).__module__.split(".")[0]
    if module == "polars" and hasattr(data, "collect") and not hasattr(data, "__arrow_c_stream__"):
        data = data.collect()  # a LazyFrame: run the query, then read the frame without a copy
    if module in ("duckdb", "_duckdb") and hasattr(data, "to_arrow_reader"):
        reader = data.to_arrow_reader(batch_size)
        if reader is None:  # a query result (DB-API) is read once; a relation re-runs its query on every read
            raise DataError("this DuckDB query result was already read (a fit reads its data once per pass): pass "
                            "the relation, con.sql(query), which DuckDB runs again for every read")
        return _without_views(reader)
    if hasattr(data, "__arrow_c_stream__") and not isinstance(data, (pa.Table, pa.RecordBatch, pa.RecordBatchReader)):
        return _without_views(pa.RecordBatchReader.from_stream(data))
    return None


_VIEWS = {pa.string_view(): pa.string(), pa.binary_view(): pa.binary()}


def _without_views(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """String and binary *view* columns (Polars' layout) cast to the plain layout the steps read; every other
    column passes untouched (no copy)."""
    if not any(f.type in _VIEWS for f in reader.schema):
        return reader
    schema = pa.schema([f.with_type(_VIEWS.get(f.type, f.type)) for f in reader.schema])

    def cast() -> Iterator[pa.RecordBatch]:
        for b in reader:
            yield pa.RecordBatch.from_arrays([c.cast(_VIEWS[c.type]) if c.type in _VIEWS else c for c in b.columns],
                                             schema=schema)

    return pa.RecordBatchReader.from_batches(schema, cast())


# ---------------------------------------------------------------------------------------------- missing values
def missing_mask(arr: pa.Array) -> np.ndarray:
    """Boolean numpy mask of missing values: nulls, and NaN in floating columns."""
    mask = arr.is_null(nan_is_null=pa.types.is_floating(arr.type))
    return mask.to_numpy(zero_copy_only=False)


def to_float64(arr: pa.Array) -> pa.Array:
    """``arr`` (numeric, boolean or null) cast to float64, integers beyond 2**53 rounded to the nearest double
    as numpy's ``astype``, scikit-learn and the record path (Python's ``float``) round them (Arrow's safe cast
    would refuse them).

    >>> to_float64(pa.array([2**53 + 1, None])).to_pylist()
    [9007199254740992.0, None]
    """
    return arr if arr.type == pa.float64() else pc.cast(arr, pa.float64(), safe=False)


def float_values(arr: pa.Array) -> np.ndarray:
    """The column as a float64 numpy array with NaN for every missing value (zero-copy when possible)."""
    if not pa.types.is_floating(arr.type) or arr.type != pa.float64():
        if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(arr.type)
                or pa.types.is_null(arr.type) or pa.types.is_decimal(arr.type)):
            raise SchemaError(f"expected a numeric column, got {arr.type}")
        arr = to_float64(arr)
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


def present_values(arr: pa.Array) -> np.ndarray:
    """The column's non-missing values (not null, not NaN) as read-only float64 numpy, in order: ``x[valid]``
    of :func:`raw_values`, memoized alike (the moments, the range and the profile of a pass read the same
    compressed values of a batch; compressing is most of their cost)."""
    x, ok = raw_values(arr)
    if ok is None:
        return x
    key = ("present", id(x), ok.__array_interface__["data"][0], len(x))
    hit = _RAW_MEMO.get(key)
    if hit is not None:
        return hit[1]
    xs = x[ok]
    xs.flags.writeable = False
    with _RAW_LOCK:
        if len(_RAW_MEMO) >= 64:
            _RAW_MEMO.pop(next(iter(_RAW_MEMO)))
        _RAW_MEMO[key] = ((x, ok), xs, None)  # holds x and ok: their ids and addresses cannot be reused
    return xs


_RAW_MEMO: dict[tuple, tuple[Any, np.ndarray, np.ndarray | None]] = {}
_RAW_LOCK = threading.Lock()


def _raw_values(arr: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    if arr.type != pa.float64():
        if column_kind(arr.type) not in ("numeric", "boolean") and not pa.types.is_null(arr.type):
            raise SchemaError(f"expected a numeric column, got {arr.type}")
        arr = to_float64(arr)
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

