"""``vectors``: a batch's numeric outputs as Spark ML's vector layout, checked against a row-by-row reference on
random batches (zeros, NaN, nulls, booleans, all-non-zero and all-zero columns, dense and sparse batches).
No Spark needed: the layout is plain Arrow."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from beamlearn.engines.spark_vector import _DENSE_ABOVE, VECTOR_TYPE, vectors

CELLS = {"f": (st.one_of(st.none(), st.sampled_from([0.0, -0.0, 1.5, math.nan, -math.inf]), st.floats(-5, 5)),
               pa.float64()),
         "u": (st.one_of(st.sampled_from([0, 1]), st.integers(0, 255)), pa.uint8()),
         "b": (st.one_of(st.none(), st.booleans()), pa.bool_()),
         "z": (st.just(0.0), pa.float64()),  # all zero
         "d": (st.floats(0.5, 2.0), pa.float64())}  # never zero: the every-row path


@st.composite
def batches(draw):
    n = draw(st.integers(0, 30))
    kinds = draw(st.lists(st.sampled_from(sorted(CELLS)), min_size=0, max_size=8))
    data = {f"c{j}_{k}": pa.array(draw(st.lists(CELLS[k][0], min_size=n, max_size=n)), CELLS[k][1])
            for j, k in enumerate(kinds)}
    return pa.record_batch(data) if data else pa.record_batch({"_": pa.nulls(n)}), list(data)


def reference(batch: pa.RecordBatch, names: list[str]) -> list[list[float]]:
    """Each row's values of ``names`` in order, nulls as NaN."""
    cols = [[math.nan if v is None else float(v) for v in batch.column(c).to_pylist()] for c in names]
    return [[col[i] for col in cols] for i in range(batch.num_rows)]


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))


@settings(max_examples=300, deadline=None)
@given(case=batches())
def test_vectors_hold_every_row_as_the_reference(case):
    batch, names = case
    got = vectors(batch, names)
    assert got.type == VECTOR_TYPE and len(got) == batch.num_rows
    rows = reference(batch, names)
    nonzero = sum(v != 0 for row in rows for v in row)  # NaN != 0: kept
    dense = nonzero > _DENSE_ABOVE * len(rows) * len(names)
    for row, vec in zip(rows, got.to_pylist()):
        if dense:
            assert vec["type"] == 1 and len(vec["values"]) == len(names)
            full = vec["values"]
        else:
            assert vec["type"] == 0 and vec["size"] == len(names)
            assert vec["indices"] == sorted(vec["indices"]) and 0 not in vec["values"]
            full = [0.0] * len(names)
            for i, v in zip(vec["indices"], vec["values"]):
                full[i] = v
            assert vec["indices"] == [i for i, v in enumerate(row) if v != 0]
        assert all(same(a, b) for a, b in zip(full, row) if a != 0 or b != 0), (full, row)
        assert np.array_equal(np.asarray(full) != 0, np.asarray(row) != 0)
