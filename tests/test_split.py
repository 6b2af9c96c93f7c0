"""Deterministic splits: golden vectors (frozen assignments every engine must reproduce), batching
invariance, canonical typed values, time splits and spec validation."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beamlearn import io
from beamlearn.errors import SchemaError, SpecError
from beamlearn.split import HashSplit, TimeSplit, row_hash, split_from_spec


def golden_batch() -> pa.RecordBatch:
    return pa.record_batch({
        "id": pa.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
        "s": pa.array(["JFK", "LGA", "EWR", None, "JFK", "LGA", "", "é", "EWR", "JFK", "x", "y"]),
        "f": pa.array([0.5, -0.0, 3.0, None, float("nan"), 1e300, 2.25, -7.0, 0.1, 0.2, 0.3, 0.4])})


# Frozen: changing the hash changes every split ever made.  Do not update these without a format bump.
GOLDEN_ID_HASHES = [461632039662974222, 17367855119691409954, 12432810121406651799, 4827923986917565119,
                    8123175550850824404, 14151247270218739375, 7893905588340900714, 4425243451580810592,
                    3585017047046814122, 12545661977439473474, 9585857027122556200, 13646401326640282369]
GOLDEN_BY_STRING = [1, 0, 0, 0, 1, 0, 0, 1, 0, 1, 0, 1]      # key s, test_fraction 0.5, seed 0
GOLDEN_BY_ROW = [0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0]         # whole row, test_fraction 0.3, seed 7
GOLDEN_BY_ID = [1, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0]          # key id, test_fraction 0.3, seed 0


def test_golden_vectors() -> None:
    b = golden_batch()
    assert [int(h) for h in row_hash(b, ["id"])] == GOLDEN_ID_HASHES
    assert HashSplit("s", test_fraction=0.5).test_mask(b).astype(int).tolist() == GOLDEN_BY_STRING
    assert HashSplit(None, test_fraction=0.3, seed=7).test_mask(b).astype(int).tolist() == GOLDEN_BY_ROW
    assert HashSplit("id", test_fraction=0.3).test_mask(b).astype(int).tolist() == GOLDEN_BY_ID


def test_same_key_same_side_and_seed_matters() -> None:
    b = golden_batch()
    m = HashSplit("s", test_fraction=0.5).test_mask(b)
    s = b.column("s").to_pylist()
    for v in set(s):
        assert len({bool(m[i]) for i in range(len(s)) if s[i] == v}) == 1
    ids = pa.record_batch({"id": pa.array(np.arange(2000))})
    assert not np.array_equal(HashSplit("id", seed=0).test_mask(ids), HashSplit("id", seed=1).test_mask(ids))


def test_canonical_values_agree_across_types() -> None:
    ints = pa.record_batch({"k": pa.array([1, 2, None, -5], pa.int32())})
    floats = pa.record_batch({"k": pa.array([1.0, 2.0, None, -5.0])})
    nan = pa.record_batch({"k": pa.array([1.0, 2.0, float("nan"), -5.0])})
    big = pa.record_batch({"k": pa.array(["1", "2", None, "-5"])})
    assert np.array_equal(row_hash(ints, ["k"]), row_hash(floats, ["k"]))
    assert np.array_equal(row_hash(floats, ["k"]), row_hash(nan, ["k"]))  # NaN is missing, as null
    assert not np.array_equal(row_hash(ints, ["k"]), row_hash(big, ["k"]))  # typed: "1" is not 1
    zeros = pa.record_batch({"k": pa.array([0.0, -0.0])})
    h = row_hash(zeros, ["k"])
    assert h[0] == h[1]


def test_fraction_is_close() -> None:
    b = pa.record_batch({"id": pa.array(np.arange(20000))})
    frac = HashSplit("id", test_fraction=0.2).test_mask(b).mean()
    assert abs(frac - 0.2) < 0.015


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 300), size=st.integers(1, 64), frac=st.floats(0.05, 0.95), key=st.sampled_from(["a", "s", None]))
def test_split_identical_across_batch_sizes(n: int, size: int, frac: float, key: str | None) -> None:
    rng = np.random.default_rng(n)
    table = pa.table({"a": rng.integers(0, 50, n), "s": pa.array([f"v{i % 7}" for i in range(n)]),
                      "x": rng.normal(size=n)})
    split = HashSplit(key, test_fraction=frac, seed=3)
    whole = split.test_mask(table.to_batches()[0] if table.num_rows else table)
    pieces = np.concatenate([split.test_mask(b) for b in table.to_batches(max_chunksize=size)])
    assert np.array_equal(whole, pieces)
    test = pa.Table.from_batches(list(split.part(table.to_batches(max_chunksize=size), "test")), table.schema)
    train = pa.Table.from_batches(list(split.part(table.to_batches(max_chunksize=size), "train")), table.schema)
    assert test.num_rows + train.num_rows == n
    assert test.num_rows == int(whole.sum())
    assert test.to_pydict() == table.filter(pa.array(whole)).to_pydict()


def test_split_same_from_csv_and_parquet(tmp_path) -> None:
    table = pa.table({"id": pa.array(np.arange(500)), "c": pa.array([f"k{i % 13}" for i in range(500)]),
                      "x": pa.array(np.arange(500) * 0.5)})
    pq.write_table(table, tmp_path / "d.parquet")
    import pyarrow.csv as pacsv

    pacsv.write_csv(table, tmp_path / "d.csv")
    split = HashSplit(None, test_fraction=0.3)
    got = [np.concatenate([split.test_mask(b) for b in io.read(str(tmp_path / f"d.{ext}"), batch_size=37)])
           for ext in ("parquet", "csv")]
    assert np.array_equal(got[0], got[1])


def test_part_keeps_source_rows() -> None:
    from beamlearn.batches import batch_rows, tag_batch

    b = tag_batch(pa.record_batch({"id": pa.array(np.arange(100))}), "f.parquet", 1000)
    test = next(iter(HashSplit("id", test_fraction=0.3).part([b], "test")))
    assert batch_rows(test).tolist() == (1000 + np.array(test.column("id").to_pylist())).tolist()


def test_time_split_kinds() -> None:
    days = ["2013-10-31", "2013-11-01", None, "2013-12-31"]
    want = [False, True, False, True]
    import datetime as dt

    strings = pa.record_batch({"t": pa.array(days)})
    dates = pa.record_batch({"t": pa.array([None if d is None else dt.date.fromisoformat(d) for d in days])})
    stamps = pa.record_batch({"t": pa.array([None if d is None else dt.datetime.fromisoformat(d + " 23:59")
                                             for d in days], pa.timestamp("ms"))})
    texts = pa.record_batch({"t": pa.array(["2013-10-31 23:00:00", "2013-11-01 05:00:00", None,
                                            "2013-12-31 00:00:00"])})
    split = TimeSplit("t", test_from="2013-11-01")
    for b in (strings, dates, stamps, texts):
        assert split.test_mask(b).tolist() == want
    assert TimeSplit("t", test_from=dt.date(2013, 11, 1)).test_mask(dates).tolist() == want


def test_time_split_timezone_reads_naive_as_utc() -> None:
    b = pa.record_batch({"t": pa.array([0, 3600 * 1000], pa.timestamp("ms", tz="America/New_York"))})
    assert TimeSplit("t", test_from="1970-01-01T00:30").test_mask(b).tolist() == [False, True]


def test_errors() -> None:
    with pytest.raises(SpecError, match="test_fraction"):
        HashSplit("a", test_fraction=1.5)
    with pytest.raises(SpecError, match="test_from"):
        TimeSplit("t", test_from="not a date")
    with pytest.raises(SchemaError, match="time column"):
        TimeSplit("t", test_from="2013-01-01").test_mask({"x": [1]})
    with pytest.raises(SchemaError, match="timestamp, date"):
        TimeSplit("x", test_from="2013-01-01").test_mask({"x": [1]})
    with pytest.raises(SchemaError, match="split key"):
        HashSplit("k").test_mask({"x": [1]})
    with pytest.raises(SpecError, match="unknown key 'column'"):
        split_from_spec({"by": "hash", "column": "x"})
    with pytest.raises(SpecError, match="by: hash"):
        split_from_spec({"by": "random"})
    with pytest.raises(SpecError, match="needs 'column'"):
        split_from_spec({"by": "time", "column": "x"})
    assert split_from_spec(None) is None
