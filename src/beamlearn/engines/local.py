"""The in-process engine: runs a fit plan and a fitted pipeline over an iterable of batches in this process.

It moves batches and combines accumulators; it knows nothing about any particular step.  Bad rows follow the
``errors=`` policy shared with the Beam engine: ``"raise"`` names the source, row and column of the first bad
value; a dead-letter sink receives every bad row with its reason and the run goes on, so the rows read always
equal the good rows plus the dead letters.  A step that raises :class:`~beamlearn.errors.DataError` on a batch is
bisected to find the guilty rows.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from beamlearn import io
from beamlearn.batches import DEFAULT_BATCH_SIZE, capture_schema
from beamlearn.engines.passes import (
    add_batch,
    conformed,
    create_accumulators,
    data_fingerprint,
    extract_states,
    finish,
    first_pass,
    guard,
    next_pass,
    required_columns,
)
from beamlearn.errors import BeamlearnError, DataError
from beamlearn.pipeline import FittedPipeline, Pipeline, provide

__all__ = ["LocalEngine", "ordered_map"]


class LocalEngine:
    """Run fits and transforms in this process, batch by batch, in constant memory."""

    def __init__(self, *, batch_size: int = DEFAULT_BATCH_SIZE, errors: Any = "raise",
                 progress: Callable[[int], None] | None = None, workers: int | None = None) -> None:
        self.batch_size, self.errors, self.progress = batch_size, errors, progress
        self.workers = workers if workers is not None else min(2, os.cpu_count() or 1)

    def _conformed(self, data: Any, schema: pa.Schema, required: list[str], dead: io.DeadLetters | None,
                   report: bool, columns: list[str] | None = None,
                   encoded: Sequence[str] = ()) -> Iterator[pa.RecordBatch]:
        return conformed(data, schema, required, dead, report, batch_size=self.batch_size, columns=columns,
                         encoded=encoded, progress=self.progress)

    # -------------------------------------------------------------------- fit
    def fit(self, pipeline: Pipeline, data: Any, *, schema: pa.Schema | None = None,
            lineage: dict[str, Any] | None = None) -> FittedPipeline:
        """Fit ``pipeline`` on ``data`` in as many passes as its plan needs."""
        t0 = time.perf_counter()
        one_shot = isinstance(data, Iterator)
        dead = io.dead_letter_sink(self.errors)
        if schema is None:
            first = next(iter(io.read(data if not one_shot else data, batch_size=self.batch_size,
                                      dead=io.DeadLetters() if dead is not None else None)), None)
            if first is None:
                raise DataError("no data to fit on")
            schema = capture_schema(first)
            if one_shot:
                import itertools

                data = itertools.chain([first], data)
        required = required_columns(pipeline.steps, schema)
        state, rows, k = first_pass(pipeline.steps, schema, mergeable=False), 0, 0
        try:
            while state[1] is not None:
                pass_ = state[1]
                if one_shot and k >= 1:
                    raise BeamlearnError("this pipeline needs more than one pass over the data, but the data is a "
                                         "one-shot iterator: pass a table, files, or a function returning an "
                                         "iterable of batches")
                report = k == 0
                batches = self._conformed(data, schema, required, dead, report, pass_.input_columns(),
                                          pass_.encoded_columns())
                states, n = self._run_pass(pass_, batches, dead, report)
                rows += n if report else 0
                state, k = next_pass(state, states, mergeable=False), k + 1
        finally:
            if dead is not None and dead.path:
                dead.close()
        fitted = finish(state, engine="local", name=pipeline.name, lineage=lineage, rows=rows,
                        dead_letters=dead.count if dead is not None else 0)
        fitted.lineage.update({"fit_seconds": round(time.perf_counter() - t0, 6), "data": data_fingerprint(data)})
        return fitted

    def _run_pass(self, pass_: Any, batches: Iterator[pa.RecordBatch],
                  dead: io.DeadLetters | None, report: bool) -> tuple[list[Any], int]:
        """Feed every batch to the pass's analyzers; returns the extracted states and the rows seen.

        With several workers, batch ``i`` goes to worker ``i % workers``, each with its own accumulators, merged
        in worker order at the end: Beam's combine contract, deterministic for a given batching and worker count
        (float statistics differ from one worker's within the rtol 1e-12 any re-batching gives).  A pass with an
        analyzer marked ``sequential = True`` (its accumulators cannot merge) runs on one worker, in batch order.
        """
        workers = max(1, self.workers)
        if any(getattr(a, "sequential", False) for a in pass_.analyzers):  # e.g. partial_fit: cannot merge
            workers = 1
        accs = [create_accumulators(pass_) for _ in range(workers)]
        rows = [0] * workers

        def work(k: int, batch: pa.RecordBatch) -> None:
            rows[k] += add_batch(pass_, accs[k], batch, dead, report)

        if workers == 1:
            for batch in batches:
                work(0, batch)
        else:
            lanes = [ThreadPoolExecutor(1) for _ in range(workers)]  # one thread per accumulator set
            pending: deque = deque()
            try:
                for i, batch in enumerate(batches):
                    pending.append(lanes[i % workers].submit(work, i % workers, batch))
                    if len(pending) > 2 * workers:
                        pending.popleft().result()
                while pending:
                    pending.popleft().result()
            finally:
                for lane in lanes:
                    lane.shutdown(wait=True, cancel_futures=True)
        return extract_states(pass_, accs), sum(rows)

    # -------------------------------------------------------------------- transform
    def transform(self, fitted: FittedPipeline, data: Any) -> Iterator[pa.RecordBatch]:
        """Transformed batches of ``data``; bad rows raise or go to the dead letters."""
        dead = io.dead_letter_sink(self.errors)

        def one(batch: pa.RecordBatch) -> pa.RecordBatch:
            return guard(fitted.transform_batch, batch, dead)[0]

        try:
            batches = self._conformed(data, fitted.input_schema, fitted.required_columns, dead, True,
                                      encoded=fitted.encoded_columns())
            yield from ordered_map(one, batches, self.workers)
        finally:
            if dead is not None and dead.path:
                dead.close()


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], workers: int, ahead: int = 2) -> Iterator[Any]:
    """``map(fn, items)`` on ``workers`` threads, in order, holding at most ``workers + ahead`` items at once (a
    single item runs on the calling thread: no pool for one batch)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    items = iter(items)
    first = next(items, _NONE)
    if first is _NONE:
        return
    second = next(items, _NONE)
    if second is _NONE:
        yield fn(first)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for item in itertools.chain((first, second), items):
            pending.append(pool.submit(fn, item))
            if len(pending) >= workers + ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


_NONE = object()

provide("engine", LocalEngine)  # what Pipeline.fit and FittedPipeline.transform run
