"""Adaptive micro-batching: concurrent single-record requests coalesced into one vectorized transform.

A request's record joins the open batch; the batch runs when it holds ``max_batch`` records or when its first
record has waited ``max_wait_ms`` — and at once when nothing else is queued and no batch is running (so a lone
request pays no wait).  The batch runs in a worker thread through the vectorized path; if it fails (one bad
record), each record is retried alone with ``transform_one``, so a bad record fails only its own request with
its own error.  The vectorized path and ``transform_one`` give the same values bit for bit (tests/test_dispatch.py),
so a result does not depend on its company.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from beamlearn.batches import to_batches
from beamlearn.errors import BeamlearnError
from beamlearn.pipeline import FittedPipeline

__all__ = ["MicroBatcher"]


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

    async def submit(self, record: dict[str, Any]) -> dict[str, Any]:
        """The transformed record (what ``transform_one`` gives), or its error raised."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self._pending.append((record, fut))
        if len(self._pending) >= self.max_batch or (self._running == 0 and len(self._pending) == 1
                                                    and self.max_wait == 0):
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
            self._running += 1
            asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[tuple[dict, asyncio.Future]]) -> None:
        fitted = self.model()
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(None, _run_batch, fitted, [r for r, _ in batch])
            if self.on_batch is not None:
                self.on_batch(len(batch))
            for (_, fut), res in zip(batch, results):
                if not fut.done():
                    if isinstance(res, BaseException):
                        fut.set_exception(res)
                    else:
                        fut.set_result(res)
        except Exception as exc:  # noqa: BLE001 - an unexpected failure must reach every waiting request
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
        finally:
            self._running -= 1
            if self._pending and self._timer is None:
                self._timer = loop.call_later(self.max_wait, self._flush)


def _run_batch(fitted: FittedPipeline, records: list[dict]) -> list[Any]:
    if len(records) == 1:
        try:
            return [fitted.transform_one(records[0])]
        except BeamlearnError as exc:
            return [exc]
    try:
        batches = list(to_batches(records, batch_size=len(records), schema=fitted.input_schema, source="<request>"))
        table = fitted.transform(batches)
        if table.num_rows == len(records):
            names = fitted.output_schema.names
            return [{k: row.get(k) for k in names} for row in table.to_pylist()]
    except BeamlearnError:
        pass
    out: list[Any] = []
    for r in records:  # one bad record: each alone, so only its request fails
        try:
            out.append(fitted.transform_one(r))
        except BeamlearnError as exc:
            out.append(exc)
    return out
