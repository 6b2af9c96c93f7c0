"""Beam streaming: the same fit plan per window, versioned, and transforms that swap in the latest model.

- :class:`WindowedFit` (what ``Fit(pipeline, windowing=...)`` or ``Fit`` on a windowed PCollection runs) emits one
  :class:`~beamlearn.FittedPipeline` per window and trigger firing.  The input schema must be given.  A plan of one pass runs as one ``CombineGlobally`` per window (constant memory: only accumulators move).  Any other plan
  (several passes, exact quantiles) groups the window's batches and runs every pass of the
  plan over them, exactly as the local engine does (memory: the window's rows, on runners that materialize a
  group).  Either way a window's state equals a batch fit over that window's rows.  Each fitted pipeline records
  its **version** in ``lineage["version"]``: the window's bounds, the pane index (0 for the first firing; a late
  firing is a new version) and its timing (``EARLY``, ``ON_TIME``, ``LATE``).
- :class:`TransformLatest` (what ``Transform(model=<PCollection of FittedPipeline>)`` runs) transforms each element
  with the newest model that has arrived, newest by version: a stateful join in the global window, models fanned
  out to every shard, so a new version takes effect for the next element without a restart (Beam's
  slowly-updating side input pattern blocks the main input until the side window closes on the Python
  DirectRunner; this does not).  Elements keep their timestamps and windows.  Elements that arrive before any
  model wait (at most ``max_pending`` batches per shard, then they are dead letters).
- :class:`WatchArtifacts` turns artifacts written by another job (``models/*.blm``) into such a stream: every new or
  rewritten file that loads and verifies, however many appear in one poll; a file that fails to load is counted
  (``beamlearn:bad_artifacts``) and skipped, so the current model keeps serving.

How stale a model may be: a window's model exists once its window fires (the window's end plus the watermark
delay, or the trigger's early firing), so data at event time ``t`` is transformed with a model fitted on data up
to roughly ``t - window size``; the Beam distribution ``beamlearn:model_staleness_ms`` records, per element,
its event time minus the end of the window its model was fitted on.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.coders import PickleCoder
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec
from apache_beam.transforms.window import GlobalWindow, GlobalWindows, TimestampedValue
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp

from beamlearn import artifact, errors
from beamlearn.engines.beam_io import (
    NAMESPACE,
    STAMP,
    AsBatches,
    FileSplit,
    WithErrors,
    emit_dead_letters,
    read_split,
)
from beamlearn.engines.passes import (
    Registry,
    add_batch,
    conformed,
    create_accumulators,
    extract_states,
    finish,
    first_pass,
    guard,
    merge_accumulators,
    next_pass,
    pass_bound,
    required_columns,
)
from beamlearn.io import DeadLetters
from beamlearn.pipeline import FittedPipeline, Pipeline

__all__ = ["TransformLatest", "WatchArtifacts", "WindowedFit", "element_batches", "is_windowed",
           "stamped_rows", "transform_element", "version_key", "window_version"]

_WHOLE = 1 << 62  # batch size that keeps an element's batch whole


# ---------------------------------------------------------------------------------------------- shared
def element_batches(item: Any, schema: pa.Schema, required: list[str], dead: DeadLetters | None, report: bool,
                    columns: list[str] | None = None, encoded: Sequence[str] = ()) -> Iterator[pa.RecordBatch]:
    """The conformed batches an element stands for: a RecordBatch, or a file split read here (only ``columns``
    of it, when skipping the others cannot change the rows kept; the string columns of ``encoded``
    dictionary-encoded).  Bad rows raise, or go to ``dead`` when ``report`` (a later pass drops the same rows
    without reporting them again)."""
    if isinstance(item, FileSplit):
        quiet = dead if report else (DeadLetters() if dead is not None else None)
        yield from read_split(item, schema=schema, dead=quiet, required=required, columns=columns, encoded=encoded)
    else:
        yield from conformed([item], schema, required, dead, report, batch_size=_WHOLE)


def transform_element(fitted: FittedPipeline, item: Any, collect: bool) -> Iterator[Any]:
    """``fitted`` applied to one element: output batches, then the element's dead letters (tagged ``errors``)."""
    dead = DeadLetters() if collect else None
    rows = beam.metrics.Metrics.counter(NAMESPACE, "rows")
    for good in element_batches(item, fitted.input_schema, fitted.required_columns, dead, True, None,
                                fitted.encoded_columns()):
        out, _ = guard(fitted.transform_batch, good, dead)
        rows.inc(out.num_rows)
        yield out
        yield from emit_dead_letters(dead)
    yield from emit_dead_letters(dead)


def is_windowed(pcoll: beam.pvalue.PCollection) -> bool:
    """True when ``pcoll`` is not in the global window (its fit and evaluation then run per window)."""
    return not isinstance(pcoll.windowing.windowfn, GlobalWindows)


def _iso(ts: Timestamp) -> str:
    return ts.to_rfc3339() if ts < MAX_TIMESTAMP else "end of time"


def window_version(window: Any, pane: Any) -> dict[str, Any]:
    """The version of a model fitted on ``window`` at firing ``pane``: ``{"id", "window_start", "window_end",
    "window_end_us", "pane", "timing"}``; ``id`` is ``"<window end>#<pane index>"``.

    >>> from apache_beam.transforms.window import IntervalWindow
    >>> from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming
    >>> window_version(IntervalWindow(0, 60), PaneInfo(True, True, PaneInfoTiming.ON_TIME, 0, 0))["id"]
    '1970-01-01T00:01:00Z#0'
    """
    timing = {0: "EARLY", 1: "ON_TIME", 2: "LATE", 3: "UNKNOWN"}.get(int(pane.timing), "UNKNOWN")
    if isinstance(window, GlobalWindow):
        start, end = None, None
    else:
        start, end = window.start, window.end
    end_text = _iso(end) if end is not None else "global"
    return {"id": f"{end_text}#{pane.index}", "window_start": _iso(start) if start is not None else None,
            "window_end": end_text if end is not None else None,
            "window_end_us": int(end.micros) if end is not None else None, "pane": int(pane.index),
            "timing": timing}


def version_key(fitted: FittedPipeline) -> tuple:
    """What orders model versions: window end, then pane index (a windowed fit), or the artifact's modification
    time (:class:`WatchArtifacts`); a model without a version sorts first."""
    v = fitted.lineage.get("version") or {}
    return (v.get("window_end_us") if v.get("window_end_us") is not None else v.get("modified_us", -1),
            v.get("pane", 0), v.get("id", ""))


# ---------------------------------------------------------------------------------------------- windowed fit
class _ConformFn(beam.DoFn):
    """Conform each element to the fit schema: ``(batch, dead letters found)`` out, dead letters tagged."""

    def __init__(self, schema: pa.Schema, steps: Sequence[Any], collect: bool, registry: Registry) -> None:
        self.schema, self.steps, self.collect, self.registry = schema, steps, collect, registry

    def setup(self):
        self.registry.restore()
        self.required = required_columns(self.steps, self.schema)

    def process(self, item):
        dead = DeadLetters() if self.collect else None
        for batch in element_batches(item, self.schema, self.required, dead, True):
            yield batch, (dead.count if dead is not None else 0)
            if dead is not None:
                dead.count = 0
            yield from emit_dead_letters(dead)
        yield from emit_dead_letters(dead)


class _OnePassFn(beam.CombineFn):
    """The analyzers of a one-pass plan as one CombineFn over conformed ``(batch, dead)`` pairs."""

    def __init__(self, state: Any, registry: Registry) -> None:
        self.state, self.registry = state, registry

    def setup(self):
        self.registry.restore()

    def create_accumulator(self):
        return create_accumulators(self.state[1]), 0, 0

    def add_input(self, acc, item):
        batch, dead = item
        accs, rows, n_dead = acc
        add_batch(self.state[1], accs, batch, None, False)
        return accs, rows + batch.num_rows, n_dead + dead

    def merge_accumulators(self, accs):
        accs = list(accs)
        return (merge_accumulators(self.state[1].analyzers, [a[0] for a in accs]), sum(a[1] for a in accs),
                sum(a[2] for a in accs))

    def extract_output(self, acc):
        return (extract_states(self.state[1], [acc[0]]) if acc[1] else None), acc[2]


class _FinishWindow(beam.DoFn):
    def __init__(self, state: Any, name: str | None, lineage: dict[str, Any], registry: Registry) -> None:
        self.state, self.name, self.lineage, self.registry = state, name, lineage, registry

    def setup(self):
        self.registry.restore()

    def process(self, extracted, window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        states, dead = extracted
        if states is None:
            beam.metrics.Metrics.counter(NAMESPACE, "windows_without_rows").inc()
            return
        state = next_pass(self.state, states, copy=True)
        yield finish(state, engine="beam", name=self.name, dead_letters=dead,
                     lineage={**self.lineage, "version": window_version(window, pane)})


class _FitGroupFn(beam.DoFn):
    """Every pass of the plan over one window's grouped, conformed ``(batch, dead)`` pairs, as the local engine
    runs them."""

    def __init__(self, steps: Sequence[Any], schema: pa.Schema, name: str | None, lineage: dict[str, Any],
                 registry: Registry) -> None:
        self.steps, self.schema, self.name, self.lineage, self.registry = steps, schema, name, lineage, registry

    def setup(self):
        self.registry.restore()

    def process(self, keyed, window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        items = list(keyed[1])
        if not sum(b.num_rows for b, _ in items):
            beam.metrics.Metrics.counter(NAMESPACE, "windows_without_rows").inc()
            return
        state = first_pass(self.steps, self.schema)
        while state[1] is not None:
            pass_, accs = state[1], create_accumulators(state[1])
            for batch, _ in items:
                add_batch(pass_, accs, batch, None, False)
            state = next_pass(state, extract_states(pass_, [accs]), mergeable=False)
        yield finish(state, engine="beam", name=self.name, dead_letters=sum(d for _, d in items),
                     lineage={**self.lineage, "version": window_version(window, pane)})


class WindowedFit(WithErrors, beam.PTransform):
    """One fitted pipeline per window and firing of a windowed PCollection (see the module docstring).

    Parameters
    ----------
    pipeline:
        The unfitted pipeline.
    schema:
        The input schema (required: a stream has no first batch to take it from, and every window's model must
        read the same types).
    name, lineage:
        Recorded in each fitted pipeline, with its version.
    """

    def __init__(self, pipeline: Pipeline, *, schema: pa.Schema | None = None, lineage: dict[str, Any] | None = None,
                 batch_size: int = 65_536) -> None:
        super().__init__()
        self.pipeline, self.schema, self.lineage, self.batch_size = pipeline, schema, dict(lineage or {}), \
            batch_size

    def _one_pass(self) -> Any | None:
        """The planned first pass when the whole fit is that one pass (known only with a schema)."""
        if pass_bound(self.pipeline.steps, self.schema) != 1:
            return None
        return first_pass(self.pipeline.steps, self.schema)

    def expand(self, pcoll):
        steps = list(self.pipeline.steps)
        registry = Registry(steps)
        if self.schema is None:
            raise errors.SpecError("a windowed Fit needs schema= (the input schema, e.g. a fitted pipeline's "
                                   "input_schema or pa.schema([...])): a stream has no first batch to take it from")
        items = pcoll | "AsBatches" >> AsBatches(self.schema, self.batch_size, defer=True)
        conf = items | "Conform" >> beam.ParDo(_ConformFn(self.schema, steps, self.collect, registry)) \
            .with_outputs("errors", main="batches")
        one = self._one_pass()
        if one is not None:
            fitted = (conf.batches | "Combine" >> beam.CombineGlobally(_OnePassFn(one, registry)).without_defaults()
                      | "Fitted" >> beam.ParDo(_FinishWindow(one, self.pipeline.name, self.lineage, registry)))
        else:
            fitted = (conf.batches | "Key" >> beam.Map(lambda b: (None, b)) | "Group" >> beam.GroupByKey()
                      | "FitWindow" >> beam.ParDo(_FitGroupFn(steps, self.schema, self.pipeline.name, self.lineage,
                                                               registry)))
        errors_ = conf.errors
        return (fitted, errors_) if self.collect else fitted


# ---------------------------------------------------------------------------------------------- latest model
class _JoinLatestFn(beam.DoFn):
    """Per shard: keep the newest model (artifact bytes in state), transform each data batch with it."""

    MODEL = ReadModifyWriteStateSpec("model", PickleCoder())
    PENDING = BagStateSpec("pending", PickleCoder())

    def __init__(self, collect: bool, version_column: str | None, max_pending: int) -> None:
        self.collect, self.version_column, self.max_pending = collect, version_column, max_pending
        self._cache: tuple[bytes, FittedPipeline] | None = None

    def _fitted(self, held: tuple) -> FittedPipeline:
        digest = held[1]
        if self._cache is None or self._cache[0] != digest:
            self._cache = (digest, artifact.from_bytes(held[2]))
        return self._cache[1]

    def process(self, keyed, model=beam.DoFn.StateParam(MODEL), pending=beam.DoFn.StateParam(PENDING)):  # noqa: B008
        kind, value = keyed[1]
        if kind == "model":
            held = model.read()
            if held is not None and held[0] >= value[0]:
                return  # an older version arriving late never replaces a newer one
            model.write(value)
            waiting = list(pending.read())
            pending.clear()
            fitted = self._fitted(value)
            for ts, item in waiting:
                for out in self._apply(fitted, item, ts):
                    yield out if isinstance(out, beam.pvalue.TaggedOutput) else TimestampedValue(out, ts)
            return
        ts, item = value
        held = model.read()
        if held is None:
            if sum(1 for _ in pending.read()) >= self.max_pending:
                yield from self._no_model(item)
            else:
                pending.add((ts, item))
            return
        for out in self._apply(self._fitted(held), item, ts):
            yield out if isinstance(out, beam.pvalue.TaggedOutput) else TimestampedValue(out, ts)

    def _apply(self, fitted: FittedPipeline, item: Any, ts: Timestamp) -> Iterator[Any]:
        version = fitted.lineage.get("version") or {}
        end = version.get("window_end_us")
        if end is not None:
            beam.metrics.Metrics.distribution(NAMESPACE, "model_staleness_ms").update(
                int((ts.micros - end) // 1000))
        for out in transform_element(fitted, item, self.collect):
            if self.version_column and isinstance(out, pa.RecordBatch):
                out = out.append_column(self.version_column,
                                        pa.array([version.get("id")] * out.num_rows, pa.string()))
            yield out

    def _no_model(self, item: Any) -> Iterator[Any]:
        reason = "no model has arrived yet and the queue of waiting batches is full"
        if not self.collect:
            raise errors.EngineError(f"Transform: {reason} (raise max_pending, or start with a fitted model)")
        rows = item.to_pylist() if isinstance(item, pa.RecordBatch) else [item]
        for r in rows:
            yield beam.pvalue.TaggedOutput("errors", {"source": None, "row": None, "line": None, "column": None,
                                                      "reason": reason, "record": r})


def _as_model(fitted: FittedPipeline) -> tuple[str, tuple]:
    data = artifact.to_bytes(fitted)
    return "model", (version_key(fitted), hashlib.sha256(data).digest(), data)


def _fan_out(model: tuple, shards: int) -> Iterator[tuple[int, tuple]]:
    for k in range(shards):
        yield k, model


def _keyed_data(batch: Any, shards: int, ts=beam.DoFn.TimestampParam) -> tuple[int, tuple]:
    return random.randrange(shards), ("data", (ts, batch))


def _windowing_of(pcoll: beam.pvalue.PCollection) -> beam.WindowInto:
    w = pcoll.windowing
    return beam.WindowInto(w.windowfn, trigger=w.triggerfn, accumulation_mode=w.accumulation_mode,
                           timestamp_combiner=w.timestamp_combiner, allowed_lateness=w.allowed_lateness)


class TransformLatest(WithErrors, beam.PTransform):
    """Transform each element with the newest model of ``models`` (a PCollection of FittedPipeline, e.g. the
    output of a windowed :class:`~beamlearn.beam.Fit` or :class:`WatchArtifacts`).

    Parameters
    ----------
    models:
        The stream of models; the newest by :func:`version_key` that has arrived is used.
    initial:
        A model to use until the first one of ``models`` arrives.
    version_column:
        Append the version id of the model used to every output row under this name.
    shards:
        Parallel keys of the join (every model is sent to each).
    max_pending:
        Batches per shard held while no model has arrived; beyond, they are dead letters (or the job fails).
    output:
        ``"batches"`` (RecordBatches), or ``"rows"``: dict rows, each with the timestamp of its input row.
    """

    def __init__(self, models: beam.pvalue.PCollection, *, initial: FittedPipeline | None = None,
                 version_column: str | None = None, shards: int = 4, max_pending: int = 10_000,
                 batch_size: int = 65_536, output: str = "batches") -> None:
        super().__init__()
        self.models, self.initial, self.version_column = models, initial, version_column
        self.shards, self.max_pending, self.batch_size, self.output = shards, max_pending, batch_size, output

    def expand(self, pcoll):
        p = pcoll.pipeline
        rows = self.output == "rows"
        models = self.models
        if self.initial is not None:
            first = p | "Initial" >> beam.Create([self.initial])
            models = (models, first) | "WithInitial" >> beam.Flatten()
        global_ = beam.WindowInto(GlobalWindows())
        m = (models | "ModelsGlobal" >> global_ | "AsModel" >> beam.Map(_as_model)
             | "FanOut" >> beam.FlatMap(_fan_out, self.shards))
        d = (pcoll | "AsBatches" >> AsBatches(None, self.batch_size, stamp=rows)
             | "DataGlobal" >> beam.WindowInto(GlobalWindows())
             | "KeyData" >> beam.Map(_keyed_data, self.shards))
        joined = ((m, d) | "Both" >> beam.Flatten()
                  | "Apply" >> beam.ParDo(_JoinLatestFn(self.collect, self.version_column, self.max_pending))
                  .with_outputs("errors", main="batches"))
        out = joined.batches
        if rows:
            out = out | "Rows" >> beam.FlatMap(stamped_rows)
        if is_windowed(pcoll):
            out = out | "Rewindow" >> _windowing_of(pcoll)
        return (out, joined.errors) if self.collect else out


def stamped_rows(batch: pa.RecordBatch) -> Iterator[Any]:
    """The rows of ``batch`` as dicts, each given back the event time of its :data:`STAMP` column."""
    if STAMP not in batch.schema.names:
        yield from batch.to_pylist()
        return
    stamps = batch.column(STAMP).to_pylist()
    for row, us in zip(batch.drop_columns([STAMP]).to_pylist(), stamps):
        yield TimestampedValue(row, Timestamp(micros=us))


# ---------------------------------------------------------------------------------------------- artifacts
class _LoadArtifact(beam.DoFn):
    def process(self, meta):
        from apache_beam.io.filesystems import FileSystems

        try:
            with FileSystems.open(meta.path) as fh:
                fitted = artifact.from_bytes(fh.read())
        except Exception as exc:  # noqa: BLE001 - a bad or half-written file must not stop the stream
            beam.metrics.Metrics.counter(NAMESPACE, "bad_artifacts").inc()
            import logging

            logging.getLogger("beamlearn").warning("%s: not loaded, the current model keeps serving (%s)",
                                                   meta.path, exc)
            return
        modified = round((meta.last_updated_in_seconds or 0) * 1e6)
        lineage = dict(fitted.lineage)
        lineage["version"] = {**(lineage.get("version") or {}), "id": f"{meta.path}@{modified}",
                              "source": meta.path, "modified_us": modified, "window_end_us": None}
        yield FittedPipeline(fitted.steps, fitted.states, fitted.input_schema, name=fitted.name, lineage=lineage)


class WatchArtifacts(beam.PTransform):
    """A stream of the fitted pipelines written to ``pattern`` (any Beam filesystem), polled every ``interval``
    seconds until ``stop_timestamp``: every new or rewritten file, in the order of their modification times
    (RunInference's ``WatchFilePattern`` keeps one file per poll; this keeps them all and lets the newest win).
    Write artifacts under a temporary name and rename them into the pattern, so a poll never sees half a file
    (one that fails to load is skipped and counted)."""

    def __init__(self, pattern: str, *, interval: float = 10.0, stop_timestamp: Any = MAX_TIMESTAMP) -> None:
        super().__init__()
        self.pattern, self.interval, self.stop_timestamp = pattern, interval, stop_timestamp

    def expand(self, pbegin):
        from apache_beam.io.fileio import MatchContinuously

        return (pbegin | "Match" >> MatchContinuously(self.pattern, interval=self.interval,
                                                      stop_timestamp=self.stop_timestamp,
                                                      match_updated_files=True)
                | "Load" >> beam.ParDo(_LoadArtifact()))
