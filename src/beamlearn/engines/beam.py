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

import pickle
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms.window import GlobalWindows

from beamlearn import artifact, errors
from beamlearn.analyzers import Analyzer
from beamlearn.engines.beam_io import FileSplit, _AsBatches, _FirstSchema, read_split
from beamlearn.engines.beam_jobs import _check_pipeline, check_runner, run_fit, run_transform, translate_error
from beamlearn.engines.local import LocalEngine
from beamlearn.errors import DataError, EngineError
from beamlearn.io import DeadLetters
from beamlearn.pipeline import FitPlan, FittedPipeline, Pipeline, step_seeds
from beamlearn.steps.base import Step

__all__ = [
    "Fit",
    "Transform",
    "Unbatch",
    "check_runner",
    "load_artifact",
    "pass_bound",
    "run_fit",
    "run_transform",
    "translate_error",
    "unbatch",
]

_NS = "beamlearn"
_ENGINE = LocalEngine(batch_size=1 << 62)  # its conform/guard code, shared with the local engine


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


class _Registry:
    """The custom steps and functions registered on the driver, re-registered on each worker before any step
    runs, so custom steps and ``Function`` steps work on every runner.

    Only what ``steps`` use is shipped when the steps are known (all registered ones otherwise), each as its
    own cloudpickle blob: a worker that cannot import one (a module only the driver has) skips it, and a step
    that needs it then fails with the usual "not registered" error instead of the whole job failing to start.
    """

    def __init__(self, steps: Sequence[Any] | None = None) -> None:
        import cloudpickle

        from beamlearn.steps import registered_steps
        from beamlearn.steps.expr import registered_functions

        custom = {n: c for n, c in registered_steps().items() if not c.__module__.startswith("beamlearn.")}
        functions = registered_functions()
        if steps is not None:
            used = {type(s).__name__ for s in steps}
            named = {v for s in steps for v in s.get_params().values() if isinstance(v, str)}
            custom = {n: c for n, c in custom.items() if n in used}
            functions = {n: f for n, f in functions.items() if n in named}
        self.steps = {n: cloudpickle.dumps(c) for n, c in custom.items()}
        self.functions = {n: cloudpickle.dumps(f) for n, f in functions.items()}

    def restore(self) -> None:
        import pickle

        from beamlearn.steps import register_step, registered_steps
        from beamlearn.steps.expr import register_function, registered_functions

        known, fns = registered_steps(), registered_functions()
        for table, have, register in ((self.steps, known, lambda n, o: register_step(o)),
                                      (self.functions, fns, lambda n, o: register_function(n)(o))):
            for name, blob in table.items():
                if name in have:
                    continue
                try:
                    obj = pickle.loads(blob)  # safe: pickled by this pipeline's own driver
                except Exception:  # noqa: BLE001 - not importable here; a step that needs it says so clearly
                    continue
                register(name, obj)


# ---------------------------------------------------------------------------------------------- fit
def _copy(obj: Any) -> Any:
    return pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))  # safe: copies an in-process object


def _items(item: Any, schema: pa.Schema, required: list[str], dead: DeadLetters | None, report: bool,
           columns: list[str] | None = None, encoded: Sequence[str] = ()):
    """The conformed ``(batch, kept)`` pairs an element stands for: a RecordBatch, or a file split read here
    (only ``columns`` of it, when skipping the others cannot change the rows kept; the string columns of
    ``encoded`` dictionary-encoded).  Bad rows raise, or go to ``dead`` when ``report`` (a later pass drops the
    same rows without reporting them again)."""
    if isinstance(item, FileSplit):
        quiet = dead if report else (DeadLetters() if dead is not None else None)
        for b in read_split(item, schema=schema, dead=quiet, required=required, columns=columns, encoded=encoded):
            yield b, None
    else:
        yield from _ENGINE._conformed([item], schema, required, dead, report)


def _dead(dead: DeadLetters | None):
    """Emit (and drain) the dead letters collected so far to the ``errors`` output."""
    if dead is not None and dead.records:
        records, dead.records = dead.records, []
        beam.metrics.Metrics.counter(_NS, "dead_letters").inc(len(records))
        for rec in records:
            yield beam.pvalue.TaggedOutput("errors", rec)


class _AddToPass(beam.DoFn):
    """One pass, batch side: each element (a batch, or a file split read here with only the columns the pass
    needs) conformed, and the views of its batches added to per-bundle accumulators of the pass's analyzers."""

    def __init__(self, steps: Sequence[Any], collect: bool, report: bool, registry: _Registry) -> None:
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
            self._pass, self._accs = pass_, [a.create() for a in pass_.analyzers]
            self._required = [c for s in self.steps for c in s.input_columns() if c in schema.names]
            self._columns, self._encoded = pass_.input_columns(), pass_.encoded_columns()
        dead = DeadLetters() if self.collect else None
        for batch, kept in _items(item, plan.input_schema, self._required, dead, self.report, self._columns,
                                  self._encoded):
            views, _ = _ENGINE._guard(self._pass.views, batch, kept, dead, self.report)
            for j, (a, view) in enumerate(zip(self._pass.analyzers, views)):
                self._accs[j] = a.add(self._accs[j], view)
            yield from _dead(dead)

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
                out = (out[0], [a.merge([x, y]) for a, x, y in zip(out[0], out[1], acc[1])])
        return out

    def extract_output(self, acc):
        return None if acc is None else [a.extract(a.merge([x])) for a, x in zip(*acc)]


def _next(plan: FitPlan) -> tuple[FitPlan, Any]:
    if plan.done():
        return plan, None
    pass_ = plan.next_pass()
    sequential = [a for a in pass_.analyzers if getattr(a, "sequential", False)]
    if sequential:
        raise EngineError(f"{sequential[0]!r} must see the batches in order and cannot merge accumulators, so it "
                          "cannot run as a Beam combine; fit this pipeline with the local engine")
    return plan, pass_


def _start(schema: pa.Schema | None, steps: Sequence[Any], registry: _Registry) -> tuple[FitPlan, Any]:
    registry.restore()
    if schema is None:
        raise DataError("no data to fit on")
    return _next(FitPlan(steps, schema))


def _advance(prev: tuple[FitPlan, Any], states: list | None, registry: _Registry) -> tuple[FitPlan, Any]:
    registry.restore()
    plan, pass_ = _copy(prev)
    if pass_ is None:
        return plan, None
    if states is None:
        raise DataError("no data to fit on (every row was rejected)")
    plan.complete(pass_, states)
    return _next(plan)


def _finish(state: tuple[FitPlan, Any], dead: int, bound: int, name: str | None,
            lineage: dict[str, Any], registry: _Registry) -> FittedPipeline:
    registry.restore()
    plan, pass_ = state
    if pass_ is not None or not plan.done():
        raise EngineError(f"the fit is not done after {bound} passes (the bound unrolled in the Beam graph); "
                          f"pass a larger max_passes to Fit")
    info = dict(lineage)
    info.update({"rows": int(plan.profile["count"]["rows"]), "dead_letters": int(dead), "passes": plan.passes,
                 "profile": plan.profile, "engine": "beam", "seeds": step_seeds(plan.steps)})
    return FittedPipeline(plan.steps, plan.states, plan.input_schema, name=name, lineage=info)


def _pass(items: Any, state: Any, k: int, steps: list, collect: bool, registry: _Registry) -> tuple[Any, Any]:
    """Pass ``k`` in a graph: per-bundle adds (the ``(plan, pass)`` singleton ``state`` as a side input), then
    the fused combine.  Returns the extracted states (empty when the plan was done) and the dead letters (those
    of pass 0: every pass reads the same rows)."""
    added = items | f"Pass{k}" >> beam.ParDo(_AddToPass(steps, collect, k == 0, registry), beam.pvalue.AsSingleton(
        state)).with_outputs("errors", main="accs")
    return added.accs | f"Combine{k}" >> beam.CombineGlobally(_PassCombineFn()).without_defaults(), added.errors


class _WithErrors:
    """``.with_errors()``: return ``(main, errors)`` instead of failing the job on the first bad row."""

    collect = False

    def with_errors(self):
        """This transform, returning ``(main output, dead letters)``: bad rows are routed, not raised."""
        clone = _copy_transform(self)
        clone.collect = True
        return clone


def _copy_transform(t: Any) -> Any:
    clone = object.__new__(type(t))
    clone.__dict__.update(t.__dict__)
    return clone


class Fit(_WithErrors, beam.PTransform):
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
        _check_pipeline(pcoll)
        steps = list(self.pipeline.steps)
        registry = _Registry(steps)
        items = pcoll | "AsBatches" >> _AsBatches(self.schema, self.batch_size, defer=True)
        if self.schema is not None:
            schema = pcoll.pipeline | "Schema" >> beam.Create([self.schema])
        else:
            schema = items | "Schema" >> beam.CombineGlobally(_FirstSchema())
        state = schema | "Plan" >> beam.Map(_start, steps, registry)
        dead = []
        for k in range(self.max_passes):
            merged, errors_k = _pass(items, state, k, steps, self.collect, registry)
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
        self.source, self.collect, self.fitted, self.registry = source, collect, None, _Registry()

    def setup(self):
        self.registry.restore()
        if isinstance(self.source, bytes):
            self.fitted = artifact.from_bytes(self.source)
        elif isinstance(self.source, str):
            self.fitted = load_artifact(self.source)

    def process(self, batch, fitted=None):
        fitted = fitted if fitted is not None else self.fitted
        dead = DeadLetters() if self.collect else None
        rows = beam.metrics.Metrics.counter(_NS, "rows")
        encoded = fitted.encoded_columns()
        for good, kept in _items(batch, fitted.input_schema, fitted.required_columns, dead, True, None, encoded):
            out, _ = _ENGINE._guard(fitted.transform_batch, good, kept, dead, True)
            rows.inc(out.num_rows)
            yield out
            yield from _dead(dead)
        yield from _dead(dead)


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


class Transform(_WithErrors, beam.PTransform):
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
        _check_pipeline(pcoll)
        f = self.fitted
        schema = f.input_schema if isinstance(f, FittedPipeline) else None
        batches = pcoll | "AsBatches" >> _AsBatches(schema, self.batch_size, defer=True)
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
