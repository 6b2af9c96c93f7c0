"""The data edge: every in-memory input kind becomes the same batches, bounded by batch_size, tagged with their
origin; conversion and cast failures raise beamlearn errors naming the column and row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from beamlearn import batches as B
from beamlearn.errors import BeamlearnError, DataError, SchemaError

ROWS = [
    {"x": 1.5, "n": 1, "s": "a", "b": True},
    {"x": None, "n": 2, "s": None, "b": False},
    {"x": -3.25, "n": 3, "s": "ccc", "b": None},
    {"x": 0.0, "n": 4, "s": "a", "b": True},
    {"x": 1e300, "n": 5, "s": "é", "b": False},
] * 5
SCHEMA = pa.schema([("x", pa.float64()), ("n", pa.int64()), ("s", pa.string()), ("b", pa.bool_())])
REF = pa.Table.from_pylist(ROWS, schema=SCHEMA)


def collect(data, **kw):
    bs = list(B.to_batches(data, **kw))
    t = pa.Table.from_batches(bs).replace_schema_metadata(None)
    return bs, t.cast(pa.schema([(f.name, B.normalize_type(f.type)) for f in t.schema]))


def inputs():
    df = REF.to_pandas()
    return {
        "table": REF,
        "chunked_table": pa.concat_tables([REF.slice(0, 4), REF.slice(4)]),
        "record_batch": REF.combine_chunks().to_batches()[0],
        "dataframe": df,
        "dict_of_lists": REF.to_pydict(),
        "dict_of_arrays": {"x": np.array([np.nan if v is None else v for v in REF.column("x").to_pylist()]),
                           "n": np.arange(1, 6).repeat(1).tolist() * 5 and np.array(REF.column("n")),
                           "s": REF.column("s").to_pylist(), "b": REF.column("b").to_pylist()},
        "dict_of_arrow": {c: REF.column(c) for c in REF.column_names},
        "list_of_dicts": ROWS,
        "iterable_of_batches": iter(REF.to_batches(max_chunksize=9)),
        "generator_big_batches": (b for b in [REF.combine_chunks().to_batches()[0]]),
    }


@pytest.mark.parametrize("kind", list(inputs()))
@pytest.mark.parametrize("batch_size", [1, 4, 7, 1000])
def test_every_input_kind_gives_the_same_table(kind, batch_size):
    bs, t = collect(inputs()[kind], batch_size=batch_size)
    assert t.schema == SCHEMA, kind
    assert t.equals(REF), kind
    assert all(b.num_rows <= batch_size for b in bs), [b.num_rows for b in bs]
    offsets = [B.batch_origin(b)[1] for b in bs]
    assert offsets == list(np.cumsum([0] + [b.num_rows for b in bs])[:-1])


def test_empty_inputs_keep_their_schema():
    for data in (REF.slice(0, 0), REF.schema.empty_table(), pa.RecordBatch.from_pylist([], schema=SCHEMA)):
        _bs, t = collect(data)
        assert t.num_rows == 0 and t.schema == SCHEMA


def test_source_name_is_recorded():
    (b,) = list(B.to_batches(REF, source="mine"))
    assert B.batch_origin(b) == ("mine", 0)
    assert B.batch_origin(pa.record_batch({"x": [1]})) == (None, 0)


def test_bad_batch_size():
    with pytest.raises(ValueError):
        list(B.to_batches(REF, batch_size=0))


# ---------------------------------------------------------------------------------------------- bad inputs
def test_list_of_dicts_mixed_types_names_column_and_row():
    rows = [{"x": 1.0}, {"x": 2.0}, {"x": "oops"}, {"x": 4.0}]
    with pytest.raises(DataError) as ei:
        list(B.to_batches(rows))
    assert ei.value.column == "x" and ei.value.row == 2
    assert "'x'" in str(ei.value) and "row 2" in str(ei.value)


def test_list_of_dicts_mixed_types_row_counts_across_batches():
    rows = [{"x": float(i)} for i in range(10)] + [{"x": "oops"}]
    with pytest.raises(DataError) as ei:
        list(B.to_batches(rows, batch_size=4))
    assert ei.value.row == 10 and ei.value.column == "x"


def test_list_of_dicts_later_batch_gets_first_batch_types():
    """The first batch fixes the types: a later slice of ints in a float column is not a new schema."""
    rows = [{"x": 1.5}, {"x": 2.5}, {"x": 3}, {"x": 4}]
    _bs, t = collect(rows, batch_size=2)
    assert t.schema.field("x").type == pa.float64()


def test_list_with_a_non_dict_row():
    with pytest.raises(DataError) as ei:
        list(B.to_batches([{"x": 1}, [1, 2]]))
    assert ei.value.row == 1


def test_dict_of_arrays_mixed_types_names_column():
    with pytest.raises(DataError) as ei:
        list(B.to_batches({"a": [1.0, 2.0], "x": [1.0, "oops"]}))
    assert ei.value.column == "x"


def test_dict_of_arrays_unequal_lengths():
    with pytest.raises(DataError, match="length"):
        list(B.to_batches({"a": [1.0, 2.0], "b": [1.0]}))


def test_dataframe_mixed_object_column_names_column():
    df = pd.DataFrame({"a": [1.0, 2.0], "x": pd.Series([1.0, "oops"], dtype=object)})
    with pytest.raises(DataError) as ei:
        list(B.to_batches(df))
    assert ei.value.column == "x"


def test_list_of_dicts_with_schema_keeps_bad_values_for_conform():
    """With a fitted schema, a bad value is left for conform(), which names its row (or dead-letters it)."""
    schema = pa.schema([("x", pa.float64()), ("s", pa.string())])
    (b,) = list(B.to_batches([{"x": 1.0, "s": "a"}, {"x": "oops", "s": 3}], schema=schema))
    with pytest.raises(DataError) as ei:
        B.conform(b, schema, required=["x"])
    assert (ei.value.column, ei.value.row) == ("x", 1)


def test_list_of_dicts_absent_column_is_missing_not_null():
    schema = pa.schema([("x", pa.float64()), ("y", pa.float64())])
    (b,) = list(B.to_batches([{"y": 1.0}], schema=schema))
    assert b.schema.names == ["y"]
    with pytest.raises(SchemaError) as ei:
        B.conform(b, schema, required=["x"])
    assert ei.value.column == "x"


def test_unsupported_input_type():
    with pytest.raises(DataError, match="cannot read data of type int"):
        list(B.to_batches(42))
    with pytest.raises(DataError, match="RecordBatch"):
        list(B.to_batches(iter([{"x": 1}, 5])))


# ---------------------------------------------------------------------------------------------- missing values
def test_missing_mask_and_float_values():
    arr = pa.array([1.0, None, float("nan"), 2.0])
    assert B.missing_mask(arr).tolist() == [False, True, True, False]
    x = B.float_values(arr)
    assert np.isnan(x[[1, 2]]).all() and x[[0, 3]].tolist() == [1.0, 2.0]
    assert B.float_values(pa.array([1, None, 3])).tolist()[::2] == [1.0, 3.0]
    assert B.missing_mask(pa.array(["a", None])).tolist() == [False, True]
    with pytest.raises(SchemaError):
        B.float_values(pa.array(["a"]))


def test_raw_values_masks_nulls_and_nan_on_sliced_arrays():
    arr = pa.array([0.0, 1.0, None, float("nan"), 4.0, None, 6.0, 7.0, 8.0, None, 10.0])
    for off in range(len(arr)):
        sl = arr.slice(off)
        x, ok = B.raw_values(sl)
        want = ~B.missing_mask(sl)
        got = np.ones(len(sl), bool) if ok is None else ok
        assert got.tolist() == want.tolist(), off
        assert x[got].tolist() == [v for v in sl.to_pylist() if v is not None and v == v]  # noqa: PLR0124


def test_present_values_equal_the_masked_values_and_are_memoized():
    arr = pa.array([0.0, 1.0, None, float("nan"), 4.0, None, 6.0, 7.0, 8.0, None, 10.0])
    for off in range(len(arr)):
        sl = arr.slice(off)
        xs = B.present_values(sl)
        assert xs.tolist() == [v for v in sl.to_pylist() if v is not None and v == v]  # noqa: PLR0124
        assert B.present_values(sl) is xs and not xs.flags.writeable
    full = pa.array([1.0, 2.0])
    assert B.present_values(full) is B.raw_values(full)[0]  # nothing missing: no copy


def test_from_float_turns_nan_into_null():
    assert B.from_float(np.array([1.0, np.nan])).to_pylist() == [1.0, None]


# ---------------------------------------------------------------------------------------------- schema and conform
def test_capture_schema_normalizes_types():
    b = pa.record_batch({"s": pa.array(["a"], type=pa.large_string()),
                         "d": pa.array(["a"]).dictionary_encode(), "x": [1.0]})
    s = B.capture_schema(b, ["s", "d"])
    assert s.names == ["s", "d"] and s.types == [pa.string(), pa.string()]


def test_schema_bytes_round_trip():
    assert B.schema_from_bytes(B.schema_to_bytes(SCHEMA)) == SCHEMA


def test_conform_casts_and_passes_other_columns_through():
    b = B.tag_batch(pa.record_batch({"x": pa.array([1, 2], pa.int32()), "extra": ["p", "q"]}), "src", 10)
    out, bad = B.conform(b, pa.schema([("x", pa.float64())]), required=["x"])
    assert out.schema.field("x").type == pa.float64() and out.column("extra").to_pylist() == ["p", "q"]
    assert len(bad) == 0 and B.batch_origin(out) == ("src", 10)


def test_conform_missing_required_column():
    b = pa.record_batch({"y": [1.0]})
    with pytest.raises(SchemaError) as ei:
        B.conform(b, pa.schema([("x", pa.float64())]), required=["x"])
    assert ei.value.column == "x" and "missing" in str(ei.value)


@pytest.mark.parametrize("values,typ,bad_rows", [
    (["1", "2.5", "abc", None, "-4", "1e3", "nan", "x1"], pa.float64(), [2, 7]),
    (["1", "2.5", "7", None, "-3"], pa.int64(), [1]),
    ([1.0, 2.5, 3.0, None], pa.int64(), [1]),
    (["true", "false", "maybe", None], pa.bool_(), [2]),
    (["2020-01-01", "not a date"], pa.timestamp("s"), [1]),
])
def test_conform_names_the_first_bad_value_or_collects_all(values, typ, bad_rows):
    b = B.tag_batch(pa.record_batch({"c": pa.array(values)}), "f.csv", 100)
    with pytest.raises(DataError) as ei:
        B.conform(b, pa.schema([("c", typ)]), required=[])
    e = ei.value
    assert (e.column, e.row, e.source) == ("c", 100 + bad_rows[0], "f.csv")
    assert e.line == 100 + bad_rows[0] + 2  # header line + 1-based
    out, bad = B.conform(b, pa.schema([("c", typ)]), required=[], collect=True)
    assert bad.indices.tolist() == bad_rows and bad.columns == ["c"] * len(bad_rows)
    assert all("cannot cast" in r for r in bad.reasons)
    assert out.column("c").type == typ
    assert all(out.column("c")[i].as_py() is None for i in bad_rows)


def test_conform_impossible_cast_is_a_data_error():
    b = pa.record_batch({"c": pa.array([[1.0], [2.0]])})
    with pytest.raises(BeamlearnError):
        B.conform(b, pa.schema([("c", pa.float64())]), required=[])
    _out, bad = B.conform(b, pa.schema([("c", pa.float64())]), required=[], collect=True)
    assert bad.indices.tolist() == [0, 1]


def test_column_kind():
    assert [B.column_kind(t) for t in (pa.int8(), pa.float32(), pa.string(), pa.large_string(), pa.bool_(),
                                       pa.timestamp("s"), pa.list_(pa.int8()))] == [
        "numeric", "numeric", "string", "string", "boolean", "temporal", "other"]
