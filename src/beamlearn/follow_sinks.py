"""Where :func:`beamlearn.follow.follow` writes: JSON lines on a stream or a file (:class:`StreamSink`), files
in a folder rolled by rows or seconds (:class:`RolledFiles`), the same named after their input files with a
checkpoint for exactly-once processing of a watched folder (:class:`FileOutputs`), and the dead letters
(:class:`DeadLetterFile`).

Every file in a folder is written under a temporary name starting with ``.`` and renamed when complete, so a
reader of the folder (and :func:`beamlearn.io.read`, which skips names starting with ``.`` or ``_``) never sees
a partial file.

Examples
--------
>>> import io, pyarrow as pa
>>> out = io.BytesIO()
>>> sink = StreamSink(out)
>>> sink.write(pa.record_batch({"x": [1.5, None]}))
>>> sink.close()
>>> out.getvalue()
b'{"x":1.5}\\n{"x":null}\\n'
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import sys
import tempfile
import threading
import time
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from beamlearn import stores
from beamlearn.errors import SpecError
from beamlearn.textio import jsonl_bytes

__all__ = ["FORMATS", "STATE_FILE", "DeadLetterFile", "FileOutputs", "RolledFiles", "Sink", "StreamSink"]

STATE_FILE = "_follow_state.json"
FORMATS = {"jsonl": ".jsonl", "parquet": ".parquet"}


class Sink:
    """What :func:`~beamlearn.follow.follow` writes to; every method but :meth:`write` may do nothing."""

    def write(self, batch: pa.RecordBatch) -> None:
        """Write one transformed batch."""
        raise NotImplementedError

    def flush(self) -> None:
        """End of a micro-batch: make what was written visible downstream (a stream is flushed)."""

    def tick(self) -> None:
        """Called a few times a second: roll a file on time."""

    def begin(self, name: str) -> None:
        """The rows of input file ``name`` follow (folder sources only)."""

    def commit(self, name: str, dead: DeadLetterFile) -> None:
        """Input file ``name`` is done."""

    def abandon(self, dead: DeadLetterFile) -> None:
        """The input file in progress was cut short: drop its outputs (and its dead letters)."""

    def close(self) -> None:
        """Flush and close."""


class StreamSink(Sink):
    """JSON lines on a binary stream (flushed after every micro-batch); a path is opened (truncated) and closed
    at the end.  Rows are encoded and written on a thread of their own, two batches at most behind, so the next
    batch is parsed and transformed meanwhile (Arrow releases the GIL); a write error is raised by the next
    call."""

    def __init__(self, stream: IO[bytes] | str) -> None:
        self.own = isinstance(stream, str)
        if isinstance(stream, str):
            stores.local_only(stream, "--out")
        self.stream: IO[bytes] = open(stream, "wb") if isinstance(stream, str) else stream  # noqa: SIM115
        self._q: queue.Queue = queue.Queue(2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="beamlearn-follow-writer")
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            if self._error is not None:
                continue
            try:
                if item is _FLUSH:
                    self.stream.flush()
                else:
                    self.stream.write(jsonl_bytes(item))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller on its next call
                self._error = exc

    def _put(self, item: Any) -> None:
        if self._error is not None:
            raise self._error
        self._q.put(item)

    def write(self, batch: pa.RecordBatch) -> None:
        self._put(batch)

    def flush(self) -> None:
        self._put(_FLUSH)

    def close(self) -> None:
        if self._thread.is_alive():
            self._q.put(_FLUSH)
            self._q.put(None)
            self._thread.join()
        if self.own:
            self.stream.close()
        if self._error is not None and not isinstance(self._error, BrokenPipeError):
            error, self._error = self._error, None
            raise error


_FLUSH = object()


class RolledFiles(Sink):
    """Files of ``fmt`` (``"parquet"`` or ``"jsonl"``) in ``folder``, a new one after ``roll_rows`` rows or
    ``roll_seconds`` seconds (or when the columns change), each renamed into place when complete.  Names are
    ``<prefix>-<seq>.<ext>``; the default prefix is ``part-<UTC start time>-<pid>``.  ``folder`` may be a store
    URI (``s3://bucket/out/``): each file is written in a local temporary folder and uploaded when complete (an
    object appears whole or not at all), then deleted here."""

    def __init__(self, folder: str, fmt: str = "parquet", *, roll_rows: int = 1_000_000,
                 roll_seconds: float = 60.0, prefix: str | None = None, durable: bool = False) -> None:
        if fmt not in FORMATS:
            raise SpecError(f"output format {fmt!r} is not one of " + ", ".join(FORMATS))
        if roll_rows < 1 or roll_seconds <= 0:
            raise SpecError(f"roll_rows must be >= 1 and roll_seconds > 0, got {roll_rows} and {roll_seconds}")
        self.remote = folder if stores.is_uri(folder) else None
        if self.remote is not None:
            if durable:
                stores.local_only(folder, "--out")  # a checkpointed folder renames and lists its files
            folder = tempfile.mkdtemp(prefix="beamlearn-follow-")
        os.makedirs(folder, exist_ok=True)
        self.folder, self.fmt, self.roll_rows, self.roll_seconds = folder, fmt, roll_rows, roll_seconds
        self.prefix = prefix or time.strftime("part-%Y%m%dT%H%M%S", time.gmtime()) + f"-{os.getpid()}"
        self.durable, self.seq, self.written = durable, 0, []  # type: ignore[var-annotated]
        self._fh: Any = None
        self._writer: Any = None
        self._schema: pa.Schema | None = None
        self._rows, self._opened = 0, 0.0

    def _final(self) -> str:
        return os.path.join(self.folder, f"{self.prefix}-{self.seq:05d}{FORMATS[self.fmt]}")

    def _temp(self) -> str:
        return os.path.join(self.folder, "." + os.path.basename(self._final()) + ".tmp")

    def write(self, batch: pa.RecordBatch) -> None:
        batch = batch.replace_schema_metadata(None)
        room = self.roll_rows - (self._rows if self._fh is not None else 0)
        if batch.num_rows > room:  # a file holds roll_rows rows at most
            self.write(batch.slice(0, room))
            self.write(batch.slice(room))
            return
        if self._fh is not None and self.fmt == "parquet" and batch.schema != self._schema:
            try:  # a pass-through column typed otherwise by this batch's JSON
                batch = batch.cast(self._schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, TypeError):
                self.roll()
        if self._fh is None:
            self._fh, self._schema = open(self._temp(), "wb"), batch.schema  # noqa: SIM115
            self._writer = pq.ParquetWriter(self._fh, batch.schema) if self.fmt == "parquet" else None
            self._rows, self._opened = 0, time.monotonic()
        if self._writer is not None:
            self._writer.write_batch(batch)
        else:
            self._fh.write(jsonl_bytes(batch))
        self._rows += batch.num_rows
        if self._rows >= self.roll_rows:
            self.roll()

    def tick(self) -> None:
        if self._fh is not None and time.monotonic() - self._opened >= self.roll_seconds:
            self.roll()

    def roll(self) -> None:
        """Close the file being written and rename it into place."""
        if self._fh is None:
            return
        if self._writer is not None:
            self._writer.close()
        self._fh.flush()
        if self.durable:
            os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self._temp(), self._final())
        if self.remote is not None:
            stores.upload(self._final(), stores.join(self.remote, os.path.basename(self._final())))
            os.unlink(self._final())
        if self.durable:  # the outputs of the input file in progress, for its checkpoint entry
            self.written.append(os.path.basename(self._final()))
        self._fh = self._writer = None
        self.seq += 1

    def discard(self) -> None:
        """Drop the file being written (its temporary file)."""
        if self._fh is not None:
            with contextlib.suppress(Exception):
                if self._writer is not None:
                    self._writer.close()
                self._fh.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temp())
            self._fh = self._writer = None

    def close(self) -> None:
        self.roll()
        if self.remote is not None:  # every file is uploaded: the local staging folder goes
            shutil.rmtree(self.folder, ignore_errors=True)


class FileOutputs(RolledFiles):
    """:class:`RolledFiles` named after the input file being read (``<input name>-00000.parquet``...), with the
    checkpoint of a watched folder (:data:`STATE_FILE` in ``folder``; see :mod:`beamlearn.follow`)."""

    def __init__(self, folder: str, fmt: str = "parquet", *, roll_rows: int = 1_000_000,
                 roll_seconds: float = 60.0) -> None:
        super().__init__(folder, fmt, roll_rows=roll_rows, roll_seconds=roll_seconds, prefix="-", durable=True)
        self.state: dict[str, Any] = {"version": 1, "done": {}, "dead_letter_bytes": 0}

    def resume(self, dead: DeadLetterFile) -> set[str]:
        """Read the checkpoint, delete outputs of inputs not done and temporary files, cut the dead letters back
        to the checkpoint; returns the names of the inputs done."""
        path = os.path.join(self.folder, STATE_FILE)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                self.state = json.load(fh)
        kept = {o for d in self.state["done"].values() for o in d["outputs"]}
        pattern = re.compile(r".+-\d{5}(" + "|".join(map(re.escape, FORMATS.values())) + r")(\.tmp)?$")
        for name in os.listdir(self.folder):
            base = name.removeprefix(".")
            if pattern.fullmatch(base) and (name.startswith(".") or name not in kept):
                os.unlink(os.path.join(self.folder, name))
        dead.truncate(int(self.state.get("dead_letter_bytes", 0)))
        return set(self.state["done"])

    def begin(self, name: str) -> None:
        self.prefix, self.seq, self.written = _stem(name), 0, []

    def commit(self, name: str, dead: DeadLetterFile) -> None:
        self.roll()
        _sync_dir(self.folder)
        dead.sync()
        self.state["done"][name] = {"outputs": list(self.written), "at": time.time()}
        self.state["dead_letter_bytes"] = dead.size()
        path = os.path.join(self.folder, STATE_FILE)
        tmp = os.path.join(self.folder, "." + STATE_FILE + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self.state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _sync_dir(self.folder)
        self.written = []

    def abandon(self, dead: DeadLetterFile) -> None:
        self.discard()
        for name in self.written:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.folder, name))
        self.written = []
        dead.truncate(int(self.state.get("dead_letter_bytes", 0)))

    def close(self) -> None:
        self.discard()  # only a commit renames a file's last output


def _stem(name: str) -> str:
    for ext in (".jsonl.gz", ".jsonl"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _sync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DeadLetterFile:
    """Dead letters of a stream: appended to a JSON-lines file as they come (``path``), or, with no path, one
    warning line each on stderr.  ``line`` is filled in (1-based) where a reader left it out."""

    def __init__(self, path: str | None) -> None:
        self.path, self.count = path, 0
        self._fh = open(stores.local_only(path, "--errors"), "ab") if path else None  # noqa: SIM115

    def write(self, records: list[dict[str, Any]]) -> None:
        """Append these dead letters (dicts as :class:`~beamlearn.deadletters.DeadLetters` keeps them)."""
        if not records:
            return
        for r in records:
            if r.get("line") is None and r.get("row") is not None:
                r["line"] = r["row"] + 1
        self.count += len(records)
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if self._fh is not None:
            self._fh.write(text.encode())
            self._fh.flush()
        else:
            sys.stderr.write("".join(f"beamlearn: warning: dead letter: {line}\n" for line in text.splitlines()))
            sys.stderr.flush()

    def truncate(self, size: int) -> None:
        """Cut the file back to ``size`` bytes (what a checkpoint recorded)."""
        if self._fh is not None:
            self._fh.truncate(size)
            self._fh.seek(size)

    def size(self) -> int:
        return self._fh.tell() if self._fh is not None else 0

    def sync(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
