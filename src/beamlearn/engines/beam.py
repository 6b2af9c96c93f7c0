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
from apache_beam.transforms.window import GlobalWindows

from beamlearn import artifact, errors
from beamlearn.analyzers import Analyzer
from beamlearn.engines.beam_checks import check_pipeline
from beamlearn.engines.beam_io import (NAMESPACE, AsBatches, FileSplit, FirstSchema, WithErrors, emit_dead_letters,
                                       read_split)
from beamlearn.engines.passes import (Registry, add_batch, conformed, create_accumulators, finish, first_pass, guard,
                                      merge_accumulators, next_pass, required_columns)
from beamlearn.io import DeadLetters
from beamlearn.pipeline import FitPlan, FittedPipeline, Pipeline
from beamlearn.steps.base import Step

__all__ = ["Fit", "Transform", "Unbatch", "fit_pass", "load_artifact", "pass_bound", "unbatch"]

_WHOLE = 1 << 62  # batch size that keeps an element's batch whole


# ---------------------------------------------------------------------------------------------- planning
def pass_bound(steps: Sequence[Any], schema: pa.Schema | None = None) -> int:
    """An upper bound on the passes a fit of ``steps`` takes: the longest chain of dependent statistics.

    A statistic whose analyzer may ask for a further pass (:meth:`~beamlearn.analyzers.Analyzer.then`) counts
    two, an iterative estimator its own ``max_passes()``.  An estimator (``waits_for_previous``) depends on every
    earlier step.  A step depends on an earlier step that reads one of its columns; a
    column not in ``schema`` is produced by a step, so the step reading it depends on every earlier step.  Without
    a schema, a column named after an earlier step's input (``x_a``, ``missingindicator_x``) is taken as that
    step's output.  When a statistic may ask for a further pass, one pass of slack covers a rare repeated
    quantile selection (a sketch bracket that missed).

    Examples
    --------
    >>> import beamlearn as bl
    >>> pass_bound([bl.StandardScaler(["x"]), bl.MinMaxScaler(["y"])])
    1
    >>> pass_bound([bl.StandardScaler(["x"]), bl.MinMaxScaler(["x"])])
    2
    >>> pass_bound([bl.RobustScaler(["x"]), bl.MinMaxScaler(["x"])])  # exact quantiles: two passes, + slack
    4
    """
    depth: list[int] = []
    inputs = [set(s.input_columns()) for s in steps]
    slack = 0

    def derived_from(c: str, j: int) -> bool:
        if schema is not None:
            return c not in schema.names
        return any(c.startswith(x + "_") or c.endswith("_" + x) for x in inputs[j])

    for i, s in enumerate(steps):
        an = s.analyzers()
        own = max([1 if type(a).then is Analyzer.then else 2 for a in an.values()], default=0) if an else 0
        slack = max(slack, 1 if own > 1 else 0)
        if callable(getattr(s, "max_passes", None)):  # iterative estimators bound their own passes
            own, slack = max(own, int(s.max_passes())), max(slack, 1)
        elif an or type(s).plan is not Step.plan:  # analyzers chosen at planning time: assume one
            own = max(own, 1, int(getattr(s, "max_iter", 0) or 0))
        waits = getattr(s, "waits_for_previous", False)  # may read the output of any earlier step
        deps = [depth[j] for j in range(i) if waits or inputs[i] & inputs[j]
                or any(derived_from(c, j) for c in inputs[i])]
        depth.append(own + max(deps, default=0))
    return max(depth, default=0) + slack


# ---------------------------------------------------------------------------------------------- fit
def _items(item: Any, schema: pa.Schema, required: list[str], dead: DeadLetters | None, report: bool,
           columns: list[str] | None = None, encoded: Sequence[str] = ()):
    """The conformed batches an element stands for: a RecordBatch, or a file split read here
    (only ``columns`` of it, when skipping the others cannot change the rows kept; the string columns of
    ``encoded`` dictionary-encoded).  Bad rows raise, or go to ``dead`` when ``report`` (a later pass drops the
    same rows without reporting them again)."""
    if isinstance(item, FileSplit):
        quiet = dead if report else (DeadLetters() if dead is not None else None)
        yield from read_split(item, schema=schema, dead=quiet, required=required, columns=columns, encoded=encoded)
    else:
        yield from conformed([item], schema, required, dead, report, batch_size=_WHOLE)


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
        for batch in _items(item, plan.input_schema, self._required, dead, self.report, self._columns,
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

    Returns a singleton PCollection of :class:`~beamlearn.FittedPipeline`; ``Fit(...).with_errors()`` returns
    ``(fitted, dead_letters)``.

    Examples
    --------
    >>> import beamlearn as bl
    >>> Fit(bl.Pipeline([bl.StandardScaler(["x"]), bl.StandardScaler(["x"])])).max_passes
    2
    """

    def __init__(self, pipeline: Pipeline, *, schema: pa.Schema | None = None, max_passes: int | None = None,
                 lineage: dict[str, Any] | None = None, batch_size: int = 65_536) -> None:
        super().__init__()
        self.pipeline, self.schema, self.lineage, self.batch_size = pipeline, schema, dict(lineage or {}), \
            batch_size
        self.max_passes = max_passes or pass_bound(pipeline.steps, schema)
        if schema is not None:  # parameter and column errors now, on the driver, not inside the job
            plan = FitPlan(pipeline.steps, schema)
            if not plan.done():
                plan.next_pass()

    def expand(self, pcoll):
        check_pipeline(pcoll)
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
        fitted = fitted if fitted is not None else self.fitted
        dead = DeadLetters() if self.collect else None
        rows = beam.metrics.Metrics.counter(NAMESPACE, "rows")
        encoded = fitted.encoded_columns()
        for good in _items(batch, fitted.input_schema, fitted.required_columns, dead, True, None, encoded):
            out, _ = guard(fitted.transform_batch, good, dead)
            rows.inc(out.num_rows)
            yield out
            yield from emit_dead_letters(dead)
        yield from emit_dead_letters(dead)


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
        (read as a side input: fit and transform in one job).

    ``Transform(...).with_errors()`` returns ``(batches, dead_letters)`` instead of failing on a bad row.

    Examples
    --------
    >>> import beamlearn as bl
    >>> f = bl.Pipeline([bl.StandardScaler(["x"])]).fit({"x": [1.0, 2.0]})
    >>> type(Transform(f).with_errors()).__name__
    'Transform'
    """

    def __init__(self, fitted: FittedPipeline | str | beam.pvalue.PCollection, *, batch_size: int = 65_536) -> None:
        super().__init__()
        self.fitted, self.batch_size = fitted, batch_size

    def expand(self, pcoll):
        check_pipeline(pcoll)
        f = self.fitted
        schema = f.input_schema if isinstance(f, FittedPipeline) else None
        batches = pcoll | "AsBatches" >> AsBatches(schema, self.batch_size, defer=True)
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
        return (out.batches, out.errors) if self.collect else out.batches


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
