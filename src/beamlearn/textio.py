"""Text sources: CSV (read as text, then cast, so every bad value names its file, row and line) and JSON lines.

:mod:`beamlearn.io` reads every format through :func:`beamlearn.io.read_file`; these are its text readers: each
yields raw batches of at most ``batch_size`` rows, tagged with their provenance, for it to cast and complete.
"""

from __future__ import annotations

import contextlib
import csv
import io as _io
import json
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson

from beamlearn.batches import batch_from_rows, capture_schema, column_kind, tag_batch, tag_rows
from beamlearn.errors import DataError

if TYPE_CHECKING:
    from beamlearn.deadletters import DeadLetters

def _rechunk(batches: Iterable[pa.RecordBatch], batch_size: int) -> Iterator[pa.RecordBatch]:
    pending: list[pa.RecordBatch] = []
    rows = 0
    for b in batches:
        pending.append(b)
        rows += b.num_rows
        while rows >= batch_size:
            t = pa.Table.from_batches(pending).combine_chunks()
            yield t.slice(0, batch_size).to_batches()[0] if batch_size else t.to_batches()[0]
            rest = t.slice(batch_size)
            pending = rest.to_batches() if rest.num_rows else []
            rows = rest.num_rows
    if rows or not pending:
        if pending:
            t = pa.Table.from_batches(pending).combine_chunks()
            yield from t.to_batches()


def _csv_header(path: str) -> list[str]:
    import gzip

    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as fh:  # type: ignore[operator]
        first = fh.readline()
    delim = "\t" if path.lower().replace(".gz", "").endswith(".tsv") else ","
    header = next(csv.reader(_io.StringIO(first), delimiter=delim), None)
    if not header:
        raise DataError("empty CSV file (no header line)", source=path)
    return header


def _parse_options(path: str) -> pcsv.ParseOptions:
    delim = "\t" if path.lower().replace(".gz", "").endswith(".tsv") else ","
    return pcsv.ParseOptions(delimiter=delim, invalid_row_handler=lambda r: "skip")


def csv_schema(path: str, others: Iterable[str] = ()) -> pa.Schema:
    """The column types Arrow infers from the first block of a CSV file; a column empty throughout that block
    takes the type Arrow infers from its first non-empty values further on, in this file and then in the
    ``others`` (the later CSV files of the same read); null only if it has none."""
    try:
        sample = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 20),
                               parse_options=_parse_options(path))
        inferred = sample.schema
        sample.close()
    except (pa.ArrowInvalid, StopIteration, OSError) as exc:
        raise DataError(f"cannot read CSV ({exc})", source=path) from None
    for source in [path, *others]:
        empty = [f.name for f in inferred if pa.types.is_null(f.type)]
        if not empty:
            break
        try:
            inferred = _later_types(source, inferred, empty)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"cannot read CSV ({exc})", source=source) from None
    return capture_schema(pa.RecordBatch.from_pylist([], schema=inferred))


def _later_types(path: str, inferred: pa.Schema, empty: list[str], sample_size: int = 1000) -> pa.Schema:
    """Types for the ``empty`` columns of ``inferred``: scan ``path`` (those of its columns only, as text) for up
    to ``sample_size`` non-empty values each, and let Arrow infer their type from them."""
    header = set(_csv_header(path))
    empty = [c for c in empty if c in header]
    if not empty:
        return inferred
    found: dict[str, list[str]] = {c: [] for c in empty}
    reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 22),
                           parse_options=_parse_options(path),
                           convert_options=pcsv.ConvertOptions(include_columns=empty, strings_can_be_null=True,
                                                               column_types=dict.fromkeys(empty, pa.string())))
    with contextlib.closing(reader):
        for batch in reader:
            for c in [c for c in empty if len(found[c]) < sample_size]:
                values = batch.column(c).drop_null()
                found[c] += values.slice(0, sample_size - len(found[c])).to_pylist()
            if all(len(v) >= sample_size for v in found.values()):
                break
    fields = list(inferred)
    for c, values in found.items():
        if values:
            text = _io.StringIO()
            csv.writer(text).writerows([[c], *([v] for v in values)])
            typ = pcsv.read_csv(_io.BytesIO(text.getvalue().encode())).schema.field(c).type
            fields[inferred.get_field_index(c)] = pa.field(c, typ)
    return pa.schema(fields)


def read_csv(path: str, batch_size: int, schema: pa.Schema | None,
             dead: DeadLetters | None) -> Iterator[pa.RecordBatch]:
    """CSV rows as batches, read as text and cast to ``schema`` so every bad value names its row and line."""
    header = _csv_header(path)
    delim = "\t" if path.lower().replace(".gz", "").endswith(".tsv") else ","
    skipped: list[int] = []         # data rows (0-based) of the malformed lines sent to dead letters
    failure: list[DataError] = []   # raised outside Arrow's callback, so that it keeps its line number

    def bad_row(row: Any) -> str:
        line = row.number  # known because the reader runs single-threaded
        reason = f"expected {row.expected_columns} fields, got {row.actual_columns}"
        data_row = None if line is None else line - 2
        if dead is None:
            failure.append(DataError(reason + f": {row.text[:200]!r}", source=path, line=line, row=data_row))
            return "skip"
        dead.add(source=path, row=data_row, line=line, column=None, reason=reason, record={"_raw": row.text})
        if data_row is not None:
            skipped.append(data_row)
        return "skip"

    if schema is None:  # infer types the way Arrow does, from the first block, then read as text and cast
        schema = csv_schema(path)
    types = {n: pa.string() for n in header}
    try:
        reader = pcsv.open_csv(
            path, read_options=pcsv.ReadOptions(block_size=1 << 22, use_threads=False),
            parse_options=pcsv.ParseOptions(delimiter=delim, invalid_row_handler=bad_row),
            convert_options=pcsv.ConvertOptions(column_types=types, strings_can_be_null=True))
    except pa.ArrowInvalid as exc:
        if failure:
            raise failure[0] from None
        raise DataError(f"cannot read CSV ({exc})", source=path) from None
    emitted = 0
    for b in _rechunk(_guarded(reader, path, failure), batch_size):
        if failure and failure[0].row is not None and failure[0].row - emitted < b.num_rows:
            b = b.slice(0, max(failure[0].row - emitted, 0))  # the rows before the malformed line come first
        b = tag_batch(_cast_text(b, schema), path, emitted)
        if skipped:  # map the rows that remain to their rows in the file
            s = np.asarray(skipped, dtype=np.int64)
            s = np.sort(s) - np.arange(len(s))
            e = emitted + np.arange(b.num_rows, dtype=np.int64)
            b = tag_rows(b, e + np.searchsorted(s, e, side="right"))
        emitted += b.num_rows
        yield b
        if failure and failure[0].row is not None and emitted >= failure[0].row:
            raise failure[0]
    if failure:
        raise failure[0]


def _guarded(reader: Any, path: str, failure: list[DataError] | None = None) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            b = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as exc:
            if failure:
                raise failure[0] from None
            raise DataError(f"cannot parse CSV ({exc})", source=path) from None
        if failure and failure[0].row is None:
            raise failure[0]
        yield b


def _cast_text(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Text columns whose target type is numeric or boolean get their surrounding blanks trimmed; the cast
    itself (with bad-row detection) happens in :func:`beamlearn.batches.conform`."""
    arrays = []
    for f, a in zip(batch.schema, batch.columns):
        if f.name in schema.names and column_kind(schema.field(f.name).type) in ("numeric", "boolean"):
            a = pc.utf8_trim_whitespace(a)
            a = pc.if_else(pc.equal(a, ""), pa.nulls(len(a), pa.string()), a)
        arrays.append(a)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def read_jsonl(path: str, batch_size: int, schema: pa.Schema | None,
               dead: DeadLetters | None) -> Iterator[pa.RecordBatch]:
    """JSON lines in chunks of whole lines.  A row's index is its 0-based line number (blank lines count)."""
    import gzip

    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as fh:  # type: ignore[operator]
        offset = 0
        while True:
            lines = fh.readlines(1 << 22)
            if not lines:
                break
            try:
                table = None if any(not line.strip() for line in lines) else pjson.read_json(
                    _io.BytesIO(b"".join(lines)))
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                table = None
            if table is not None and table.num_rows == len(lines):
                for start, b in zip(range(0, len(lines), batch_size), table.to_batches(max_chunksize=batch_size)):
                    yield tag_batch(b, path, offset + start)
            else:
                yield from _jsonl_slow(lines, offset, path, batch_size, schema, dead, batch_from_rows)
            offset += len(lines)


def _jsonl_slow(lines: list[bytes], offset: int, path: str, batch_size: int, schema: pa.Schema | None,
                dead: DeadLetters | None, from_rows: Callable[..., pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Line by line, naming (or dead-lettering) invalid lines and values of the wrong kind."""
    rows: list[dict] = []
    where: list[int] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("a JSON line must hold an object")
        except ValueError as exc:
            if dead is None:
                raise DataError(f"invalid JSON ({exc})", source=path, row=offset + i, line=offset + i + 1) from None
            dead.add(source=path, row=offset + i, line=offset + i + 1, column=None,
                     reason=f"invalid JSON ({exc})", record={"_raw": line.decode(errors="replace")})
            continue
        rows.append(rec)
        where.append(offset + i)
    if schema is not None:  # values of the wrong JSON type become text and are cast (with row numbers)
        for r in rows:
            for k, v in r.items():
                if k in schema.names and v is not None and not isinstance(v, str):
                    r[k] = json.dumps(v) if isinstance(v, (dict, list, bool)) else str(v)
    while True:
        try:
            batch = from_rows(rows, None)
            break
        except DataError as exc:  # a value of another kind than its column's first (no schema yet)
            k = exc.row if exc.row is not None else 0
            if dead is None:
                raise DataError(exc.reason, column=exc.column, source=path, row=where[k], line=where[k] + 1,
                                value=exc.value) from None
            dead.add(source=path, row=where[k], line=where[k] + 1, column=exc.column, reason=exc.reason,
                     record=rows[k])
            del rows[k], where[k]
    rows_at = np.asarray(where, dtype=np.int64)
    for start in range(0, max(batch.num_rows, 1), batch_size):
        b = tag_batch(batch.slice(start, batch_size), path, int(rows_at[start]) if len(rows_at) else offset)
        yield tag_rows(b, rows_at[start:start + batch_size])


# ---------------------------------------------------------------------------------------------- writers
