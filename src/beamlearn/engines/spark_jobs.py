"""Whole Spark jobs over files (the CLI's ``--engine spark``): options, fit, transform to a file, evaluate.

``spark_args`` are the options the CLI passes through: ``--master URL`` (``spark://HOST:7077``, ``local[N]``)
and any number of ``--conf key=value`` (Spark configuration, untouched).

Examples
--------
>>> parse_spark_args(["--master", "local[2]", "--conf", "spark.executor.memory=1g", "--conf=a.b=c"])
('local[2]', {'spark.executor.memory': '1g', 'a.b': 'c'})
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from beamlearn import io
from beamlearn.batches import DEFAULT_BATCH_SIZE
from beamlearn.engines.spark import combined, evaluate, fit, session, split_dead
from beamlearn.errors import EngineError
from beamlearn.pipeline import FittedPipeline, Pipeline

__all__ = ["parse_spark_args", "run_evaluate", "run_fit", "run_transform", "spark_session"]


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
    table = frame.toArrow()
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
