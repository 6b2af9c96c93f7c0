"""Files in and out of Beam as RecordBatches, and the whole-job entry points the CLI's ``--engine beam`` uses.

Reading reuses :func:`beamlearn.io.read_batches` file by file (files are spread over workers), so the Beam engine
sees exactly the rows, types, casts and dead letters the local engine sees.  Files on remote filesystems
(``gs://``, ``s3://``, ...) are copied to the worker's temporary directory first and keep their remote name in
provenance and dead letters.  Writing uses Beam's file sinks (sharded, or one file for the CLI).

Examples
--------
>>> split_path("out/features.parquet")
('out/features', '.parquet', 'parquet')
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.csv as pcsv

from beamlearn import io
from beamlearn.batches import DEFAULT_BATCH_SIZE, batch_origin, capture_schema, conform, tag_batch
from beamlearn.errors import BeamlearnError, DataError, EngineError

__all__ = ["ReadFiles", "WriteFiles", "file_schema", "resolve_paths", "run_fit", "run_transform", "split_path"]


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def resolve_paths(paths: Any) -> list[str]:
    """The files named by ``paths`` (paths, globs, directories), in the order the local engine reads them."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    items = [os.fspath(p) for p in items]
    if all(_is_local(p) for p in items):
        return io.expand_paths([p.removeprefix("file://") for p in items])
    from apache_beam.io.filesystems import FileSystems

    out: list[str] = []
    for p in items:
        found = sorted(m.path for r in FileSystems.match([p]) for m in r.metadata_list)
        if not found:
            raise DataError(f"no file matches {p!r}")
        out += found
    return out


def _localize(path: str, tmpdir: str) -> str:
    if _is_local(path):
        return path
    from apache_beam.io.filesystems import FileSystems

    local = os.path.join(tmpdir, uuid.uuid4().hex + "-" + os.path.basename(path))
    with FileSystems.open(path, compression_type="uncompressed") as src, open(local, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 22)
    return local


def file_schema(files: list[str], batch_size: int = DEFAULT_BATCH_SIZE) -> pa.Schema:
    """The schema the local engine captures for ``files``: that of the first batch of the first file."""
    tmpdir = tempfile.mkdtemp(prefix="beamlearn-schema-")
    try:
        first = next(iter(io.read_batches(_localize(files[0], tmpdir), batch_size=batch_size,
                                          dead=io.DeadLetters())), None)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    if first is None:
        raise DataError("no data to fit on", source=files[0])
    return capture_schema(first)


class _ReadFile(beam.DoFn):
    def __init__(self, schema: pa.Schema, batch_size: int, collect: bool) -> None:
        self.schema, self.batch_size, self.collect = schema, batch_size, collect

    def process(self, path: str):
        from beamlearn.engines.beam import _dead

        tmpdir = tempfile.mkdtemp(prefix="beamlearn-read-")
        try:
            local = _localize(path, tmpdir)
            dead = io.DeadLetters() if self.collect else None
            for b in io.read_batches(local, batch_size=self.batch_size, schema=self.schema, dead=dead):
                if local != path:
                    b = tag_batch(b, path, batch_origin(b)[1])
                yield b
                yield from _dead(_renamed(dead, local, path))
            yield from _dead(_renamed(dead, local, path))
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)


def _renamed(dead: io.DeadLetters | None, local: str, path: str) -> io.DeadLetters | None:
    if dead is not None and local != path:
        for rec in dead.records:
            rec["source"] = path if rec["source"] == local else rec["source"]
    return dead


class ReadFiles(beam.PTransform):
    """Read CSV, Parquet or JSON-lines files (by extension) as RecordBatches of at most ``batch_size`` rows.

    ``schema`` defaults to the first file's (what the local engine captures); every file is cast to it.  Bad
    lines and values raise, or with ``.with_errors()`` go to a second output of dead letters.
    """

    def __init__(self, paths: Any, *, schema: pa.Schema | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        super().__init__()
        self.files = resolve_paths(paths)
        self.schema = schema if schema is not None else file_schema(self.files, batch_size)
        self.batch_size, self.collect = batch_size, False

    def with_errors(self) -> ReadFiles:
        """This transform, returning ``(batches, dead_letters)``."""
        from beamlearn.engines.beam import _copy_transform

        clone = _copy_transform(self)
        clone.collect = True
        return clone

    def expand(self, pbegin):
        files = (pbegin | "Files" >> beam.Create(self.files)
                 | "Spread" >> beam.Reshuffle()
                 | "Read" >> beam.ParDo(_ReadFile(self.schema, self.batch_size, self.collect)).with_outputs(
                     "errors", main="batches"))
        return (files.batches, files.errors) if self.collect else files.batches


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
    return "".join(json.dumps(r) + "\n" for r in io._json_safe(batch.to_pylist()))


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


def _write_errors(errors: Any, path: str) -> None:
    (errors | "ErrorsToJson" >> beam.Map(json.dumps)
     | "WriteErrors" >> beam.io.WriteToText(path, shard_name_template="", num_shards=1))


# ---------------------------------------------------------------------------------------------- jobs
def _options(beam_args: list[str] | None) -> Any:
    from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions

    from beamlearn.engines.beam import check_runner

    opts = PipelineOptions(list(beam_args or []))
    check_runner(opts.view_as(StandardOptions).runner or "")
    return opts, opts.view_as(GoogleCloudOptions).temp_location


def _run(p: beam.Pipeline) -> Any:
    from beamlearn.engines.beam import translate_error

    try:
        result = p.run()
        state = result.wait_until_finish()
    except Exception as exc:
        err = translate_error(exc)
        if err is exc and not isinstance(exc, BeamlearnError):
            raise EngineError(f"the Beam job failed: {str(exc).strip().splitlines()[-1][:2000]}") from exc
        raise err from None
    if str(state).upper().split(".")[-1] not in ("DONE", "NONE"):
        raise EngineError(f"the Beam job ended in state {state}")
    return result


def _counter(result: Any, name: str) -> int | None:
    from apache_beam.metrics.metric import MetricsFilter

    try:
        found = result.metrics().query(MetricsFilter().with_namespace("beamlearn").with_name(name))["counters"]
    except Exception:  # noqa: BLE001 - not every runner reports metrics
        return None
    return sum(int(c.committed if c.committed is not None else c.attempted or 0) for c in found)


def _raise_mode(errors: Any) -> bool:
    return errors is None or errors == "raise"


def run_fit(pipeline: Any, paths: Any, *, beam_args: list[str] | None = None,
            batch_size: int = DEFAULT_BATCH_SIZE, errors: str | None = None, schema: pa.Schema | None = None,
            lineage: dict[str, Any] | None = None) -> Any:
    """Fit ``pipeline`` on files in one Beam job and return the :class:`~beamlearn.FittedPipeline`.

    ``beam_args`` go to ``PipelineOptions`` untouched (``--runner``, ``--direct_num_workers``, ...).  ``errors``
    is None (a bad row fails the fit, naming it) or a path where dead letters are written as JSON lines.
    """
    from apache_beam.io.filesystems import FileSystems

    from beamlearn import artifact
    from beamlearn.engines.beam import Fit
    from beamlearn.engines.local import data_fingerprint

    t0 = time.perf_counter()
    opts, temp_location = _options(beam_args)
    files = resolve_paths(paths)
    schema = schema if schema is not None else file_schema(files, batch_size)
    collect = not _raise_mode(errors)
    tmpdir = None if temp_location else tempfile.mkdtemp(prefix="beamlearn-fit-")
    out = FileSystems.join(temp_location or tmpdir, f"beamlearn-fit-{uuid.uuid4().hex}.bl")
    p = beam.Pipeline(options=opts)
    read, fit = ReadFiles(files, schema=schema, batch_size=batch_size), Fit(pipeline, schema=schema,
                                                                            lineage=lineage, batch_size=batch_size)
    if collect:
        batches, read_errors = p | "Read" >> read.with_errors()
        fitted, fit_errors = batches | "Fit" >> fit.with_errors()
        _write_errors((read_errors, fit_errors) | "AllErrors" >> beam.Flatten(), errors)
    else:
        fitted = p | "Read" >> read | "Fit" >> fit
    fitted | "Save" >> beam.ParDo(_SaveArtifact(out))
    result = _run(p)
    try:
        with FileSystems.open(out) as fh:
            data = fh.read()
        fp = artifact.from_bytes(data)
    finally:
        try:
            FileSystems.delete([out])
        except Exception:  # noqa: BLE001,S110 - a leftover temporary file is harmless
            pass
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
    dead = _counter(result, "dead_letters") if collect else 0
    fp.lineage.update({"dead_letters": dead if dead is not None else _count_lines(errors),
                       "fit_seconds": round(time.perf_counter() - t0, 6),
                       "data": data_fingerprint(files) if all(map(_is_local, files)) else {"files": files},
                       "runner": type(p.runner).__name__})
    return fp


class _SaveArtifact(beam.DoFn):
    def __init__(self, path: str) -> None:
        self.path = path

    def process(self, fitted):
        from apache_beam.io.filesystems import FileSystems

        from beamlearn import artifact

        with FileSystems.create(self.path) as fh:
            fh.write(artifact.to_bytes(fitted))


def _count_lines(path: Any) -> int | None:
    if not isinstance(path, str) or not _is_local(path) or not os.path.exists(path):
        return None
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def run_transform(fitted: Any, paths: Any, out: str, *, beam_args: list[str] | None = None,
                  batch_size: int = DEFAULT_BATCH_SIZE, errors: str | None = None) -> dict[str, Any]:
    """Transform files with a fitted pipeline (a FittedPipeline or an artifact path) in one Beam job, writing
    ``out`` (CSV, Parquet or JSON lines by extension); returns ``{"rows": ..., "dead_letters": ...}``."""
    from beamlearn.engines.beam import Transform, load_artifact
    from beamlearn.pipeline import FittedPipeline

    opts, _ = _options(beam_args)
    if not isinstance(fitted, FittedPipeline):
        fitted = load_artifact(os.fspath(fitted))
    files = resolve_paths(paths)
    # the output schema: the fitted output plus the columns that pass through, from the first file's head
    head = next(iter(io.read_batches(files[0], batch_size=1, schema=fitted.input_schema, dead=io.DeadLetters())),
                None) if _is_local(files[0]) else None
    sample = pa.RecordBatch.from_pylist([], schema=fitted.input_schema) if head is None else head.slice(0, 0)
    sample, _ = conform(sample, fitted.input_schema, required=fitted.required_columns)
    out_schema = fitted.transform_batch(sample).schema.remove_metadata()
    collect = not _raise_mode(errors)
    p = beam.Pipeline(options=opts)
    read = ReadFiles(files, schema=fitted.input_schema, batch_size=batch_size)
    transform = Transform(fitted, batch_size=batch_size)
    if collect:
        batches, read_errors = p | "Read" >> read.with_errors()
        result_batches, tr_errors = batches | "Transform" >> transform.with_errors()
        _write_errors((read_errors, tr_errors) | "AllErrors" >> beam.Flatten(), errors)
    else:
        result_batches = p | "Read" >> read | "Transform" >> transform
    result_batches | "Write" >> WriteFiles(out, out_schema)
    result = _run(p)
    rows = _counter(result, "rows")
    dead = _counter(result, "dead_letters") if collect else 0
    return {"rows": rows, "dead_letters": dead if dead is not None else _count_lines(errors)}

