"""Data in and out of Beam as RecordBatches: files, dict rows, and the schema the local engine would capture.

Reading reuses :func:`beamlearn.io.read_file` split by split (splits are spread over workers), so the Beam engine
sees exactly the rows, types, casts and dead letters the local engine sees.  Files on object stores and HDFS
(``s3://``, ``gs://``, ``hdfs://``, ``az://``) are read on the workers through the same pyarrow filesystems as
locally (:mod:`beamlearn.stores`: credentials from each worker's environment), not Beam's FileSystems, so a URI
means the same on every engine.  A database source (:mod:`beamlearn.sqlio`) is split into key ranges
(``partition_column``, ``partitions``), one split each.  Writing uses Beam's file sinks (sharded, or one file
for the CLI).

Examples
--------
>>> split_path("out/features.parquet")
('out/features', '.parquet', 'parquet')
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.csv as pcsv
from apache_beam.utils.windowed_value import WindowedValue

from beamlearn import io, sqlio, stores
from beamlearn.batches import (
    DEFAULT_BATCH_SIZE,
    batch_origin,
    batch_rows,
    capture_schema,
    conform,
    tag_rows,
    to_batches,
)
from beamlearn.errors import DataError, EngineError

__all__ = [
    "NAMESPACE",
    "STAMP",
    "AsBatches",
    "FirstSchema",
    "WithErrors",
    "emit_dead_letters",
    "is_local_path",
    "write_dead_letters",
    "FileSplit",
    "FileSplits",
    "ReadCsv",
    "ReadFiles",
    "ReadJsonl",
    "ReadParquet",
    "WriteFiles",
    "file_schema",
    "file_splits",
    "read_split",
    "resolve_paths",
    "split_path",
]


def is_local_path(path: str) -> bool:
    """Whether ``path`` is on this machine's filesystem (no scheme, or ``file://``)."""
    return "://" not in path or path.startswith("file://")


NAMESPACE = "beamlearn"  # of the Beam metrics the engine reports (rows, dead_letters)


def emit_dead_letters(dead: io.DeadLetters | None) -> Iterator[Any]:
    """Emit (and drain) the dead letters collected so far to a DoFn's ``errors`` output, counting them."""
    if dead is not None and dead.records:
        records, dead.records = dead.records, []
        beam.metrics.Metrics.counter(NAMESPACE, "dead_letters").inc(len(records))
        for rec in records:
            if isinstance(rec.get("record"), dict) and STAMP in rec["record"]:  # our event-time column, not theirs
                rec = {**rec, "record": {k: v for k, v in rec["record"].items() if k != STAMP}}
            yield beam.pvalue.TaggedOutput("errors", rec)


class WithErrors:
    """``.with_errors()``: return ``(main, errors)`` instead of failing the job on the first bad row."""

    collect = False

    def with_errors(self) -> Any:
        """This transform, returning ``(main output, dead letters)``: bad rows are routed, not raised."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.collect = True
        return clone


def resolve_paths(paths: Any) -> list[str]:
    """The files named by ``paths`` (paths, globs, directories, URIs; database URIs as they are), in the order
    the local engine reads them (:func:`beamlearn.io.expand_paths`)."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    return io.expand_paths([os.fspath(p) for p in items])


def file_schema(files: list[str], batch_size: int = DEFAULT_BATCH_SIZE) -> pa.Schema:
    """The schema the local engine captures for ``files``: that of the first batch of the first file (a CSV
    column empty there typed from the later local files, as :func:`beamlearn.io.read_batches` does)."""
    first = next(iter(io.read_batches(files, batch_size=batch_size, dead=io.DeadLetters())), None)
    if first is None:
        raise DataError("no data to fit on", source=files[0])
    return capture_schema(first)


class FileSplit(NamedTuple):
    """A part of one file to read where it is consumed: a file, or some row groups of a Parquet file.

    ``first_row`` is the file row the part starts at (provenance and dead letters name file rows), ``schema``
    the schema the file is cast to unless the consumer gives its own, ``batch_size`` the rows per batch, and
    ``part`` a ``(split, "train" | "test")`` pair keeping one part of a :class:`~beamlearn.split.Split`'s rows.
    """

    path: str
    row_groups: tuple[int, ...] | None
    first_row: int
    schema: pa.Schema
    batch_size: int
    part: tuple[Any, str] | None = None


SPLIT_ROWS = 1 << 20  # Parquet row groups are grouped into splits of at least this many rows


def file_splits(files: list[str], schema: pa.Schema, batch_size: int = DEFAULT_BATCH_SIZE,
                split_rows: int = SPLIT_ROWS, part: tuple[Any, str] | None = None) -> list[FileSplit]:
    """The splits of ``files``: consecutive row groups of at least ``split_rows`` rows for a Parquet file (from
    its footer, local or on a store), one per key range for a database source (:func:`beamlearn.sqlio.sql_splits`),
    the whole file otherwise; each keeps the ``part`` of a split's rows if given."""
    import pyarrow.parquet as pq

    out: list[FileSplit] = []
    for path in files:
        if io.file_format(path) == "sql":  # one split per key range (one for an unpartitioned source)
            out += [FileSplit(uri, None, 0, schema, batch_size, part) for uri in sqlio.sql_splits(path)]
            continue
        if io.file_format(path) != "parquet":
            out.append(FileSplit(path, None, 0, schema, batch_size, part))
            continue
        try:
            meta = pq.ParquetFile(stores.open_input(path) if stores.is_uri(path)
                                  else path.removeprefix("file://")).metadata
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"not a readable Parquet file ({exc})", source=path) from None
        group: list[int] = []
        first = rows = 0
        for i in range(meta.num_row_groups):
            group.append(i)
            rows += meta.row_group(i).num_rows
            if rows >= split_rows or i == meta.num_row_groups - 1:
                whole = len(group) == meta.num_row_groups
                out.append(FileSplit(path, None if whole else tuple(group), first, schema, batch_size, part))
                first, group, rows = first + rows, [], 0
        if meta.num_row_groups == 0:
            out.append(FileSplit(path, None, 0, schema, batch_size, part))
    return out


def read_split(split: FileSplit, *, schema: pa.Schema | None = None, dead: io.DeadLetters | None = None,
               required: Any = (), columns: Any = None, encoded: Any = ()) -> Iterator[pa.RecordBatch]:
    """The batches of ``split``, cast to ``schema`` (default: the split's), read as the local engine reads
    files (:func:`beamlearn.io.read_file`, so the same rows, types and dead letters; ``columns`` and ``encoded``
    are its options), wherever it is: a local file, an object on a store, or a key range of a database.

    A split with a ``part`` keeps only that part's rows, as the local engine does: the split is decided on the
    rows read with the split's own schema (with the split's columns, all of them for a hash of whole rows, never
    encoded), and the kept rows are then cast to ``schema``."""
    target = schema or split.schema
    if split.part is not None:
        keys = split.part[0].columns()
        columns = None if columns is None or not keys else list(dict.fromkeys([*columns, *keys]))
        encoded = [c for c in encoded if c not in keys] if keys else []
        if not target.remove_metadata().equals(split.schema.remove_metadata()):
            # rows are read with the split's schema, then cast to the target: a skipped column could fail that
            # cast (a row pass 0 rejects), so read every column
            columns, encoded = None, []
        schema = split.schema
    for b in io.read_file(split.path.removeprefix("file://"), batch_size=split.batch_size,
                          schema=schema or split.schema, dead=dead, required=required, row_groups=split.row_groups,
                          first_row=split.first_row, columns=columns, encoded=encoded):
        if split.part is None:
            yield b
        else:
            for kept in split.part[0].part([b], split.part[1]):
                yield _recast(kept, target, required, dead)


def _recast(batch: pa.RecordBatch, schema: pa.Schema, required: Any, dead: io.DeadLetters | None) -> pa.RecordBatch:
    """``batch`` cast to ``schema``; bad rows raise, or go to ``dead`` and are dropped."""
    import numpy as np

    out, bad = conform(batch, schema, required=[c for c in required if c in batch.schema.names],
                       collect=dead is not None)
    if not len(bad):
        return out
    dead.add_rows(batch, bad.indices, bad.columns, bad.reasons)  # type: ignore[union-attr]
    keep = np.ones(out.num_rows, bool)
    keep[bad.indices] = False
    return tag_rows(out.filter(pa.array(keep)), batch_rows(batch)[keep])


class _ReadSplit(beam.DoFn):
    def __init__(self, collect: bool) -> None:
        self.collect = collect

    def process(self, split: FileSplit):
        dead = io.DeadLetters() if self.collect else None
        for b in read_split(split, dead=dead):
            yield b
            yield from emit_dead_letters(dead)
        yield from emit_dead_letters(dead)


class FileSplits(beam.PTransform):
    """The splits of CSV, Parquet or JSON-lines files (:class:`FileSplit`): small elements that
    :class:`~beamlearn.engines.beam.Fit` and :class:`~beamlearn.engines.beam.Transform` read where they run.

    This is the fast way to feed files to them.  A PCollection of RecordBatches consumed by several stages
    (every pass of a fit, then the transform) is encoded once and decoded by each; splits are read by each stage
    instead, so no batch crosses a stage boundary and each pass reads only the columns it needs.  Parquet
    files are split by row groups (:data:`SPLIT_ROWS`), so workers read one file in parallel.  Bad rows are
    the consumer's: they raise, or go to its ``.with_errors()`` output.  Use :class:`ReadFiles` for
    RecordBatches to give to other transforms.

    ``schema`` defaults to the first file's (what the local engine captures); ``part``, a ``(split, "train" |
    "test")`` pair, keeps one part of a :class:`~beamlearn.split.Split` (filtered where read: no copy);
    ``split_rows`` is the least rows of a Parquet split.
    """

    def __init__(self, paths: Any, *, schema: pa.Schema | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 part: tuple[Any, str] | None = None, split_rows: int = SPLIT_ROWS) -> None:
        super().__init__()
        self.files = resolve_paths(paths)
        self.schema = schema if schema is not None else file_schema(self.files, batch_size)
        self.batch_size = batch_size
        self.splits = file_splits(self.files, self.schema, batch_size, split_rows, part)

    def expand(self, pbegin):
        return pbegin | "Splits" >> beam.Create(self.splits) | "Spread" >> beam.Reshuffle()


class ReadFiles(WithErrors, beam.PTransform):
    """Read CSV, Parquet or JSON-lines files (by extension) as RecordBatches of at most ``batch_size`` rows.

    ``schema`` defaults to the first file's (what the local engine captures); every file is cast to it.  Bad
    lines and values raise, or with ``.with_errors()`` go to a second output of dead letters.  To feed files to
    ``Fit`` and ``Transform``, :class:`FileSplits` is faster.
    """

    def __init__(self, paths: Any, *, schema: pa.Schema | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        super().__init__()
        self.splits = FileSplits(paths, schema=schema, batch_size=batch_size)
        self.files, self.schema, self.batch_size = self.splits.files, self.splits.schema, batch_size

    def expand(self, pbegin):
        read = (pbegin | "Files" >> self.splits
                | "Read" >> beam.ParDo(_ReadSplit(self.collect)).with_outputs("errors", main="batches"))
        return (read.batches, read.errors) if self.collect else read.batches


ReadCsv = ReadParquet = ReadJsonl = ReadFiles  # the format comes from each file's extension


# ---------------------------------------------------------------------------------------------- writing
def split_path(path: str) -> tuple[str, str, str]:
    """``(prefix, suffix, format)`` of an output path."""
    fmt = io.file_format(path)
    gz = ".gz" if path.endswith(".gz") else ""
    base = path[:-3] if gz else path
    root, ext = os.path.splitext(base)
    return root, ext + gz, fmt


def _csv_text(batch: pa.RecordBatch) -> str:
    sink = pa.BufferOutputStream()
    pcsv.write_csv(batch.replace_schema_metadata(None), sink, pcsv.WriteOptions(include_header=False))
    return sink.getvalue().to_pybytes().decode()


def _jsonl_text(batch: pa.RecordBatch) -> str:
    """JSON lines with every float exact (repr), NaN as null.  (pandas' ``to_json`` keeps 10 digits.)"""
    return "".join(json.dumps(r) + "\n" for r in io.json_safe(batch.to_pylist()))


def _table(batch: pa.RecordBatch, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_batches([batch.replace_schema_metadata(None)]).cast(schema)


class WriteFiles(beam.PTransform):
    """Write RecordBatches to CSV, Parquet or JSON lines (format from ``path``'s extension) with Beam's sinks.

    By default one file, exactly ``path``; ``num_shards=0`` lets the runner shard (``prefix-SSSSS-of-NNNNN.ext``).
    CSV and Parquet need the batches' ``schema`` up front (Beam writes the header / file schema first).
    """

    def __init__(self, path: str, schema: pa.Schema | None = None, *, num_shards: int = 1,
                 shard_name_template: str | None = "") -> None:
        super().__init__()
        self.path, self.schema = path, None if schema is None else schema.remove_metadata()
        self.num_shards, self.template = num_shards, shard_name_template if num_shards == 1 else None

    def expand(self, pcoll):
        prefix, suffix, fmt = split_path(self.path)
        if fmt == "sql":
            raise EngineError("writing a database table on Beam is not supported: write files (Parquet), or "
                              "transform with --engine local, which writes the table in one transaction")
        shards = {"num_shards": self.num_shards, "shard_name_template": self.template}
        if fmt in ("parquet", "csv") and self.schema is None:
            raise EngineError(f"writing {fmt} on Beam needs the schema of the batches")
        if fmt == "parquet":
            return (pcoll | "ToTables" >> beam.Map(_table, self.schema)
                    | "Write" >> beam.io.WriteToParquetBatched(prefix, self.schema, file_name_suffix=suffix,
                                                               **shards))
        if fmt == "csv":
            sink = pa.BufferOutputStream()
            pcsv.write_csv(pa.RecordBatch.from_pylist([], schema=self.schema), sink)
            header = sink.getvalue().to_pybytes().decode()
            text = pcoll | "ToCsv" >> beam.Map(_csv_text)
        else:
            header, text = None, pcoll | "ToJson" >> beam.Map(_jsonl_text)
        return text | "Write" >> beam.io.WriteToText(prefix, file_name_suffix=suffix, header=header,
                                                     append_trailing_newlines=False, **shards)


def write_dead_letters(errors: Any, path: str) -> None:
    """Write a PCollection of dead letters to ``path`` as one JSON-lines file."""
    (errors | "ErrorsToJson" >> beam.Map(json.dumps)
     | "WriteErrors" >> beam.io.WriteToText(path, shard_name_template="", num_shards=1))


# ---------------------------------------------------------------------------------------------- inputs
STAMP = "__beamlearn_event_time_us"  # the event time of each row, carried through a transform for output="rows"


class _ToBatches(beam.DoFn):
    """RecordBatches (and Tables) pass on; dict rows are batched per bundle and per window, as ``BatchElements``
    does, inside this one fused DoFn (no Flatten on the data path: on DirectRunner's multi-process mode, a Flatten
    feeding several side-input stages lost whole batches at 10M rows in our measurements).  A batch of rows keeps
    their window and takes the earliest of their timestamps; with ``stamp``, each row's own event time rides along
    in a :data:`STAMP` column (microseconds), so the rows can be given back their timestamps after a transform."""

    def __init__(self, schema: pa.Schema | None, batch_size: int, defer: bool, stamp: bool = False) -> None:
        self.schema, self.batch_size, self.defer, self.stamp = schema, batch_size, defer, stamp

    def start_bundle(self):
        self._rows: dict[Any, tuple[list, list]] = {}

    def process(self, item: Any, window=beam.DoFn.WindowParam, timestamp=beam.DoFn.TimestampParam):
        if isinstance(item, pa.RecordBatch):
            yield self._stamped(item, [timestamp] * item.num_rows) if self.stamp else item
        elif isinstance(item, FileSplit):  # read here, or (defer) by the consumer, in its own stage
            yield from [item] if self.defer else read_split(item, schema=self.schema)
        elif isinstance(item, pa.Table):
            for b in item.to_batches():
                yield self._stamped(b, [timestamp] * b.num_rows) if self.stamp else b
        elif isinstance(item, Mapping):
            rows, stamps = self._rows.setdefault(window, ([], []))
            rows.append(item)
            stamps.append(timestamp)
            if len(rows) >= self.batch_size:
                yield from self._flush(window)
        else:
            raise DataError(f"a PCollection for beamlearn must hold pyarrow.RecordBatch, dict rows or FileSplit, "
                            f"got {type(item).__name__}")

    def finish_bundle(self):
        for window in list(self._rows):
            yield from self._flush(window)

    def _flush(self, window: Any) -> Iterator[WindowedValue]:
        rows, stamps = self._rows.pop(window)
        first, at = min(stamps), 0
        for b in _rows_to_batches(rows, self.schema):
            yield WindowedValue(self._stamped(b, stamps[at:at + b.num_rows]) if self.stamp else b, first, [window])
            at += b.num_rows

    @staticmethod
    def _stamped(batch: pa.RecordBatch, stamps: list) -> pa.RecordBatch:
        if STAMP in batch.schema.names:
            return batch
        out = batch.append_column(STAMP, pa.array([s.micros for s in stamps], pa.int64()))
        return out.replace_schema_metadata(batch.schema.metadata)


def _rows_to_batches(rows: list, schema: pa.Schema | None) -> list[pa.RecordBatch]:
    """Dict rows as one batch; rows that do not fit their column become one-row batches (to be conformed, so a
    bad value becomes a dead letter with its reason rather than failing the whole group)."""
    try:
        return list(to_batches(list(rows), batch_size=max(len(rows), 1), schema=schema, source="<rows>"))
    except DataError:
        return [b for r in rows for b in to_batches([r], source="<rows>")]


class AsBatches(beam.PTransform):
    """RecordBatches from RecordBatches, Tables, dict rows or file splits; with ``defer``, splits pass on, to
    be read by the consumer."""

    def __init__(self, schema: pa.Schema | None = None, batch_size: int = 65_536, defer: bool = False,
                 stamp: bool = False) -> None:
        super().__init__()
        self.schema, self.batch_size, self.defer, self.stamp = schema, batch_size, defer, stamp

    def expand(self, pcoll):
        return pcoll | "ToBatches" >> beam.ParDo(_ToBatches(self.schema, self.batch_size, self.defer, self.stamp))


class FirstSchema(beam.CombineFn):
    """The schema the local engine would capture: that of the first batch by (source, offset) provenance;
    batches without provenance (e.g. from dict rows) are unified with Arrow's permissive promotion."""

    def create_accumulator(self):
        return None, None

    def add_input(self, acc, batch):
        if isinstance(batch, FileSplit):  # known without reading it
            return self.merge_accumulators([acc, (((batch.path, batch.first_row, str(batch.schema)),
                                                   batch.schema), None)])
        source, offset = batch_origin(batch)
        schema = capture_schema(batch)
        if source is None or source == "<rows>":
            return self.merge_accumulators([acc, (None, schema)])
        return self.merge_accumulators([acc, (((source, offset, str(schema)), schema), None)])

    def merge_accumulators(self, accs):
        first, unified = None, None
        for tagged, untagged in accs:
            if tagged is not None and (first is None or tagged[0] < first[0]):
                first = tagged
            if untagged is not None:
                unified = untagged if unified is None else pa.unify_schemas([unified, untagged],
                                                                            promote_options="permissive")
        return first, unified

    def extract_output(self, acc):
        first, unified = acc
        if first is not None:
            return first[1]
        return None if unified is None else capture_schema(pa.RecordBatch.from_pylist([], schema=unified))
