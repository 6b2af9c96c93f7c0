"""Sources and sinks: CSV, Parquet and JSON lines, globs, bounded-size batches, dead letters; files on object
stores and HDFS (``s3://``, ``gs://``, ``hdfs://``, ``az://``: :mod:`beamlearn.stores`) and SQL tables and queries
(``postgresql://``, ``sqlite://``: :mod:`beamlearn.sqlio`) wherever a path is accepted.

Reading never holds more than one batch per file in memory.  The first file (or an explicit ``schema=``) fixes
the column types; later batches and files are cast to them.  CSV is read as text and cast with vectorized
validity checks, because Arrow's CSV reader rejects a whole block on one bad value and does not say which row:
here every bad value is reported with its file, row and column, or routed to dead letters.

Dead letters are JSON lines, one per rejected row: ``{"source", "row", "line", "column", "reason", "record"}``.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from beamlearn import sqlio, stores
from beamlearn.batches import (
    DEFAULT_BATCH_SIZE,
    batch_origin,
    batch_rows,
    capture_schema,
    column_kind,
    conform,
    is_file_input,
    tag_batch,
    tag_rows,
    to_batches,
    to_float64,
)
from beamlearn.deadletters import DeadLetters, dead_letter_sink, json_safe  # noqa: F401 - re-exported
from beamlearn.errors import DataError, SchemaError
from beamlearn.textio import csv_schema, read_csv, read_jsonl

__all__ = ["read", "read_batches", "expand_paths", "write_batches", "DeadLetters", "dead_letter_sink",
           "table_to_numpy", "file_format", "rename_source", "source_size"]

_FORMATS = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
            ".ndjson": "jsonl", ".json": "jsonl"}


def file_format(path: str) -> str:
    """``"csv"``, ``"parquet"`` or ``"jsonl"`` from a file name (a ``.gz`` suffix is allowed for text), or
    ``"sql"`` for a database URI (:mod:`beamlearn.sqlio`)."""
    if sqlio.is_sql_uri(path):
        return "sql"
    base = path[:-3] if path.endswith(".gz") else path
    ext = os.path.splitext(base)[1].lower()
    if ext not in _FORMATS:
        raise DataError(f"cannot tell the format of {stores.redact(path)!r} from its extension; use one of "
                        + ", ".join(sorted(_FORMATS)))
    return _FORMATS[ext]


def expand_paths(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Expand globs and directories into a sorted list of files; an error if nothing matches.  URIs of object
    stores are listed there (:func:`beamlearn.stores.expand`); database URIs are kept as they are."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    out: list[str] = []
    for p in map(os.fspath, items):
        p = p.removeprefix("file://")
        if sqlio.is_sql_uri(p):
            out.append(sqlio.check_uri(p))
        elif stores.is_uri(p):
            out += stores.expand(p, tuple(_FORMATS) + tuple(f + ".gz" for f in _FORMATS))
        elif any(ch in p for ch in "*?["):
            found = sorted(glob.glob(p, recursive=True))
            if not found:
                raise DataError(f"no file matches {p!r}")
            out += [f for f in found if os.path.isfile(f)]
        elif os.path.isdir(p):
            out += sorted(os.path.join(p, f) for f in os.listdir(p)
                          if os.path.splitext(f)[1].lower() in _FORMATS and not f.startswith((".", "_")))
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise DataError(f"no such file: {p!r}")
    if not out:
        raise DataError(f"no data files found in {[stores.redact(os.fspath(i)) for i in items]!r}")
    return out


def source_size(path: str) -> int | None:
    """The size in bytes of a file or object (None for a database source)."""
    if sqlio.is_sql_uri(path):
        return None
    return stores.size(path) if stores.is_uri(path) else os.path.getsize(path)


def rename_source(dead: DeadLetters | None, old: str, new: str) -> None:
    """Dead letters naming the source ``old`` (a local copy) name ``new`` (the file it was copied from)."""
    if dead is not None and old != new:
        for rec in dead.records:
            rec["source"] = new if rec["source"] == old else rec["source"]


# ---------------------------------------------------------------------------------------------- dead letters
# ---------------------------------------------------------------------------------------------- readers
def read(data: Any, *, batch_size: int = DEFAULT_BATCH_SIZE, schema: pa.Schema | None = None,
         dead: DeadLetters | None = None, required: Iterable[str] = (),
         columns: Sequence[str] | None = None, encoded: Sequence[str] = ()) -> Iterator[pa.RecordBatch]:
    """Batches from anything beamlearn accepts: in-memory data (see :func:`beamlearn.batches.to_batches`),
    file paths and globs, or a function returning either.  ``required`` columns must be in every file;
    ``columns`` and ``encoded`` (files only) are :func:`read_file`'s."""
    if callable(data) and not isinstance(data, type):
        data = data()
    if is_file_input(data):
        return read_batches(data, batch_size=batch_size, schema=schema, dead=dead, required=required,
                            columns=columns, encoded=encoded)
    return to_batches(data, batch_size=batch_size, schema=schema)


def read_batches(paths: Any, *, batch_size: int = DEFAULT_BATCH_SIZE, schema: pa.Schema | None = None,
                 dead: DeadLetters | None = None, required: Iterable[str] = (),
                 columns: Sequence[str] | None = None, encoded: Sequence[str] = ()) -> Iterator[pa.RecordBatch]:
    """Read files as batches of at most ``batch_size`` rows, cast to one schema.

    The schema is ``schema`` if given, else the first file's.  Values that cannot be cast raise
    :class:`DataError` naming file, row and column — or, with a ``dead`` sink, go there and the row is dropped.
    A file lacking a ``required`` column raises :class:`SchemaError`; other columns a file lacks become nulls.
    """
    files = expand_paths(paths)
    for k, path in enumerate(files):
        if schema is None and file_format(path) == "csv":  # CSV is read as text: fix the inferred types first
            with local_copy(path) as local:
                schema = csv_schema(local, [f for f in files[k + 1:] if file_format(f) == "csv"
                                            and not stores.is_uri(f) and not sqlio.is_sql_uri(f)])
        for batch in read_file(path, batch_size=batch_size, schema=schema, dead=dead, required=required,
                               columns=columns if schema is not None else None, encoded=encoded):
            schema = schema if schema is not None else capture_schema(batch)
            yield batch


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """``path`` itself when it is local, else a temporary local copy of the object (removed afterwards)."""
    if not stores.is_uri(path):
        yield path
        return
    tmpdir = tempfile.mkdtemp(prefix="beamlearn-read-")
    try:
        name = os.path.basename(path) or "data"
        yield stores.download(path, os.path.join(tmpdir, uuid.uuid4().hex[:8] + "-" + name))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def read_file(path: str, *, batch_size: int = DEFAULT_BATCH_SIZE, schema: pa.Schema | None = None,
              dead: DeadLetters | None = None, required: Iterable[str] = (),
              row_groups: Sequence[int] | None = None, first_row: int = 0,
              columns: Sequence[str] | None = None, encoded: Sequence[str] = ()) -> Iterator[pa.RecordBatch]:
    """One file (or, for Parquet, the ``row_groups`` of it whose first row is ``first_row``) as
    :func:`read_batches` reads it.

    ``columns`` reads only those columns of a Parquet file, when that cannot change which rows are kept: when the
    file stores every other column of ``schema`` with exactly its type (no cast, so no bad value); otherwise, and
    for text formats, every column is read.  String columns of ``encoded`` that a Parquet file stores with the
    schema's type come back dictionary-encoded (as Parquet stores them: no string is built), for consumers
    that take dictionaries (:meth:`~beamlearn.pipeline.Pass.encoded_columns`).
    """
    required = list(required)
    fmt = file_format(path)
    keep: list[str] = []
    shown = stores.redact(path) if "://" in path else path  # provenance and dead letters never hold a password
    if fmt == "sql":  # a table, a query, or one key range of a partitioned read
        yield from _conformed(sqlio.read_sql(path, batch_size=batch_size), shown, schema, dead, required, [],
                              None, first_row)
        return
    if fmt == "parquet":
        pf = _open_parquet(path)
        types = pf.schema_arrow
        if encoded and schema is not None:
            keep = [c for c in encoded if c in types.names and c in schema.names
                    and types.field(c).type == schema.field(c).type and column_kind(types.field(c).type) == "string"]
            if keep:
                pf = _open_parquet(path, keep)
        stored = _projection(types, schema, columns)
        if stored is None:
            columns = None
        else:  # a required column not read must still be in the file
            absent = [c for c in required if c not in types.names]
            if absent:
                raise SchemaError("required column is missing (present: " + ", ".join(types.names) + ")",
                                  column=absent[0], source=shown)
            required = [c for c in required if c in stored]
        rows: Iterator[pa.RecordBatch] = _read_parquet(pf, batch_size, row_groups, stored)
        yield from _conformed(rows, shown, schema, dead, required, keep, columns, first_row)
        return
    with local_copy(path) as local:  # text on a store is copied here first (streamed, then read streaming)
        rows = {"csv": read_csv, "jsonl": read_jsonl}[fmt](local, batch_size, schema, dead)
        for batch in _conformed(rows, shown, schema, dead, required, keep, None, first_row, local):
            rename_source(dead, local, shown)
            yield batch
        rename_source(dead, local, shown)


def _conformed(rows: Iterable[pa.RecordBatch], path: str, schema: pa.Schema | None, dead: DeadLetters | None,
               required: list[str], keep: list[str], columns: Sequence[str] | None, first_row: int,
               local: str | None = None) -> Iterator[pa.RecordBatch]:
    """Raw batches of one source cast to ``schema`` (the first batch's if None), tagged with ``path`` and their
    rows; bad rows raise or go to ``dead``."""
    offset = first_row
    for raw in rows:
        origin = batch_origin(raw)
        if local is not None and origin[0] == local:
            raw = tag_batch(raw, path, origin[1])
        elif origin[0] != path:  # readers that skip bad lines tag their batches themselves
            raw = tag_batch(raw, path, offset)
        offset += raw.num_rows
        if schema is None:
            schema = capture_schema(raw)
        batch, bad = conform(raw, schema, required=required, collect=dead is not None, encoded=keep)
        if len(bad):
            dead.add_rows(raw, bad.indices, bad.columns, bad.reasons)  # type: ignore[union-attr]
            kept = np.ones(batch.num_rows, bool)
            kept[bad.indices] = False
            batch = tag_rows(batch.filter(pa.array(kept)), batch_rows(raw)[kept])
        yield _complete(batch, schema, columns)


def _complete(batch: pa.RecordBatch, schema: pa.Schema, columns: Sequence[str] | None = None) -> pa.RecordBatch:
    """Add the schema's columns (of ``columns``, when the read was projected) a file lacks as nulls (a later
    file may omit an optional column)."""
    wanted = schema if columns is None else [schema.field(c) for c in columns if c in schema.names]
    missing = [f for f in wanted if f.name not in batch.schema.names]
    if not missing:
        return batch
    arrays = list(batch.columns) + [pa.nulls(batch.num_rows, f.type) for f in missing]
    names = batch.schema.names + [f.name for f in missing]
    return pa.RecordBatch.from_arrays(arrays, names=names).replace_schema_metadata(batch.schema.metadata)


def _open_parquet(path: str, dictionary: Sequence[str] | None = None) -> pq.ParquetFile:
    source = stores.open_input(path) if stores.is_uri(path) else path
    try:  # pre-buffering keeps the whole file: memory grows with it (a store is read by ranges either way)
        return pq.ParquetFile(source, pre_buffer=False, read_dictionary=dictionary)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"not a readable Parquet file ({stores.redact(str(exc))})",
                        source=stores.redact(path)) from None


def _projection(stored: pa.Schema, schema: pa.Schema | None, columns: Sequence[str] | None) -> list[str] | None:
    """The stored columns to read for ``columns``, or None (all) when skipping the others could change which
    rows are kept: when a skipped column of ``schema`` is stored with another type (a cast that may fail)."""
    if columns is None or schema is None:
        return None
    skipped = [f for f in schema if f.name not in columns and f.name in stored.names]
    if any(stored.field(f.name).type != f.type for f in skipped):
        return None
    return [c for c in stored.names if c in columns] or stored.names[:1]  # a batch without columns has no rows


def _read_parquet(pf: pq.ParquetFile, batch_size: int, row_groups: Sequence[int] | None,
                  columns: list[str] | None) -> Iterator[pa.RecordBatch]:
    """Batches of at most ``batch_size`` rows, one row group at a time: a batch never spans two row groups, so
    the reader holds one group's pages (and one dictionary per encoded column) at once."""
    empty = True
    for group in range(pf.num_row_groups) if row_groups is None else row_groups:
        for b in pf.iter_batches(batch_size=batch_size, row_groups=[group], columns=columns):
            empty = False
            yield b
    if empty:
        stored = pf.schema_arrow
        yield pa.RecordBatch.from_pylist([], schema=stored if columns is None else
                                         pa.schema([stored.field(c) for c in columns]))


def write_batches(batches: Iterable[pa.RecordBatch], path: str, *, schema: pa.Schema | None = None) -> int:
    """Write batches to ``path`` (format from the extension), atomically; returns the rows written.

    ``path`` may be a URI of an object store (written locally, then uploaded: the object appears whole or not at
    all) or of a database table (:func:`beamlearn.sqlio.write_sql`: staged, then swapped in one transaction)."""
    fmt = file_format(path)
    if fmt == "sql":
        return sqlio.write_sql(batches, path, schema=schema)
    remote = stores.is_uri(path)
    directory = tempfile.gettempdir() if remote else os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".beamlearn-", suffix=os.path.basename(path),
                               dir=directory)
    os.close(fd)
    rows = 0
    writer: Any = None
    try:
        with open(tmp, "wb") as sink:
            try:
                for b in batches:
                    b = b.replace_schema_metadata(None)
                    if writer is None:
                        writer = _open_writer(fmt, sink, b.schema, path)
                    writer(b)
                    rows += b.num_rows
            except BaseException:
                if writer is not None:  # release the writer while its file is open (else it closes it later)
                    with contextlib.suppress(Exception):
                        writer(None)
                raise
            if writer is None and schema is not None:
                writer = _open_writer(fmt, sink, schema.remove_metadata(), path)
            if writer is not None:
                writer(None)
        if remote:
            stores.upload(tmp, path)
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return rows


def _open_writer(fmt: str, sink: Any, schema: pa.Schema, path: str) -> Callable[[pa.RecordBatch | None], None]:
    if fmt == "parquet":
        w = pq.ParquetWriter(sink, schema)
        return lambda b: w.write_batch(b) if b is not None else w.close()
    if fmt == "csv":
        nested = [f.name for f in schema if pa.types.is_nested(f.type)]
        if nested:
            raise SchemaError("CSV cannot hold list columns (e.g. FeatureHasher output); write Parquet or JSONL",
                              column=nested[0], source=path)
        w2 = pcsv.CSVWriter(sink, schema)
        return lambda b: w2.write_batch(b) if b is not None else w2.close()

    def write_json(b: pa.RecordBatch | None) -> None:
        if b is not None and b.num_rows:  # exact floats (shortest repr), ints stay ints, NaN becomes null
            cols = [pc.if_else(pc.is_nan(a), pa.nulls(len(a), a.type), a) if pa.types.is_floating(a.type) else a
                    for a in b.columns]
            rows = pa.RecordBatch.from_arrays(cols, names=b.schema.names).to_pylist()
            sink.write("".join(json.dumps(r, default=str, ensure_ascii=False) + "\n" for r in rows).encode())

    return write_json


def table_to_numpy(table: pa.Table) -> np.ndarray:
    """A 2-D float64 array of all columns (NaN for missing); every column must be numeric or boolean."""
    bad = [f.name for f in table.schema if column_kind(f.type) not in ("numeric", "boolean")]
    if bad:
        raise SchemaError("output='numpy' needs numeric columns; drop or encode this one first", column=bad[0])
    if table.num_columns == 0:
        return np.zeros((table.num_rows, 0))
    out = np.empty((table.num_rows, table.num_columns), dtype=np.float64, order="F")
    for j, col in enumerate(table.columns):
        col = pa.chunked_array([to_float64(c) for c in col.chunks], type=pa.float64())
        out[:, j] = col.to_numpy() if col.null_count == 0 else col.fill_null(np.nan).to_numpy()
    return out
