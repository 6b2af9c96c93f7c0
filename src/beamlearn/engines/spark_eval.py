"""Evaluation on Spark: the metric reductions of :func:`beamlearn.metrics.evaluate` folded per partition
(``mapInArrow``; through a model first if given) and merged with ``treeReduce``, so both engines give the same
metrics dict.  The metric analyzer is built from the schema of the first batch a task sees (carried with its
accumulator, so a merge builds the same one), as the Beam engine does.

Examples
--------
>>> from beamlearn.engines.spark_eval import evaluate
>>> r = evaluate(df, label="y", prediction="p")  # doctest: +SKIP
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from beamlearn import artifact
from beamlearn.batches import DEFAULT_BATCH_SIZE, batch_origin, batch_rows, tag_batch, tag_rows
from beamlearn.engines.passes import Registry, guard
from beamlearn.engines.spark import Shipped, reduce_parts, spark_data
from beamlearn.errors import SchemaError
from beamlearn.pipeline import FittedPipeline

__all__ = ["evaluate"]


class _Metrics:
    """Task side of an evaluation: the partition's batches (through the model, the ``keep`` columns it replaces
    taken back from its input) folded into the metric analyzer built from the first batch's schema."""

    def __init__(self, reader: Any, options: dict[str, Any], blob: Any, keep: list[str],
                 registry: Registry) -> None:
        self.reader, self.options, self.blob, self.keep, self.registry = reader, options, blob, keep, registry

    def __call__(self, items: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from beamlearn.metrics.evaluate import build_analyzer

        self.registry.restore()
        fitted = self.blob.get() if self.blob is not None else None
        analyzer, acc, schema = None, None, None
        for batch in self.reader.batches(items, None, True):
            if fitted is not None:
                batch = _predicted(fitted, batch, self.keep)
            if batch.num_rows == 0:
                continue
            if analyzer is None:
                schema = batch.schema.remove_metadata()
                analyzer = build_analyzer(schema, **self.options)[0]
                acc = analyzer.create()
            acc = analyzer.add(acc, batch)
        if analyzer is not None:
            yield pa.record_batch({"schema": [schema.serialize().to_pybytes()],
                                   "acc": [pickle.dumps(acc, protocol=5)]})


def _predicted(fitted: FittedPipeline, batch: pa.RecordBatch, keep: list[str]) -> pa.RecordBatch:
    out = guard(fitted.transform_batch, batch, None)[0]
    for c in keep:
        if c not in out.schema.names and c in batch.schema.names:
            out = out.append_column(c, batch.column(c))
    source, _ = batch_origin(batch)
    out = tag_batch(out, source, 0) if source is not None else out
    return tag_rows(out, batch_rows(batch))


class _MergeMetrics:
    """``treeReduce`` side: two partitions' ``(schema, accumulator)`` merged by the analyzer of that schema."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options, self.built = options, {}

    def analyzer(self, schema: bytes) -> Any:
        from beamlearn.metrics.evaluate import build_analyzer

        if schema not in self.built:
            self.built[schema] = build_analyzer(pa.ipc.read_schema(pa.py_buffer(schema)), **self.options)
        return self.built[schema]

    def __call__(self, a: tuple, b: tuple) -> tuple:
        merged = self.analyzer(a[0])[0].merge([pickle.loads(a[1]), pickle.loads(b[1])])  # safe: our tasks'
        return a[0], pickle.dumps(merged, protocol=5)


def _metric_row(r: Any) -> tuple:
    return bytes(r.schema), bytes(r.acc)


def evaluate(data: Any, *, label: str, prediction: str, model: Any = None, require: Sequence[str] = (),
             baseline: Any = None, spark: Any = None, batch_size: int = DEFAULT_BATCH_SIZE,
             part: tuple[Any, str] | None = None, keep: Sequence[str] | None = None, **options: Any) -> Any:
    """Evaluate ``data`` on Spark (optionally through ``model``, a fitted pipeline or artifact path): the
    :class:`~beamlearn.metrics.evaluate.EvaluationResult` :func:`beamlearn.metrics.evaluate` gives on the same
    rows, with the ``require`` gates checked.  ``options`` are its options (``score``, ``slices``,
    ``sample_weight``, ``task``, ``pos_label``, ...).  ``keep``: columns the model replaces that the metrics
    read (default: the slice, label and weight columns)."""
    from beamlearn.metrics._accumulate import normalize_slices
    from beamlearn.metrics.evaluate import EvaluationResult, load_metrics, metrics_dict
    from beamlearn.metrics.gates import check_gates, parse_gate

    gates = [parse_gate(g) for g in ([require] if isinstance(require, str) else require)]
    base = load_metrics(baseline) if baseline is not None else None
    if model is not None and not isinstance(model, FittedPipeline):
        model = artifact.load(str(model))
    opts = {"label": label, "prediction": prediction, **options}
    if keep is None:
        keep = [c for cols in normalize_slices(options.get("slices", ())) for c in cols]
        keep += [c for c in (label, options.get("sample_weight")) if c]
    src = spark_data(data, spark, batch_size=batch_size, part=part)
    schema = model.input_schema if model is not None else (src.schema if src.files else None)
    reader = src.reader(schema, model.required_columns if model is not None else [], batch_size)
    sc = src.frame.sparkSession.sparkContext
    blob = Shipped(sc, model) if model is not None else None
    fn = _Metrics(reader, opts, blob, list(keep), Registry(model.steps if model is not None else []))
    parts = src.frame.mapInArrow(fn, "schema binary, acc binary")
    merge = _MergeMetrics(opts)
    try:
        merged = reduce_parts(parts.rdd.map(_metric_row), merge)
    finally:
        if blob is not None:
            blob.blob.destroy()
    if merged is None:
        raise SchemaError("the data has no rows to evaluate")
    analyzer, task, score = merge.analyzer(merged[0])
    accumulator = pickle.loads(merged[1])  # safe: this job's own accumulator from its executors, never an artifact
    metrics = metrics_dict(analyzer.extract(accumulator), task=task, label=label, prediction=prediction,
                           score=score, sample_weight=opts.get("sample_weight"), slices=opts.get("slices", ()),
                           min_slice_count=opts.get("min_slice_count", 30))
    return EvaluationResult(metrics, check_gates(metrics, gates, baseline=base), base)
