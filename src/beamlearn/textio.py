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
from beamlearn.deadletters import json_safe
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
            yield from parse_jsonl(lines, offset, path, batch_size, schema, dead)
            offset += len(lines)


def parse_jsonl(lines: list[bytes], offset: int, source: str, batch_size: int, schema: pa.Schema | None,
                dead: DeadLetters | None) -> Iterator[pa.RecordBatch]:
    """Raw batches of JSON ``lines`` (line ``offset + i`` of ``source``, 0-based), tagged with their rows: parsed
    by Arrow in one go when every line is a valid object, else line by line, an invalid line (or a value of
    another kind than its column's) raising :class:`DataError` or going to ``dead`` with its line number.

    Examples
    --------
    >>> [b.num_rows for b in parse_jsonl([b'{"x": 1}\\n', b'{"x": 2}\\n'], 0, "<doc>", 10, None, None)]
    [2]
    """
    try:
        table = None if any(not line.strip() for line in lines) else pjson.read_json(_io.BytesIO(b"".join(lines)))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        table = None
    if table is not None and table.num_rows == len(lines):
        start = offset  # Arrow parses in blocks: the table has a chunk per block, each cut to batch_size
        for b in table.combine_chunks().to_batches(max_chunksize=batch_size):
            yield tag_batch(b, source, start)
            start += b.num_rows
    elif len(lines) > _SLOW_LINES:  # halve: only the block holding the bad line is parsed line by line
        half = len(lines) // 2
        yield from parse_jsonl(lines[:half], offset, source, batch_size, schema, dead)
        yield from parse_jsonl(lines[half:], offset + half, source, batch_size, schema, dead)
    else:
        yield from _jsonl_slow(lines, offset, source, batch_size, schema, dead, batch_from_rows)


_SLOW_LINES = 1024  # blocks of at most this many lines are parsed line by line when Arrow rejects them


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
def jsonl_bytes(batch: pa.RecordBatch) -> bytes:
    """The rows of ``batch`` as JSON lines, built column by column with Arrow (no Python loop over rows):
    numbers in their shortest exact form (``1.0`` is written ``1``), NaN, infinities and nulls as ``null``,
    strings escaped; nested, temporal and other columns go through :func:`json.dumps` one value at a time.

    Examples
    --------
    >>> jsonl_bytes(pa.record_batch({"x": [1.5, float("nan")], "s": ['a"b', None]}))
    b'{"x":1.5,"s":"a\\\\"b"}\\n{"x":null,"s":null}\\n'
    """
    if batch.num_rows == 0:
        return b""
    if batch.num_rows > _JSON_ROWS:  # 32-bit string offsets: bounded slices
        return b"".join(jsonl_bytes(batch.slice(i, _JSON_ROWS)) for i in range(0, batch.num_rows, _JSON_ROWS))
    parts: list[Any] = []
    digits: list[tuple[str, pa.Array]] = []  # a run of one-digit columns (one-hots): one fixed-width block
    for k, (field, arr) in enumerate(zip(batch.schema, batch.columns)):
        key = ("{" if k == 0 else ",") + json.dumps(field.name) + ":"
        if _one_digit(arr):
            digits.append((key, arr))
            continue
        if digits:
            parts.append(_digit_block(digits))
            digits = []
        parts += [key, _json_values(arr)]
    if digits:
        parts.append(_digit_block(digits))
    parts.append("}\n")
    if len(parts) == 1:
        return b"{}\n" * batch.num_rows
    lines = pc.binary_join_element_wise(*parts, "")
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32 if lines.type == pa.string() else np.int64,
                            count=len(lines) + 1, offset=lines.offset * (4 if lines.type == pa.string() else 8))
    return lines.buffers()[2].to_pybytes()[int(offsets[0]):int(offsets[-1])]


_JSON_ROWS = 1 << 16
_UINT8_TEXT = pa.array([str(i) for i in range(256)])
_ESCAPES = [("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")]


def _one_digit(arr: pa.Array) -> bool:
    """An integer column without nulls whose values are all 0..9 (a one-hot, an indicator)."""
    if not pa.types.is_integer(arr.type) or arr.null_count:
        return False
    lo, hi = pc.min_max(arr).values()
    return lo.as_py() is not None and lo.as_py() >= 0 and hi.as_py() <= 9


def _digit_block(cols: list[tuple[str, pa.Array]]) -> pa.Array:
    """The text of a run of one-digit columns, keys included, built as a fixed-width byte matrix."""
    template, where = b"", []
    for key, _ in cols:
        template += key.encode()
        where.append(len(template))
        template += b"0"
    n = len(cols[0][1])
    block = np.empty((n, len(template)), dtype=np.uint8)
    block[:] = np.frombuffer(template, dtype=np.uint8)
    for at, (_, arr) in zip(where, cols):
        block[:, at] += arr.to_numpy(zero_copy_only=False).astype(np.uint8)
    return pa.Array.from_buffers(pa.binary(len(template)), n, [None, pa.py_buffer(block)]).cast(pa.string())


def _json_values(arr: pa.Array) -> pa.Array:
    """One column as the text of its JSON values, never null (a null is ``null``)."""
    typ = arr.type
    if pa.types.is_dictionary(typ):
        arr, typ = arr.cast(typ.value_type), typ.value_type
    if pa.types.is_floating(typ):
        ok = pc.is_finite(arr)  # null where the value is null
        text = pc.if_else(ok, pc.cast(arr, pa.string()), pa.scalar(None, pa.string()))
    elif typ == pa.uint8():  # one-hot columns: a lookup beats a cast
        text = _UINT8_TEXT.take(arr)
    elif pa.types.is_boolean(typ):
        text = pc.if_else(arr, "true", "false")
    elif pa.types.is_integer(typ):
        text = pc.cast(arr, pa.string())
    elif pa.types.is_string(typ) or pa.types.is_large_string(typ):
        text = arr.cast(pa.string())
        if pc.any(pc.match_substring_regex(text, "[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f]")).as_py():
            return _json_dumped(arr)
        for old, new in _ESCAPES:
            text = pc.replace_substring(text, old, new)
        text = pc.binary_join_element_wise('"', text, '"', "")
    elif pa.types.is_null(typ):
        return pa.array(["null"] * len(arr), type=pa.string())
    else:
        return _json_dumped(arr)
    return pc.fill_null(text, "null")


def _json_dumped(arr: pa.Array) -> pa.Array:
    return pa.array([json.dumps(json_safe(v), ensure_ascii=False) for v in arr.to_pylist()], type=pa.string())
