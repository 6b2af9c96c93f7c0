"""Local streaming without Beam: JSON lines in, transformed rows out, in micro-batches, in this process.

:func:`follow` reads JSON lines from a source (:mod:`beamlearn.follow_sources`, re-exported here:
:class:`StreamSource`: stdin or any binary stream;
:class:`TcpSource`: a TCP listener taking one or more connections; :class:`FolderSource`: a folder watched for
new ``*.jsonl`` / ``*.jsonl.gz`` files), buffers them, and flushes a micro-batch when ``batch_size`` rows are
buffered or the oldest buffered row has waited ``max_wait_ms``.  A batch is parsed by Arrow in one go (a block
holding a bad line is halved until the bad line is found, then read line by line), conformed to the fitted
input schema and transformed by the fitted pipeline's vectorized path; it goes to a sink of
:mod:`beamlearn.follow_sinks` (JSON lines on a stream or file, or rolled Parquet / JSON-lines files).

A malformed line, a value that cannot be cast or that a step rejects, and a line lacking a column the pipeline
needs are **dead letters** (``{"source", "row", "line", "column", "reason", "record"}``; ``line`` is 1-based),
never a silent drop and never the end of the stream.  A key present with ``null`` is a missing value, as in
:meth:`~beamlearn.pipeline.FittedPipeline.transform`; a blank line is skipped.

Memory is bounded: sources put chunks of at most :data:`READ_BYTES` on a queue of :data:`QUEUE_CHUNKS` chunks and
block when it is full, so a slow sink slows the reader (and the writer of the pipe or socket) instead of
buffering.  :func:`stop_on_signals` turns SIGINT and SIGTERM into a clean stop: buffered rows are flushed, the
sink is closed, and :func:`follow` returns its :class:`FollowStats`.

**Exactly-once on a folder** (:class:`FolderSource` with a :class:`~beamlearn.follow_sinks.FileOutputs` sink): a
file is taken when its name does not start with ``.`` or ``_`` and it has not changed for ``settle_seconds``
(write it elsewhere and rename it into place, or leave it alone once written); names are identities, a file
whose name was processed is never read again.  A batch never spans two files; each input's outputs are named
after it (``<name>-00000.parquet``...), each written under a temporary name, synced and renamed.  When a file's
outputs are in place its dead letters are synced and the checkpoint (``_follow_state.json`` in the output folder,
replaced atomically) records it as done.  On restart, done files are skipped, the outputs of any other file are
deleted and the dead-letters file is cut back to its size at the last checkpoint, so an input killed half-way is
processed again from its first line: rows in = rows out + dead letters, nothing lost, nothing twice.

Examples
--------
>>> import io as _io
>>> import beamlearn as bl
>>> from beamlearn.follow_sinks import StreamSink
>>> fitted = bl.Pipeline([bl.StandardScaler(["x"])]).fit({"x": [1.0, 3.0]})
>>> out = _io.BytesIO()
>>> stats = follow(fitted, StreamSource(_io.BytesIO(b'{"x": 1}\\n{"x": "oops"}\\n{"x": 3}\\n')), StreamSink(out))
>>> out.getvalue().decode().splitlines()
['{"x":-1}', '{"x":1}']
>>> stats.rows_in, stats.rows_out, stats.dead_letters
(3, 2, 1)
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn.batches import batch_origin, batch_rows, conform, tag_rows
from beamlearn.deadletters import DeadLetters
from beamlearn.engines.passes import guard
from beamlearn.errors import SpecError
from beamlearn.follow_sinks import DeadLetterFile, FileOutputs, Sink
from beamlearn.follow_sources import (  # noqa: F401 - re-exported
    END,
    MAX_LINE_BYTES,
    READ_BYTES,
    Chunk,
    FileEnd,
    FileStart,
    FolderSource,
    StreamSource,
    TcpSource,
)
from beamlearn.pipeline import FittedPipeline
from beamlearn.textio import parse_jsonl

__all__ = [
    "DEFAULT_BATCH_ROWS",
    "DEFAULT_MAX_WAIT_MS",
    "QUEUE_CHUNKS",
    "READ_BYTES",
    "Chunk",
    "FolderSource",
    "FollowStats",
    "StreamSource",
    "TcpSource",
    "follow",
    "stop_on_signals",
]

QUEUE_CHUNKS = 32             # chunks buffered between the sources and the batcher (then the sources block)
DEFAULT_BATCH_ROWS = 16_384
DEFAULT_MAX_WAIT_MS = 25.0
_TICK = 0.2                   # seconds: how often the loop wakes up with nothing to do (stop, roll, progress)


@dataclass
class FollowStats:
    """What a :func:`follow` run did so far: rows read (non-blank lines), written, dead letters, batches."""

    rows_in: int = 0
    rows_out: int = 0
    dead_letters: int = 0
    batches: int = 0
    files: int = 0
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------- the loop
@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """Set ``stop`` on SIGINT or SIGTERM inside the block (from the main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def follow(fitted: FittedPipeline, source: Any, sink: Sink, *, batch_size: int = DEFAULT_BATCH_ROWS,
           max_wait_ms: float = DEFAULT_MAX_WAIT_MS, dead: DeadLetterFile | None = None,
           stop: threading.Event | None = None, report: Callable[[FollowStats], None] | None = None,
           report_seconds: float = 5.0, drift: Any = None) -> FollowStats:
    """Transform the JSON lines of ``source`` with ``fitted`` into ``sink`` until the source ends or ``stop`` is
    set; returns the counts.  Dead letters go to ``dead`` (a :class:`~beamlearn.follow_sinks.DeadLetterFile`;
    None: one warning line each on stderr).  ``report(stats)`` is called every ``report_seconds``.  ``drift``
    (a :class:`~beamlearn.profile.stream.DriftWindows`) gets every transformed input batch, and its last
    window at the end."""
    if batch_size < 1 or max_wait_ms < 0:
        raise SpecError(f"batch_size must be >= 1 and max_wait_ms >= 0, got {batch_size} and {max_wait_ms}")
    stop = stop or threading.Event()
    dead = dead or DeadLetterFile(None)
    folder = isinstance(sink, FileOutputs)
    if isinstance(source, FolderSource) != folder:
        raise SpecError("a folder source needs a FileOutputs sink (outputs named after their inputs), and only it")
    if folder:
        source.done |= sink.resume(dead)
    else:  # a new run's dead letters, as for a transform of files
        dead.truncate(0)
    q: queue.Queue = queue.Queue(QUEUE_CHUNKS)

    def put(item: Any) -> None:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                q.put(item, timeout=_TICK)
                return

    threading.Thread(target=source.run, args=(put, stop), daemon=True, name="beamlearn-follow-source").start()
    stats, work = FollowStats(), _Batcher(fitted, sink, dead, drift)
    wait, last_report, current = max_wait_ms / 1000.0, time.perf_counter(), None
    mark = (0, 0, 0)  # the counts when the file in progress began
    pending: list[Chunk] = []
    rows = 0
    try:
        while True:
            now = time.monotonic()
            timeout = _TICK if not pending else min(_TICK, max(0.0, pending[0].arrived + wait - now))
            try:
                item = q.get(timeout=timeout)
            except queue.Empty:
                item = None
            if stop.is_set() or item is END:
                break
            if isinstance(item, Chunk):
                pending.append(item)
                rows += len(item.lines)
            elif isinstance(item, FileStart):
                current, mark = item.name, (stats.rows_in, stats.rows_out, dead.count)
                sink.begin(item.name)
            elif isinstance(item, FileEnd):
                work.flush(pending, stats)
                pending, rows, current = [], 0, None
                sink.commit(item.name, dead)
                stats.files += 1
            while rows >= batch_size:  # full batches of exactly batch_size lines
                batch, pending = _take(pending, batch_size)
                work.flush(batch, stats)
                rows -= batch_size
            # on time only when nothing more is queued: a loop behind its source fills its batches instead
            if pending and time.monotonic() - pending[0].arrived >= wait and q.empty():
                work.flush(pending, stats)
                pending, rows = [], 0
            sink.tick()
            if report is not None and time.perf_counter() - last_report >= report_seconds:
                last_report = time.perf_counter()
                stats.seconds = last_report - stats.started
                report(stats)
        if folder:  # a file cut short by a stop is processed again on restart; the queue holds only its rows
            if current is not None:  # its rows do not count: they will be read again
                sink.abandon(dead)
                stats.rows_in, stats.rows_out, dead.count = mark
                stats.dead_letters = dead.count
        else:
            with contextlib.suppress(queue.Empty):
                while True:  # what the sources had read before the end or the stop
                    item = q.get_nowait()
                    if isinstance(item, Chunk):
                        pending.append(item)
            work.flush(pending, stats)
    finally:
        stop.set()
        sink.close()
        dead.close()
        if drift is not None:
            drift.finish()
        stats.seconds = time.perf_counter() - stats.started
    return stats


class _Batcher:
    """Parse, conform, transform and write one micro-batch; bad rows go to the dead letters."""

    def __init__(self, fitted: FittedPipeline, sink: Sink, dead: DeadLetterFile, drift: Any = None) -> None:
        self.fitted, self.sink, self.dead, self.drift = fitted, sink, dead, drift
        self.schema = fitted.input_schema
        self.required = list(fitted.required_columns)
        self.keys = {c: re.compile(re.escape(json.dumps(c).encode()) + rb"\s*:") for c in self.required}

    def flush(self, chunks: list[Chunk], stats: FollowStats) -> None:
        if not chunks:
            return
        memo = DeadLetters()
        for source, first, lines in _runs(chunks):
            for raw in parse_jsonl(lines, first, source, max(len(lines), 1), self.schema, memo):
                stats.rows_in += raw.num_rows
                raw = self._complete_rows(raw, lines, first, memo)
                if raw.num_rows == 0:
                    continue
                need = [c for c in self.required if c in raw.schema.names]
                batch, bad = conform(raw, self.schema, required=need, collect=True)
                if len(bad):  # the record as it was sent (conform nulled the values it could not cast)
                    where = batch_rows(batch)
                    for i, col, why in zip(bad.indices.tolist(), bad.columns, bad.reasons):
                        memo.add(source=source, row=int(where[i]), line=int(where[i]) + 1, column=col,
                                 reason=why, record=json.loads(lines[int(where[i]) - first]))
                    keep = np.ones(batch.num_rows, bool)
                    keep[bad.indices] = False
                    batch = tag_rows(batch.filter(pa.array(keep)), batch_rows(batch)[keep])
                if batch.num_rows:
                    out, kept = guard(self.fitted.transform_batch, batch, memo)
                    if self.drift is not None and kept.num_rows:
                        self.drift.add(kept)
                    if out.num_rows:
                        self.sink.write(out)
                        stats.rows_out += out.num_rows
        stats.rows_in += sum(1 for r in memo.records if r["column"] is None and r["reason"].startswith("invalid"))
        self.dead.write(memo.records)
        stats.dead_letters = self.dead.count
        stats.batches += 1
        self.sink.flush()

    def _complete_rows(self, raw: pa.RecordBatch, lines: list[bytes], first: int,
                       memo: DeadLetters) -> pa.RecordBatch:
        """``raw`` without the rows whose line lacks a required key (dead letters: null is a missing value,
        an absent key is an error, as for :meth:`~beamlearn.pipeline.FittedPipeline.transform_one`)."""
        rows = batch_rows(raw)
        bad: dict[int, str] = {}
        for col, key in self.keys.items():
            if col in raw.schema.names:
                arr = raw.column(col)
                if not arr.null_count:
                    continue
                idx = np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))
            else:
                idx = np.arange(raw.num_rows)
            for i in idx.tolist():
                if i in bad:
                    continue
                if not key.search(lines[int(rows[i]) - first]):  # present with null: a missing value
                    bad[i] = col
        if not bad:
            return raw
        source = batch_origin(raw)[0]
        for i, col in sorted(bad.items()):
            memo.add(source=source, row=int(rows[i]), column=col, reason="required column is missing",
                     record=json.loads(lines[int(rows[i]) - first]), line=int(rows[i]) + 1)
        keep = np.ones(raw.num_rows, bool)
        keep[list(bad)] = False
        return tag_rows(raw.filter(pa.array(keep)), rows[keep])


def _take(chunks: list[Chunk], n: int) -> tuple[list[Chunk], list[Chunk]]:
    """The first ``n`` lines of ``chunks`` (a chunk cut if need be), and the rest."""
    taken: list[Chunk] = []
    for k, c in enumerate(chunks):
        if len(c.lines) >= n:
            if len(c.lines) == n:
                return taken + [c], chunks[k + 1:]
            head, tail = Chunk(c.source, c.first, c.lines[:n], c.arrived), Chunk(c.source, c.first + n,
                                                                               c.lines[n:], c.arrived)
            return taken + [head], [tail] + chunks[k + 1:]
        taken.append(c)
        n -= len(c.lines)
    return taken, []


def _runs(chunks: list[Chunk]) -> Iterator[tuple[str, int, list[bytes]]]:
    """Consecutive chunks of the same source, joined: ``(source, first line, lines)``."""
    source, first, lines = chunks[0].source, chunks[0].first, list(chunks[0].lines)
    for c in chunks[1:]:
        if c.source == source and c.first == first + len(lines):
            lines += c.lines
        else:
            yield source, first, lines
            source, first, lines = c.source, c.first, list(c.lines)
    yield source, first, lines
