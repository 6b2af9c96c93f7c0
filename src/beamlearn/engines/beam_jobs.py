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
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa

from beamlearn import errors, io
from beamlearn.batches import DEFAULT_BATCH_SIZE, conform
from beamlearn.engines.beam_io import (
    FileSplits,
    WriteFiles,
    _is_local,
    _write_errors,
    file_schema,
    resolve_paths,
)
from beamlearn.errors import BeamlearnError, EngineError

__all__ = ["check_runner", "portable_services", "run_fit", "run_transform", "translate_error"]


# ---------------------------------------------------------------------------------------------- checks
def check_runner(runner: Any) -> None:
    """Raise :class:`EngineError` if ``runner`` (a name, class or instance) is Beam's DaskRunner.

    Examples
    --------
    >>> check_runner("DirectRunner")
    >>> check_runner("dask")
    Traceback (most recent call last):
    ...
    beamlearn.errors.EngineError: Beam's DaskRunner is not supported: ...
    """
    name = runner if isinstance(runner, str) else type(runner).__name__ if not isinstance(runner, type) \
        else runner.__name__
    if name and "dask" in str(name).lower():
        raise EngineError("Beam's DaskRunner is not supported: on Beam 2.77 it computes only the last leaf of a "
                          "multi-leaf pipeline and sends every element to every tagged output, so fits and dead "
                          "letters would be silently wrong. Use the DirectRunner, Flink, Spark or Dataflow (or "
                          "beamlearn's local engine).")


def _check_pipeline(pcoll: Any) -> None:
    pipeline = pcoll.pipeline
    check_runner(pipeline.runner)
    opts = getattr(pipeline, "_options", None)
    if opts is not None:
        check_runner(opts.get_all_options().get("runner") or "")


_ERROR_RE = re.compile(r"\b(SchemaError|UnknownCategoryError|DataError|SpecError|EngineError|ArtifactError)"
                       r": (.+)")


def translate_error(exc: BaseException) -> BaseException:
    """The beamlearn error behind a failed Beam job's exception, or ``exc``.

    In-process runners re-raise the worker's exception (with Beam's ``[while running ...]`` note; the original
    is in the exception chain); portable runners report it as text, parsed here.
    """
    found, seen = None, exc
    while seen is not None:
        if isinstance(seen, errors.BeamlearnError):
            found = seen
        seen = seen.__cause__ or seen.__context__
    if found is not None:
        return found
    matches = _ERROR_RE.findall(str(exc))
    if not matches:
        return exc
    name, message = matches[-1]
    return getattr(errors, name)(re.sub(r" \[while running .*", "", message).strip())


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

    from beamlearn.engines.beam import pass_bound
    from beamlearn.engines.local import data_fingerprint

    t0 = time.perf_counter()
    opts, temp_location = _options(beam_args)
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
                       "data": data_fingerprint(files) if all(map(_is_local, files)) else {"files": files},
                       "runner": runner, "beam_jobs": "per_pass" if per_pass else "one"})
    return fp


def _fit_one_job(pipeline: Any, read: Callable[[], Any], schema: pa.Schema, opts: Any, batch_size: int,
                 errors: Any, lineage: Any, scratch: str) -> tuple[Any, int | None, str]:
    from beamlearn.engines.beam import Fit

    collect = not _raise_mode(errors)
    out = _join(scratch, "fitted.bl")
    p = beam.Pipeline(options=opts)
    splits = p | "Read" >> read()
    fit = Fit(pipeline, schema=schema, lineage=lineage, batch_size=batch_size)
    if collect:
        fitted, fit_errors = splits | "Fit" >> fit.with_errors()
        _write_errors(fit_errors, errors)
    else:
        fitted = splits | "Fit" >> fit
    fitted | "Save" >> beam.ParDo(_Save(out, artifact=True))
    result = _run(p)
    fp = _load(out, artifact=True)
    return fp, _dead_count(result, errors), type(p.runner).__name__


def _fit_per_pass(pipeline: Any, read: Callable[[], Any], schema: pa.Schema, opts: Any, batch_size: int,
                  errors: Any, lineage: Any, scratch: str) -> tuple[Any, int | None, str]:
    from beamlearn.engines.beam import _advance, _finish, _next, _pass, _Registry
    from beamlearn.pipeline import FitPlan

    collect, steps = not _raise_mode(errors), list(pipeline.steps)
    registry = _Registry(steps)
    state, k, dead, runner = _next(FitPlan(steps, schema)), 0, 0, ""
    while state[1] is not None:
        out = _join(scratch, f"pass{k}.pkl")
        p = beam.Pipeline(options=opts)
        splits = p | "Read" >> read()
        merged, pass_errors = _pass(splits, p | "Plan" >> beam.Create([state]), k, steps, collect,
                                    registry)
        merged | "Save" >> beam.ParDo(_Save(out))
        if collect and k == 0:  # dead letters of the first pass (later passes see the same rows), as locally
            _write_errors(pass_errors, errors)
        result = _run(p)
        if k == 0:
            dead, runner = _dead_count(result, errors), type(p.runner).__name__
        state, k = _advance(state, _load(out), registry), k + 1
    return _finish(state, 0, k, pipeline.name, dict(lineage or {}), registry), dead, runner


def _join(scratch: str, name: str) -> str:
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.join(scratch, name)


class _Save(beam.DoFn):
    """Write the one element to ``path``: an artifact, or (between the jobs of one fit) pickled states signed
    with an HMAC key that exists only in this run's pipeline, so :func:`_load` never unpickles a file someone
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


def _load(path: str, artifact: bool = False) -> Any:
    """What :class:`_Save` wrote (None when nothing was: an empty pass), removing the file."""
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
    splits = p | "Read" >> FileSplits(files, schema=fitted.input_schema, batch_size=batch_size)
    transform = Transform(fitted, batch_size=batch_size)
    if collect:
        result_batches, tr_errors = splits | "Transform" >> transform.with_errors()
        _write_errors(tr_errors, errors)
    else:
        result_batches = splits | "Transform" >> transform
    result_batches | "Write" >> WriteFiles(out, out_schema)
    result = _run(p)
    rows = _counter(result, "rows")
    if rows is None:  # a runner without metrics: count what was written
        rows = _written_rows(out)
    dead = _counter(result, "dead_letters") if collect else 0
    return {"rows": rows, "dead_letters": dead if dead is not None else _count_lines(errors)}


def _written_rows(out: str) -> int | None:
    if not _is_local(out) or not os.path.exists(out):
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
