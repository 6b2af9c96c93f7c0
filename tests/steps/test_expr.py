"""Stateless expression steps: Log1p, Clip, Drop, Function and the function registry."""

from __future__ import annotations

import json
import math
import zipfile

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import beamlearn as bl
from beamlearn.errors import ArtifactError, DataWarning, SchemaError, SpecError
from beamlearn.steps import expr
from beamlearn.testing import assert_serving_consistent, random_table

SPECIAL = [0.0, -0.0, -1.0, -2.0, -0.5, 1e-300, 3.0, np.inf, -np.inf, 1e308]


@bl.register_function("test_expr_affine")
def affine(x, a=1.0, b=0.0):
    return a * x + b


@bl.register_function("test_expr_fill")
def fill(x, value=0.0):
    return np.where(np.isnan(x), value, x)


def same_table(a: pa.Table, b: pa.Table) -> bool:
    """Equal schemas and values, NaN equal to NaN (``Table.equals`` says NaN != NaN)."""
    return a.schema == b.schema and repr(a.to_pydict()) == repr(b.to_pydict())


def values_of(out: pa.Table, col: str) -> np.ndarray:
    return np.array(out.column(col).to_pylist(), dtype=float)


def numeric_table(seed: int, n: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = np.r_[rng.normal(size=n) * 3, SPECIAL]
    x[rng.random(len(x)) < 0.1] = np.nan
    return pa.table({"x": pa.array(x, mask=rng.random(len(x)) < 0.1),
                     "i": pa.array(rng.integers(-5, 5, len(x)), mask=rng.random(len(x)) < 0.1),
                     "label": rng.integers(0, 2, len(x)), "s": pa.array(["a"] * len(x))})


# ---------------------------------------------------------------------------------------------- Log1p / Clip
def test_log1p_matches_numpy_and_keeps_missing_missing():
    t = numeric_table(0, 200)
    f = bl.Pipeline([bl.Log1p(["x", "i"])]).fit(t)
    out = f.transform(t)
    assert out.column_names == t.column_names and out.schema.field("i").type == pa.float64()
    for c in ("x", "i"):
        with np.errstate(all="ignore"):
            np.testing.assert_array_equal(values_of(out, c), np.log1p(values_of(t, c)))
        assert out.column(c).null_count == t.column(c).null_count
    assert f.transform_one({"x": -1.0, "i": None, "label": 0, "s": "a"})["x"] == -np.inf
    assert_serving_consistent(f, t)


@pytest.mark.parametrize("lower,upper", [(0.0, 1.0), (None, 2.0), (-1.0, None), ([-1.0, 0], [1.0, None]),
                                         (None, None), (2.0, 2.0)])
def test_clip_matches_numpy(lower, upper):
    t = numeric_table(1, 200)
    f = bl.Pipeline([bl.Clip(["x", "i"], lower=lower, upper=upper)]).fit(t)
    out = f.transform(t)
    for j, c in enumerate(["x", "i"]):
        lo = lower[j] if isinstance(lower, list) else lower
        hi = upper[j] if isinstance(upper, list) else upper
        want = np.clip(values_of(t, c), -np.inf if lo is None else lo, np.inf if hi is None else hi)
        np.testing.assert_array_equal(values_of(out, c), want)
    assert_serving_consistent(f, t)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(xs=st.lists(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)), min_size=1, max_size=40),
       lo=st.one_of(st.none(), st.floats(-10, 10)), width=st.floats(0, 20), batch=st.integers(1, 16))
def test_log1p_and_clip_on_random_values(xs, lo, width, batch):
    t = pa.table({"a": pa.array(xs, pa.float64()), "b": pa.array(xs, pa.float64())})
    hi = None if lo is None else lo + width
    f = bl.Pipeline([bl.Log1p("a"), bl.Clip(["b"], lower=lo, upper=hi)]).fit(t)
    out = f.transform(t, batch_size=batch)
    x = np.array([np.nan if v is None else v for v in xs])
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(values_of(out, "a"), np.log1p(x))
    np.testing.assert_array_equal(values_of(out, "b"), np.clip(x, -np.inf if lo is None else lo,
                                                               np.inf if hi is None else hi))
    assert_serving_consistent(f, t)


def test_clip_keeps_numpys_signed_zeros_on_the_record_path_too():
    # np.clip(-0.0, 0.0, 1.0) is -0.0 and np.clip(0.0, -0.0, 1.0) is 0.0: a bound replaces a value only when the
    # value is strictly beyond it; transform_one once gave 0.0 for the first (max() semantics)
    xs = [-0.0, 0.0, -0.0, 0.0, 2.0, float("nan"), None]
    for lo, hi in ((0.0, 1.0), (-0.0, 1.0), (-1.0, 0.0), (-1.0, -0.0)):
        f = bl.Pipeline([bl.Clip(["b"], lower=lo, upper=hi)]).fit({"b": [0.5]})
        batch = f.transform(pa.table({"b": pa.array(xs, pa.float64())})).column("b").to_pylist()
        rows = [f.transform_one({"b": v})["b"] for v in xs]
        want = np.clip(np.array([np.nan if v is None else v for v in xs]), lo, hi)
        bits = lambda vs: [None if v is None else np.float64(v).tobytes() for v in vs]  # noqa: E731
        assert bits(batch[:5]) == bits(rows[:5]) == bits(want[:5]), (lo, hi)
        assert math.isnan(batch[5]) and batch[6] is None and rows[5] is None and rows[6] is None  # missing stays


@pytest.mark.parametrize("kw,match", [({"lower": 2.0, "upper": 1.0}, "column 'x'"),
                                      ({"lower": [0.0]}, "1 bounds for 2 columns"),
                                      ({"upper": "high"}, "upper bound for column 'x'"),
                                      ({"lower": [0.0, True]}, "lower bound for column 'i'")])
def test_clip_bad_bounds(kw, match):
    with pytest.raises(SpecError, match=match):
        bl.Pipeline([bl.Clip(["x", "i"], **kw)]).fit(numeric_table(0, 5))


@pytest.mark.parametrize("step", [bl.Log1p(["x", "s"]), bl.Clip(["s"], lower=0.0),
                                  bl.Function(["s"], func="test_expr_affine")])
def test_string_columns_are_rejected_naming_them(step):
    with pytest.raises(SchemaError, match="'s'"):
        bl.Pipeline([step]).fit(numeric_table(0, 5))


# ---------------------------------------------------------------------------------------------- Drop
def test_drop_removes_columns_and_they_are_optional_when_serving():
    t = numeric_table(2, 50)
    f = bl.Pipeline([bl.Log1p("x"), bl.Drop(["label", "s"])]).fit(t)
    assert f.output_schema.names == ["x", "i"]
    assert f.transform(t).column_names == ["x", "i"]
    assert same_table(f.transform(t.drop_columns(["label", "s"])), f.transform(t))
    assert f.transform_one({"x": 0.0, "i": 1}) == {"x": 0.0, "i": 1}
    assert f.transform_one({"x": 0.0, "i": 1, "label": 1}) == {"x": 0.0, "i": 1}
    assert_serving_consistent(f, t)


def test_drop_of_an_unknown_column_names_it():
    with pytest.raises(SchemaError, match="'nope'"):
        bl.Pipeline([bl.Drop(["label", "nope"])]).fit(numeric_table(0, 5))


def test_drop_of_a_column_made_by_an_earlier_fitted_step():
    t = pa.table({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]})
    f = bl.Pipeline([bl.KBinsDiscretizer("x", n_bins=2, strategy="uniform"), bl.Drop("x_0.0")]).fit(t)
    assert f.output_schema.names == ["x_1.0", "y"]
    assert f.transform(t).column("x_1.0").to_pylist() == [0, 0, 1, 1]
    assert_serving_consistent(f, t)


# ---------------------------------------------------------------------------------------------- Function
def test_function_applies_the_registered_function_with_kw_args():
    t = numeric_table(3, 100)
    f = bl.Pipeline([bl.Function(["x", "i"], func="test_expr_affine", kw_args={"a": 2.0, "b": -1.0})]).fit(t)
    out = f.transform(t)
    for c in ("x", "i"):
        with np.errstate(over="ignore"):
            np.testing.assert_array_equal(values_of(out, c), 2.0 * values_of(t, c) - 1.0)
    assert_serving_consistent(f, t)


def test_function_sees_missing_as_nan_and_nan_results_are_missing():
    t = numeric_table(4, 100)
    f = bl.Pipeline([bl.Function(["x", "i"], func="test_expr_fill", kw_args={"value": -7.0})]).fit(t)
    out = f.transform(t)
    assert out.column("x").null_count == 0 and out.column("i").null_count == 0
    np.testing.assert_array_equal(values_of(out, "x"), np.nan_to_num(values_of(t, "x"), nan=-7.0,
                                                                     posinf=np.inf, neginf=-np.inf))
    assert f.transform_one({"x": None, "i": None, "label": 0, "s": "a"})["x"] == -7.0
    assert_serving_consistent(f, t)


def test_artifacts_store_only_the_function_name_and_loading_needs_it_registered(tmp_path, monkeypatch):
    @bl.register_function("test_expr_temp")
    def temp(x):
        return x + 1.0

    t = numeric_table(5, 30)
    f = bl.Pipeline([bl.Function("x", func="test_expr_temp"), bl.Log1p("i"), bl.Clip("x", upper=1.5),
                     bl.Drop("label")]).fit(t)
    path = f.save(str(tmp_path / "fn.zip"))
    g = bl.load(path)
    assert same_table(g.transform(t), f.transform(t))
    with zipfile.ZipFile(path) as zf:
        steps = json.loads(zf.read("manifest.json"))["steps"]
    assert steps[0]["params"] == {"columns": "x", "func": "test_expr_temp", "kw_args": None}
    monkeypatch.delitem(expr._FUNCTIONS, "test_expr_temp")
    with pytest.raises(ArtifactError, match="func='test_expr_temp' is not a registered function.*register_function"):
        bl.load(path)


def test_unregistered_function_at_fit_is_a_spec_error():
    with pytest.raises(SpecError, match="func='nowhere' is not a registered function"):
        bl.Pipeline([bl.Function("x", func="nowhere")]).fit({"x": [1.0]})


def test_registry_rules():
    with pytest.raises(SpecError, match="already registered"):
        bl.register_function("test_expr_affine")(lambda x: x)
    assert bl.register_function("test_expr_affine")(affine) is affine  # the same function again is fine
    with pytest.raises(SpecError, match="non-empty name"):
        bl.register_function("")
    assert "test_expr_fill" in bl.registered_functions()


def test_a_non_elementwise_result_shape_is_an_error():
    @bl.register_function("test_expr_sum")
    def total(x):
        return np.sum(x)

    with pytest.raises(SpecError, match="must be elementwise"):
        bl.Pipeline([bl.Function("x", func="test_expr_sum")]).fit({"x": [1.0, 2.0]})


@pytest.mark.parametrize("kw_args", [["a"], {1: 2.0}])
def test_bad_kw_args(kw_args):
    with pytest.raises(SpecError, match="kw_args"):
        bl.Pipeline([bl.Function("x", func="test_expr_affine", kw_args=kw_args)]).fit({"x": [1.0]})


def test_whole_pipeline_on_a_random_table_serves_consistently():
    t = random_table(300, n_numeric=3, n_string=2, seed=8)
    with pytest.warns(DataWarning, match="'num0' are removed"):  # clipping piles values up at -1
        f = bl.Pipeline([bl.Clip("num0", lower=-1.0),
                         bl.Function("num1", func="test_expr_affine", kw_args={"a": 3.0}),
                         bl.Log1p("num2"), bl.KBinsDiscretizer(["num0", "num1"], n_bins=3),
                         bl.FeatureHasher(["cat0", "num2"], n_features=64), bl.Drop("cat1")]).fit(t, batch_size=64)
    assert f.output_schema.names[-1] == "hashed"
    assert_serving_consistent(f, t)
