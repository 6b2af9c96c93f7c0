"""The Spark engine's transform: compiled to Spark SQL when it can be, else the fitted pipeline in Python tasks.

- Compiled (:mod:`.spark_sql`): every step has a Spark SQL converter and the data is a DataFrame (or Parquet)
  whose columns have the fitted types: the transform is a plain projection the JVM runs, no Python worker, no
  Arrow hop, with the local engine's output bit for bit.
- Otherwise (and for ``output="vector"``: its sparse vectors cost less in Python than any JVM build measured)
  ``DataFrame.mapInArrow`` with the fitted pipeline broadcast once as its artifact bytes (the safe
  format, :class:`~beamlearn.engines.spark.Shipped`), loaded once per Python worker; its tasks conform the rows
  and run the local engine's code (dead letters, CSV/JSON files read by beamlearn's readers, any step).

``transform(..., compiled=None)`` picks the first when it can (the log of ``beamlearn.spark`` says why not at
INFO level: :func:`compile_reasons`), ``compiled=True`` insists (an :class:`~beamlearn.errors.EngineError` names
what does not compile), ``compiled=False`` forces the Python path.  The output schema is the fitted pipeline's,
Spark-typed, either way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from beamlearn import artifact, io
from beamlearn.batches import DEFAULT_BATCH_SIZE
from beamlearn.engines.passes import Registry, guard
from beamlearn.engines.spark import Shipped, SparkData, spark_data, spark_schema
from beamlearn.engines.spark_sql import SqlPlan
from beamlearn.engines.spark_vector import vector_columns, vector_field, vectors
from beamlearn.errors import EngineError, SpecError
from beamlearn.pipeline import FittedPipeline

__all__ = ["combined", "compile_reasons", "output_schema", "split_dead", "transform"]

_DEAD = "__beamlearn_dead__"  # the column of a dead letter (JSON) in a transform's combined output
_LOG = logging.getLogger("beamlearn.spark")


class _Apply:
    """Task side of a transform: conformed batches through the fitted pipeline, cast to the output schema; with
    ``collect``, bad rows come out as rows whose only value is the dead letter (JSON) in the last column."""

    def __init__(self, reader: Any, blob: Any, registry: Registry, schema: pa.Schema, collect: bool,
                 vector: tuple[str, list[str]] | None = None) -> None:
        self.reader, self.blob, self.registry, self.schema, self.collect = reader, blob, registry, schema, collect
        self.vector = vector  # (the vector column, the output columns it holds), or None

    def column(self, out: pa.RecordBatch, field: pa.Field) -> pa.Array:
        """The output column ``field`` of the transformed batch ``out``, Spark-typed."""
        if self.vector is not None and field.name == self.vector[0]:
            return vectors(out, self.vector[1]).cast(field.type)
        return out.column(field.name).cast(field.type)

    def __call__(self, items: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        self.registry.restore()
        fitted = self.blob.get()
        dead = io.DeadLetters() if self.collect else None
        for batch in self.reader.batches(items, dead, True, encoded=fitted.encoded_columns()):
            out = guard(fitted.transform_batch, batch, dead)[0]
            cols = [self.column(out, f) for f in self.schema if f.name != _DEAD]
            if self.collect:
                cols.append(pa.nulls(out.num_rows, pa.string()).cast(self.schema.field(_DEAD).type))
            yield pa.RecordBatch.from_arrays(cols, schema=self.schema)
            if dead is not None and dead.records:
                lines = pa.array([json.dumps(r) for r in dead.records]).cast(self.schema.field(_DEAD).type)
                dead.records.clear()
                yield pa.RecordBatch.from_arrays([pa.nulls(len(lines), f.type) for f in self.schema][:-1] + [lines],
                                                 schema=self.schema)


def output_schema(fitted: FittedPipeline, schema: pa.Schema) -> pa.Schema:
    """The schema of ``fitted``'s output on data of ``schema`` (the columns it does not read pass through)."""
    from beamlearn.batches import conform

    sample, _ = conform(pa.RecordBatch.from_pylist([], schema=schema), fitted.input_schema,
                        required=fitted.required_columns)
    return fitted.transform_batch(sample).schema.remove_metadata()


def compile_reasons(fitted: FittedPipeline, data: Any, *, spark: Any = None, with_errors: bool = False,
                    output: str = "columns") -> list[str]:
    """Why :func:`transform` of ``data`` by ``fitted`` would run in Python tasks, not compiled to Spark SQL: one
    line per step or column (empty: it compiles)."""
    return _plan(fitted, spark_data(data, spark), with_errors, output).reasons


class _NoPlan:
    def __init__(self, reason: str) -> None:
        self.reasons = [reason]


def _plan(fitted: FittedPipeline, src: SparkData, collect: bool, output: str = "columns") -> Any:
    if output == "vector":
        return _NoPlan("output='vector': its sparse vectors are built faster in Python tasks than in the JVM "
                       "(VectorAssembler or array_to_vector over the output columns: benchmarks/README.md)")
    if src.files is not None:
        return _NoPlan("the data are files read by beamlearn's readers in Python tasks")
    return SqlPlan(fitted, src.schema, collect=collect)


def combined(fitted: FittedPipeline, data: Any, *, spark: Any = None, batch_size: int = DEFAULT_BATCH_SIZE,
             collect: bool = False, output: str = "columns", features: str = "features",
             compiled: bool | None = None) -> Any:
    """The transformed DataFrame; with ``collect``, a last column ``__beamlearn_dead__`` holds the dead letters
    (JSON) of bad rows, every other column null on those rows (see :func:`transform` for the two split)."""
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.sql.types import StringType, StructField, StructType

    if output not in ("columns", "vector"):
        raise SpecError(f"output={output!r}: use 'columns' (one Spark column per output) or 'vector'")
    src = spark_data(data, spark, batch_size=batch_size)
    produced = output_schema(fitted, src.schema)
    columns = out = spark_schema(produced)  # the columns output (the compiled plan's)
    vector = None
    if output == "vector":
        if features in produced.names:
            raise SpecError(f"the output already has a column {features!r}: pass features= another name")
        slots = vector_columns(produced, [c for c in src.schema.names if c not in fitted.required_columns])
        vector = (features, slots)
        out = StructType([f for f in out if f.name not in slots] + [vector_field(features, slots)])
    if collect:
        out = StructType([StructField(f.name, f.dataType, True) for f in out] + [StructField(_DEAD, StringType())])
    plan = _plan(fitted, src, collect, output) if compiled is not False else _NoPlan("compiled=False")
    if plan.reasons and compiled:
        raise EngineError("this transform cannot be compiled to Spark SQL (pass compiled=None to run it in "
                          "Python tasks instead):\n- " + "\n- ".join(plan.reasons))
    if not plan.reasons:  # no row can be bad: the dead letters column is null
        frame = plan.apply(src.frame, columns)
        return frame.withColumn(_DEAD, F.lit(None).cast("string")) if collect else frame
    _LOG.info("beamlearn: the transform runs in Python tasks (mapInArrow), not compiled to Spark SQL: %s",
              "; ".join(plan.reasons))
    sc = src.frame.sparkSession.sparkContext
    conf = src.frame.sparkSession.conf.get("spark.sql.execution.arrow.useLargeVarTypes", "false")
    arrow = to_arrow_schema(out, prefers_large_types=conf == "true")
    blob = Shipped(sc, fitted)
    reader = src.reader(fitted.input_schema, fitted.required_columns, batch_size)
    return src.frame.mapInArrow(_Apply(reader, blob, Registry(fitted.steps), arrow, collect, vector), out)


def transform(fitted: FittedPipeline | str, data: Any, *, spark: Any = None, with_errors: bool = False,
              batch_size: int = DEFAULT_BATCH_SIZE, output: str = "columns", features: str = "features",
              compiled: bool | None = None) -> Any:
    """``data`` (a Spark DataFrame, files, or a table) transformed by ``fitted`` (or an artifact path): a lazy
    Spark DataFrame with the fitted output schema.  A bad row fails the job (the action's ``PythonException``
    holds the :class:`~beamlearn.errors.DataError` naming it: :func:`~beamlearn.engines.spark.run_action` raises it); with ``with_errors``,
    returns ``(DataFrame, dead_letters)`` instead, the dead letters a DataFrame of ``DEAD_LETTER_COLUMNS``
    (``record`` as JSON).  Both read one computation: ``.cache()`` it (:func:`combined`) to run it once.
    ``output="vector"``: the numeric outputs as ONE Spark ML vector column ``features`` (MLlib's shape, far
    cheaper for Spark than hundreds of columns), the other columns as they are (:mod:`.spark_vector`).
    ``compiled``: None (default) runs the transform as Spark SQL expressions when every step compiles
    (:mod:`.spark_sql`), else in Python tasks; True insists (EngineError naming what does not compile); False
    always runs it in Python tasks."""
    from pyspark.sql import functions as F

    if not isinstance(fitted, FittedPipeline):
        fitted = artifact.load(str(fitted))
    both = combined(fitted, data, spark=spark, batch_size=batch_size, collect=with_errors, output=output,
                    features=features, compiled=compiled)
    if not with_errors:
        return both
    main = both.filter(F.col(_DEAD).isNull()).drop(_DEAD)
    parsed = F.from_json(F.col(_DEAD), "source string, row long, line long, column string, reason string")
    dead = both.filter(F.col(_DEAD).isNotNull()).select(parsed.alias("d"), F.get_json_object(_DEAD, "$.record")
                                                        .alias("record")).select("d.*", "record")
    return main, dead


def split_dead(table: pa.Table) -> tuple[pa.Table, list[dict[str, Any]]]:
    """A collected :func:`combined` output as ``(rows, dead letters)``."""
    import pyarrow.compute as pc

    mask = table.column(_DEAD).is_null()
    dead = [json.loads(s) for s in table.filter(pc.invert(mask)).column(_DEAD).to_pylist()]
    return table.filter(mask).drop_columns([_DEAD]), dead
