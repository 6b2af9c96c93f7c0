"""Drift on Apache Beam: :class:`Drift`, the drift of a PCollection's rows against a reference profile, once (the
global window) or per window of a streaming pipeline.

Each window is profiled by the same :class:`~beamlearn.analyzers.profile.ColumnProfile` reduction as ``beamlearn
drift --by`` and the server (a ``CombineGlobally`` per window: only accumulators move), then compared with the
reference by :func:`beamlearn.profile.drift.drift`: the same figures as ``beamlearn drift REFERENCE --data
WINDOW``.  A windowed result also carries the window's ``version`` (bounds and pane, as a windowed fit's).

Examples
--------
>>> import apache_beam as beam, numpy as np
>>> from apache_beam.testing.util import assert_that
>>> from beamlearn.profile import profile
>>> rng = np.random.default_rng(0)
>>> ref = profile({"x": rng.normal(0, 1, 5000)})
>>> def check(reports):
...     assert [(r["drift"], r["columns"]["x"]["method"]) for r in reports] == [(True, "wasserstein")], reports
>>> with beam.Pipeline() as p:
...     _ = assert_that(p | beam.Create([{"x": float(v)} for v in rng.normal(1, 1, 2000)]) | Drift(ref), check)
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms.trigger import AccumulationMode

from beamlearn.batches import DEFAULT_BATCH_SIZE
from beamlearn.engines.beam_checks import check_pipeline
from beamlearn.engines.beam_eval import AnalyzerCombineFn
from beamlearn.engines.beam_io import NAMESPACE, AsBatches
from beamlearn.engines.beam_stream import is_windowed, window_version
from beamlearn.errors import SpecError

__all__ = ["Drift"]


class Drift(beam.PTransform):
    """The drift report (:func:`beamlearn.profile.drift.drift`'s dict; per window, plus ``version``) of the input
    rows (RecordBatches, Tables, dict rows or file splits) against ``reference``.

    Parameters
    ----------
    reference:
        A profile document (:func:`beamlearn.profile.read_profile`), a fitted pipeline or an artifact path (its
        training profile).
    method, threshold:
        As :func:`~beamlearn.profile.drift.drift`.
    windowing, trigger, allowed_lateness, accumulation_mode:
        Window the input first (as :class:`~beamlearn.engines.beam_eval.Evaluate` does); an input already
        windowed is reported per window as it is.
    """

    def __init__(self, reference: Any, *, method: str = "auto", threshold: float | None = None,
                 windowing: Any = None, trigger: Any = None, allowed_lateness: Any = 0,
                 accumulation_mode: Any = None, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        from beamlearn.profile.drift import METHODS

        super().__init__()
        if method not in METHODS:
            raise SpecError(f"Drift: unknown method {method!r}; choose one of {', '.join(METHODS)}")
        self.reference = _reference(reference)
        self.method, self.threshold = method, threshold
        self.windowing, self.trigger, self.allowed_lateness = windowing, trigger, allowed_lateness
        self.accumulation_mode, self.batch_size = accumulation_mode, batch_size

    def expand(self, pcoll):
        from beamlearn.analyzers.profile import ColumnProfile
        from beamlearn.profile.stream import WINDOW_PARAMS

        check_pipeline(pcoll)
        if self.windowing is not None:
            pcoll = pcoll | "Window" >> beam.WindowInto(
                self.windowing, trigger=self.trigger, allowed_lateness=self.allowed_lateness,
                accumulation_mode=self.accumulation_mode or AccumulationMode.DISCARDING)
        fields = [(n, c["kind"], c["type"]) for n, c in self.reference["columns"].items()]
        profiler = AnalyzerCombineFn(ColumnProfile(fields, **WINDOW_PARAMS))
        batches = (pcoll | "AsBatches" >> AsBatches(batch_size=self.batch_size)
                   | "Columns" >> beam.Map(_columns, fields))
        windowed = is_windowed(pcoll)
        compare = _Compare(self.reference, self.method, self.threshold, windowed)
        combine = beam.CombineGlobally(profiler)
        return (batches | "Profile" >> (combine.without_defaults() if windowed else combine)
                | "Drift" >> beam.ParDo(compare))


def _reference(reference: Any) -> dict[str, Any]:
    from beamlearn.pipeline import FittedPipeline
    from beamlearn.profile import read_profile, training_profile

    if isinstance(reference, dict):
        return reference
    if isinstance(reference, FittedPipeline):
        doc = training_profile(reference)
        if doc is None:
            raise SpecError("Drift: this model has no training profile (fitted by an older beamlearn); refit it")
        return doc
    return read_profile(str(reference))


_NULLS = {"numeric": pa.float64(), "boolean": pa.bool_(), "string": pa.string()}


def _columns(batch: pa.RecordBatch, fields: list[tuple[str, str, str]]) -> pa.RecordBatch:
    """The reference's columns of ``batch`` (a column it lacks: all null, so it counts as missing)."""
    have = batch.schema.names
    return pa.RecordBatch.from_arrays(
        [batch.column(n) if n in have else pa.nulls(batch.num_rows, _NULLS.get(kind, pa.null()))
         for n, kind, _ in fields], names=[f[0] for f in fields])


class _Compare(beam.DoFn):
    """A window's profile against the reference."""

    def __init__(self, reference: dict[str, Any], method: str, threshold: float | None, windowed: bool) -> None:
        self.reference, self.method, self.threshold, self.windowed = reference, method, threshold, windowed

    def process(self, state, window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        from beamlearn.profile.core import as_document
        from beamlearn.profile.drift import drift

        current = as_document(state, engine="beam")
        names = [c for c in self.reference["columns"] if c in current["columns"]]
        report = drift(self.reference, current, method=self.method, threshold=self.threshold, columns=names)
        if report["drift"]:
            beam.metrics.Metrics.counter(NAMESPACE, "windows_drifted" if self.windowed else "drifted").inc()
        yield dict(report, version=window_version(window, pane)) if self.windowed else report
