"""A transform's numeric outputs as ONE Spark ML vector column (``transform(..., output="vector")``).

Spark MLlib hands its models one ``VectorUDT`` column ("features"), usually sparse (a one-hot block is one
non-zero).  Emitting the same shape instead of one Spark column per output moves far fewer bytes from the
Python workers to the JVM and gives Spark one column to convert per row, not hundreds: on the benchmark's
208-column output it is the difference between slower and faster than MLlib (``benchmarks/bench_spark.py``).

Which outputs go in the vector: every numeric or boolean output column the pipeline produces (in output order);
the columns it passes through unread, and non-numeric outputs (a predicted label, say), stay columns.  The
vector's ML attributes name its slots (``features[i]`` is the column ``names[i]``), as ``VectorAssembler``'s do.
Missing values are NaN.  A batch whose values are mostly non-zero is emitted as dense vectors.

Examples
--------
>>> import pyarrow as pa
>>> b = pa.record_batch({"a": [1.0, 0.0], "b": pa.array([0, 3], pa.uint8())})
>>> vectors(b, ["a", "b"]).to_pylist()
[{'type': 0, 'size': 2, 'indices': [0], 'values': [1.0]}, {'type': 0, 'size': 2, 'indices': [1], 'values': [3.0]}]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["VECTOR_TYPE", "vector_columns", "vector_field", "vectors"]

VECTOR_TYPE = pa.struct([pa.field("type", pa.int8(), False), pa.field("size", pa.int32()),
                         pa.field("indices", pa.list_(pa.field("element", pa.int32(), False))),
                         pa.field("values", pa.list_(pa.field("element", pa.float64(), False)))])
"""The Arrow layout of Spark ML's ``VectorUDT`` (type 0 sparse: size, indices, values; type 1 dense: values)."""

_DENSE_ABOVE = 2 / 3  # a batch with more non-zeros than this fraction of its cells goes out dense


def vector_columns(output: pa.Schema, passed: Sequence[str]) -> list[str]:
    """The columns of ``output`` that go in the vector: numeric and boolean ones not in ``passed`` (the input
    columns the pipeline does not read)."""
    kept = set(passed)
    return [f.name for f in output if f.name not in kept and (pa.types.is_integer(f.type) or
                                                              pa.types.is_floating(f.type) or
                                                              pa.types.is_boolean(f.type))]


def vectors(batch: pa.RecordBatch, names: Sequence[str]) -> pa.StructArray:
    """The ``names`` columns of ``batch`` as one ``VECTOR_TYPE`` array (nulls as NaN), sparse unless most
    cells are non-zero.  Column by column (no row-major matrix: its strided fill costs more than the rest)."""
    n, k = batch.num_rows, len(names)
    cols = []
    for name in names:
        col = batch.column(name)
        plain = col.null_count == 0 and not pa.types.is_boolean(col.type)
        cols.append((col if plain else col.cast(pa.float64())).to_numpy(zero_copy_only=False))
    nonzero = [_nonzero(a) for a in cols]
    counts = np.full(n, sum(nz is None for nz in nonzero), np.int32)
    for nz in nonzero:
        if nz is not None:
            counts[nz] += 1
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    if offsets[-1] > _DENSE_ABOVE * n * k:
        values = np.stack([a.astype(np.float64, copy=False) for a in cols], axis=1).ravel() if k else \
            np.empty(0)
        return pa.StructArray.from_arrays(
            [pa.array(np.ones(n, np.int8)), pa.nulls(n, pa.int32()), pa.nulls(n, VECTOR_TYPE.field(2).type),
             pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * k), pa.array(values),
                                      type=VECTOR_TYPE.field(3).type)],
            fields=list(VECTOR_TYPE))
    indices, values, fill = np.empty(offsets[-1], np.int32), np.empty(offsets[-1]), offsets[:-1].copy()
    for j, (a, nz) in enumerate(zip(cols, nonzero)):  # slots in column order within each row
        if nz is None:  # every row: no gathers
            indices[fill], values[fill] = j, a
            fill += 1
        else:
            at = fill[nz]
            indices[at], values[at] = j, a[nz]
            fill[nz] = at + 1
    return pa.StructArray.from_arrays(
        [pa.array(np.zeros(n, np.int8)), pa.array(np.full(n, k, np.int32)),
         pa.ListArray.from_arrays(pa.array(offsets), pa.array(indices), type=VECTOR_TYPE.field(2).type),
         pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), type=VECTOR_TYPE.field(3).type)],
        fields=list(VECTOR_TYPE))


def _nonzero(a: np.ndarray) -> np.ndarray | None:
    """The rows where ``a`` is not zero (NaN is not zero: kept), None when that is every row.  Through a boolean
    mask: ``flatnonzero`` of a mask is 7x faster than of ``uint8`` or ``float64`` values."""
    mask = a != 0
    return None if np.count_nonzero(mask) == len(a) else np.flatnonzero(mask)


def vector_field(name: str, slots: Sequence[str]) -> Any:
    """The Spark ``StructField`` of a vector column, its ML attributes naming the ``slots``."""
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import StructField

    attrs = {"ml_attr": {"attrs": {"numeric": [{"idx": i, "name": s} for i, s in enumerate(slots)]},
                         "num_attrs": len(slots)}}
    return StructField(name, VectorUDT(), True, metadata=attrs)
