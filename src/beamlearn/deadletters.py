"""Dead letters: where rejected rows go, with their source, row, line, column and reason.

Examples
--------
>>> dead = DeadLetters()
>>> dead.add(source="a.csv", row=3, line=5, column="x", reason="not a number", record={"x": "oops"})
>>> dead.count, dead.records[0]["reason"]
(1, 'not a number')
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn.batches import batch_origin, batch_rows, source_line
from beamlearn.errors import BeamlearnError

__all__ = ["DeadLetters", "dead_letter_sink", "json_safe"]


class DeadLetters:
    """Where rejected rows go, with their reason: a JSON-lines file, or memory when ``path`` is None."""

    def __init__(self, path: str | None = None) -> None:
        self.path, self.count, self.records = path, 0, []  # type: ignore[var-annotated]
        self._lock = threading.Lock()
        self._fh = open(path, "w", encoding="utf-8") if path else None  # noqa: SIM115

    def add(self, *, source: str | None, row: int | None, column: str | None, reason: str,
            record: dict[str, Any] | None, line: int | None = None) -> None:
        rec = {"source": source, "row": row, "line": line, "column": column, "reason": reason,
               "record": json_safe(record)}
        line = json.dumps(rec) + "\n" if self._fh is not None else ""
        with self._lock:  # engines may transform batches on several threads
            self.count += 1
            if self._fh is not None:
                self._fh.write(line)
            else:
                self.records.append(rec)

    def add_rows(self, batch: pa.RecordBatch, indices: np.ndarray, columns: list[str | None],
                 reasons: list[str]) -> None:
        """Send rows ``indices`` of ``batch`` (tagged with its source and offset) to the dead letters."""
        source, _ = batch_origin(batch)
        rows = batch.take(pa.array(indices, type=pa.int64())).to_pylist() if len(indices) else []
        where = batch_rows(batch)[np.asarray(indices, dtype=np.int64)].tolist() if len(indices) else []
        for r, rec, col, why in zip(where, rows, columns, reasons):
            self.add(source=source, row=r, line=source_line(source, r), column=col, reason=why, record=rec)

    def close(self) -> None:
        """Close the file (if any); the records kept in memory stay."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def dead_letter_sink(errors: Any) -> DeadLetters | None:
    """``None`` for ``errors="raise"``; a :class:`DeadLetters` for a path or an existing sink."""
    if errors is None or errors == "raise":
        return None
    if isinstance(errors, DeadLetters):
        return errors
    if isinstance(errors, (str, os.PathLike)):
        return DeadLetters(os.fspath(errors))
    raise BeamlearnError(f"errors= must be 'raise', a file path or a DeadLetters, got {errors!r}")


def json_safe(v: Any) -> Any:
    """``v`` as JSON can hold it: NaN and infinities as null, dict keys as strings, other objects as their
    ``str``."""
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return None
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)
