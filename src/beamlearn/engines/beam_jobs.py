"""Whole Beam jobs over files (the CLI's ``--engine beam``), runner checks, and a local portable job service.

:func:`run_fit` and :func:`run_transform` build one Beam job each, pass ``beam_args`` to ``PipelineOptions``
untouched, and translate a failed job back into the beamlearn error that failed it.  :func:`portable_services`
starts Beam's own job service and an external SDK worker pool on this machine: the path Flink, Spark and Dataflow
use (user code in separate SDK worker processes), for tests and benchmarks.

Examples
--------
>>> check_runner("FlinkRunner")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa

from beamlearn import io
from beamlearn.batches import DEFAULT_BATCH_SIZE, conform
from beamlearn.engines.beam import Fit, Transform, fit_pass, load_artifact
from beamlearn.engines.beam_checks import check_runner, translate_error
from beamlearn.engines.beam_io import (
    FileSplits,
    WriteFiles,
    file_schema,
    is_local_path,
    resolve_paths,
    write_dead_letters,
)
from beamlearn.engines.passes import Registry, data_fingerprint, finish, first_pass, next_pass, pass_bound
from beamlearn.errors import BeamlearnError, EngineError
from beamlearn.pipeline import FittedPipeline

__all__ = ["check_runner", "load_saved", "pipeline_options", "portable_services", "run_fit", "run_pipeline",
           "run_transform", "scratch_path", "translate_error", "Save"]


# ---------------------------------------------------------------------------------------------- jobs
def pipeline_options(beam_args: list[str] | None) -> Any:
    """``(PipelineOptions, temp_location)`` from ``beam_args``, untouched; DaskRunner refused."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions

    opts = PipelineOptions(list(beam_args or []))
    check_runner(opts.view_as(StandardOptions).runner or "")
    return opts, opts.view_as(GoogleCloudOptions).temp_location


def run_pipeline(p: beam.Pipeline) -> Any:
    """Run ``p`` to the end; a failed job raises the beamlearn error behind it (or :class:`EngineError`)."""
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


MAX_UNROLLED = 8  # run_fit's "auto": passes unrolled in one job up to this bound, else one job per pass


def run_fit(pipeline: Any, paths: Any, *, beam_args: list[str] | None = None,
            batch_size: int = DEFAULT_BATCH_SIZE, errors: str | None = None, schema: pa.Schema | None = None,
            lineage: dict[str, Any] | None = None, jobs: str = "auto", part: tuple[Any, str] | None = None) -> Any:
    """Fit ``pipeline`` on files with Beam and return the :class:`~beamlearn.FittedPipeline`.

    ``beam_args`` go to ``PipelineOptions`` untouched (``--runner``, ``--direct_num_workers``, ...).  ``errors``
    is None (a bad row fails the fit, naming it) or a path where dead letters are written as JSON lines.
    ``part``, a ``(split, "train" | "test")`` pair, fits on one part of a :class:`~beamlearn.split.Split` of the
    files (filtered where read, as :class:`~beamlearn.engines.beam_io.FileSplits` does).
    ``jobs``: ``"one"`` runs :class:`~beamlearn.engines.beam.Fit` with every pass unrolled in one job;
    ``"per_pass"`` runs one job per pass (each reads the files again; the driver plans the next pass, so an
    iterative estimator stops at convergence); ``"auto"`` unrolls up to ``MAX_UNROLLED`` passes.
    """
    from apache_beam.io.filesystems import FileSystems

    t0 = time.perf_counter()
    opts, temp_location = pipeline_options(beam_args)
    files = resolve_paths(paths)
    schema = schema if schema is not None else file_schema(files, batch_size)
    # a split part is decided on the rows as the files give them (as locally), then cast to the fit schema
    split_schema = file_schema(files, batch_size) if part is not None else schema

    def read() -> FileSplits:
        return FileSplits(files, schema=split_schema, batch_size=batch_size, part=part)

    if jobs not in ("auto", "one", "per_pass"):
        raise EngineError(f"jobs={jobs!r} is not one of 'auto', 'one', 'per_pass'")
    per_pass = jobs == "per_pass" or (jobs == "auto" and pass_bound(pipeline.steps, schema) > MAX_UNROLLED)
    tmpdir = tempfile.mkdtemp(prefix="beamlearn-fit-")
    scratch = FileSystems.join(temp_location, f"beamlearn-fit-{uuid.uuid4().hex}") if temp_location else tmpdir
    try:
        job = _fit_per_pass if per_pass else _fit_one_job
        fp, dead, runner = job(pipeline, read, schema, opts, batch_size, errors, lineage, scratch)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    fp.lineage.update({"dead_letters": dead, "fit_seconds": round(time.perf_counter() - t0, 6),
                       "data": data_fingerprint(files),
                       "runner": runner, "beam_jobs": "per_pass" if per_pass else "one"})
    return fp


def _fit_one_job(pipeline: Any, read: Callable[[], Any], schema: pa.Schema, opts: Any, batch_size: int,
                 errors: Any, lineage: Any, scratch: str) -> tuple[Any, int | None, str]:
    collect = not _raise_mode(errors)
    out = scratch_path(scratch, "fitted.bl")
    p = beam.Pipeline(options=opts)
    splits = p | "Read" >> read()
    fit = Fit(pipeline, schema=schema, lineage=lineage, batch_size=batch_size)
    if collect:
        fitted, fit_errors = splits | "Fit" >> fit.with_errors()
        write_dead_letters(fit_errors, errors)
    else:
        fitted = splits | "Fit" >> fit
    fitted | "Save" >> beam.ParDo(Save(out, artifact=True))
    result = run_pipeline(p)
    fp = load_saved(out, artifact=True)
    return fp, _dead_count(result, errors), type(p.runner).__name__


def _fit_per_pass(pipeline: Any, read: Callable[[], Any], schema: pa.Schema, opts: Any, batch_size: int,
                  errors: Any, lineage: Any, scratch: str) -> tuple[Any, int | None, str]:
    collect, steps = not _raise_mode(errors), list(pipeline.steps)
    registry = Registry(steps)
    state, k, dead, runner = first_pass(steps, schema), 0, 0, ""
    while state[1] is not None:
        out = scratch_path(scratch, f"pass{k}.pkl")
        p = beam.Pipeline(options=opts)
        splits = p | "Read" >> read()
        merged, pass_errors = fit_pass(splits, p | "Plan" >> beam.Create([state]), k, steps, collect,
                                    registry)
        merged | "Save" >> beam.ParDo(Save(out))
        if collect and k == 0:  # dead letters of the first pass (later passes see the same rows), as locally
            write_dead_letters(pass_errors, errors)
        result = run_pipeline(p)
        if k == 0:
            dead, runner = _dead_count(result, errors), type(p.runner).__name__
        state, k = next_pass(state, load_saved(out)), k + 1
    return finish(state, engine="beam", name=pipeline.name, lineage=lineage, bound=k), dead, runner


def scratch_path(scratch: str, name: str) -> str:
    """``name`` inside the scratch folder, on any Beam filesystem."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.join(scratch, name)


class Save(beam.DoFn):
    """Write the one element to ``path``: an artifact, or (between the jobs of one fit) pickled states signed
    with an HMAC key that exists only in this run's pipeline, so :func:`load_saved` never unpickles a file someone
    else put on the (possibly shared) temp location."""

    def __init__(self, path: str, artifact: bool = False) -> None:
        import secrets

        self.path, self.artifact = path, artifact
        self.key = _KEYS.setdefault(path, secrets.token_bytes(32))

    def process(self, item):
        import hashlib
        import hmac
        import pickle

        from apache_beam.io.filesystems import FileSystems

        from beamlearn import artifact

        with FileSystems.create(self.path) as fh:
            if self.artifact:
                fh.write(artifact.to_bytes(item))
            else:
                data = pickle.dumps(item, protocol=5)
                fh.write(hmac.new(self.key, data, hashlib.sha256).digest() + data)


_KEYS: dict[str, bytes] = {}  # temp path -> the signing key of the job writing it (driver memory only)


def load_saved(path: str, artifact: bool = False) -> Any:
    """What :class:`Save` wrote (None when nothing was: an empty pass), removing the file."""
    import hashlib
    import hmac
    import pickle

    from apache_beam.io.filesystems import FileSystems

    from beamlearn import artifact as art

    key = _KEYS.pop(path, None)
    if not FileSystems.exists(path):
        if artifact:
            raise EngineError("the Beam job finished without producing the fitted pipeline")
        return None
    with FileSystems.open(path) as fh:
        data = fh.read()
    FileSystems.delete([path])
    if artifact:
        return art.from_bytes(data)
    mac, body = data[:32], data[32:]
    if key is None or not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
        raise EngineError(f"{path}: the states written between passes fail their signature check; refusing to "
                          "load them (was the temp location modified?)")
    return pickle.loads(body)  # safe: signed by this run's own job with a key only this process made


def _dead_count(result: Any, errors: Any) -> int | None:
    if _raise_mode(errors):
        return 0
    dead = _counter(result, "dead_letters")
    return dead if dead is not None else _count_lines(errors)


def _count_lines(path: Any) -> int | None:
    if not isinstance(path, str) or not is_local_path(path) or not os.path.exists(path):
        return None
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def run_transform(fitted: Any, paths: Any, out: str, *, beam_args: list[str] | None = None,
                  batch_size: int = DEFAULT_BATCH_SIZE, errors: str | None = None) -> dict[str, Any]:
    """Transform files with a fitted pipeline (a FittedPipeline or an artifact path) in one Beam job, writing
    ``out`` (CSV, Parquet or JSON lines by extension); returns ``{"rows": ..., "dead_letters": ...}``."""
    opts, _ = pipeline_options(beam_args)
    if not isinstance(fitted, FittedPipeline):
        fitted = load_artifact(os.fspath(fitted))
    files = resolve_paths(paths)
    # the output schema: the fitted output plus the columns that pass through, from the first file's head
    head = next(iter(io.read_batches(files[0], batch_size=1, schema=fitted.input_schema, dead=io.DeadLetters())),
                None)
    sample = pa.RecordBatch.from_pylist([], schema=fitted.input_schema) if head is None else head.slice(0, 0)
    sample, _ = conform(sample, fitted.input_schema, required=fitted.required_columns)
    out_schema = fitted.transform_batch(sample).schema.remove_metadata()
    collect = not _raise_mode(errors)
    p = beam.Pipeline(options=opts)
    splits = p | "Read" >> FileSplits(files, schema=fitted.input_schema, batch_size=batch_size)
    transform = Transform(fitted, batch_size=batch_size)
    if collect:
        result_batches, tr_errors = splits | "Transform" >> transform.with_errors()
        write_dead_letters(tr_errors, errors)
    else:
        result_batches = splits | "Transform" >> transform
    result_batches | "Write" >> WriteFiles(out, out_schema)
    result = run_pipeline(p)
    rows = _counter(result, "rows")
    if rows is None:  # a runner without metrics: count what was written
        rows = _written_rows(out)
    dead = _counter(result, "dead_letters") if collect else 0
    return {"rows": rows, "dead_letters": dead if dead is not None else _count_lines(errors)}


def _written_rows(out: str) -> int | None:
    if not is_local_path(out) or not os.path.exists(out):
        return None
    fmt = io.file_format(out)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(out).metadata.num_rows
    lines = _count_lines(out) or 0
    return max(lines - 1, 0) if fmt == "csv" else lines



# ---------------------------------------------------------------------------------------------- portable services
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: Any, timeout: float) -> bool:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


@contextlib.contextmanager
def portable_services(log_dir: str | None = None, *, timeout: float = 60.0) -> Iterator[list[str]]:
    """Start Beam's local job service and an external SDK worker pool on 127.0.0.1 (free ports); yield the
    ``beam_args`` that run a job through them with PortableRunner; always stop both.

    Workers are started with this interpreter (first on ``PATH``), so they import beamlearn.  Raises
    :class:`EngineError` (with the service's log) if either service does not start listening.
    """
    import subprocess
    import sys

    log_dir = log_dir or tempfile.mkdtemp(prefix="beamlearn-portable-")
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    job_port, pool_port = _free_port(), _free_port()
    commands = {"job_service": ["apache_beam.runners.portability.local_job_service_main", "--port", str(job_port)],
                "worker_pool": ["apache_beam.runners.worker.worker_pool_main", "--service_port", str(pool_port)]}
    procs: dict[str, Any] = {}
    try:
        for name, args in commands.items():
            with open(os.path.join(log_dir, name + ".log"), "wb") as log:
                procs[name] = subprocess.Popen([sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT,
                                               env=env)
        for name, port in (("job_service", job_port), ("worker_pool", pool_port)):
            if not _wait_listening(port, procs[name], timeout):
                with open(os.path.join(log_dir, name + ".log"), errors="replace") as fh:
                    raise EngineError(f"Beam's {name.replace('_', ' ')} did not start: {fh.read()[-800:]}")
        yield ["--runner=PortableRunner", f"--job_endpoint=localhost:{job_port}", "--environment_type=EXTERNAL",
               f"--environment_config=localhost:{pool_port}"]
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
