"""The Spark engine: the same fit plan and fitted pipelines on Spark DataFrames (``mapInArrow`` + ``treeReduce``).

- :func:`fit`: each pass of the :class:`~beamlearn.pipeline.FitPlan` is one Spark job.  ``mapInArrow`` folds
  every Arrow batch of a partition into the pass's accumulators (the very analyzers the local engine runs, through
  :func:`~beamlearn.engines.passes.add_batch`), each partition emits its accumulators as bytes, ``treeReduce``
  merges them on the executors, and the driver extracts the states and plans the next pass, as the local engine
  does.  The plan travels to the executors as a broadcast.
- :func:`~beamlearn.engines.spark_transform.transform` (:mod:`.spark_transform`): compiled to Spark SQL column
  expressions when every step can be (:mod:`.spark_sql`: the JVM alone), else ``DataFrame.mapInArrow`` with the
  fitted pipeline broadcast once as its artifact bytes (the safe format, :class:`Shipped`), loaded once per Python
  worker; the output schema is the fitted pipeline's, Spark-typed.
- :func:`~beamlearn.engines.spark_eval.evaluate`: the metric reductions, the same way
  (:mod:`beamlearn.engines.spark_eval`).
- Bad rows follow the local engine's policy with its code: by default the job fails on the first bad value, and
  the error names its source, row and column; dead letters go to an ``errors=`` sink (fit) or a second DataFrame
  (``transform(..., with_errors=True)``).

Data is a Spark DataFrame (any: rows are tagged ``<spark partition P>`` and numbered within the partition), or
files: Parquet through Spark's reader (splittable across executors), CSV and JSON lines through beamlearn's own
readers inside the Python tasks, one task per file (the types, and the sources, rows and lines of dead letters,
are exactly the local engine's); a database URI (:mod:`beamlearn.sqlio`) one task per key range of a partitioned
read (``&partition_column=id&partitions=N``: :func:`~beamlearn.sqlio.sql_splits`).  A pyarrow Table or pandas DataFrame is turned into a Spark DataFrame.

Examples
--------
>>> import beamlearn as bl
>>> from beamlearn import spark as bls
>>> spark = bls.session("local[2]")  # doctest: +SKIP
>>> df = spark.createDataFrame([(1.0,), (2.0,), (4.0,)], "x double")  # doctest: +SKIP
>>> fitted = bls.fit(bl.Pipeline([bl.StandardScaler(["x"])]), df)  # doctest: +SKIP
>>> bls.transform(fitted, df).show()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import pickle
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from beamlearn import artifact, io, sqlio
from beamlearn.batches import (
    DEFAULT_BATCH_SIZE,
    capture_schema,
    tag_batch,
)
from beamlearn.engines.passes import (
    Registry,
    add_batch,
    conformed,
    create_accumulators,
    data_fingerprint,
    extract_states,
    finish,
    first_pass,
    merge_accumulators,
    next_pass,
    required_columns,
)
from beamlearn.engines.spark_aggpass import sql_pass
from beamlearn.errors import BeamlearnError, DataError, EngineError, error_in_text
from beamlearn.pipeline import FittedPipeline, Pipeline

__all__ = ["DEAD_LETTER_COLUMNS", "Shipped", "SparkData", "fit", "reduce_parts", "run_action", "session",
           "spark_arrow_schema", "spark_data", "spark_schema"]

DEAD_LETTER_COLUMNS = "source string, row long, line long, column string, reason string, record string"
_ACCS = "accs binary, rows long, dead string"


# ---------------------------------------------------------------------------------------------- session
def session(master: str | None = None, conf: dict[str, str] | None = None, *, app_name: str = "beamlearn") -> Any:
    """A ``SparkSession`` on ``master`` (``spark://HOST:7077``, ``local[N]``; default: Spark's) with ``conf``.

    The Python workers run this interpreter (``spark.pyspark.python``), so they import the same beamlearn, and
    Arrow batches are sized for beamlearn unless ``conf`` says otherwise.  The JVMs compile Spark's large
    generated methods (``-XX:-DontCompileHugeMethods`` appended to the driver's and executors'
    ``extraJavaOptions``; HotSpot otherwise interprets any method over 8,000 bytecodes forever): a wide
    projection, such as a transform compiled to Spark SQL with 208 output columns, is one.  Measured with
    ``benchmarks/bench_spark.py``'s pipeline on the two-worker cluster, warm: 1M rows in 1.4 s instead of 2.9-3.3 s,
    10M rows in 6.0-6.8 s instead of 16.7-17.6 s.  Whole-stage code generation of that wide stage
    (``spark.sql.codegen.maxFields`` raised over 208) was no faster (10M rows: 7.5-8.1 s), so it stays Spark's.
    """
    import os

    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # read by the JVM when it starts workers
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    settings = {"spark.pyspark.python": sys.executable, "spark.pyspark.driver.python": sys.executable,
                "spark.sql.execution.arrow.maxRecordsPerBatch": str(DEFAULT_BATCH_SIZE),
                "spark.ui.showConsoleProgress": "false", **(conf or {})}
    for side in ("driver", "executor"):
        key = f"spark.{side}.extraJavaOptions"
        settings[key] = f"{settings.get(key, '')} -XX:-DontCompileHugeMethods".strip()
    for key, value in settings.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def _active(spark: Any) -> Any:
    if spark is not None:
        return spark
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is None:
        raise EngineError("no active SparkSession: pass spark=, or create one (beamlearn.spark.session(master))")
    return active


# ---------------------------------------------------------------------------------------------- data
class SparkData:
    """What a job reads: a DataFrame of rows (``frame``), or a DataFrame of file paths, one per partition, that
    the tasks read with beamlearn's readers (``files``); ``schema`` is the rows' Arrow schema, ``part`` a
    ``(split, "train" | "test")`` pair keeping one part of a :class:`~beamlearn.split.Split`'s rows."""

    def __init__(self, frame: Any, schema: pa.Schema, files: list[str] | None = None,
                 part: tuple[Any, str] | None = None) -> None:
        self.frame, self.schema, self.files, self.part = frame, schema, files, part

    def reader(self, schema: pa.Schema | None, required: Sequence[str], batch_size: int) -> _Reader:
        """The task-side reader of this data, conforming to ``schema`` (None: as the data comes)."""
        return _Reader(self.files is not None, schema, list(required), batch_size, self.part)


def spark_data(data: Any, spark: Any = None, *, batch_size: int = DEFAULT_BATCH_SIZE,
               part: tuple[Any, str] | None = None) -> SparkData:
    """``data`` as a :class:`SparkData`: a Spark DataFrame as is; Parquet files through ``spark.read.parquet``;
    CSV and JSON lines files read by the tasks; a pyarrow Table or pandas DataFrame made a Spark DataFrame."""
    from pyspark.sql import DataFrame

    if isinstance(data, SparkData):
        return data
    if isinstance(data, DataFrame):
        return SparkData(data, arrow_schema(data.schema), part=part)
    spark = _active(spark)
    if io.is_file_input(data):  # a database source: one task per key range of a partitioned read
        files = [s for f in io.expand_paths(data) for s in (sqlio.sql_splits(f) if io.file_format(f) == "sql"
                                                           else [f])]
        if all(io.file_format(f) == "parquet" for f in files):
            frame = spark.read.parquet(*files)
            return SparkData(frame, arrow_schema(frame.schema), part=part)
        first = next(iter(io.read(files, batch_size=batch_size, dead=io.DeadLetters())), None)
        if first is None:
            raise DataError("no data to fit on", source=files[0])
        paths = spark.sparkContext.parallelize([(f,) for f in files], len(files)).toDF("path string")
        return SparkData(paths, capture_schema(first), files, part)
    table = pa.Table.from_batches(list(io.read(data, batch_size=batch_size)))
    table = table.replace_schema_metadata(None)
    held = table.cast(spark_arrow_schema(table.schema))
    return SparkData(spark.createDataFrame(held), capture_schema(held.to_batches()[0]) if held.num_rows else
                     held.schema, part=part)


def arrow_schema(spark_schema: Any) -> pa.Schema:
    """The Arrow schema of a Spark schema, as beamlearn captures schemas."""
    from pyspark.sql.pandas.types import to_arrow_schema

    arrow = to_arrow_schema(spark_schema)
    return capture_schema(pa.RecordBatch.from_pylist([], schema=arrow))


_WIDER = {pa.uint8(): pa.int16(), pa.uint16(): pa.int32(), pa.uint32(): pa.int64(), pa.float16(): pa.float32()}


def spark_arrow_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the types Spark cannot hold made ones it can: unsigned integers widened to the next signed
    type (``uint8`` -> ``int16``, ...), ``float16`` to ``float32``, dictionaries to their values.

    Examples
    --------
    >>> spark_arrow_schema(pa.schema([("a", pa.uint8()), ("b", pa.dictionary(pa.int32(), pa.string()))])).types
    [DataType(int16), DataType(string)]
    """
    def spark_type(t: pa.DataType) -> pa.DataType:
        if pa.types.is_dictionary(t):
            return spark_type(t.value_type)
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return pa.list_(spark_type(t.value_type))
        return _WIDER.get(t, t)

    return pa.schema([pa.field(f.name, spark_type(f.type), f.nullable) for f in schema])


def spark_schema(schema: pa.Schema) -> Any:
    """The Spark ``StructType`` of an Arrow ``schema`` (:func:`spark_arrow_schema`'s types); EngineError if
    Spark cannot hold one."""
    from pyspark.sql.pandas.types import from_arrow_schema

    try:
        return from_arrow_schema(spark_arrow_schema(schema))
    except Exception as exc:  # noqa: BLE001 - pyspark raises its own types for unsupported Arrow types
        raise EngineError(f"the output schema has a type Spark cannot hold ({exc})") from None


class _Reader:
    """Task side: the conformed, tagged batches of one partition (rows or file paths)."""

    def __init__(self, files: bool, schema: pa.Schema | None, required: list[str], batch_size: int,
                 part: tuple[Any, str] | None) -> None:
        self.files, self.schema, self.required, self.batch_size, self.part = files, schema, required, batch_size, \
            part

    def batches(self, items: Iterator[pa.RecordBatch], dead: Any, report: bool, columns: list[str] | None = None,
                encoded: Sequence[str] = ()) -> Iterator[pa.RecordBatch]:
        if self.files:
            paths = [p for b in items for p in b.column(0).to_pylist()]
            if not paths:
                return iter(())
            data: Any = paths
        else:
            data = _tagged(items)
        if self.schema is None:
            out = io.read(data, batch_size=self.batch_size)
        else:
            out = conformed(data, self.schema, self.required, dead, report, batch_size=self.batch_size,
                            columns=columns, encoded=encoded)
        return self.part[0].part(out, self.part[1]) if self.part is not None else out


def _tagged(items: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Spark's batches of this partition tagged ``<spark partition P>``, rows numbered within it."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    source, offset = f"<spark partition {ctx.partitionId() if ctx else 0}>", 0
    for b in items:
        yield tag_batch(b, source, offset)
        offset += b.num_rows


def run_action(fn: Any) -> Any:
    """``fn()``, a Spark action; a beamlearn error raised in a task is raised here as itself (from the task's
    traceback), any other failure as :class:`EngineError`."""
    try:
        return fn()
    except BeamlearnError:
        raise
    except Exception as exc:
        err = error_in_text(str(exc))
        if err is None:
            if isinstance(exc, ValueError):
                raise
            raise EngineError(f"the Spark job failed: {str(exc).strip().splitlines()[-1][:2000]}") from exc
        raise err from None


def reduce_parts(rdd: Any, fn: Any) -> Any:
    """``rdd.treeReduce(fn)`` through :func:`run_action`; None for an empty RDD."""
    try:
        return run_action(lambda: rdd.treeReduce(fn))
    except ValueError as exc:
        if "empty" in str(exc).lower():
            return None
        raise


# ---------------------------------------------------------------------------------------------- fit
class _AddPass:
    """Task side of a pass: the partition's batches added to fresh accumulators, emitted as one row of bytes
    (with the rows added and, in the first pass, the dead letters as JSON lines)."""

    def __init__(self, reader: _Reader, state: Any, registry: Registry, collect: bool, report: bool) -> None:
        self.reader, self.state, self.registry, self.collect, self.report = reader, state, registry, collect, \
            report

    def __call__(self, items: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        self.registry.restore()
        _, pass_ = pickle.loads(self.state.value)  # safe: pickled by this fit's own driver
        accs, rows = create_accumulators(pass_), 0
        dead = io.DeadLetters() if self.collect else None
        for batch in self.reader.batches(items, dead, self.report, pass_.input_columns(), pass_.encoded_columns()):
            rows += add_batch(pass_, accs, batch, dead, self.report)
        lines = "\n".join(json.dumps(r) for r in dead.records) if dead is not None else ""
        yield pa.record_batch({"accs": [pickle.dumps(accs, protocol=5)], "rows": [rows], "dead": [lines]})


class _Merge:
    """``treeReduce`` side: two partitions' ``(accumulators, rows, dead letters)`` merged."""

    def __init__(self, state: Any, registry: Registry) -> None:
        self.state, self.registry, self.analyzers = state, registry, None

    def __call__(self, a: tuple, b: tuple) -> tuple:
        if self.analyzers is None:
            self.registry.restore()
            self.analyzers = pickle.loads(self.state.value)[1].analyzers  # safe: this fit's own driver's
        parts = [pickle.loads(a[0]), pickle.loads(b[0])]  # safe: accumulators made by this fit's tasks
        merged = merge_accumulators(self.analyzers, parts)
        return pickle.dumps(merged, protocol=5), a[1] + b[1], "\n".join(x for x in (a[2], b[2]) if x)


def _row(r: Any) -> tuple:
    return bytes(r.accs), int(r.rows), r.dead or ""


def fit(pipeline: Pipeline, data: Any, *, spark: Any = None, errors: Any = "raise",
        batch_size: int = DEFAULT_BATCH_SIZE, schema: pa.Schema | None = None,
        lineage: dict[str, Any] | None = None, part: tuple[Any, str] | None = None,
        sql: bool | None = False) -> FittedPipeline:
    """Fit ``pipeline`` on ``data`` (a Spark DataFrame, files, or a table; see :func:`spark_data`) on Spark.

    ``errors``: ``"raise"`` (a bad row fails the fit, naming its source, row and column), a path (dead letters
    written there as JSON lines) or a :class:`~beamlearn.DeadLetters`.  ``schema``: the input schema (default:
    the data's).  Returns the :class:`~beamlearn.FittedPipeline`, equal to the local engine's on the same rows.
    ``sql``: run a pass as Spark SQL aggregations never (False, the default: ``mapInArrow`` was faster in
    ``benchmarks/bench_spark.py``), when it can (None, :mod:`.spark_agg`) or always (True: an error names what
    has no SQL form); ``lineage["sql_passes"]`` records each pass's way.
    """
    import cloudpickle

    t0 = time.perf_counter()
    src = spark_data(data, spark, batch_size=batch_size, part=part)
    schema = schema if schema is not None else src.schema
    sc = src.frame.sparkSession.sparkContext
    steps = list(pipeline.steps)
    registry, dead = Registry(steps), io.dead_letter_sink(errors)
    reader = src.reader(schema, required_columns(steps, schema), batch_size)
    state, rows, k, dead_count, ways = first_pass(steps, schema), 0, 0, 0, []
    try:
        while state[1] is not None:
            report = k == 0
            ran = sql_pass(state[1], schema, src, dead is not None, batch_size, sql, ways)
            if ran is not None:
                rows = ran[1] if report else rows
                state, k = next_pass(state, extract_states(state[1], [ran[0]]) if ran[1] else None), k + 1
                continue
            blob = sc.broadcast(cloudpickle.dumps(state, protocol=5))  # custom steps of __main__ by value
            try:
                accs = src.frame.mapInArrow(_AddPass(reader, blob, registry, dead is not None, report), _ACCS)
                merge = _Merge(blob, registry)
                merged = reduce_parts(accs.rdd.map(_row), merge)
            finally:
                blob.destroy()
            if report and merged is not None:
                rows = merged[1]
                for line in filter(None, merged[2].split("\n")) if dead is not None else ():
                    dead.add(**json.loads(line))
                    dead_count += 1
            states = extract_states(state[1], [pickle.loads(merged[0])]) if merged and merged[1] else None  # safe: this fit's own accumulators from its executors, never an artifact
            state, k = next_pass(state, states), k + 1
    finally:
        if dead is not None and dead.path:
            dead.close()
    fitted = finish(state, engine="spark", name=pipeline.name, lineage=lineage, rows=rows, dead_letters=dead_count)
    fitted.lineage.update({"fit_seconds": round(time.perf_counter() - t0, 6), "master": sc.master,
                           "data": data_fingerprint(data) if io.is_file_input(data) else {"spark": "DataFrame"},
                           "sql_passes": ways})
    return fitted


# ---------------------------------------------------------------------------------------------- transform
_LOADED: dict[str, FittedPipeline] = {}  # per Python worker: the job's key -> the fitted pipeline it loaded


class Shipped:
    """A fitted pipeline broadcast once as its artifact bytes (the safe format), loaded once per Python worker
    (workers are reused across tasks)."""

    def __init__(self, sc: Any, fitted: FittedPipeline) -> None:
        import uuid

        self.blob, self.key = sc.broadcast(artifact.to_bytes(fitted)), uuid.uuid4().hex

    def get(self) -> FittedPipeline:
        """The fitted pipeline (task side)."""
        if self.key not in _LOADED:
            _LOADED.clear()
            _LOADED[self.key] = artifact.from_bytes(self.blob.value)
        return _LOADED[self.key]
