"""Drift on a stream: consecutive windows of rows, each profiled and compared with a reference profile as
``beamlearn drift REFERENCE --data ... --by ROWS`` compares them (the same analyzer, the same figures).

>>> import numpy as np, pyarrow as pa
>>> from beamlearn.profile import profile
>>> rng = np.random.default_rng(0)
>>> ref = profile({"x": rng.normal(0, 1, 5000)})
>>> reports = []
>>> windows = DriftWindows(ref, pa.schema([("x", pa.float64())]), rows=2000, emit=reports.append)
>>> windows.add(pa.record_batch({"x": np.concatenate([rng.normal(0, 1, 2000), rng.normal(1, 1, 2500)])}))
>>> windows.finish()
>>> [(r["window"], r["rows"], r["drift"]) for r in reports]
[(0, 2000, False), (2000, 2000, True), (4000, 500, True)]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

from beamlearn.profile.core import WindowProfiler
from beamlearn.profile.drift import drift

__all__ = ["WINDOW_PARAMS", "DriftWindows"]

WINDOW_PARAMS = {"correlations": 0, "distinct": False, "lengths": False}
"""The profile of a window, as ``beamlearn drift --by`` takes it: the sketches drift reads, no correlations,
distinct counts or string lengths."""


class DriftWindows:
    """Feed batches; every ``rows`` rows, ``emit`` gets the window's drift report against ``reference``:
    :func:`beamlearn.profile.drift.drift`'s result plus ``window`` (the window's first row, counted from 0) and
    ``rows``.

    Parameters
    ----------
    reference:
        A profile document (:func:`beamlearn.profile.read_profile`, or a model's
        :func:`~beamlearn.profile.training_profile`).
    schema:
        The batches' schema; the reference's columns found in it are compared.
    rows:
        The rows per window.
    emit:
        Called with each window's report.
    method, threshold, pvalues:
        As :func:`~beamlearn.profile.drift.drift`.
    """

    def __init__(self, reference: dict[str, Any], schema: pa.Schema, *, rows: int,
                 emit: Callable[[dict[str, Any]], Any], method: str = "auto", threshold: float | None = None,
                 pvalues: bool = True) -> None:
        self.reference, self.emit = reference, emit
        self.method, self.threshold, self.pvalues = method, threshold, pvalues
        self.columns = [c for c in reference["columns"] if c in schema.names]
        self.windows = WindowProfiler(schema, rows=rows, columns=self.columns, **WINDOW_PARAMS)

    def add(self, batch: pa.RecordBatch) -> None:
        """Add a batch's rows; emits the report of each window it completes."""
        for start, doc in self.windows.add(batch):
            self._emit(start, doc)

    def finish(self) -> None:
        """Emit the report of the window in progress (shorter than ``rows``), if it holds any row."""
        for start, doc in self.windows.finish():
            self._emit(start, doc)

    def _emit(self, start: int, doc: dict[str, Any]) -> None:
        report = drift(self.reference, doc, method=self.method, threshold=self.threshold, columns=self.columns,
                       pvalues=self.pvalues)
        self.emit(dict(report, window=start, rows=doc["rows"]))
