"""Whole Spark jobs over files (the CLI's ``--engine spark``): options, fit, transform to a file, evaluate.

``spark_args`` are the options the CLI passes through: ``--master URL`` (``spark://HOST:7077``, ``local[N]``)
and any number of ``--conf key=value`` (Spark configuration, untouched).

Examples
--------
>>> parse_spark_args(["--master", "local[2]", "--conf", "spark.executor.memory=1g", "--conf=a.b=c"])
('local[2]', {'spark.executor.memory': '1g', 'a.b': 'c'})
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from beamlearn import io
from beamlearn.batches import DEFAULT_BATCH_SIZE
from beamlearn.engines.spark import fit, run_action, session
from beamlearn.engines.spark_eval import evaluate
from beamlearn.engines.spark_transform import combined, split_dead
from beamlearn.errors import EngineError
from beamlearn.pipeline import FittedPipeline, Pipeline

__all__ = ["free_ports", "parse_spark_args", "run_evaluate", "run_fit", "run_transform", "spark_session",
           "standalone_cluster"]


def parse_spark_args(args: Sequence[str] | None) -> tuple[str | None, dict[str, str]]:
    """``(master, conf)`` from ``--master URL`` and ``--conf key=value`` options; anything else is an error."""
    master, conf, rest = None, {}, list(args or [])
    while rest:
        flag = rest.pop(0)
        name, eq, value = flag.partition("=")
        if name not in ("--master", "--conf"):
            raise EngineError(f"unknown option {flag!r} for the Spark engine (it takes --master URL and "
                              "--conf key=value)")
        if not eq:
            if not rest:
                raise EngineError(f"{name} needs a value")
            value = rest.pop(0)
        if name == "--master":
            master = value
        else:
            key, eq, val = value.partition("=")
            if not eq or not key:
                raise EngineError(f"--conf takes key=value, got {value!r}")
            conf[key] = val
    return master, conf


def spark_session(spark_args: Sequence[str] | None, batch_size: int = DEFAULT_BATCH_SIZE) -> Any:
    """The SparkSession the options ask for (Arrow batches of ``batch_size`` rows unless ``--conf`` says)."""
    master, conf = parse_spark_args(spark_args)
    conf = {"spark.sql.execution.arrow.maxRecordsPerBatch": str(batch_size), **conf}
    return session(master, conf)


def run_fit(pipeline: Pipeline, paths: Any, *, spark_args: Sequence[str] | None = None,
            batch_size: int = DEFAULT_BATCH_SIZE, errors: str | None = None, schema: pa.Schema | None = None,
            lineage: dict[str, Any] | None = None, part: tuple[Any, str] | None = None) -> FittedPipeline:
    """Fit ``pipeline`` on files with Spark; ``errors`` is None (a bad row fails the fit) or a JSON-lines path."""
    spark = spark_session(spark_args, batch_size)
    return fit(pipeline, io.expand_paths(paths), spark=spark, errors=errors or "raise", batch_size=batch_size,
               schema=schema, lineage=lineage, part=part)


def run_transform(fitted: FittedPipeline, paths: Any, out: str, *, spark_args: Sequence[str] | None = None,
                  batch_size: int = DEFAULT_BATCH_SIZE, errors: str | None = None) -> dict[str, Any]:
    """Transform files on Spark and write ``out`` (one CSV, Parquet or JSON-lines file, by extension, written
    by the driver: the rows are collected to it); returns ``{"rows": ..., "dead_letters": ...}``."""
    spark = spark_session(spark_args, batch_size)
    frame = combined(fitted, io.expand_paths(paths), spark=spark, batch_size=batch_size,
                     collect=errors is not None)
    table = run_action(frame.toArrow)
    dead: list[dict[str, Any]] = []
    if errors is not None:
        table, dead = split_dead(table)
        with open(errors, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in dead)
    rows = io.write_batches(table.to_batches(), out, schema=table.schema)
    return {"rows": rows, "dead_letters": len(dead)}


def run_evaluate(paths: Any, *, spark_args: Sequence[str] | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 **kw: Any) -> Any:
    """Evaluate files on Spark (:func:`~beamlearn.engines.spark.evaluate`'s options)."""
    spark = spark_session(spark_args, batch_size)
    return evaluate(io.expand_paths(paths), spark=spark, batch_size=batch_size, **kw)


# ---------------------------------------------------------------------------------------------- a local cluster
def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (all held open while chosen, so none repeats)."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _alive_workers(ui: int) -> int:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=2) as r:
            return int(json.load(r).get("aliveworkers", 0))
    except Exception:  # noqa: BLE001 - not up yet (refused, reset, not HTTP yet)
        return -1


@contextlib.contextmanager
def standalone_cluster(workers: int = 2, *, cores: int = 1, memory: str = "1g", log_dir: str | None = None,
                       timeout: float = 120.0) -> Iterator[str]:
    """Start a Spark standalone master and ``workers`` workers on 127.0.0.1 (free ports) from the ``pyspark``
    wheel's ``spark-class`` (it has no ``sbin`` scripts); yield the master URL ``spark://127.0.0.1:PORT``;
    always stop them (their whole process groups).  The workers' Python is this interpreter."""
    import os
    import signal
    import subprocess
    import tempfile

    import pyspark

    home = os.path.dirname(pyspark.__file__)
    log_dir = log_dir or tempfile.mkdtemp(prefix="beamlearn-spark-")
    env = {**os.environ, "SPARK_HOME": home, "PYSPARK_PYTHON": sys.executable, "SPARK_DAEMON_MEMORY": "256m"}
    port, ui, *uis = free_ports(2 + workers)
    commands = [["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                 "--webui-port", str(ui)]]
    commands += [["org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}", "--host", "127.0.0.1",
                  "--cores", str(cores), "--memory", memory, "--webui-port", str(uis[k]), "--work-dir",
                  os.path.join(log_dir, f"work{k}")] for k in range(workers)]
    procs: list[Any] = []
    try:
        for k, args in enumerate(commands):
            with open(os.path.join(log_dir, f"{'master' if k == 0 else f'worker{k}'}.log"), "wb") as log:
                procs.append(subprocess.Popen([os.path.join(home, "bin", "spark-class"), *args], stdout=log,
                                              stderr=subprocess.STDOUT, env=env, start_new_session=True))
        deadline = time.monotonic() + timeout
        while _alive_workers(ui) < workers:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                with open(os.path.join(log_dir, "master.log"), errors="replace") as fh:
                    raise EngineError(f"the Spark cluster did not start: {fh.read()[-1500:]}")
            time.sleep(0.5)
        yield f"spark://127.0.0.1:{port}"
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
