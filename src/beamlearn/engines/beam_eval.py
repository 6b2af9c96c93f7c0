"""Evaluation on Apache Beam: :class:`Evaluate` (a PTransform) and :func:`run_evaluate` (a whole job over files).

The metrics are the same :class:`~beamlearn.analyzers.Analyzer` reductions the local :func:`beamlearn.metrics
.evaluate` runs (:class:`AnalyzerCombineFn` maps create/add/merge/extract one to one onto a Beam ``CombineFn``),
built by the same :func:`~beamlearn.metrics.evaluate.build_analyzer` from the schema of the first batch a worker
sees, so both engines give the same metrics dict.

Examples
--------
>>> import apache_beam as beam, pyarrow as pa
>>> from apache_beam.testing.util import assert_that
>>> def check(results):
...     assert [m["overall"]["accuracy"] for m in results] == [0.75], results
>>> with beam.Pipeline() as p:
...     metrics = (p | beam.Create([pa.record_batch({"y": [0, 1, 1, 0], "p": [0, 1, 0, 0]})])
...                | Evaluate(label="y", prediction="p"))
...     _ = assert_that(metrics, check)
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.transforms.trigger import AccumulationMode

from beamlearn.batches import DEFAULT_BATCH_SIZE, batch_origin, batch_rows, tag_batch, tag_rows
from beamlearn.engines.beam import Transform
from beamlearn.engines.beam_checks import check_pipeline
from beamlearn.engines.beam_io import NAMESPACE, AsBatches, ReadFiles, file_schema, resolve_paths
from beamlearn.engines.beam_jobs import Save, load_saved, pipeline_options, run_pipeline, scratch_path
from beamlearn.engines.beam_stream import is_windowed, window_version
from beamlearn.errors import SchemaError, SpecError
from beamlearn.metrics._accumulate import normalize_slices
from beamlearn.metrics.evaluate import EvaluationResult, build_analyzer, load_metrics, metrics_dict
from beamlearn.metrics.gates import check_gates, parse_gate

__all__ = ["AnalyzerCombineFn", "Evaluate", "run_evaluate"]

_KEEP = "__beamlearn_keep__"  # prefix of the copies of columns a model step may replace (slices, label, weight)


class AnalyzerCombineFn(beam.CombineFn):
    """Any beamlearn :class:`~beamlearn.analyzers.Analyzer` as a Beam ``CombineFn`` (the four methods map one to
    one); the input elements are RecordBatches.

    Examples
    --------
    >>> from beamlearn.metrics import ClassificationMetrics
    >>> fn = AnalyzerCombineFn(ClassificationMetrics("y", "p"))
    >>> acc = fn.add_input(fn.create_accumulator(), pa.record_batch({"y": [1, 0], "p": [1, 1]}))
    >>> fn.extract_output(fn.merge_accumulators([acc, fn.create_accumulator()]))["overall"]["accuracy"]
    0.5
    """

    def __init__(self, analyzer: Any) -> None:
        self.analyzer = analyzer

    def create_accumulator(self):
        return self.analyzer.create()

    def add_input(self, acc, batch):
        return self.analyzer.add(acc, batch)

    def merge_accumulators(self, accs):
        return self.analyzer.merge(list(accs))

    def extract_output(self, acc):
        return self.analyzer.extract(acc)


class _MetricsCombineFn(beam.CombineFn):
    """The metrics dict of :func:`~beamlearn.metrics.evaluate`: the analyzer is built from the schema of the
    first batch (carried in the accumulator, so a worker that only merges builds the same one)."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options, self._built = options, {}

    def _analyzer(self, schema: pa.Schema) -> tuple[Any, str, Any]:
        key = schema.serialize().to_pybytes()
        if key not in self._built:
            self._built[key] = build_analyzer(schema, **self.options)
        return self._built[key]

    def create_accumulator(self):
        return (None, None)

    def add_input(self, acc, batch):
        schema, state = acc
        if schema is None:
            schema = batch.schema.remove_metadata()
            state = self._analyzer(schema)[0].create()
        return schema, self._analyzer(schema)[0].add(state, batch)

    def merge_accumulators(self, accs):
        accs = [a for a in accs if a[0] is not None]
        if not accs:
            return (None, None)
        return accs[0][0], self._analyzer(accs[0][0])[0].merge([s for _, s in accs])

    def extract_output(self, acc):
        schema, state = acc
        if schema is None:
            raise SchemaError("the data has no rows to evaluate")
        analyzer, task, score = self._analyzer(schema)
        o = self.options
        return metrics_dict(analyzer.extract(state), task=task, label=o["label"], prediction=o["prediction"],
                            score=score, sample_weight=o.get("sample_weight"), slices=o.get("slices", ()),
                            min_slice_count=o.get("min_slice_count", 30))


def _alias(batch: pa.RecordBatch, keep: Sequence[str]) -> pa.RecordBatch:
    """Copies of the ``keep`` columns and of each row's origin (source file, row number: the bootstrap hashes
    them), which the model's transform does not carry."""
    source, _ = batch_origin(batch)
    batch = batch.append_column(_KEEP + ":source", pa.array([source or ""] * batch.num_rows, pa.string()))
    batch = batch.append_column(_KEEP + ":row", pa.array(batch_rows(batch), pa.int64()))
    for c in keep:
        if c in batch.schema.names:
            batch = batch.append_column(_KEEP + c, batch.column(c))
    return batch


def _restore(batch: pa.RecordBatch, keep: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """Put back the kept columns a step replaced (e.g. ``carrier`` after one-hot encoding) and the rows' origin
    (one batch per run of rows from one source); drop the copies."""
    for c in keep:
        if _KEEP + c in batch.schema.names:
            i = batch.schema.get_field_index(_KEEP + c)
            if c not in batch.schema.names:
                batch = batch.append_column(c, batch.column(i))
            batch = batch.remove_column(batch.schema.get_field_index(_KEEP + c))
    sources = batch.column(_KEEP + ":source").to_numpy(zero_copy_only=False)
    rows = batch.column(_KEEP + ":row").to_numpy()
    batch = batch.drop_columns([_KEEP + ":source", _KEEP + ":row"])
    cuts = [0, *(np.flatnonzero(sources[1:] != sources[:-1]) + 1).tolist(), batch.num_rows]
    for a, b in itertools.pairwise(cuts):
        part = batch.slice(a, b - a)
        yield tag_rows(tag_batch(part, sources[a], 0), rows[a:b]) if sources[a] else tag_rows(part, rows[a:b])


def _nonempty(batch: pa.RecordBatch) -> bool:
    return batch.num_rows > 0


def _split_part(batch: pa.RecordBatch, split: Any, which: str) -> Iterator[pa.RecordBatch]:
    return split.part([batch], which)


class Evaluate(beam.PTransform):
    """Evaluate a PCollection of RecordBatches (or file splits, or dict rows): a singleton PCollection holding the
    metrics dict that :func:`beamlearn.metrics.evaluate` gives on the same data (one pass: every metric, overall
    and per slice).

    Parameters
    ----------
    label, prediction, score, slices, sample_weight:
        As in :func:`beamlearn.metrics.evaluate`.
    model:
        A fitted pipeline (or an artifact path) applied first with :class:`~beamlearn.engines.beam.Transform`;
        slice, label and weight columns the model replaces are taken back from its input, as ``beamlearn run``
        does.
    batch_size:
        Rows per batch given to the model.
    **kw:
        The other options of :func:`~beamlearn.metrics.evaluate`: ``task``, ``pos_label``, ``beta``,
        ``zero_division``, ``min_slice_count``, ``n_bootstrap``, ``confidence``, ``exact_max_rows``,
        ``threshold_criterion``.  Gates are checked by :func:`run_evaluate` (or
        :func:`~beamlearn.metrics.gates.check_gates`) on the result.
    windowing, trigger, allowed_lateness, accumulation_mode:
        Evaluate per window (streaming), as :class:`~beamlearn.engines.beam.Fit` fits per window.  A PCollection
        already windowed is evaluated per window too.  Each window and firing then gives
        ``{"version", "metrics", "gates", "passed"}``: the window (:func:`~beamlearn.engines.beam_stream.window_version`),
        its metrics dict, the results of ``gates`` on it, and whether all passed.
    gates:
        Gates (``"accuracy >= 0.9"``) checked on each window's metrics (windowed evaluation only).

    Examples
    --------
    >>> Evaluate(label="y", prediction="p", slices=["origin"]).options["slices"]
    ['origin']
    """

    def __init__(self, *, label: str, prediction: str, score: Any = None, slices: Any = (),
                 sample_weight: str | None = None, model: Any = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 windowing: Any = None, trigger: Any = None, allowed_lateness: Any = 0, accumulation_mode: Any = None,
                 gates: Iterable[str] = (), **kw: Any) -> None:
        super().__init__()
        self.windowing, self.trigger, self.allowed_lateness = windowing, trigger, allowed_lateness
        self.accumulation_mode, self.gates = accumulation_mode, [parse_gate(g) for g in gates]
        allowed = {"task", "pos_label", "beta", "zero_division", "min_slice_count", "n_bootstrap", "confidence",
                   "exact_max_rows", "threshold_criterion"}
        unknown = sorted(set(kw) - allowed)
        if unknown:
            raise SpecError(f"Evaluate: unknown option(s) {', '.join(unknown)} "
                            f"(options: {', '.join(sorted(allowed))})")
        self.options = {"label": label, "prediction": prediction, "score": score, "slices": slices,
                        "sample_weight": sample_weight, **kw}
        self.model, self.batch_size = model, batch_size

    def expand(self, pcoll):

        check_pipeline(pcoll)
        if self.windowing is not None:
            pcoll = pcoll | "Window" >> beam.WindowInto(
                self.windowing, trigger=self.trigger, allowed_lateness=self.allowed_lateness,
                accumulation_mode=self.accumulation_mode or AccumulationMode.ACCUMULATING)
        batches = pcoll | "AsBatches" >> AsBatches(batch_size=self.batch_size)  # one pass: splits read here
        if self.model is not None:
            o = self.options
            keep = [c for cols in normalize_slices(o["slices"]) for c in cols]
            keep += [c for c in (o["label"], o["sample_weight"]) if c]
            batches = (batches | "Keep" >> beam.Map(_alias, keep)
                       | "Model" >> Transform(self.model, batch_size=self.batch_size)
                       | "Restore" >> beam.FlatMap(_restore, keep))
        batches = batches | "NonEmpty" >> beam.Filter(_nonempty)
        if not is_windowed(pcoll):
            return batches | "Metrics" >> beam.CombineGlobally(_MetricsCombineFn(self.options))
        return (batches | "Metrics" >> beam.CombineGlobally(_MetricsCombineFn(self.options)).without_defaults()
                | "Gates" >> beam.ParDo(_WindowGates(self.gates)))


class _WindowGates(beam.DoFn):
    """A window's metrics with its version and the results of the gates on it."""

    def __init__(self, gates: list[Any]) -> None:
        self.gates = gates

    def process(self, metrics, window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        results = [r.to_dict() for r in check_gates(metrics, self.gates)]
        if not all(r["passed"] for r in results):
            beam.metrics.Metrics.counter(NAMESPACE, "windows_failing_gates").inc()
        yield {"version": window_version(window, pane), "metrics": metrics, "gates": results,
               "passed": all(r["passed"] for r in results)}


def run_evaluate(paths: Any, *, label: str, prediction: str, model: Any = None, require: Iterable[str] = (),
                 baseline: Any = None, beam_args: list[str] | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 schema: pa.Schema | None = None, part: tuple[Any, str] | None = None,
                 **kw: Any) -> EvaluationResult:
    """Evaluate files (optionally through ``model``) in one Beam job; returns the
    :class:`~beamlearn.metrics.evaluate.EvaluationResult` with the ``require`` gates checked, as
    :func:`beamlearn.metrics.evaluate` does in-process.

    ``beam_args`` go to ``PipelineOptions`` untouched (the runner is checked as in
    :func:`~beamlearn.engines.beam_jobs.run_fit`); ``schema`` is the files' schema (default: read from the
    files); ``part`` a ``(split, "train" | "test")`` pair (a :class:`~beamlearn.split.Split`) to evaluate one
    part of the files; ``**kw`` are :class:`Evaluate`'s options.
    """
    from apache_beam.io.filesystems import FileSystems


    gates = [parse_gate(g) for g in ([require] if isinstance(require, str) else require)]
    base = load_metrics(baseline) if baseline is not None else None
    if any(g.baseline for g in gates) and base is None:
        raise SpecError("a gate is relative to a baseline ('baseline...'), but no baseline was given")
    opts, temp_location = pipeline_options(beam_args)
    files = resolve_paths(paths)
    if schema is None:
        schema = file_schema(files, batch_size)

    tmpdir = tempfile.mkdtemp(prefix="beamlearn-eval-")
    scratch = FileSystems.join(temp_location, f"beamlearn-eval-{uuid.uuid4().hex}") if temp_location else tmpdir
    out = scratch_path(scratch, "metrics.pkl")
    try:
        p = beam.Pipeline(options=opts)
        batches = p | "Read" >> ReadFiles(files, schema=schema, batch_size=batch_size)
        if part is not None:
            batches = batches | "Split" >> beam.FlatMap(_split_part, *part)
        evaluate = Evaluate(label=label, prediction=prediction, model=model, batch_size=batch_size, **kw)
        (batches | "Evaluate" >> evaluate | "Save" >> beam.ParDo(Save(out)))
        run_pipeline(p)
        metrics = load_saved(out)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    if metrics is None:
        raise SchemaError("the data has no rows to evaluate")
    return EvaluationResult(metrics, check_gates(metrics, gates, baseline=base), base)

