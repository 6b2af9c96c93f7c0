"""Hashing of high-cardinality features: FeatureHasher.

The output is one sparse column, a list of ``{index, value}`` structs per row, never a dense ``n_features``-wide
table.  Indices and values are those of :class:`sklearn.feature_extraction.FeatureHasher` with
``input_type="dict"`` applied to the rows as dicts.

Examples
--------
>>> import beamlearn as bl
>>> f = bl.Pipeline([bl.FeatureHasher(["city"], n_features=8)]).fit({"city": ["Paris", None]})
>>> f.transform_one({"city": "Paris"})
{'hashed': [{'index': 1, 'value': -1.0}]}
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import Any

import mmh3
import numpy as np
import pyarrow as pa

from beamlearn.batches import column_kind, raw_values
from beamlearn.errors import SpecError
from beamlearn.steps.base import RowFn, Step, register_step, replace_columns

__all__ = ["FeatureHasher"]

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_ENTRY = pa.struct([pa.field("index", pa.int32()), pa.field("value", pa.float64())])
SPARSE_TYPE = pa.list_(_ENTRY)
_CACHE_LIMIT = 1 << 16
_mmh3 = mmh3.hash  # MurmurHash3_x86_32 of the UTF-8 bytes: scikit-learn's murmurhash3_32, without scikit-learn


def _murmur(keys: Sequence[str]) -> np.ndarray:
    """Signed 32-bit MurmurHash3 (seed 0) of each key's UTF-8 bytes, as sklearn's FeatureHasher hashes them."""
    if not len(keys):
        return np.zeros(0, dtype=np.int64)
    return np.array([_mmh3(k, 0, True) for k in keys], dtype=np.int64)


def _index_sign(h: np.ndarray, n_features: int, alternate_sign: bool) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's column index (``abs(h) % n_features``, with its rule for ``h == -2**31``) and sign of hashes."""
    idx = np.where(h == _INT32_MIN, (_INT32_MAX - (n_features - 1)) % n_features, np.abs(h) % n_features)
    sign = np.where(h >= 0, 1.0, -1.0) if alternate_sign else np.ones(len(h))
    return idx, sign


@register_step
class FeatureHasher(Step):
    """Hash columns into one sparse feature column, as :class:`sklearn.feature_extraction.FeatureHasher`
    (``input_type="dict"``) on each row's ``{column: value}`` dict.

    A string value hashes ``"{column}={value}"`` with weight 1; a numeric (or boolean) value hashes ``column``
    with the value as weight (zero weights are skipped, as sklearn does).  Missing values contribute nothing.
    Entries of a row that hash to the same index are summed (in column order) and sorted by index, as sklearn's
    CSR output is; sums that cancel stay as explicit zeros, as they do in sklearn.

    Parameters
    ----------
    columns:
        String, numeric or boolean columns to hash; they are replaced by the ``output`` column.
    n_features:
        The number of hash buckets (1 to 2**31 - 1).
    alternate_sign:
        Give each entry the sign of its hash, so collisions tend to cancel.
    output:
        The name of the output column, of type ``list<struct<index: int32, value: float64>>``.

    Examples
    --------
    >>> import beamlearn as bl
    >>> step = bl.FeatureHasher(["city", "n"], n_features=16, alternate_sign=False)
    >>> f = bl.Pipeline([step]).fit({"city": ["Paris", "Oslo"], "n": [2.0, None]})
    >>> f.transform({"city": ["Oslo"], "n": [3.0]}).column("hashed").to_pylist()
    [[{'index': 1, 'value': 1.0}, {'index': 4, 'value': 3.0}]]
    """

    def __init__(self, columns: str | Sequence[str], *, n_features: int = 2**20, alternate_sign: bool = True,
                 output: str = "hashed") -> None:
        self.columns, self.n_features, self.alternate_sign, self.output = columns, n_features, alternate_sign, output

    def check(self, schema: pa.Schema) -> None:
        n = self.n_features
        if not isinstance(n, Integral) or isinstance(n, bool) or not 1 <= n <= _INT32_MAX:
            raise SpecError(f"FeatureHasher: n_features={n!r} must be an integer from 1 to {_INT32_MAX}")
        self._check_choice("alternate_sign", (False, True))
        if not isinstance(self.output, str) or not self.output:
            raise SpecError(f"FeatureHasher: output={self.output!r} must be a non-empty column name")
        super().check(schema)
        self._check_kind(schema, ["string", "numeric", "boolean"])

    def apply(self, batch: pa.RecordBatch, state: dict[str, Any]) -> pa.RecordBatch:
        cols = self.input_columns()
        n, k, nf = batch.num_rows, len(cols), int(self.n_features)
        index = np.zeros((n, k), dtype=np.int64)
        value = np.zeros((n, k), dtype=np.float64)
        keep = np.zeros((n, k), dtype=bool)
        for j, c in enumerate(cols):
            arr = batch.column(c)
            if column_kind(arr.type) == "string" or pa.types.is_dictionary(arr.type):
                enc = arr if pa.types.is_dictionary(arr.type) else arr.dictionary_encode()
                idx, sign = _index_sign(_murmur([f"{c}={v}" for v in enc.dictionary.to_pylist()]), nf,
                                        self.alternate_sign)
                codes = enc.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.intp)
                if len(idx):
                    index[:, j], value[:, j] = idx[codes], sign[codes]
                keep[:, j] = enc.indices.is_valid().to_numpy(zero_copy_only=False)
            else:
                x, valid = raw_values(arr)
                idx, sign = _index_sign(_murmur([c]), nf, self.alternate_sign)
                index[:, j], value[:, j] = idx[0], x * sign[0]
                keep[:, j] = x != 0 if valid is None else valid & (x != 0)
        # order each row's entries by index, ties in column order: sort the codes index * k + column per row
        code = index * k + np.arange(k)
        code[~keep] = nf * k  # missing entries sort last
        if k > 1:
            code.sort(axis=1)
        at = np.flatnonzero(code.ravel() < nf * k)
        rows, code = at // k, code.ravel()[at]
        index, value = code // k, value.ravel()[rows * k + code % k]
        start = np.ones(len(at), dtype=bool)
        start[1:] = (index[1:] != index[:-1]) | (rows[1:] != rows[:-1])
        if not start.all():  # sum duplicates one rank at a time: ((v0 + v1) + v2), as the row path does
            first = np.flatnonzero(start)
            group = np.cumsum(start) - 1
            rank = np.arange(len(at)) - first[group]
            sums = value[first]
            for r in range(1, int(rank.max()) + 1):
                sel = rank == r
                sums[group[sel]] += value[sel]
            rows, index, value = rows[first], index[first], sums
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(np.bincount(rows, minlength=n), out=offsets[1:])
        entries = pa.StructArray.from_arrays([pa.array(index.astype(np.int32)), pa.array(value)],
                                             fields=list(_ENTRY))
        out = pa.ListArray.from_arrays(pa.array(offsets), entries, type=SPARSE_TYPE)
        return replace_columns(batch, cols, [(self.output, out)])

    def row_function(self, state: dict[str, Any], schema: pa.Schema) -> RowFn:
        nf, alt, output = int(self.n_features), bool(self.alternate_sign), self.output
        spec = []
        for c in self.input_columns():
            if column_kind(schema.field(c).type) == "string":
                spec.append((c, True, 0, 0.0, f"{c}=", {}))
            else:
                idx, sign = _index_sign(_murmur([c]), nf, alt)
                spec.append((c, False, int(idx[0]), float(sign[0]), "", {}))

        def hash_entry(key: str) -> tuple[int, float]:
            h = _mmh3(key, 0, True)
            i = (_INT32_MAX - (nf - 1)) % nf if h == _INT32_MIN else abs(h) % nf
            return i, (1.0 if h >= 0 or not alt else -1.0)

        def fn(row: dict) -> dict:
            acc: dict[int, float] = {}
            for c, is_str, i, s, prefix, cache in spec:
                v = row.pop(c)
                if v is None:
                    continue
                if is_str:
                    e = cache.get(v)
                    if e is None:
                        if len(cache) >= _CACHE_LIMIT:
                            cache.clear()
                        e = cache[v] = hash_entry(prefix + v)
                    i, w = e
                else:
                    if v != v or v == 0:
                        continue
                    w = float(v) * s
                if i in acc:
                    acc[i] += w
                else:
                    acc[i] = w
            row[output] = [{"index": i, "value": acc[i]} for i in sorted(acc)]
            return row

        return fn

    def describe(self, state: dict[str, Any]) -> dict[str, Any]:
        return {"output": self.output, "n_features": int(self.n_features), "alternate_sign": self.alternate_sign,
                "columns": self.input_columns()}
