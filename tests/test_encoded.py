"""String columns read dictionary-encoded from Parquet: only where every reader takes dictionaries (value-count
analyzers, encoders that replace the column), with results equal to reading the strings."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import beamlearn as bl
from beamlearn import io
from beamlearn.analyzers import RowCount, ValueCounts, run_analyzer
from beamlearn.errors import UnknownCategoryError
from beamlearn.pipeline import FitPlan
from beamlearn.testing import assert_nested_close, random_table


def _write(table: pa.Table, path, row_group_size: int = 150) -> str:
    pq.write_table(table, str(path), row_group_size=row_group_size)
    return str(path)


def _steps() -> list:
    num = ["num0", "num1"]
    return [bl.SimpleImputer(num, keep_empty_features=True), bl.StandardScaler(num),
            bl.OneHotEncoder(["cat0"], handle_unknown="infrequent_if_exist", min_frequency=5),
            bl.OrdinalEncoder(["cat1"], handle_unknown="use_encoded_value", unknown_value=-1),
            bl.FeatureHasher(["cat2"], n_features=8),
            bl.SimpleImputer(["cat3"], strategy="most_frequent", keep_empty_features=True), bl.OneHotEncoder(["cat3"])]


def test_read_file_encodes_only_string_columns_stored_as_such(tmp_path):
    t = random_table(400, n_numeric=1, n_string=2, seed=3)
    t = t.append_column("code", pa.array([f"c{i % 7}" for i in range(t.num_rows)], pa.large_string()))
    path = _write(t, tmp_path / "t.parquet")
    schema = t.schema.set(t.schema.get_field_index("code"), pa.field("code", pa.string()))  # stored otherwise
    got = pa.Table.from_batches(list(io.read_file(path, schema=schema, batch_size=64,
                                                  encoded=["cat0", "code", "num0"])))
    assert pa.types.is_dictionary(got.schema.field("cat0").type)
    assert got.schema.field("cat1").type == pa.string()  # not asked
    assert got.schema.field("code").type == pa.string()  # stored as large_string: cast, not encoded
    assert got.schema.field("num0").type == pa.float64()  # not a string column
    assert got.column("cat0").to_pylist() == t.column("cat0").to_pylist()
    csv = tmp_path / "t.csv"
    csv.write_text("a,s\n1,x\n2,\n")
    rows = pa.Table.from_batches(list(io.read_file(str(csv), encoded=["s"])))
    assert rows.schema.field("s").type == pa.string()  # text formats are read as before


def test_plans_name_the_columns_only_dictionary_readers_read():
    t = random_table(10, n_numeric=2, n_string=4, seed=0)
    plan = FitPlan(_steps(), t.schema)
    first = plan.next_pass()
    # cat0, cat1 (their vocabularies) and cat3 (the imputer's mode); the hasher, applied on the way to the
    # imputer's position, reads cat2
    assert first.encoded_columns() == ["cat0", "cat1", "cat3"]
    assert FitPlan(_steps()[:3], t.schema).next_pass().encoded_columns() == ["cat0", "cat1", "cat2", "cat3"]
    plan.complete(first, [run_analyzer(a, list(t.to_batches())) for a in first.analyzers])
    second = plan.next_pass()  # cat3's vocabulary, after the imputer: a step reads it on the way
    assert "cat3" not in second.encoded_columns()
    fitted = bl.Pipeline(_steps()).fit(t)
    # cat2's first reader (the hasher) and cat3's (the imputer) take strings; the other two are encoded
    assert fitted.encoded_columns() == ["cat0", "cat1"]
    assert bl.Pipeline([bl.Drop(["cat0"])]).fit(t).encoded_columns() == []


def test_analyzers_count_dictionaries_as_strings():
    arr = pa.array(["b", None, "a", "b", "c", None, "b"])
    batch = pa.record_batch({"s": arr.dictionary_encode(), "w": [1.0, 2.0, 0.5, 1.0, 1.0, 1.0, 3.0]})
    plain = pa.record_batch({"s": arr, "w": batch.column("w")})
    for analyzer in (RowCount(["s"]), ValueCounts(["s"]), ValueCounts(["s"], weight="w")):
        assert_nested_close(run_analyzer(analyzer, [batch]), run_analyzer(analyzer, [plain]))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 1000), rows=st.integers(1, 500), null=st.sampled_from([0.0, 0.2, 0.9]))
def test_fit_and_transform_from_parquet_equal_in_memory(tmp_path_factory, seed, rows, null):
    t = random_table(rows, n_numeric=2, n_string=4, n_categories=6, null_fraction=null, seed=seed)
    path = _write(t, tmp_path_factory.mktemp("enc") / "t.parquet", row_group_size=max(1, rows // 3))
    pipe = bl.Pipeline(_steps())
    from_file, in_memory = pipe.fit(path, batch_size=64), pipe.fit(t, batch_size=64)
    for got, want in zip(from_file.states, in_memory.states):
        assert_nested_close(got, want, rtol=1e-12)
    got, want = from_file.transform(path, batch_size=64), in_memory.transform(t, batch_size=64)
    assert got.schema.remove_metadata() == want.schema.remove_metadata()  # no dictionary reaches the output
    assert_nested_close(got.to_pydict(), want.to_pydict(), rtol=1e-9)  # batchings differ: float sums may


def test_an_unknown_category_in_an_encoded_column_is_named(tmp_path):
    fitted = bl.Pipeline([bl.OneHotEncoder(["c"])]).fit({"c": ["a", "b", "a", None]})
    assert fitted.encoded_columns() == ["c"]
    path = _write(pa.table({"c": ["a", None, "zz", "b"]}), tmp_path / "new.parquet")
    with pytest.raises(UnknownCategoryError, match="zz") as info:
        fitted.transform(path)
    assert info.value.column == "c" and info.value.row == 2
    out = fitted.transform(path, errors=bl.DeadLetters())
    assert out.num_rows == 3 and np.asarray(out.column("c_a")).tolist() == [1, 0, 0]


def test_in_memory_dictionaries_are_decoded_as_before():
    """A user's dictionary column (which may encode null as a dictionary value) is read as strings: only files
    are read encoded."""
    encoded = pa.table({"c": pa.array(["a", None, "b", "a"]).dictionary_encode(null_encoding="encode")})
    plain = pa.table({"c": pa.array(["a", None, "b", "a"])})
    pipe = bl.Pipeline([bl.SimpleImputer(["c"], strategy="most_frequent", add_indicator=True),
                        bl.OneHotEncoder(["c"])])
    got, want = pipe.fit(encoded), pipe.fit(plain)
    for g, w in zip(got.states, want.states):
        assert_nested_close(g, w)
    assert got.transform(encoded).to_pydict() == want.transform(plain).to_pydict()
    assert want.transform(plain).column("missingindicator_c").to_pylist() == [0, 1, 0, 0]
