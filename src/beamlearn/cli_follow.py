"""``beamlearn transform MODEL --follow``: the command line of :mod:`beamlearn.follow` (options to a source and a
sink, progress and the summary on stderr, since stdout may carry the rows).

::

    beamlearn transform MODEL --follow [--listen HOST:PORT | --watch DIR] [--out -|FILE.jsonl|DIR]
                        [--format jsonl|parquet] [--batch-size ROWS] [--max-wait-ms MS]
                        [--roll-rows ROWS] [--roll-seconds S] [--errors DEAD.jsonl] [--quiet]
                        [--drift-every ROWS [--drift-out DRIFT.jsonl]]

Examples
--------
>>> parse_listen("127.0.0.1:9000")
('127.0.0.1', 9000)
>>> sink_kind("-", None), sink_kind("out.jsonl", None), sink_kind("outdir", None)
('stream', 'file', 'parquet')
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Any

from beamlearn import stores
from beamlearn.errors import BeamlearnError, SpecError

__all__ = ["FOLLOW_ONLY", "parse_listen", "run_follow", "sink_kind"]

FOLLOW_ONLY = ("--listen", "--watch", "--max-wait-ms", "--format", "--roll-rows", "--roll-seconds",
               "--settle-seconds", "--drift-every", "--drift-out")


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (port 0: any free port) as ``(host, port)``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SpecError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9000 (port 0: any free port)")
    return host.strip("[]"), int(port)


def sink_kind(out: str, fmt: str | None) -> str:
    """What ``--out`` names: ``"stream"`` (``-``: JSON lines on stdout), ``"file"`` (one JSON-lines file), or
    ``"jsonl"``/``"parquet"`` files rolled in a folder (anything without a JSON-lines extension)."""
    base = out.lower().removesuffix(".gz")
    if out == "-" or base.endswith((".jsonl", ".ndjson")):
        if fmt == "parquet":
            raise SpecError(f"--out {out}: Parquet output goes to a folder of rolled files; give --out DIR")
        return "stream" if out == "-" else "file"
    if base.endswith((".parquet", ".pq", ".csv", ".json")):
        raise SpecError(f"--out {out}: with --follow, write JSON lines to '-' or a .jsonl file, or Parquet or JSON "
                        "lines files rolled in a folder (--out DIR)")
    return fmt or "parquet"


def run_follow(fitted: Any, *, out: str, listen: str | None, watch: str | None, fmt: str | None,
               batch_size: int | None, max_wait_ms: float, roll_rows: int, roll_seconds: float,
               settle_seconds: float, errors: str | None, quiet: bool, drift_every: int | None = None,
               drift_out: str | None = None) -> None:
    """Build the source and the sink, run :func:`beamlearn.follow.follow` until the input ends or SIGINT /
    SIGTERM, and print progress every 5 s and the summary on stderr (``quiet``: nothing).  ``drift_every``: the
    drift of each window of that many transformed rows against the model's training profile, one JSON line per
    window to ``drift_out`` and a summary on stderr."""
    from beamlearn.cli_common import format_rate
    from beamlearn.follow import (
        DEFAULT_BATCH_ROWS,
        FolderSource,
        StreamSource,
        TcpSource,
        follow,
        stop_on_signals,
    )
    from beamlearn.follow_sinks import DeadLetterFile, FileOutputs, RolledFiles, StreamSink

    if listen and watch:
        raise SpecError("--listen and --watch exclude each other: follow one source (stdin when neither)")
    kind = sink_kind(out, fmt)
    if watch:
        stores.local_only(watch, "--watch")
        if kind in ("stream", "file"):
            raise SpecError(f"--watch needs --out DIR (a folder), not {out!r}: each input's outputs are named after "
                            "it there, with the checkpoint that makes a restart process every file exactly once")
        if os.path.abspath(watch) == os.path.abspath(out):
            raise SpecError("--out must be another folder than --watch")
        source: Any = FolderSource(watch, settle_seconds=settle_seconds)
        sink: Any = FileOutputs(out, kind, roll_rows=roll_rows, roll_seconds=roll_seconds)
        errors = errors or os.path.join(out, "_dead_letters.jsonl")
    else:
        source = TcpSource(*parse_listen(listen)) if listen else StreamSource()
        if kind == "stream":
            sink = StreamSink(sys.stdout.buffer)
        elif kind == "file":
            sink = StreamSink(out)
        else:
            sink = RolledFiles(out, kind, roll_rows=roll_rows, roll_seconds=roll_seconds)
    if listen and not quiet:
        _err(f"listening on {source.address[0]}:{source.address[1]}")
    dead = DeadLetterFile(errors)
    stack = contextlib.ExitStack()
    drift = drift_windows(fitted, drift_every, drift_out, quiet, stack)

    def report(stats: Any) -> None:
        _err(f"follow: {stats.rows_in:,} rows read, {stats.rows_out:,} written, {stats.dead_letters:,} dead "
             f"letters, {format_rate(stats.rows_in, stats.seconds)}")

    with stack, stop_on_signals(threading.Event()) as stop:
        try:
            stats = follow(fitted, source, sink, batch_size=batch_size or DEFAULT_BATCH_ROWS,
                           max_wait_ms=max_wait_ms, dead=dead, stop=stop, report=None if quiet else report,
                           drift=drift)
        except BrokenPipeError:
            with contextlib.suppress(OSError):  # nothing more can reach the reader: no error at exit either
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise BeamlearnError("the output was closed (broken pipe): whatever read it stopped") from None
    if not quiet:
        _err(f"transform --follow: {stats.rows_in:,} rows read, {stats.rows_out:,} written, "
             f"{stats.dead_letters:,} dead letters" + (f" (written to {errors})" if errors else "")
             + (f", {stats.files:,} files" if watch else "")
             + f", {stats.seconds:.2f} s ({format_rate(stats.rows_in, stats.seconds)}) -> {out}")


def drift_windows(fitted: Any, rows: int | None, out: str | None, quiet: bool, stack: contextlib.ExitStack) -> Any:
    """The :class:`~beamlearn.profile.stream.DriftWindows` of ``--drift-every ROWS`` (None without it): each
    window's report as one JSON line on ``out`` (``--drift-out``, opened on ``stack``), its summary on stderr
    unless ``quiet``."""
    if rows is None:
        if out is not None:
            raise SpecError("--drift-out needs --drift-every ROWS")
        return None
    import json

    from beamlearn.cli_profile import drift_text
    from beamlearn.profile import training_profile
    from beamlearn.profile.stream import DriftWindows

    reference = training_profile(fitted)
    if reference is None:
        raise SpecError("--drift-every: this model has no training profile (fitted by an older beamlearn); refit it")
    if out:
        stores.local_only(out, "--drift-out")
    fh = stack.enter_context(open(out, "w", encoding="utf-8")) if out else None  # noqa: SIM115 - the stack closes it

    def emit(report: dict) -> None:
        if fh is not None:
            fh.write(json.dumps(report, default=str) + "\n")
            fh.flush()
        if not quiet:
            _err(drift_text(report).replace("drift: window", f"drift: {report['rows']:,} rows, window", 1))

    return DriftWindows(reference, fitted.input_schema, rows=rows, emit=emit)


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
