"""Adaptive micro-batching: concurrent single-record requests coalesced into one vectorized transform.

A request's record joins the open batch; the batch runs when it holds ``max_batch`` records or when its first
record has waited ``max_wait_ms`` — and at once when no vectorized batch is running (so a lone request pays no
wait; requests that arrive in the same turn of the event loop share a batch).

A batch runs one of two ways, whichever costs less per record for this pipeline (adaptive):

- record by record through ``transform_one``, on the event loop (a few microseconds a record for scalers and
  encoders: cheaper than a thread hop);
- as one vectorized ``transform`` in a worker thread (what wins for models whose per-call cost dominates, such as
  a wrapped scikit-learn estimator).

Batches of fewer than ``VECTOR_MIN`` records always take the first way.  For larger ones the batcher keeps an
exponentially weighted cost per record of each way, measured on real batches, tries the vectorized way until it
has a measure, and re-measures the way it is not using every ``PROBE_EVERY`` batches, so a change of load or of
model (a reload) is followed.  If a vectorized batch fails (one bad record), each record is retried alone, so a
bad record fails only its own request with its own error.  The vectorized path and ``transform_one`` give the
same values bit for bit (tests/test_dispatch.py), so a result depends neither on its company nor on the way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from beamlearn.batches import to_batches
from beamlearn.errors import BeamlearnError
from beamlearn.pipeline import FittedPipeline

__all__ = ["PROBE_EVERY", "VECTOR_MIN", "MicroBatcher"]

VECTOR_MIN = 32  # below this many records a vectorized transform never pays for its thread hop
PROBE_EVERY = 64  # batches between two measures of the way not in use
_WEIGHT = 0.2  # of a new measure in the moving cost per record


class MicroBatcher:
    """Coalesce :meth:`submit` calls (on one event loop) into batches of at most ``max_batch`` records.

    Parameters
    ----------
    model:
        Returns the fitted pipeline to use now (read once per batch: a reload applies to the next batch).
    on_batch:
        Called with each batch's size (metrics).
    """

    def __init__(self, model: Callable[[], FittedPipeline], *, max_batch: int = 64, max_wait_ms: float = 2.0,
                 on_batch: Callable[[int], Any] | None = None) -> None:
        self.model, self.max_batch, self.max_wait = model, max(1, int(max_batch)), max(0.0, max_wait_ms) / 1000
        self.on_batch = on_batch
        self._pending: list[tuple[dict, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running = 0
        self.cost: dict[str, float | None] = {"one": None, "vector": None}  # seconds per record, moving average
        self._large = 0  # batches of at least VECTOR_MIN records so far

    def _measured(self, way: str, seconds: float, records: int) -> None:
        per = seconds / max(records, 1)
        old = self.cost[way]
        self.cost[way] = per if old is None else old + _WEIGHT * (per - old)

    def _vectorize(self) -> bool:
        """Whether the next large batch takes the vectorized way."""
        self._large += 1
        one, vector = self.cost["one"], self.cost["vector"]
        if vector is None or one is None:
            return vector is None  # measure the vectorized way first, then record by record
        if self._large % PROBE_EVERY == 0:
            return vector >= one  # re-measure the way not in use
        return vector < one

    async def submit(self, record: dict[str, Any]) -> dict[str, Any]:
        """The transformed record (what ``transform_one`` gives), or its error raised."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self._pending.append((record, fut))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._running == 0 and len(self._pending) == 1:
            loop.call_soon(self._flush_if_alone)
        elif self._timer is None:
            self._timer = loop.call_later(self.max_wait, self._flush)
        return await fut

    def _flush_if_alone(self) -> None:
        """Run at once a record that arrived when nothing ran; others that came in the same tick join it."""
        if self._pending and self._running == 0:
            self._flush()
        elif self._pending and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.max_wait, self._flush)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
            if len(batch) < VECTOR_MIN or not self._vectorize():
                t0 = time.perf_counter()
                results = _run_batch(self.model(), [r for r, _ in batch], vectorized=False)
                if len(batch) >= VECTOR_MIN:
                    self._measured("one", time.perf_counter() - t0, len(batch))
                self._settle(batch, results)
                continue
            self._running += 1
            asyncio.get_running_loop().create_task(self._run(batch))

    def _settle(self, batch: list[tuple[dict, asyncio.Future]], results: list[Any]) -> None:
        if self.on_batch is not None:
            self.on_batch(len(batch))
        for (_, fut), res in zip(batch, results):
            if not fut.done():
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)

    async def _run(self, batch: list[tuple[dict, asyncio.Future]]) -> None:
        fitted = self.model()
        loop = asyncio.get_running_loop()
        try:
            t0 = time.perf_counter()
            results = await loop.run_in_executor(None, _run_batch, fitted, [r for r, _ in batch])
            self._measured("vector", time.perf_counter() - t0, len(batch))
            self._settle(batch, results)
        except Exception as exc:  # noqa: BLE001 - an unexpected failure must reach every waiting request
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
        finally:
            self._running -= 1
            if self._pending and self._timer is None:
                self._timer = loop.call_later(self.max_wait, self._flush)


def _run_batch(fitted: FittedPipeline, records: list[dict], vectorized: bool = True) -> list[Any]:
    """Each record's output dict, or its error: one vectorized transform, or ``transform_one`` per record."""
    if not vectorized or len(records) == 1:
        return [_one(fitted, r) for r in records]
    try:
        batches = list(to_batches(records, batch_size=len(records), schema=fitted.input_schema, source="<request>"))
        table = fitted.transform(batches)
        if table.num_rows == len(records):
            return rows_of(table)
    except BeamlearnError:
        pass
    return [_one(fitted, r) for r in records]  # one bad record: each alone, so only its request fails


def rows_of(table) -> list[dict[str, Any]]:
    """``table.to_pylist()``, column by column (several times faster than Arrow's row-wise conversion)."""
    names = table.column_names
    return [dict(zip(names, values)) for values in zip(*(c.to_pylist() for c in table.columns))]


def _one(fitted: FittedPipeline, record: dict) -> Any:
    try:
        return fitted.transform_one(record)
    except BeamlearnError as exc:
        return exc
