"""The in-process engine: runs a fit plan and a fitted pipeline over an iterable of batches in this process.

It moves batches and combines accumulators; it knows nothing about any particular step.  Bad rows follow the
``errors=`` policy shared with the Beam engine: ``"raise"`` names the source, row and column of the first bad
value; a dead-letter sink receives every bad row with its reason and the run goes on, so the rows read always
equal the good rows plus the dead letters.  A step that raises :class:`~beamlearn.errors.DataError` on a batch is
bisected to find the guilty rows.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn import io
from beamlearn.batches import (DEFAULT_BATCH_SIZE, batch_origin, batch_rows, capture_schema, conform,
                               is_csv_source, is_file_input, tag_rows)
from beamlearn.errors import BeamlearnError, DataError, SchemaError
from beamlearn.pipeline import FitPlan, FittedPipeline, Pipeline, step_seeds

__all__ = ["LocalEngine", "compile_row", "find_bad_rows", "data_fingerprint", "ordered_map"]


class LocalEngine:
    """Run fits and transforms in this process, batch by batch, in constant memory."""

    def __init__(self, *, batch_size: int = DEFAULT_BATCH_SIZE, errors: Any = "raise",
                 progress: Callable[[int], None] | None = None, workers: int | None = None) -> None:
        self.batch_size, self.errors, self.progress = batch_size, errors, progress
        self.workers = workers if workers is not None else min(2, os.cpu_count() or 1)

    # -------------------------------------------------------------------- reading
    def _conformed(self, data: Any, schema: pa.Schema, required: list[str], dead: io.DeadLetters | None,
                   report: bool, columns: list[str] | None = None, encoded: Sequence[str] = ()
                   ) -> Iterator[tuple[pa.RecordBatch, np.ndarray | None]]:
        """Batches conformed to ``schema``, bad rows routed to ``dead``, with the original row indices of the
        kept rows (None when nothing was dropped); files are read for ``columns`` only when that cannot change
        the rows kept, with the string columns of ``encoded`` dictionary-encoded (:func:`beamlearn.io.read_file`).
        """
        if not io.is_file_input(data):  # in-memory batches are whole already, with their own encodings
            columns, encoded = None, ()
        for raw in io.read(data, batch_size=self.batch_size, schema=schema, dead=dead if report else
                           (io.DeadLetters() if dead is not None else None), required=required, columns=columns,
                           encoded=encoded):
            # a projected read checked the required columns it skipped
            need = required if columns is None else [c for c in required if c in raw.schema.names]
            batch, bad = conform(raw, schema, required=need, collect=dead is not None, encoded=encoded)
            kept = None
            if len(bad):
                if report:
                    dead.add_rows(batch, bad.indices, bad.columns, bad.reasons)  # type: ignore[union-attr]
                keep = np.ones(batch.num_rows, bool)
                keep[bad.indices] = False
                batch = tag_rows(batch.filter(pa.array(keep)), batch_rows(batch)[keep])  # rows in the source
            if report and self.progress is not None:
                self.progress(raw.num_rows)
            yield batch, kept

    def _guard(self, fn: Callable[[pa.RecordBatch], Any], batch: pa.RecordBatch, kept: np.ndarray | None,
               dead: io.DeadLetters | None, report: bool) -> tuple[Any, pa.RecordBatch]:
        """``fn(batch)``; if it raises DataError, find the guilty rows, raise or dead-letter them, and rerun on
        the rest.  Returns the result and the batch it was computed on."""
        try:
            return fn(batch), batch
        except DataError:
            pass
        bad = find_bad_rows(fn, batch)
        if not bad:  # the failure needs the whole batch: no single row to blame
            fn(batch)
        source, _ = batch_origin(batch)
        idx = np.array([i for i, _ in bad], dtype=np.int64)
        orig = batch_rows(batch)[idx]  # conformed batches carry the source rows of the rows they kept
        line = 2 if is_csv_source(source) else None
        if dead is None:
            i, exc = bad[0]
            raise type(exc)(exc.reason, column=exc.column, source=exc.source or source,
                            row=int(orig[0]), value=exc.value,
                            line=None if line is None else int(orig[0]) + line) from exc
        if report:
            rows = batch.take(pa.array(idx)).to_pylist()
            for k, (_, exc) in enumerate(bad):
                dead.add(source=source, row=int(orig[k]), column=exc.column, reason=exc.reason,
                         record=rows[k], line=None if line is None else int(orig[k]) + line)
        keep = np.ones(batch.num_rows, bool)
        keep[idx] = False
        rest = batch.filter(pa.array(keep))
        return fn(rest), rest

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
        plan = FitPlan(pipeline.steps, schema)
        required = [c for s in pipeline.steps for c in s.input_columns() if c in schema.names]
        rows = 0
        try:
            while not plan.done():
                if one_shot and plan.passes >= 1:
                    raise BeamlearnError("this pipeline needs more than one pass over the data, but the data is a "
                                         "one-shot iterator: pass a table, files, or a function returning an "
                                         "iterable of batches")
                report = plan.passes == 0
                pass_ = plan.next_pass()
                batches = self._conformed(data, schema, required, dead, report, pass_.input_columns(),
                                          pass_.encoded_columns())
                states, n = self._run_pass(pass_, batches, dead, report)
                rows += n if report else 0
                plan.complete(pass_, states)
        finally:
            if dead is not None and dead.path:
                dead.close()
        info = dict(lineage or {})
        info.update({"rows": rows, "dead_letters": dead.count if dead is not None else 0,
                     "passes": plan.passes, "fit_seconds": round(time.perf_counter() - t0, 6),
                     "data": data_fingerprint(data), "profile": plan.profile, "engine": "local",
                     "seeds": step_seeds(pipeline.steps)})
        return FittedPipeline(pipeline.steps, plan.states, schema, name=pipeline.name, lineage=info)

    def _run_pass(self, pass_: Any, batches: Iterator[tuple[pa.RecordBatch, np.ndarray | None]],
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
        accs = [[a.create() for a in pass_.analyzers] for _ in range(workers)]
        rows = [0] * workers

        def work(k: int, batch: pa.RecordBatch, kept: np.ndarray | None) -> None:
            views, batch = self._guard(pass_.views, batch, kept, dead, report)
            rows[k] += batch.num_rows
            mine = accs[k]
            for j, (a, view) in enumerate(zip(pass_.analyzers, views)):
                mine[j] = a.add(mine[j], view)

        if workers == 1:
            for batch, kept in batches:
                work(0, batch, kept)
        else:
            lanes = [ThreadPoolExecutor(1) for _ in range(workers)]  # one thread per accumulator set
            pending: deque = deque()
            try:
                for i, (batch, kept) in enumerate(batches):
                    pending.append(lanes[i % workers].submit(work, i % workers, batch, kept))
                    if len(pending) > 2 * workers:
                        pending.popleft().result()
                while pending:
                    pending.popleft().result()
            finally:
                for lane in lanes:
                    lane.shutdown(wait=True, cancel_futures=True)
        states = [a.extract(a.merge([acc[j] for acc in accs])) for j, a in enumerate(pass_.analyzers)]
        return states, sum(rows)

    # -------------------------------------------------------------------- transform
    def transform(self, fitted: FittedPipeline, data: Any) -> Iterator[pa.RecordBatch]:
        """Transformed batches of ``data``; bad rows raise or go to the dead letters."""
        dead = io.dead_letter_sink(self.errors)

        def one(item: tuple[pa.RecordBatch, np.ndarray | None]) -> pa.RecordBatch:
            return self._guard(fitted.transform_batch, item[0], item[1], dead, True)[0]

        try:
            batches = self._conformed(data, fitted.input_schema, fitted.required_columns, dead, True,
                                      encoded=fitted.encoded_columns())
            yield from ordered_map(one, batches, self.workers)
        finally:
            if dead is not None and dead.path:
                dead.close()


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], workers: int, ahead: int = 2) -> Iterator[Any]:
    """``map(fn, items)`` on ``workers`` threads, in order, holding at most ``workers + ahead`` items at once."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= workers + ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def find_bad_rows(fn: Callable[[pa.RecordBatch], Any], batch: pa.RecordBatch) -> list[tuple[int, DataError]]:
    """The rows of ``batch`` on which ``fn`` raises DataError, found by bisection (O(bad · log n) calls)."""
    bad: list[tuple[int, DataError]] = []
    stack = [(0, batch.num_rows)]
    while stack:
        lo, hi = stack.pop()
        try:
            fn(batch.slice(lo, hi - lo))
        except DataError as exc:
            if hi - lo == 1:
                bad.append((lo, exc))
            else:
                mid = (lo + hi) // 2
                stack += [(mid, hi), (lo, mid)]
    return sorted(bad, key=lambda t: t[0])


def data_fingerprint(data: Any) -> dict[str, Any]:
    """What the training data was: file names and sizes, or the kind of in-memory object."""
    if is_file_input(data):
        try:
            files = io.expand_paths(data)
        except BeamlearnError:
            files = []
        return {"files": [{"name": os.path.basename(f), "path": os.path.abspath(f), "bytes": os.path.getsize(f)}
                          for f in files]}
    return {"in_memory": type(data).__name__}


# ---------------------------------------------------------------------------------------------- one record
def _validator(name: str, typ: pa.DataType) -> Callable[[Any], Any]:
    if pa.types.is_floating(typ):
        def check(v: Any) -> Any:
            t = type(v)
            if t is float or v is None:
                return v
            if t is int or (isinstance(v, (int, float, np.number)) and not isinstance(v, bool)):
                return float(v)
            raise DataError(f"expected a number, got {t.__name__} {v!r}", column=name, value=v)
    elif pa.types.is_integer(typ):
        def check(v: Any) -> Any:
            t = type(v)
            if t is int or v is None:
                return v
            if isinstance(v, (float, np.floating)) and float(v).is_integer():
                return int(v)
            if isinstance(v, float) and v != v:
                return None
            if isinstance(v, np.integer):
                return int(v)
            raise DataError(f"expected an integer, got {t.__name__} {v!r}", column=name, value=v)
    elif pa.types.is_string(typ) or pa.types.is_large_string(typ):
        def check(v: Any) -> Any:
            if type(v) is str or v is None:
                return v
            if isinstance(v, str):  # numpy's str_
                return str(v)
            if isinstance(v, float) and v != v:  # NaN means missing everywhere
                return None
            raise DataError(f"expected a string, got {type(v).__name__} {v!r}", column=name, value=v)
    elif pa.types.is_boolean(typ):
        def check(v: Any) -> Any:
            if type(v) is bool or v is None:
                return v
            if isinstance(v, np.bool_):
                return bool(v)
            if isinstance(v, float) and v != v:  # NaN means missing everywhere
                return None
            raise DataError(f"expected a boolean, got {type(v).__name__} {v!r}", column=name, value=v)
    else:
        def check(v: Any) -> Any:
            return v
    return check


_MISSING = object()


def compile_row(fitted: FittedPipeline) -> Callable[[dict], dict]:
    """Compile the single-record path of ``fitted``: validation, each step's row function, and a dense dict
    in ``output_schema`` order.

    The record is first laid into input-schema order (a copy of a small template), so the steps always see the
    same key order and produce the same output order: it is compared with ``output_schema`` once, after which a
    record with exactly the input columns needs no reordering at all.
    """
    # every input column is checked and cast as transform's conform does (pass-through ones too); only the
    # required ones must be present
    checks = {c: _validator(c, fitted.input_schema.field(c).type) for c in fitted.input_schema.names}
    by_type: dict[type, list[str]] = {float: [], str: [], int: [], bool: []}
    other: list[str] = []
    for c in fitted.input_schema.names:
        typ = fitted.input_schema.field(c).type
        kind = (float if pa.types.is_floating(typ) else str if pa.types.is_string(typ) or pa.types.is_large_string(
            typ) else int if pa.types.is_integer(typ) else bool if pa.types.is_boolean(typ) else None)
        (by_type[kind] if kind is not None else other).append(c)
    groups = [(t, cols) for t, cols in by_type.items() if cols]
    fns = [s.row_function(st, schema) for s, st, schema in zip(fitted.steps, fitted.states, fitted.step_schemas)]
    names = list(fitted.output_schema.names)
    template = dict.fromkeys(names)
    in_template: dict[str, Any] = dict.fromkeys(fitted.input_schema.names)
    for c in fitted.required_columns:
        in_template[c] = _MISSING
    n_in = len(in_template)
    ordered: list[bool] = []  # [] until the first record tells whether the steps emit output order

    def transform_one(record: dict) -> dict:
        if not isinstance(record, dict):
            raise DataError(f"a record must be a dict, got {type(record).__name__}")
        row = in_template.copy()
        row.update(record)
        for t, cols in groups:  # the common case costs one type() test per column
            for c in cols:
                v = row[c]
                if type(v) is not t and v is not None:
                    if v is _MISSING:
                        raise SchemaError("required column is missing from the record", column=c)
                    row[c] = checks[c](v)
        for c in other:
            v = row[c]
            if v is _MISSING:
                raise SchemaError("required column is missing from the record", column=c)
            row[c] = checks[c](v)
        exact = len(row) == n_in
        for f in fns:
            row = f(row)
        if exact:
            if not ordered:
                ordered.append(list(row) == names)
            if ordered[0]:
                return row
        out = template.copy()
        out.update(row)
        return out

    return transform_one
