"""The planner and FittedPipeline: fused passes, analyzer dedup, multi-pass analyzers, clear errors, required
columns, output schema, and the validated single-record path."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import beamlearn as bl
from beamlearn.analyzers import Moments, Quantiles
from beamlearn.errors import BeamlearnError, DataError, SchemaError
from beamlearn.pipeline import FitPlan
from beamlearn.steps.base import Step, map_columns, register_step
from beamlearn.testing import assert_serving_consistent


@register_step
class H7Twin(Step):
    """Test step asking for the very statistic StandardScaler asks for (to test dedup); subtracts the mean."""

    def __init__(self, columns):
        self.columns = columns

    def analyzers(self):
        return {"m": Moments(self.input_columns())}

    def apply(self, batch, state):
        mean = np.nan_to_num(state["m"]["mean"])
        return map_columns(batch, self.input_columns(), lambda x, i: x - mean[i])


@register_step
class H7Median(Step):
    """Test step with a two-pass (exact quantile) analyzer: subtracts the median."""

    def __init__(self, columns):
        self.columns = columns

    def analyzers(self):
        return {"q": Quantiles(self.input_columns(), [0.5])}

    def apply(self, batch, state):
        med = np.nan_to_num(state["q"]["quantiles"][:, 0])
        return map_columns(batch, self.input_columns(), lambda x, i: x - med[i])


@register_step
class H7Double(Step):
    """Stateless test step."""

    def __init__(self, columns):
        self.columns = columns

    def apply(self, batch, state):
        return map_columns(batch, self.input_columns(), lambda x, i: 2 * x)


def table(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return pa.table({"a": rng.normal(3, 2, n), "b": rng.normal(-1, 5, n), "i": pa.array(np.arange(n), pa.int64()),
                     "id": [f"r{k}" for k in range(n)]})


class CountingSource:
    """A re-readable source that counts how often it is read."""

    def __init__(self, t):
        self.t, self.reads = t, 0

    def __call__(self):
        self.reads += 1
        return self.t.to_batches(max_chunksize=7)


# ---------------------------------------------------------------------------------------------- passes
def test_independent_stateful_steps_fuse_into_one_pass():
    src = CountingSource(table())
    f = bl.Pipeline([bl.StandardScaler(["a"]), bl.StandardScaler(["b"]), H7Twin(["i"])]).fit(src)
    assert f.lineage["passes"] == 1
    assert src.reads == 2  # one read to capture the schema, one pass


def test_chained_steps_on_the_same_columns_take_two_passes():
    t = table()
    src = CountingSource(t)
    f = bl.Pipeline([H7Twin(["a"]), bl.StandardScaler(["a"])]).fit(src)
    assert f.lineage["passes"] == 2
    out = f.transform(t).column("a").to_numpy()
    a = t.column("a").to_numpy()
    np.testing.assert_allclose(out, (a - a.mean()) / a.std(), rtol=1e-12)


def test_stateless_step_does_not_add_a_pass():
    f = bl.Pipeline([H7Double(["a"]), bl.StandardScaler(["a"])]).fit(table())
    assert f.lineage["passes"] == 1
    assert f.states[1]["moments"]["mean"][0] == pytest.approx(2 * table().column("a").to_numpy().mean())


def test_two_pass_analyzer_and_chaining_after_it():
    t = table(101)
    f = bl.Pipeline([H7Median(["a"])]).fit(t)
    assert f.lineage["passes"] == 2
    assert f.states[0]["q"]["quantiles"][0, 0] == np.median(t.column("a").to_numpy())
    f2 = bl.Pipeline([H7Median(["a"]), bl.StandardScaler(["a"]), bl.StandardScaler(["b"])]).fit(t)
    assert f2.lineage["passes"] == 3  # median: 2 passes, then the scaler of its output; b rides along in pass 1


def test_analyzers_requested_twice_are_computed_once():
    """The training profile asks for the moments of every numeric column; a scaler of exactly those columns
    asks for the same statistic of the same data: it is computed once and serves both."""
    t = table()
    plan = FitPlan([bl.StandardScaler(["a", "b", "i"])], bl.batches.capture_schema(t.to_batches()[0]))
    p = plan.next_pass()
    key = Moments(["a", "b", "i"]).key()
    idx = [k for k, a in enumerate(p.analyzers) if a.key() == key]
    assert len(idx) == 1
    assert sorted(p.owners[idx[0]]) == [(-1, "moments"), (0, "moments")]
    f = bl.Pipeline([bl.StandardScaler(["a", "b", "i"])]).fit(t)
    np.testing.assert_array_equal(f.states[0]["moments"]["mean"], f.lineage["profile"]["moments"]["mean"])


def test_same_statistic_of_different_data_is_not_deduplicated():
    t = table()
    plan = FitPlan([H7Double(["a"]), bl.StandardScaler(["a"]), bl.StandardScaler(["b"])],
                   bl.batches.capture_schema(t.to_batches()[0]))
    p = plan.next_pass()
    keys = [a.key() for a in p.analyzers]
    assert keys.count(Moments(["a"]).key()) == 1  # the doubled column (position 1)
    f = bl.Pipeline([bl.StandardScaler(["a"]), H7Double(["a"]), H7Twin(["a"])]).fit(t)
    assert f.states[2]["m"]["mean"][0] == pytest.approx(0.0, abs=1e-12)  # saw the scaled, doubled column


# ---------------------------------------------------------------------------------------------- errors
def test_missing_column_names_step_and_column():
    with pytest.raises(SchemaError) as ei:
        bl.Pipeline([bl.StandardScaler(["a"]), bl.StandardScaler(["nope"])]).fit(table())
    assert ei.value.column == "nope" and "StandardScaler" in str(ei.value)


def test_one_shot_iterator_with_a_multi_pass_plan():
    with pytest.raises(BeamlearnError, match="one-shot iterator"):
        bl.Pipeline([H7Median(["a"])]).fit(iter(table().to_batches(max_chunksize=10)))
    f = bl.Pipeline([bl.StandardScaler(["a"])]).fit(iter(table().to_batches(max_chunksize=10)))
    assert f.lineage["rows"] == 50


def test_no_data():
    with pytest.raises(DataError):
        bl.Pipeline([bl.StandardScaler(["a"])]).fit(iter([]))


def test_not_a_step():
    with pytest.raises(BeamlearnError):
        bl.Pipeline([object()])


# ---------------------------------------------------------------------------------------------- fitted
def test_required_columns_output_schema_and_passthrough():
    t = table()
    f = bl.Pipeline([H7Double(["b"]), bl.StandardScaler(["a", "b"])]).fit(t)
    assert f.required_columns == ["b", "a"]
    assert f.output_schema.names == t.column_names
    assert f.output_schema.field("a").type == pa.float64() and f.output_schema.field("id").type == pa.string()
    out = f.transform(t.drop_columns(["id", "i"]))  # pass-through columns are optional
    assert out.column_names == ["a", "b"]
    assert f.transform(t).column("id").equals(t.column("id"))


def test_transform_missing_required_column():
    f = bl.Pipeline([bl.StandardScaler(["a"])]).fit(table())
    for data in (table().drop_columns(["a"]), [{"b": 1.0}], {"b": [1.0]}):
        with pytest.raises(SchemaError) as ei:
            f.transform(data)
        assert ei.value.column == "a"


def test_transform_output_kinds():
    t = table()
    f = bl.Pipeline([bl.StandardScaler(["a", "b"])]).fit(t)
    assert f.transform(t.select(["a", "b"]), output="numpy").shape == (50, 2)
    assert list(f.transform(t, output="pandas").columns) == t.column_names
    with pytest.raises(BeamlearnError):
        f.transform(t, output="excel")
    assert f.transform(t.slice(0, 0)).num_rows == 0


def test_transform_one_validates_and_matches_transform():
    t = table()
    f = bl.Pipeline([H7Double(["i"]), bl.StandardScaler(["a", "b", "i"])]).fit(t)
    assert_serving_consistent(f, t)
    row = t.slice(3, 1).to_pylist()[0]
    out = f.transform_one(row)
    assert list(out) == f.output_schema.names
    with pytest.raises(SchemaError) as ei:
        f.transform_one({"b": 1.0, "i": 1})
    assert ei.value.column == "a"
    with pytest.raises(DataError) as ei:
        f.transform_one({**row, "a": "abc"})
    assert ei.value.column == "a" and "expected a number" in str(ei.value)
    with pytest.raises(DataError) as ei:
        f.transform_one({**row, "i": 1.5})
    assert ei.value.column == "i"
    with pytest.raises(DataError):
        f.transform_one({**row, "a": True})
    with pytest.raises(DataError):
        f.transform_one([1, 2])
    assert f.transform_one({**row, "i": 4.0}) == f.transform_one({**row, "i": 4})
    assert f.transform_one({**row, "a": None})["a"] is None


def test_transform_one_casts_pass_through_columns_as_transform_does():
    t = pa.table({"x": [1.0, 2.0, 4.0], "id": pa.array([7, 8, 9], pa.int64()), "note": ["a", None, "c"]})
    f = bl.Pipeline([bl.StandardScaler(["x"])]).fit(t)
    got = f.transform_one({"x": 2.0, "id": np.int64(8), "note": None})
    want = f.transform(pa.table({"x": [2.0], "id": pa.array([8], pa.int64()), "note": pa.array([None], pa.string())}))
    assert got == want.to_pylist()[0] and type(got["id"]) is int  # not numpy's int64: the same as transform
    assert f.transform_one({"x": 2.0, "id": 8.0, "note": "b"})["id"] == 8
    with pytest.raises(DataError) as ei:  # a value transform would reject is rejected
        f.transform_one({"x": 2.0, "id": "eight", "note": "b"})
    assert ei.value.column == "id"
    with pytest.raises(DataError) as ei:
        f.transform_one({"x": 2.0, "id": 8, "note": 3})
    assert ei.value.column == "note"
    assert f.transform_one({"x": 2.0})["id"] is None  # a pass-through column may be absent, as from a file
    row = f.transform_one({"x": 2.0, "id": 1, "note": np.str_("z")})  # numpy scalars, as pandas rows give
    assert row["note"] == "z" and type(row["note"]) is str
    g = bl.Pipeline([bl.StandardScaler(["x"])]).fit(pa.table({"x": [1.0, 3.0], "b": [True, False]}))
    assert g.transform_one({"x": 1.0, "b": np.True_})["b"] is True


def test_describe_lists_steps():
    f = bl.Pipeline([bl.StandardScaler(["a"])]).fit(table())
    (d,) = f.describe()
    assert d["step"] == "StandardScaler" and d["params"]["columns"] == ["a"]


def test_profile_and_lineage():
    f = bl.Pipeline([bl.StandardScaler(["a"])]).fit(table())
    assert f.lineage["rows"] == 50 and f.lineage["engine"] == "local"
    assert f.lineage["profile"]["count"]["rows"] == 50
