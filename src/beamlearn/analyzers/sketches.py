"""Sketch analyzers: distinct counts (:class:`DistinctCount`, HyperLogLog) and heavy hitters
(:class:`FrequentItems`, Apache DataSketches' frequent-items sketch).

Both are bounded in memory whatever the rows, merge exactly (merging is associative and commutative: the
HyperLogLog registers take their element-wise maximum; the frequent-items sketch's merge is DataSketches'), and
dump to plain bytes that a profile stores and merges again later.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn.analyzers.base import Analyzer
from beamlearn.analyzers.counts import distinct_counts
from beamlearn.batches import column_kind, present_values

__all__ = ["HLL_PRECISION", "DistinctCount", "FrequentItems", "hash_values", "hll_estimate"]

HLL_PRECISION = 12
"""log2 of the HyperLogLog registers: 4,096 registers, a relative standard error of 1.04 / 64 = 1.6%."""

_M1, _M2, _GOLD = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer (vectorized, wrapping uint64 arithmetic): a 64-bit hash of 64-bit keys."""
    z = z + _GOLD  # a new array, then updated in place (fewer temporaries: this runs on every numeric value)
    for shift, mult in ((np.uint64(30), _M1), (np.uint64(27), _M2)):
        z ^= z >> shift
        z *= mult
    z ^= z >> np.uint64(31)
    return z


def hash_values(arr: pa.Array, column: str | None = None) -> np.ndarray:
    """A 64-bit hash (uint64) of every distinct-able non-missing value of ``arr``: numbers by their float64 value
    (so 1 and 1.0 are one value; -0.0 is 0.0), booleans as 0/1, temporals by their integer ticks, strings by
    MurmurHash3 of their UTF-8 bytes (each distinct string of the batch hashed once).  Other types hash their
    string form.  Missing values (nulls, NaN) are left out."""
    kind = column_kind(arr.type.value_type if pa.types.is_dictionary(arr.type) else arr.type)
    if kind == "string" or kind == "other":
        if kind == "other":
            arr = arr.cast(pa.string())
        import mmh3

        values, _ = distinct_counts(arr, column)
        return np.array([mmh3.hash64(v, signed=False)[0] for v in values if v is not None], dtype=np.uint64)
    if kind == "temporal":
        arr = arr.cast(pa.int64()) if pa.types.is_timestamp(arr.type) or pa.types.is_duration(arr.type) \
            else arr.cast(pa.int64() if pa.types.is_date64(arr.type) or pa.types.is_time64(arr.type) else pa.int32())
    x = present_values(arr) + 0.0  # memoized, shared with the moments of the pass; + 0.0: -0.0 becomes 0.0
    with np.errstate(over="ignore"):
        return _mix(x.view(np.uint64))


def hll_estimate(registers: np.ndarray) -> float:
    """The HyperLogLog estimate of distinct values from its registers (linear counting in the small range)."""
    m = len(registers)
    zeros = int(np.count_nonzero(registers == 0))
    raw = (0.7213 / (1 + 1.079 / m)) * m * m / float(np.sum(np.ldexp(1.0, -registers.astype(np.int64))))
    if raw <= 2.5 * m and zeros:
        return m * float(np.log(m / zeros))
    return raw


class DistinctCount(Analyzer):
    """Approximate distinct values per column, with a HyperLogLog of ``2**precision`` registers (vectorized
    hashing: :func:`hash_values`); relative standard error ``1.04 / sqrt(2**precision)``.

    State: one dict per column, ``{"estimate": float, "lower": float, "upper": float}`` (a 95% interval).

    >>> from beamlearn.analyzers import run_analyzer
    >>> s = run_analyzer(DistinctCount(["x"]), [pa.record_batch({"x": [1.0, 2.0, 2.0, None]})])
    >>> round(s[0]["estimate"])
    2
    """

    reads_dictionary = True

    def __init__(self, columns: Sequence[str], *, precision: int = HLL_PRECISION) -> None:
        self.columns, self.precision = tuple(columns), precision

    def reads(self) -> tuple[str, ...]:
        return self._reads()

    def create(self) -> np.ndarray:
        return np.zeros((len(self.columns), 1 << self.precision), dtype=np.uint8)

    def add(self, acc: np.ndarray, batch: pa.RecordBatch) -> np.ndarray:
        p = self.precision
        low = np.uint64((1 << (64 - p)) - 1)
        for i, c in enumerate(self.columns):
            h = hash_values(batch.column(c), c)
            if not len(h):
                continue
            idx = (h >> np.uint64(64 - p)).astype(np.intp)
            _, e = np.frexp((h & low).astype(np.float64))  # exact: 64 - p <= 53 bits; e = bit length
            rank = ((64 - p) - e + 1).astype(np.uint8)
            np.maximum.at(acc[i], idx, rank)
        return acc

    def merge(self, accs: Sequence[np.ndarray]) -> np.ndarray:
        out = np.array(accs[0], dtype=np.uint8, copy=True)
        for a in accs[1:]:
            np.maximum(out, a, out=out)
        return out

    def decay(self, acc: np.ndarray, factor: float) -> np.ndarray:
        return acc  # a distinct value seen stays seen

    def dump(self, acc: np.ndarray) -> list[bytes]:
        """Per column, the registers zlib-compressed."""
        return [zlib.compress(r.tobytes(), 6) for r in acc]

    def load(self, plain: Sequence[bytes]) -> np.ndarray:
        out = self.create()
        for i, b in enumerate(plain):
            out[i] = np.frombuffer(zlib.decompress(bytes(b)), dtype=np.uint8)
        return out

    def extract(self, acc: np.ndarray) -> list[dict[str, float]]:
        err = 1.04 / np.sqrt(1 << self.precision)
        out = []
        for r in acc:
            e = hll_estimate(r)
            out.append({"estimate": e, "lower": max(0.0, e * (1 - 2 * err)), "upper": e * (1 + 2 * err)})
        return out


class FrequentItems(Analyzer):
    """The most frequent values per column, with DataSketches' frequent-items sketch (``frequent_strings_sketch``
    of ``2**lg_max_map_size`` slots: values and counts are exact while a column has fewer than
    ``0.75 * 2**lg_max_map_size`` distinct values; beyond, each count is within the sketch's maximum error).
    Values are counted by their string form; missing values are not counted.

    State: one dict per column, ``{"items": [[value, estimate, lower, upper], ...] (most frequent first),
    "total": int (values counted), "max_error": int}``.

    >>> from beamlearn.analyzers import run_analyzer
    >>> run_analyzer(FrequentItems(["c"]), [pa.record_batch({"c": ["a", "b", "a", None]})])[0]["items"]
    [['a', 2, 2, 2], ['b', 1, 1, 1]]
    """

    reads_dictionary = True

    def __init__(self, columns: Sequence[str], *, lg_max_map_size: int = 8) -> None:
        self.columns, self.lg_max_map_size = tuple(columns), lg_max_map_size

    def reads(self) -> tuple[str, ...]:
        return self._reads()

    def create(self) -> list[Any]:
        from datasketches import frequent_strings_sketch

        return [FrequentSketch(frequent_strings_sketch(self.lg_max_map_size)) for _ in self.columns]

    def add(self, acc: list[Any], batch: pa.RecordBatch) -> list[Any]:
        for sk, c in zip(acc, self.columns):
            sk.add_counts(*distinct_counts(batch.column(c), c))
        return acc

    def merge(self, accs: Sequence[list[Any]]) -> list[Any]:
        out = self.create()
        for acc in accs:
            for o, a in zip(out, acc):
                if not a.sketch.is_empty():
                    o.sketch.merge(a.sketch)
        return out

    def decay(self, acc: list[Any], factor: float) -> None:
        return None

    def dump(self, acc: list[Any]) -> list[bytes]:
        """Per column, the sketch in DataSketches' portable format."""
        return [sk.sketch.serialize() for sk in acc]

    def load(self, plain: Sequence[bytes]) -> list[Any]:
        from datasketches import frequent_strings_sketch

        return [FrequentSketch(frequent_strings_sketch.deserialize(bytes(b))) for b in plain]

    def extract(self, acc: list[Any]) -> list[dict[str, Any]]:
        from datasketches import frequent_items_error_type

        out = []
        for sk in acc:
            items = sk.sketch.get_frequent_items(frequent_items_error_type.NO_FALSE_NEGATIVES, 0)
            items = sorted(([str(v), int(e), int(lo), int(hi)] for v, e, lo, hi in items), key=lambda t: (-t[1], t[0]))
            out.append({"items": items, "total": int(sk.sketch.total_weight),
                        "max_error": max((hi - e for _, e, _, hi in items), default=0)})
        return out


def item_string(v: Any) -> str:
    """The string a non-string value is counted under (``true``/``false`` for booleans, ``repr``-free numbers)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


class FrequentSketch:
    """A picklable wrapper around ``datasketches.frequent_strings_sketch``."""

    def __init__(self, sketch: Any) -> None:
        self.sketch = sketch

    def add_counts(self, values: Sequence[Any], counts: Sequence[int], weight: int = 1) -> None:
        """Count each of ``values`` ``counts`` times ``weight`` (missing values are not counted)."""
        update = self.sketch.update
        for v, k in zip(values, counts):
            if v is not None and not (isinstance(v, float) and np.isnan(v)):
                update(v if isinstance(v, str) else item_string(v), int(k) * weight)

    def __getstate__(self) -> bytes:
        return self.sketch.serialize()

    def __setstate__(self, data: bytes) -> None:
        from datasketches import frequent_strings_sketch

        self.sketch = frequent_strings_sketch.deserialize(data)
