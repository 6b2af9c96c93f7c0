"""Deterministic train/test splits: stateless filters applied to batches while they are read.

A split never materializes train or test: :meth:`Split.part` filters each batch as it streams by, so fitting on
the train part and evaluating on the test part are two ordinary reads of the same data.  Two kinds:

- :class:`HashSplit` assigns a row to test when a stable 64-bit hash of its *key* (one column, or the whole
  row) falls below ``test_fraction``.  The hash depends only on the values, never on batch boundaries, file
  order, engine or process (Python's salted ``hash()`` is never used), so every run and engine splits alike.
- :class:`TimeSplit` puts rows at or after ``test_from`` in test: a model is used on the future.

Canonical typed values (what is hashed): a null (or NaN) is one fixed code; a boolean is 0/1; an integer, and a
float that holds an integer, is its int64 value (so ``3`` read from CSV and ``3.0`` read from Parquet agree);
any other float is its IEEE-754 bits (``-0.0`` as ``0.0``); a date or timestamp is its int64 count in its unit
after a cast to ``timestamp[ns]`` (dates: days); a string is the first 8 bytes of ``blake2b(utf8, key=seed)``.
Numbers are mixed with the splitmix64 finalizer (vectorized in numpy); strings are hashed once per distinct
value of a batch (a dictionary encode), not per row.  Row keys combine the columns in sorted name order.

Examples
--------
>>> s = HashSplit(key="id", test_fraction=0.5, seed=0)
>>> s.test_mask({"id": [1, 2, 3, 4, 5, 6]}).tolist()
[False, False, True, True, False, True]
>>> TimeSplit("day", test_from="2013-11-01").test_mask({"day": ["2013-10-31", "2013-11-01"]}).tolist()
[False, True]
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beamlearn.batches import batch_rows, column_kind, tag_rows, to_batches
from beamlearn.errors import SchemaError, SpecError

__all__ = ["HashSplit", "Split", "TimeSplit", "row_hash", "split_from_spec"]

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_NULL_CODE = np.uint64(0x9E3779B97F4A7C15)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer, elementwise on uint64 (wrapping arithmetic)."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def _string_hash(value: str, seed: int) -> int:
    key = int(seed).to_bytes(8, "little", signed=False)
    return int.from_bytes(hashlib.blake2b(value.encode("utf-8"), digest_size=8, key=key).digest(), "little")


def _column_codes(arr: pa.Array | pa.ChunkedArray, seed: int) -> np.ndarray:
    """The canonical 64-bit code of every value of ``arr`` (before mixing), nulls as one constant."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    typ, n = arr.type, len(arr)
    if pa.types.is_dictionary(typ):
        arr, typ = arr.cast(typ.value_type), typ.value_type
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        enc = pc.dictionary_encode(arr)
        uniq = [_string_hash(v, seed) for v in enc.dictionary.to_pylist()]  # once per distinct value
        table = np.array(uniq + [0], dtype=np.uint64)
        idx = enc.indices.fill_null(len(uniq)).to_numpy(zero_copy_only=False)
        codes = table[idx]
    elif pa.types.is_timestamp(typ) or pa.types.is_date(typ):
        unit = pa.timestamp("ns", tz=getattr(typ, "tz", None)) if pa.types.is_timestamp(typ) else None
        as_int = (arr.cast(unit) if unit is not None else arr.cast(pa.date32())).cast(
            pa.int64() if unit is not None else pa.int32())
        codes = as_int.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
    elif pa.types.is_boolean(typ):
        codes = arr.fill_null(False).to_numpy(zero_copy_only=False).astype(np.uint64)
    elif pa.types.is_integer(typ):
        codes = arr.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
    elif pa.types.is_floating(typ) or pa.types.is_decimal(typ):
        x = arr.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False).astype(np.float64)
        x = np.where(x == 0.0, 0.0, x)  # -0.0 is 0.0
        integral = np.isfinite(x) & (np.floor(x) == x) & (np.abs(x) < 2.0**63)
        codes = np.where(integral, np.where(integral, x, 0.0).astype(np.int64).view(np.uint64),
                         x.view(np.uint64))
        codes = np.where(np.isnan(x), _NULL_CODE, codes)
    else:
        raise SchemaError(f"cannot hash a column of type {typ} for a split (use a number, string, boolean, date or "
                          "timestamp key)")
    if arr.null_count:
        codes = np.where(arr.is_null().to_numpy(zero_copy_only=False), _NULL_CODE, codes)
    return codes.astype(np.uint64, copy=False)[:n]


def row_hash(batch: pa.RecordBatch, columns: Iterable[str], seed: int = 0) -> np.ndarray:
    """A stable uint64 hash of each row's values in ``columns`` (combined in sorted name order).

    Examples
    --------
    >>> b = pa.record_batch({"k": pa.array([1, 1, None]), "s": pa.array(["a", "a", None])})
    >>> h = row_hash(b, ["k", "s"])
    >>> bool(h[0] == h[1]), bool(h[0] == h[2])
    (True, False)
    """
    h = np.full(batch.num_rows, _mix(np.array([seed], dtype=np.uint64))[0], dtype=np.uint64)
    for name in sorted(columns):
        col = _mix(_column_codes(batch.column(name), seed) ^ np.uint64(_string_hash(name, seed)))
        with np.errstate(over="ignore"):
            h = _mix(h * _GOLDEN + col)
    return h


def _as_batches(data: Any) -> list[pa.RecordBatch]:
    return [data] if isinstance(data, pa.RecordBatch) else list(to_batches(data))


class Split:
    """A stateless row filter: :meth:`test_mask` says which rows are test rows."""

    def test_mask(self, batch: Any) -> np.ndarray:
        """A boolean array: True for the rows of ``batch`` in the test part."""
        batches = _as_batches(batch)
        return np.concatenate([self._mask(b) for b in batches]) if batches else np.zeros(0, bool)

    def _mask(self, batch: pa.RecordBatch) -> np.ndarray:
        raise NotImplementedError

    def columns(self) -> list[str]:
        """The columns the split reads."""
        raise NotImplementedError

    def part(self, batches: Iterable[pa.RecordBatch], which: str) -> Iterator[pa.RecordBatch]:
        """The ``"train"`` or ``"test"`` rows of each batch, batch by batch (empty batches are skipped).  Kept
        rows remember their row number in the source, so error messages still point at the right line."""
        if which not in ("train", "test"):
            raise SpecError(f"a split part is 'train' or 'test', got {which!r}")
        want_test = which == "test"
        for batch in batches:
            keep = self._mask(batch) == want_test
            if keep.all():
                yield batch
            elif keep.any():
                yield tag_rows(batch.filter(pa.array(keep)), batch_rows(batch)[keep])


class HashSplit(Split):
    """Test rows are those whose hash of ``key`` (a column; None: the whole row) maps below ``test_fraction``.

    Parameters
    ----------
    key:
        The column to hash (rows sharing a key land on the same side), or None for every column of the row.
    test_fraction:
        The expected fraction of test rows, in (0, 1).
    seed:
        Another seed gives another, equally stable, assignment.
    """

    def __init__(self, key: str | None = None, *, test_fraction: float = 0.2, seed: int = 0) -> None:
        if not isinstance(test_fraction, (int, float)) or isinstance(test_fraction, bool) or not 0 < test_fraction < 1:
            raise SpecError(f"split: test_fraction must be a number in (0, 1), got {test_fraction!r}")
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
            raise SpecError(f"split: seed must be a non-negative integer, got {seed!r}")
        if key is not None and not isinstance(key, str):
            raise SpecError(f"split: key must be a column name or null (the whole row), got {key!r}")
        self.key, self.test_fraction, self.seed = key, float(test_fraction), seed

    def columns(self) -> list[str]:
        return [] if self.key is None else [self.key]

    def _mask(self, batch: pa.RecordBatch) -> np.ndarray:
        if self.key is not None and self.key not in batch.schema.names:
            raise SchemaError("the split key is not in the data", column=self.key)
        cols = [self.key] if self.key is not None else batch.schema.names
        u = (row_hash(batch, cols, self.seed) >> np.uint64(11)).astype(np.float64) / 2.0**53
        return u < self.test_fraction

    def __repr__(self) -> str:
        return f"HashSplit(key={self.key!r}, test_fraction={self.test_fraction}, seed={self.seed})"


class TimeSplit(Split):
    """Test rows are those whose ``column`` is at or after ``test_from``; rows with a missing time are train.

    ``column`` may be a timestamp, a date, or ISO-8601 text; ``test_from`` is an ISO date or date-time (for a
    column with a time zone, or text with a zone offset such as ``...Z``, a naive ``test_from`` is read as UTC).
    """

    def __init__(self, column: str, *, test_from: Any) -> None:
        if not isinstance(column, str):
            raise SpecError(f"split: column must be a column name, got {column!r}")
        self.column, self.test_from = column, test_from
        self._cut = self._parse(test_from)

    @staticmethod
    def _parse(value: Any) -> np.datetime64:
        if isinstance(value, dt.datetime):
            value = value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone(
                dt.timezone.utc).replace(tzinfo=None)
        try:
            return np.datetime64(value if isinstance(value, (dt.date, dt.datetime)) else str(value), "ns")
        except (ValueError, TypeError):
            raise SpecError(f"split: test_from must be an ISO date or date-time such as '2013-11-01', got "
                            f"{value!r}") from None

    def columns(self) -> list[str]:
        return [self.column]

    def _mask(self, batch: pa.RecordBatch) -> np.ndarray:
        if self.column not in batch.schema.names:
            raise SchemaError("the split's time column is not in the data", column=self.column)
        arr = batch.column(self.column)
        typ = arr.type
        try:
            if pa.types.is_string(typ) or pa.types.is_large_string(typ):
                arr = arr.cast(pa.string())
                try:
                    arr = arr.cast(pa.timestamp("ns"))
                except pa.ArrowInvalid:  # text with a zone offset ('2013-11-01T05:00:00Z'): compared in UTC
                    arr = arr.cast(pa.timestamp("ns", tz="UTC")).cast(pa.timestamp("ns"))
            elif pa.types.is_date(typ):
                arr = arr.cast(pa.date32()).cast(pa.timestamp("ns"))
            elif pa.types.is_timestamp(typ):
                arr = arr.cast(pa.timestamp("ns", tz=typ.tz)).cast(pa.timestamp("ns"))
            else:
                raise SchemaError(f"a time split needs a timestamp, date or ISO text column, got {typ} ("
                                  f"{column_kind(typ)})", column=self.column)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SchemaError(f"cannot read the split's time column as timestamps ({exc})",
                              column=self.column) from None
        ns = arr.cast(pa.int64()).fill_null(np.iinfo(np.int64).min).to_numpy(zero_copy_only=False)
        return ns >= self._cut.astype("datetime64[ns]").astype(np.int64)

    def __repr__(self) -> str:
        return f"TimeSplit({self.column!r}, test_from={str(self.test_from)!r})"


def split_from_spec(entry: Mapping[str, Any] | None) -> Split | None:
    """The split a spec's ``split:`` section describes (None without one); a bad section raises SpecError.

    Examples
    --------
    >>> split_from_spec({"by": "hash", "key": "id", "test_fraction": 0.25})
    HashSplit(key='id', test_fraction=0.25, seed=0)
    >>> split_from_spec({"by": "time", "column": "day", "test_from": "2013-11-01"})
    TimeSplit('day', test_from='2013-11-01')
    """
    if entry is None:
        return None
    if not isinstance(entry, Mapping) or entry.get("by") not in ("hash", "time"):
        raise SpecError("split: expected {by: hash, key: COL|null, test_fraction: 0.2, seed: 0} or "
                        "{by: time, column: COL, test_from: DATE}")
    allowed = {"hash": ("by", "key", "test_fraction", "seed"), "time": ("by", "column", "test_from")}[entry["by"]]
    for k in entry:
        if k not in allowed:
            raise SpecError(f"split: unknown key {k!r} for a {entry['by']} split (keys: {', '.join(allowed)})")
    if entry["by"] == "hash":
        return HashSplit(entry.get("key"), test_fraction=entry.get("test_fraction", 0.2), seed=entry.get("seed", 0))
    if "column" not in entry or "test_from" not in entry:
        raise SpecError("split: a time split needs 'column' and 'test_from'")
    return TimeSplit(entry["column"], test_from=entry["test_from"])
