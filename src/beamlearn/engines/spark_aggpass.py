"""Which Spark fit passes run as Spark SQL aggregations (:mod:`beamlearn.engines.spark_agg`), and running them.

:func:`sql_pass` is the Spark engine's dispatch: a pass runs as SQL when ``sql`` allows it and :func:`refusals`
finds no reason against it (the data needs Python: files, a split part, a dead-letter sink, a schema to
conform to; a step applied on the way touches a column a statistic reads; an analyzer has no converter), else
the engine runs it with ``mapInArrow``.  Every pass's way is recorded for the lineage.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from beamlearn.batches import empty_batch
from beamlearn.engines.spark_agg import Aggregations, Finish, converter
from beamlearn.errors import EngineError, SpecError
from beamlearn.pipeline import PROFILE, Pass

__all__ = ["refusals", "run_sql_pass", "sql_pass", "sql_plan"]


def _short(obj: Any, columns: Any) -> str:
    cols = ", ".join(map(str, list(columns)[:4])) + (", ..." if len(columns) > 4 else "")
    return f"{type(obj).__name__}({cols})"


def _owner(pass_: Pass, j: int) -> str:
    steps = [("the fit's profile" if i == PROFILE else _short(pass_.steps[i], pass_.steps[i].input_columns()))
             for i, _ in pass_.owners[j]]
    a = pass_.analyzers[j]
    return f"{_short(a, a.columns)} (for {', '.join(dict.fromkeys(steps))})"


def _stepped(pass_: Pass, schema: pa.Schema) -> list[int]:
    """The steps applied on the way to an analyzer of ``pass_`` that change what it reads: an estimator (it may
    read any column), or a step that reads, replaces or adds a column the analyzer reads (the planner's own
    notion of a step touching a statistic)."""
    view, touched = empty_batch(schema), {}  # step -> the columns it touches (None: any)
    last = max(pass_.positions, default=0)
    for k in sorted(pass_.apply_steps):
        if k >= last:
            break
        step = pass_.steps[k]
        after = step.apply(view, pass_.states[k])
        touched[k] = None if getattr(step, "waits_for_previous", False) else (
            set(step.input_columns()) | (set(after.schema.names) ^ set(view.schema.names)))
        view = after
    out: set[int] = set()
    for a, pos in zip(pass_.analyzers, pass_.positions):
        reads = a.reads()  # None: the analyzer may read any column
        out |= {k for k, t in touched.items() if k < pos and (t is None or reads is None or t & set(reads))}
    return sorted(out)


def sql_plan(pass_: Pass, schema: pa.Schema, batch_size: int) -> tuple[Aggregations | None, list[str]]:
    """The aggregations of ``pass_`` and a finisher per analyzer, or ``(None, reasons)`` naming the analyzers
    (and their steps) without a SQL form and the steps applied before an analyzer."""
    reasons = [f"{_short(pass_.steps[k], pass_.steps[k].input_columns())} is applied before an analyzer that "
               "reads its output (it runs in Python)" for k in _stepped(pass_, schema)]
    aggs = Aggregations(schema, batch_size)
    finishers: list[Finish] = []
    for j, a in enumerate(pass_.analyzers):
        convert = converter(a)
        got = convert(a, aggs) if convert is not None else None
        if got is None:
            reasons.append(f"{_owner(pass_, j)} has no SQL form")
        else:
            finishers.append(got)
    if reasons:
        return None, reasons
    aggs.finishers = finishers
    return aggs, []


def refusals(pass_: Pass, schema: pa.Schema, data_schema: pa.Schema, *, files: bool, part: bool, dead: bool,
             batch_size: int) -> tuple[Aggregations | None, list[str]]:
    """The pass's :class:`Aggregations` when it can run as SQL, else ``(None, reasons)``: the data's own
    conditions (files read in Python, a split part, a dead-letter sink, a schema to conform to) first."""
    reasons = []
    if files:
        reasons.append("the data is read by Python tasks (CSV/JSON files or a database), not a DataFrame")
    if part:
        reasons.append("a split's part is chosen in Python")
    if dead:
        reasons.append("dead letters are collected (errors=...)")
    if [(f.name, f.type) for f in schema] != [(f.name, f.type) for f in data_schema]:
        reasons.append("the DataFrame's schema is not the fit schema (its values are cast in Python)")
    if reasons:
        return None, reasons
    return sql_plan(pass_, schema, batch_size)


def run_sql_pass(aggs: Aggregations, frame: Any) -> tuple[list[Any], int]:
    """Run a planned pass on ``frame``: the accumulators of its analyzers (in order) and the rows read."""
    got, counted, rows = aggs.run(frame)
    return [finish(got, counted) for finish in aggs.finishers], rows


def sql_pass(pass_: Pass, schema: pa.Schema, src: Any, dead: bool, batch_size: int, sql: bool | None,
             ways: list[dict[str, Any]]) -> tuple[list[Any], int] | None:
    """Run ``pass_`` as SQL aggregations on ``src`` (a :class:`~beamlearn.engines.spark.SparkData`) when it can
    and ``sql`` is not False: ``(accumulators, rows)``, or None for the engine's ``mapInArrow`` pass.  ``sql``
    True: a pass without a SQL form raises :class:`~beamlearn.errors.SpecError` naming why.  Each pass's way
    is appended to ``ways`` (``{"pass", "sql", "reasons"}``, for the lineage)."""
    way: dict[str, Any] = {"pass": len(ways) + 1, "sql": False}
    ways.append(way)
    if sql is False:
        way["reasons"] = ["sql=False"]
        return None
    aggs, reasons = refusals(pass_, schema, src.schema, files=src.files is not None, part=src.part is not None,
                             dead=dead, batch_size=batch_size)
    if aggs is None:
        if sql:
            raise SpecError(f"sql=True, but fit pass {way['pass']} cannot run as Spark SQL: " + "; ".join(reasons)
                            + " (pass sql=None to run such passes in Python)")
        way["reasons"] = reasons
        return None
    try:
        out = run_sql_pass(aggs, src.frame)
    except Exception as exc:  # pyspark raises its own (JVM) exception types
        raise EngineError(f"the Spark SQL fit pass {way['pass']} failed: "
                          f"{str(exc).strip().splitlines()[0][:2000]} (sql=False runs it in Python)") from exc
    way["sql"] = True
    return out
