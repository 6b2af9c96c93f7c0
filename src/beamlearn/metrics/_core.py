"""Shared machinery of the metric reductions: grouped (sliced) accumulation, class coding, row hashing and the
Poisson bootstrap.

Every metric is computed for *groups*: the whole data (slicing ``()``) and every value of every slicing (one
column or a cross of columns).  A slicing's accumulator holds arrays whose first axis is the group; a batch is
reduced with one ``np.bincount`` per slicing (never a Python loop over rows or over slices), then scattered
into the accumulator by key, so merge is a key union plus an addition.

Row hashes are stable across processes, engines and runs: every value is turned into a canonical 64-bit code
(numbers as the IEEE-754 bits of their float64 value, ``-0.0`` as ``0.0``; strings as the first 8 bytes of
their BLAKE2b digest; missing as a fixed constant) and the codes of a row are combined with the SplitMix64
finalizer.  Python's salted ``hash()`` is never used.

Examples
--------
>>> import pyarrow as pa
>>> h = row_hash(pa.record_batch({"a": [1, 2], "b": ["x", None]}), ["a", "b"])
>>> h.dtype, bool(h[0] != h[1])
(dtype('uint64'), True)
>>> poisson_weights(h, 3).shape
(3, 2)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beamlearn.batches import column_kind, to_float64

__all__ = ["MISSING_CODE", "Groups", "chan_merge", "class_codes", "poisson_weights", "row_hash", "slice_codes"]

MISSING_CODE = np.uint64(0x6A09E667F3BCC909)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
# Poisson(1) cumulative probabilities for k = 0..19 (the tail beyond has probability < 1e-18).
_POISSON_CDF = np.cumsum([math.exp(-1) / math.factorial(k) for k in range(20)])


def mix_bits(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer, vectorized (uint64 arithmetic wraps modulo 2**64)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def _string_code(value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest(), "little")


def value_codes(arr: pa.Array) -> np.ndarray:
    """Canonical uint64 codes of a column's values (see the module docstring); equal values of any numeric type
    (``1``, ``1.0``, ``True``) get equal codes."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    kind = column_kind(arr.type)
    if kind in ("numeric", "boolean") or pa.types.is_null(arr.type):
        x = to_float64(arr).to_numpy(zero_copy_only=False).astype(np.float64, copy=True)
        miss = np.isnan(x)
        if arr.null_count:
            miss |= arr.is_null().to_numpy(zero_copy_only=False)
        x[x == 0] = 0.0  # -0.0 -> 0.0
        codes = x.view(np.uint64).copy()
        codes[miss] = MISSING_CODE
        return codes
    enc = pc.dictionary_encode(pc.cast(arr, pa.string()) if kind != "string" else arr)
    dictionary = enc.dictionary.to_pylist()
    table = np.array([_string_code(str(v)) for v in dictionary] + [int(MISSING_CODE)], dtype=np.uint64)
    idx = enc.indices.fill_null(len(dictionary)).to_numpy(zero_copy_only=False)
    return table[idx]


def row_hash(batch: pa.RecordBatch, columns: Sequence[str]) -> np.ndarray:
    """A stable 64-bit hash of each row's values in ``columns`` (order matters), as a uint64 array."""
    h = np.full(batch.num_rows, _GOLDEN, dtype=np.uint64)
    for c in columns:
        h = mix_bits(h ^ value_codes(batch.column(c)))
    return h


def poisson_weights(hashes: np.ndarray, replicates: int) -> np.ndarray:
    """Poisson(1) bootstrap weights, shape ``(replicates, rows)``, a pure function of each row's hash and the
    replicate number, so every engine and every partitioning draws the same weights."""
    out = np.empty((replicates, len(hashes)), dtype=np.float64)
    with np.errstate(over="ignore"):
        for r in range(replicates):
            u = (mix_bits(hashes + np.uint64(r + 1) * _GOLDEN) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
            out[r] = np.searchsorted(_POISSON_CDF, u, side="right")
    return out


def slice_codes(batch: pa.RecordBatch, columns: Sequence[str]) -> tuple[list[tuple], np.ndarray]:
    """The distinct value combinations of ``columns`` in ``batch`` (``None`` for missing) and each row's index
    into them.  With no columns, one group ``()`` holding every row."""
    n = batch.num_rows
    if not columns:
        return [()], np.zeros(n, dtype=np.int64)
    code = np.zeros(n, dtype=np.int64)
    dicts = []
    for c in columns:
        arr = batch.column(c)
        enc = pc.dictionary_encode(arr, null_encoding="encode")
        values = enc.dictionary.to_pylist()
        idx = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        values = [None if isinstance(v, float) and math.isnan(v) else v for v in values]
        if len(columns) == 1 and len(set(values)) == len(values):  # the dictionary is the key list already
            return [(v,) for v in values], idx
        code = code * len(values) + idx if values else code
        dicts.append(values)
    space = int(np.prod([max(1, len(d)) for d in dicts], dtype=np.float64))
    if space <= 4 * n + 1024:  # dense: find the used combinations with a bincount, not a sort
        used = np.flatnonzero(np.bincount(code, minlength=space))
        table = np.zeros(space, dtype=np.int64)
        table[used] = np.arange(len(used))
        uniq, inverse = used, table[code]
    else:
        uniq, inverse = np.unique(code, return_inverse=True)
    keys = []
    for u in uniq.tolist():
        parts = []
        for values in reversed(dicts):
            u, i = divmod(u, len(values))
            parts.append(values[i])
        keys.append(tuple(reversed(parts)))
    return keys, inverse.reshape(-1)


def class_codes(values: pa.Array, classes: list, index: dict) -> np.ndarray:
    """Indices of ``values`` (no missing) in the growing class list ``classes`` (new classes appended)."""
    uniq = pc.unique(values)
    for v in uniq.to_pylist():
        if v not in index:
            index[v] = len(classes)
            classes.append(v)
    table = np.array([index[v] for v in uniq.to_pylist()], dtype=np.int64)
    return table[pc.index_in(values, value_set=uniq).to_numpy(zero_copy_only=False)]


class Groups:
    """The groups of one slicing: their keys, row counts and named sum arrays (first axis = group).

    ``add(keys, arrays)`` scatters a batch's per-group arrays in; arrays may have class axes (named in
    ``class_axes``) that grow as new classes appear, indexed through ``cmap``.
    """

    def __init__(self, columns: tuple[str, ...]) -> None:
        self.columns = columns
        self.keys: list[tuple] = []
        self.index: dict[tuple, int] = {}
        self.arrays: dict[str, np.ndarray] = {}

    def _gmap(self, keys: list[tuple]) -> np.ndarray:
        for k in keys:
            if k not in self.index:
                self.index[k] = len(self.keys)
                self.keys.append(k)
        return np.array([self.index[k] for k in keys], dtype=np.int64)

    def add(self, keys: list[tuple], arrays: dict[str, np.ndarray], class_axes: dict[str, tuple[int, ...]],
            cmap: np.ndarray | None, n_classes: int) -> None:
        """Add per-group ``arrays`` (group axis first; axes listed in ``class_axes[name]`` index classes by
        the local-to-global ``cmap``).  Arrays named ``moments*`` hold ``(weight, mean, M2)`` triples on their last
        axis and are merged with Chan et al.'s formulas instead of added."""
        gmap = self._gmap(keys)
        for name, local in arrays.items():
            axes = class_axes.get(name, ())
            shape = list(local.shape)
            shape[0] = len(self.keys)
            for a in axes:
                shape[a] = n_classes
            cur = self.arrays.get(name)
            if cur is None or list(cur.shape) != shape:
                grown = np.zeros(shape, dtype=local.dtype)
                if cur is not None:
                    grown[tuple(slice(0, s) for s in cur.shape)] = cur
                cur = self.arrays[name] = grown
            index: list[Any] = [np.arange(s) for s in local.shape]
            index[0] = gmap
            for a in axes:
                index[a] = cmap
            at = np.ix_(*index)
            cur[at] = chan_merge(cur[at], local) if name.startswith("moments") else cur[at] + local
        return gmap

    def merge_from(self, other: Groups, class_axes: dict[str, tuple[int, ...]], cmap: np.ndarray | None,
                   n_classes: int) -> None:
        """Add another accumulator's groups (its class indices mapped through ``cmap``)."""
        if other.keys:
            self.add(other.keys, other.arrays, class_axes, cmap, n_classes)


def chan_merge(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Merge ``(weight, mean, M2)`` triples (last axis) with Chan et al.'s numerically stable formulas."""
    na, ma, qa = a[..., 0], a[..., 1], a[..., 2]
    nb, mb, qb = b[..., 0], b[..., 1], b[..., 2]
    n = na + nb
    frac = np.divide(nb, n, out=np.zeros_like(n), where=n > 0)
    delta = mb - ma
    return np.stack([n, ma + delta * frac, qa + qb + delta * delta * na * frac], axis=-1)


def python_value(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def label_text(v: Any) -> str:
    """How a slice value appears in slice names and gates (``null`` for missing, ``1`` for 1.0)."""
    if v is None:
        return "null"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)
