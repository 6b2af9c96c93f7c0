"""The Apache Beam engine: the same fit plan and fitted pipelines as Beam ``PTransform``\\ s, on any runner.

- :class:`Fit` turns a PCollection of ``pyarrow.RecordBatch`` (or of dict rows) into a singleton PCollection of
  the :class:`~beamlearn.pipeline.FittedPipeline`.  Each pass of the :class:`~beamlearn.pipeline.FitPlan` is one
  ``CombineGlobally`` whose ``CombineFn`` wraps every analyzer of the pass (the very classes the local engine
  runs); a ``DoFn`` reading the previous plan as a side input adds each batch to per-bundle accumulators, so a
  pass reads the data once and ships only accumulators.  A Beam graph is static, so passes are unrolled up to a
  bound computed from the steps (:func:`pass_bound`); passes after the plan is done are no-ops.
- :class:`Transform` applies a fitted pipeline given as a FittedPipeline, an artifact path (loaded once per
  worker, through Beam's filesystems) or the singleton output of :class:`Fit` (a side input).
- Bad rows follow the local engine's policy, with the local engine's code: by default the job fails on the
  first bad value, naming its source, row and column; ``.with_errors()`` routes every bad row to a second
  output of dead letters (``{"source", "row", "line", "column", "reason", "record"}``) instead.
- :func:`run_fit` / :func:`run_transform` run a whole job over files (the CLI's ``--engine beam``).

Beam's DaskRunner is refused (:class:`~beamlearn.errors.EngineError`): on Beam 2.77 it computes only the last
leaf of a multi-leaf pipeline and sends every element to every tagged output, which gives silently wrong results.

Examples
--------
>>> import apache_beam as beam
>>> import beamlearn as bl
>>> from beamlearn.engines.beam import Fit, Transform, Unbatch
>>> with beam.Pipeline() as p:  # doctest: +SKIP
...     batches = p | beam.Create([pa.record_batch({"x": [1.0, 2.0, 3.0]})])
...     fitted = batches | Fit(bl.Pipeline([bl.StandardScaler(["x"])]))
...     rows = batches | Transform(fitted) | Unbatch()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms.trigger import AccumulationMode
from apache_beam.transforms.window import GlobalWindows

from beamlearn import artifact, errors
from beamlearn.engines.beam_checks import check_pipeline
from beamlearn.engines.beam_io import (
    AsBatches,
    FirstSchema,
    WithErrors,
    emit_dead_letters,
)
from beamlearn.engines.beam_stream import (
    TransformLatest,
    WindowedFit,
    element_batches,
    is_windowed,
    stamped_rows,
    transform_element,
)
from beamlearn.engines.passes import (
    Registry,
    add_batch,
    create_accumulators,
    finish,
    first_pass,
    merge_accumulators,
    next_pass,
    pass_bound,
    required_columns,
)
from beamlearn.io import DeadLetters
from beamlearn.pipeline import FitPlan, FittedPipeline, Pipeline

__all__ = ["Fit", "Transform", "Unbatch", "fit_pass", "load_artifact", "pass_bound", "unbatch"]

_WHOLE = 1 << 62  # batch size that keeps an element's batch whole


# ---------------------------------------------------------------------------------------------- fit
class _AddToPass(beam.DoFn):
    """One pass, batch side: each element (a batch, or a file split read here with only the columns the pass
    needs) conformed, and the views of its batches added to per-bundle accumulators of the pass's analyzers."""

    def __init__(self, steps: Sequence[Any], collect: bool, report: bool, registry: Registry) -> None:
        self.steps, self.collect, self.report, self.registry = steps, collect, report, registry

    def setup(self):
        self.registry.restore()

    def start_bundle(self):
        self._pass, self._accs = None, None

    def process(self, item, state):
        plan, pass_ = state
        if pass_ is None:  # the plan is done: a no-op pass
            return
        if self._accs is None:
            schema = plan.input_schema
            self._pass, self._accs = pass_, create_accumulators(pass_)
            self._required = required_columns(self.steps, schema)
            self._columns, self._encoded = pass_.input_columns(), pass_.encoded_columns()
        dead = DeadLetters() if self.collect else None
        for batch in element_batches(item, plan.input_schema, self._required, dead, self.report, self._columns,
                            self._encoded):
            add_batch(self._pass, self._accs, batch, dead, self.report)
            yield from emit_dead_letters(dead)

    def finish_bundle(self):
        if self._accs is not None:
            yield GlobalWindows.windowed_value((self._pass.analyzers, self._accs))


class _PassCombineFn(beam.CombineFn):
    """All analyzers of one pass fused in one CombineFn: accumulators are ``(analyzers, [acc, ...])``."""

    def create_accumulator(self):
        return None

    def add_input(self, acc, part):
        return self.merge_accumulators([acc, part])

    def merge_accumulators(self, accs):
        out = None
        for acc in accs:
            if acc is None:
                continue
            if out is None:
                out = acc
            else:
                out = (out[0], merge_accumulators(out[0], [out[1], acc[1]]))
        return out

    def extract_output(self, acc):
        return None if acc is None else [a.extract(x) for a, x in zip(acc[0], merge_accumulators(acc[0], [acc[1]]))]


def _start(schema: pa.Schema | None, steps: Sequence[Any], registry: Registry) -> tuple[FitPlan, Any]:
    registry.restore()
    return first_pass(steps, schema)


def _advance(prev: tuple[FitPlan, Any], states: list | None, registry: Registry) -> tuple[FitPlan, Any]:
    registry.restore()
    return next_pass(prev, states, copy=True)  # the previous state is a side input: never changed in place


def _finish(state: tuple[FitPlan, Any], dead: int, bound: int, name: str | None,
            lineage: dict[str, Any], registry: Registry) -> FittedPipeline:
    registry.restore()
    return finish(state, engine="beam", name=name, lineage=lineage, dead_letters=dead, bound=bound)


def fit_pass(items: Any, state: Any, k: int, steps: list, collect: bool, registry: Registry) -> tuple[Any, Any]:
    """Pass ``k`` in a graph: per-bundle adds (the ``(plan, pass)`` singleton ``state`` as a side input), then
    the fused combine.  Returns the extracted states (empty when the plan was done) and the dead letters (those
    of pass 0: every pass reads the same rows)."""
    added = items | f"Pass{k}" >> beam.ParDo(_AddToPass(steps, collect, k == 0, registry), beam.pvalue.AsSingleton(
        state)).with_outputs("errors", main="accs")
    return added.accs | f"Combine{k}" >> beam.CombineGlobally(_PassCombineFn()).without_defaults(), added.errors


class Fit(WithErrors, beam.PTransform):
    """Fit a :class:`~beamlearn.Pipeline` on a PCollection of RecordBatches (or dict rows) on Beam.

    Parameters
    ----------
    pipeline:
        The unfitted pipeline.
    schema:
        The input schema; by default the schema of the first batch (by provenance), as the local engine captures.
    max_passes:
        How many passes to unroll in the graph (default :func:`pass_bound`); a fit that needs more fails clearly.
    lineage:
        Extra lineage recorded in the artifact.
    windowing, trigger, allowed_lateness, accumulation_mode:
        Fit per window (streaming): the data is windowed with ``beam.WindowInto(windowing, ...)`` (the
        accumulation mode defaults to accumulating, so a late firing refits the whole window) and one fitted
        pipeline per window and firing is emitted, its version in ``lineage["version"]``
        (:class:`~beamlearn.engines.beam_stream.WindowedFit`).  A PCollection already windowed is fitted per
        window too.

    Returns a singleton PCollection of :class:`~beamlearn.FittedPipeline` (one per window and firing when
    windowed); ``Fit(...).with_errors()`` returns ``(fitted, dead_letters)``.

    Examples
    --------
    >>> import beamlearn as bl
    >>> Fit(bl.Pipeline([bl.StandardScaler(["x"]), bl.StandardScaler(["x"])])).max_passes
    2
    """

    def __init__(self, pipeline: Pipeline, *, schema: pa.Schema | None = None, max_passes: int | None = None,
                 lineage: dict[str, Any] | None = None, batch_size: int = 65_536, windowing: Any = None,
                 trigger: Any = None, allowed_lateness: Any = 0, accumulation_mode: Any = None) -> None:
        super().__init__()
        self.windowing, self.trigger, self.allowed_lateness = windowing, trigger, allowed_lateness
        self.accumulation_mode = accumulation_mode
        self.pipeline, self.schema, self.lineage, self.batch_size = pipeline, schema, dict(lineage or {}), \
            batch_size
        self.max_passes = max_passes or pass_bound(pipeline.steps, schema)
        if schema is not None:  # parameter and column errors now, on the driver, not inside the job
            plan = FitPlan(pipeline.steps, schema)
            if not plan.done():
                plan.next_pass()

    def expand(self, pcoll):
        check_pipeline(pcoll)
        if self.windowing is not None:
            mode = self.accumulation_mode or AccumulationMode.ACCUMULATING
            pcoll = pcoll | "Window" >> beam.WindowInto(self.windowing, trigger=self.trigger,
                                                         allowed_lateness=self.allowed_lateness,
                                                         accumulation_mode=mode)
        if is_windowed(pcoll):
            fit = WindowedFit(self.pipeline, schema=self.schema, lineage=self.lineage, batch_size=self.batch_size)
            return pcoll | "PerWindow" >> (fit.with_errors() if self.collect else fit)
        steps = list(self.pipeline.steps)
        registry = Registry(steps)
        items = pcoll | "AsBatches" >> AsBatches(self.schema, self.batch_size, defer=True)
        if self.schema is not None:
            schema = pcoll.pipeline | "Schema" >> beam.Create([self.schema])
        else:
            schema = items | "Schema" >> beam.CombineGlobally(FirstSchema())
        state = schema | "Plan" >> beam.Map(_start, steps, registry)
        dead = []
        for k in range(self.max_passes):
            merged, errors_k = fit_pass(items, state, k, steps, self.collect, registry)
            if k == 0:
                dead.append(errors_k)
            state = state | f"Advance{k}" >> beam.Map(
                _advance, beam.pvalue.AsSingleton(merged, default_value=None), registry)
        if not self.collect:
            return state | "Fitted" >> beam.Map(_finish, 0, self.max_passes, self.pipeline.name,
                                                   self.lineage, registry)
        errors_ = tuple(dead) | "DeadLetters" >> beam.Flatten()
        count = errors_ | "CountDead" >> beam.CombineGlobally(beam.combiners.CountCombineFn()).without_defaults()
        fitted = state | "Fitted" >> beam.Map(_finish, beam.pvalue.AsSingleton(count, default_value=0),
                                              self.max_passes, self.pipeline.name, self.lineage, registry)
        return fitted, errors_


# ---------------------------------------------------------------------------------------------- transform
class _TransformFn(beam.DoFn):
    def __init__(self, source: bytes | str | None, collect: bool) -> None:
        self.source, self.collect, self.fitted, self.registry = source, collect, None, Registry()

    def setup(self):
        self.registry.restore()
        if isinstance(self.source, bytes):
            self.fitted = artifact.from_bytes(self.source)
        elif isinstance(self.source, str):
            self.fitted = load_artifact(self.source)

    def process(self, batch, fitted=None):
        yield from transform_element(fitted if fitted is not None else self.fitted, batch, self.collect)


def load_artifact(path: str) -> FittedPipeline:
    """Load an artifact from any filesystem Beam knows (local, ``gs://``, ``s3://``, ...)."""
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path) as fh:
            data = fh.read()
    except Exception as exc:  # noqa: BLE001 - every filesystem raises its own errors
        raise errors.ArtifactError(f"{path}: cannot read the artifact ({exc})") from None
    try:
        return artifact.from_bytes(data)
    except errors.ArtifactError as exc:
        raise errors.ArtifactError(f"{path}: {exc}") from None


class Transform(WithErrors, beam.PTransform):
    """Apply a fitted pipeline to a PCollection of RecordBatches (or dict rows); outputs RecordBatches.

    Parameters
    ----------
    fitted:
        A :class:`~beamlearn.FittedPipeline` (shipped as artifact bytes), an artifact path on any Beam
        filesystem (loaded once per worker in ``DoFn.setup``), or the singleton PCollection output of :class:`Fit`
        (read as a side input: fit and transform in one job).  With ``model``, the model to start with (or None).
    model:
        A PCollection of FittedPipeline that keeps coming (a windowed :class:`Fit`, or
        :class:`~beamlearn.engines.beam_stream.WatchArtifacts`): each element is transformed with the newest
        version that has arrived (:class:`~beamlearn.engines.beam_stream.TransformLatest`).
    version_column:
        With ``model``: the name of a column holding the version id of the model used for each row.
    output:
        ``"batches"`` (RecordBatches; a batch of dict rows keeps their window and the earliest of their
        timestamps), or ``"rows"``: dict rows, each with its own input timestamp and window.

    ``Transform(...).with_errors()`` returns ``(batches, dead_letters)`` instead of failing on a bad row.

    Examples
    --------
    >>> import beamlearn as bl
    >>> f = bl.Pipeline([bl.StandardScaler(["x"])]).fit({"x": [1.0, 2.0]})
    >>> type(Transform(f).with_errors()).__name__
    'Transform'
    """

    def __init__(self, fitted: FittedPipeline | str | beam.pvalue.PCollection | None = None, *,
                 batch_size: int = 65_536, model: beam.pvalue.PCollection | None = None,
                 version_column: str | None = None, output: str = "batches", **latest: Any) -> None:
        super().__init__()
        if output not in ("batches", "rows"):
            raise errors.SpecError(f"Transform: output must be 'batches' or 'rows', got {output!r}")
        if fitted is None and model is None:
            raise errors.SpecError("Transform needs a fitted pipeline or model=<PCollection of FittedPipeline>")
        self.fitted, self.batch_size, self.model, self.version_column = fitted, batch_size, model, version_column
        self.output, self.latest = output, latest

    def expand(self, pcoll):
        check_pipeline(pcoll)
        f = self.fitted
        if self.model is not None:
            if f is not None and not isinstance(f, FittedPipeline):
                raise errors.SpecError("Transform(model=...): the model to start with must be a FittedPipeline")
            latest = TransformLatest(self.model, initial=f, version_column=self.version_column,
                                     batch_size=self.batch_size, output=self.output, **self.latest)
            return pcoll | "Latest" >> (latest.with_errors() if self.collect else latest)
        schema = f.input_schema if isinstance(f, FittedPipeline) else None
        rows = self.output == "rows"
        batches = pcoll | "AsBatches" >> AsBatches(schema, self.batch_size, defer=True, stamp=rows)
        if isinstance(f, beam.pvalue.PCollection):
            fn, args = _TransformFn(None, self.collect), [beam.pvalue.AsSingleton(f)]
        elif isinstance(f, FittedPipeline):
            fn, args = _TransformFn(artifact.to_bytes(f), self.collect), []
        elif isinstance(f, str):
            fn, args = _TransformFn(f, self.collect), []
        else:
            raise errors.SpecError(f"Transform needs a FittedPipeline, an artifact path or the output of Fit, "
                                   f"got {type(f).__name__}")
        out = batches | "Apply" >> beam.ParDo(fn, *args).with_outputs("errors", main="batches")
        main = out.batches | "Rows" >> beam.FlatMap(stamped_rows) if rows else out.batches
        return (main, out.errors) if self.collect else main


def _rows(batch: pa.RecordBatch) -> list[dict]:
    return batch.to_pylist()


class Unbatch(beam.PTransform):
    """RecordBatches to dict rows (for sinks and code that want records).

    Examples
    --------
    >>> _rows(pa.record_batch({"x": [1, 2]}))
    [{'x': 1}, {'x': 2}]
    """

    def expand(self, pcoll):
        return pcoll | "ToRows" >> beam.FlatMap(_rows)


def unbatch() -> Unbatch:
    """A transform turning RecordBatches into dict rows: ``batches | unbatch()``."""
    return Unbatch()
