"""The sources of :func:`beamlearn.follow.follow`: a binary stream (stdin), a TCP listener, a watched folder.

A source's ``run(put, stop)`` runs on a thread of its own and ``put``\\ s :class:`Chunk`\\ s of whole lines (at
most :data:`READ_BYTES` read at once; ``put`` blocks while the batcher's queue is full: that is the backpressure),
:class:`FileStart` / :class:`FileEnd` around each file of a folder, and :data:`END` when it is exhausted.  See
:mod:`beamlearn.follow` for the contract of each.

Examples
--------
>>> import io, threading
>>> got = []
>>> StreamSource(io.BytesIO(b'{"x": 1}\\n{"x": 2}'), name="doc").run(got.append, threading.Event())
>>> got[0].source, got[0].lines, got[1].lines, got[2] is END
('doc', [b'{"x": 1}\\n'], [b'{"x": 2}'], True)
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from beamlearn.errors import SpecError

__all__ = [
    "END",
    "MAX_LINE_BYTES",
    "POLL_SECONDS",
    "READ_BYTES",
    "Chunk",
    "FileEnd",
    "FileStart",
    "FolderSource",
    "StreamSource",
    "TcpSource",
]

READ_BYTES = 1 << 18          # a source reads at most this much at once
MAX_LINE_BYTES = 1 << 24      # a longer "line" is cut there (and is a dead letter: invalid JSON)
POLL_SECONDS = 0.2            # how often a blocked source looks at its stop event


@dataclass
class Chunk:
    """Whole JSON lines read at once from one source; ``first`` is the 0-based index of the first line."""

    source: str
    first: int
    lines: list[bytes]
    arrived: float = field(default_factory=time.monotonic)


@dataclass
class FileStart:
    """The chunks of input file ``name`` follow."""

    name: str


@dataclass
class FileEnd:
    """Input file ``name`` was read to its end."""

    name: str


END = object()  #: what a source puts when it is exhausted


def _lines_reader(read: Callable[[], bytes], name: str, put: Callable[[Any], None],
                  stop: threading.Event) -> None:
    """Cut what ``read`` returns (b"" at the end) into chunks of whole lines; the last line needs no newline."""
    tail, first = b"", 0
    while not stop.is_set():
        data = read()
        if not data:
            break
        cut = data.rfind(b"\n")
        if cut < 0:
            tail += data
            if len(tail) > MAX_LINE_BYTES:  # not a line anyone meant: a dead letter, and memory stays bounded
                put(Chunk(name, first, [tail[:MAX_LINE_BYTES] + b"\n"]))
                tail, first = b"", first + 1
            continue
        lines = (tail + data[:cut + 1]).splitlines(keepends=True) if tail else data[:cut + 1].splitlines(True)
        tail = data[cut + 1:]
        put(Chunk(name, first, lines))
        first += len(lines)
    if tail.strip() and not stop.is_set():
        put(Chunk(name, first, [tail]))


class StreamSource:
    """JSON lines from a binary stream (default: standard input), read as they arrive; ends with the stream."""

    def __init__(self, stream: IO[bytes] | None = None, *, name: str = "<stdin>") -> None:
        self.stream, self.name = stream, name

    def run(self, put: Callable[[Any], None], stop: threading.Event) -> None:
        stream = self.stream if self.stream is not None else sys.stdin.buffer
        try:  # a real file descriptor is read without Python's buffered reader (no lock held at exit)
            fd = stream.fileno()
            read: Callable[[], bytes] = lambda: os.read(fd, READ_BYTES)
        except (OSError, AttributeError, ValueError):
            read1 = getattr(stream, "read1", stream.read)
            read = lambda: read1(READ_BYTES)
        _lines_reader(read, self.name, put, stop)
        put(END)


class TcpSource:
    """A TCP listener on ``host:port`` (port 0: any free port, see :attr:`address`) taking any number of
    connections, each a stream of JSON lines named ``tcp:<peer host>:<peer port>``; it never ends by itself."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.create_server((host, port), reuse_port=False)
        self.sock.settimeout(POLL_SECONDS)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]

    def run(self, put: Callable[[Any], None], stop: threading.Event) -> None:
        with self.sock:
            while not stop.is_set():
                try:
                    conn, peer = self.sock.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                conn.settimeout(None)
                threading.Thread(target=self._serve, args=(conn, f"tcp:{peer[0]}:{peer[1]}", put, stop),
                                 daemon=True).start()

    @staticmethod
    def _serve(conn: socket.socket, name: str, put: Callable[[Any], None], stop: threading.Event) -> None:
        with conn:
            _lines_reader(lambda: conn.recv(READ_BYTES), name, put, stop)


class FolderSource:
    """A folder polled every ``poll_seconds`` for new ``*.jsonl`` / ``*.jsonl.gz`` files, taken in name order
    once unchanged for ``settle_seconds`` (names starting with ``.`` or ``_`` are ignored: write there, then
    rename).  Files named in ``done`` are skipped.  With ``once``, the source ends when no file is left."""

    def __init__(self, path: str, *, settle_seconds: float = 1.0, poll_seconds: float = 0.2,
                 once: bool = False) -> None:
        if not os.path.isdir(path):
            raise SpecError(f"--watch {path!r}: no such folder")
        self.path, self.settle, self.poll, self.once = path, settle_seconds, poll_seconds, once
        self.done: set[str] = set()

    def ready(self) -> list[str]:
        """The names of the files to read now, in order."""
        now, out = time.time(), []
        for name in sorted(os.listdir(self.path)):
            if name.startswith((".", "_")) or not name.endswith((".jsonl", ".jsonl.gz")) or name in self.done:
                continue
            with contextlib.suppress(OSError):
                if now - os.stat(os.path.join(self.path, name)).st_mtime >= self.settle:
                    out.append(name)
        return out

    def run(self, put: Callable[[Any], None], stop: threading.Event) -> None:
        import gzip

        while not stop.is_set():
            names = self.ready()
            if not names and self.once:
                break
            for name in names:
                path = os.path.join(self.path, name)
                put(FileStart(name))
                with (gzip.open if name.endswith(".gz") else open)(path, "rb") as fh:  # type: ignore[operator]
                    first = 0
                    while not stop.is_set():
                        lines = fh.readlines(READ_BYTES)
                        if not lines:
                            break
                        put(Chunk(name, first, lines))
                        first += len(lines)
                if stop.is_set():
                    return
                self.done.add(name)
                put(FileEnd(name))
            if not names:
                stop.wait(self.poll)
        put(END)
