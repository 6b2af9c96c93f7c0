"""Drift on the server: the most recent served records against the model's training profile.

A :class:`DriftMonitor` keeps the last ``window`` input records a worker served (a bounded ring buffer of the
request's own dicts: the hot path pays one ``deque.append``, well under a microsecond).  When asked (``GET /metrics``
or ``GET /v1/drift``, at most once every ``every`` seconds, in a worker thread), it profiles the window with the
same analyzer as ``beamlearn profile`` and compares it with the training profile every fitted artifact keeps
(:func:`beamlearn.profile.drift.drift`, ``pvalues=False``): the same figures as ``beamlearn drift MODEL --data
WINDOW`` - PSI, Jensen-Shannon, L-infinity, the KS statistic and Wasserstein - without the p-values, which need
scipy (serving never imports it), so ``method="auto"`` decides on the distances (normed Wasserstein, Jensen-Shannon).

Each worker process keeps its own window, as it keeps its own request counters.

>>> import beamlearn as bl
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> fitted = bl.Pipeline([bl.StandardScaler(["x"])]).fit({"x": rng.normal(0, 1, 5000)})
>>> monitor = DriftMonitor(fitted, window=1000)
>>> for v in rng.normal(2, 1, 1000):
...     monitor.add({"x": float(v)})
>>> report = monitor.compute()
>>> report["drift"], report["columns"]["x"]["method"], report["window_rows"]
(True, 'wasserstein', 1000)
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterable, Mapping
from typing import Any

from beamlearn.errors import SpecError
from beamlearn.pipeline import FittedPipeline

__all__ = ["DEFAULT_WINDOW", "FIGURES", "DriftCollector", "DriftMonitor"]

DEFAULT_WINDOW = 10_000
FIGURES = ("psi", "js", "linf", "ks", "wasserstein", "wasserstein_normed")
"""The figures exposed as ``beamlearn_drift{column, method}`` (those a column's kind has)."""


class DriftMonitor:
    """The last ``window`` served input records of a model, and their drift against its training profile.

    Parameters
    ----------
    fitted:
        The model served; its lineage's training profile is the reference (see ``enabled``).
    window:
        How many of the most recent records to keep (``0``: drift off).
    every:
        Seconds a computed report is reused before the next request recomputes it.
    method, threshold:
        As :func:`beamlearn.profile.drift.drift` (``"auto"``: normed Wasserstein for numeric columns,
        Jensen-Shannon for categorical ones, Evidently's thresholds).

    Attributes
    ----------
    enabled:
        False when ``window`` is 0 or the model has no training profile (fitted by an older beamlearn).
    """

    def __init__(self, fitted: FittedPipeline, *, window: int = DEFAULT_WINDOW, every: float = 5.0,
                 method: str = "auto", threshold: float | None = None) -> None:
        from beamlearn.profile.drift import METHODS

        if method not in METHODS or method in ("ks", "chi2"):
            raise SpecError(f"drift method {method!r} on the server: choose one of auto, psi, js, wasserstein, linf "
                            "(the p-value tests need scipy, which serving does not load)")
        if window < 0:
            raise SpecError(f"the drift window must be >= 0 records, got {window}")
        self.fitted, self.window, self.every, self.method, self.threshold = fitted, window, every, method, threshold
        self.reference = _reference(fitted) if window else None
        self.enabled = self.reference is not None
        self.records: collections.deque = collections.deque(maxlen=max(window, 1))
        self.add = self.records.append if self.enabled else _ignore  # the hot path: one append
        self.report: dict[str, Any] | None = None
        self._at = -float("inf")
        self._lock: asyncio.Lock | None = None

    def extend(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Add several records (a list request, an OIP request)."""
        if self.enabled:
            self.records.extend(records)

    def extend_table(self, table: Any) -> None:
        """Add the rows of an Arrow table or batch (an Arrow request): only its last ``window`` rows are read."""
        if self.enabled and table.num_rows:
            from beamlearn.serving.batcher import rows_of

            self.records.extend(rows_of(table.slice(max(0, table.num_rows - self.window))))

    def compute(self, records: list | None = None) -> dict[str, Any]:
        """The drift report of ``records`` (default: those in the window now; the shape of ``beamlearn drift
        --json``, plus ``window_rows`` and ``window``); ``{"enabled": False, ...}`` when drift is off."""
        if not self.enabled:
            return {"enabled": False, "window": self.window,
                    "reason": "drift is off (--drift-window 0)" if not self.window else
                    "the model has no training profile (fitted by an older beamlearn): refit it"}
        if records is None:
            records = list(self.records)  # a copy: requests keep appending while this runs
        out: dict[str, Any]
        if not records:
            out = {"method": self.method, "columns": {}, "compared": 0, "drifted": [], "share": 0.0, "drift": False,
                   "reference_rows": self.reference.get("rows"), "current_rows": 0, "not_in_current": []}
        else:
            out = _drift(self.reference, self.fitted.input_schema, records, self.method, self.threshold)
        out.update({"enabled": True, "window": self.window, "window_rows": len(records), "computed_at": time.time()})
        return out

    async def current(self) -> dict[str, Any]:
        """The report, recomputed (in a worker thread) when older than ``every`` seconds; concurrent callers
        share one computation."""
        if not self.enabled:
            return self.compute()
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.report is None or time.monotonic() - self._at >= self.every:
                records = list(self.records)  # copied on the event loop, where requests append
                self.report = await asyncio.get_running_loop().run_in_executor(None, self.compute, records)
                self._at = time.monotonic()
        return self.report


def _ignore(record: Any) -> None:
    return None


def _reference(fitted: FittedPipeline) -> dict[str, Any] | None:
    from beamlearn.profile import training_profile

    return training_profile(fitted)


def _drift(reference: dict[str, Any], schema: Any, records: list, method: str,
           threshold: float | None) -> dict[str, Any]:
    """Profile ``records`` (as the server parsed them) over the reference's columns and compare."""
    import pyarrow as pa

    from beamlearn.analyzers.profile import ColumnProfile
    from beamlearn.batches import to_batches
    from beamlearn.profile.core import as_document, profile_fields
    from beamlearn.profile.drift import drift
    from beamlearn.profile.stream import WINDOW_PARAMS

    names = [n for n in reference["columns"] if n in schema.names]
    sub = pa.schema([schema.field(n) for n in names])
    an = ColumnProfile(profile_fields(sub), **WINDOW_PARAMS)
    try:  # column by column, as the server's conversion does (several times faster than its row-wise checks)
        batches = [pa.RecordBatch.from_arrays([pa.array([r.get(f.name) for r in records], type=f.type,
                                                        from_pandas=True) for f in sub], schema=sub)]
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):  # values the server coerced: its way
        batches = list(to_batches([{n: r.get(n) for n in names} for r in records], batch_size=len(records),
                                  schema=sub, source="<drift window>"))
    acc = an.create()
    for batch in batches:
        acc = an.add(acc, batch)
    current = as_document(an.extract(acc))
    return drift(reference, current, method=method, threshold=threshold, columns=names, pvalues=False)


class DriftCollector:
    """Prometheus gauges of the last computed drift report of ``monitor()`` (the model served now):
    ``beamlearn_drift{column, method}`` (each figure of :data:`FIGURES` a column has),
    ``beamlearn_drift_detected{column}`` (1 when the column drifted by the monitor's method and threshold),
    ``beamlearn_drift_share`` (drifted columns / compared ones) and ``beamlearn_drift_window_rows``."""

    def __init__(self, monitor: Any) -> None:
        self.monitor = monitor

    def describe(self) -> list:
        """The metric families, without samples (so registering does not compute anything)."""
        return list(self._families())

    def collect(self) -> list:
        """The metric families with the last report's samples (none before the first report)."""
        report = self.monitor().report
        families = self._families()
        if report is None:
            return []
        figures, detected, share, rows = families
        for column, f in report["columns"].items():
            for name in FIGURES:
                if f.get(name) is not None:
                    figures.add_metric([column, name], float(f[name]))
            if f.get("method"):
                detected.add_metric([column], 1.0 if f["drift"] else 0.0)
        share.add_metric([], float(report["share"]))
        rows.add_metric([], float(report["window_rows"]))
        return list(families)

    @staticmethod
    def _families() -> tuple:
        from prometheus_client.core import GaugeMetricFamily

        return (GaugeMetricFamily("beamlearn_drift", "Drift of the served window against the training profile, "
                                  "per column and figure", labels=["column", "method"]),
                GaugeMetricFamily("beamlearn_drift_detected", "1 when the column drifted (by the method and threshold)",
                                  labels=["column"]),
                GaugeMetricFamily("beamlearn_drift_share", "Share of the compared columns that drifted"),
                GaugeMetricFamily("beamlearn_drift_window_rows", "Served records in the drift window"))
