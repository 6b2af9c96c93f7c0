"""SimpleImputer: sklearn parity, merge invariance, serving consistency, artifacts, passes and errors."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn import datasets
from sklearn import impute as ski
from sklearn import preprocessing as skp
from sklearn.pipeline import make_pipeline

import beamlearn as bl
from beamlearn.analyzers import run_analyzer
from beamlearn.errors import SchemaError, SpecError
from beamlearn.steps.impute import MostFrequent
from beamlearn.testing import assert_rows_equal, assert_serving_consistent

RTOL, ATOL = 1e-9, 1e-12
NUM_KINDS = ("normal", "small_int", "int_column", "constant", "all_missing")
STR_KINDS = ("few", "constant", "all_missing")


# ---------------------------------------------------------------------------------------------- helpers
def numeric_table(seed: int, n: int, kinds: list[str], null_frac: float, nan_frac: float):
    """Numeric columns with nulls and NaN, and the float matrix (NaN = missing) scikit-learn sees."""
    rng = np.random.default_rng(seed)
    cols, mat = {}, []
    for j, kind in enumerate(kinds):
        x = (rng.normal(rng.uniform(-3, 3), 2.0, n) if kind == "normal" else
             np.full(n, 0.1 * (j + 1)) if kind == "constant" else rng.integers(-2, 3, n).astype(float))
        x[rng.random(n) < nan_frac] = np.nan
        null = (rng.random(n) < null_frac) | (kind == "all_missing")
        if kind == "int_column":  # int64: missing values are nulls only
            null |= np.isnan(x)
            cols[f"n{j}"] = pa.array(np.nan_to_num(x).astype(np.int64), mask=null)
        else:
            cols[f"n{j}"] = pa.array(x, mask=null, type=pa.float64())
        mat.append(np.where(null, np.nan, x))
    return pa.table(cols), np.column_stack(mat)


def string_table(seed: int, n: int, kinds: list[str], null_frac: float):
    """String columns with nulls, and the object matrix (np.nan = missing) scikit-learn sees."""
    rng = np.random.default_rng(seed)
    cols, mat = {}, []
    for j, kind in enumerate(kinds):
        v = rng.choice(["b", "a", "c", "Z"], n).astype(object) if kind == "few" else np.full(n, "k", object)
        null = (rng.random(n) < null_frac) | (kind == "all_missing")
        cols[f"s{j}"] = pa.array([None if m else s for s, m in zip(v, null)], type=pa.string())
        mat.append(np.where(null, np.nan, v).astype(object))
    return pa.table(cols), np.column_stack(mat)


def matrix(table: pa.Table) -> np.ndarray:
    if not table.num_columns:  # every column dropped (a table without columns has no rows either)
        return np.zeros((0, 0))
    return np.column_stack([np.array(c.to_pylist(), dtype=float) for c in table.columns])


def sklearn_imputer(x_fit: np.ndarray, x_new: np.ndarray, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Skipping features without any observed values"
        est = ski.SimpleImputer(**kw).fit(x_fit)
        return est, est.transform(x_fit), est.transform(x_new)


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 2**32 - 1)
fractions = st.sampled_from([0.0, 0.2, 0.6])


# ---------------------------------------------------------------------------------------------- parity
@SETTINGS
@given(seeds, st.integers(1, 30), st.lists(st.sampled_from(NUM_KINDS), min_size=1, max_size=4), fractions,
       st.sampled_from([0.0, 0.2]), st.sampled_from(["mean", "median", "most_frequent", "constant"]),
       st.booleans(), st.booleans(), st.sampled_from([None, -7, 2.5]))
def test_numeric_matches_sklearn(seed, n, kinds, null_frac, nan_frac, strategy, add_indicator, keep_empty,
                                 fill):
    t, x = numeric_table(seed, n, kinds, null_frac, nan_frac)
    t2, x2 = numeric_table(seed + 1, 12, kinds, 0.3, 0.1)
    kw = {"strategy": strategy, "add_indicator": add_indicator, "keep_empty_features": keep_empty,
              "fill_value": fill if strategy == "constant" else None}
    est, want, want2 = sklearn_imputer(x, x2, **kw)
    fitted = bl.Pipeline([bl.SimpleImputer(t.column_names, **kw)]).fit(t)
    out, out2 = fitted.transform(t), fitted.transform(t2)
    assert out.column_names == list(est.get_feature_names_out(t.column_names))
    if not out.num_columns:
        assert want.shape[1] == 0 and want2.shape[1] == 0
        return
    np.testing.assert_allclose(matrix(out), want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(matrix(out2), want2, rtol=RTOL, atol=ATOL)
    for f in fitted.output_schema:
        assert f.type == (pa.uint8() if f.name.startswith("missingindicator_") else pa.float64())
    assert_serving_consistent(fitted, t2)


@SETTINGS
@given(seeds, st.integers(1, 30), st.lists(st.sampled_from(STR_KINDS), min_size=1, max_size=3), fractions,
       st.sampled_from(["most_frequent", "constant"]), st.booleans(), st.booleans(),
       st.sampled_from([None, "?"]))
def test_strings_match_sklearn(seed, n, kinds, null_frac, strategy, add_indicator, keep_empty, fill):
    t, x = string_table(seed, n, kinds, null_frac)
    t2, x2 = string_table(seed + 1, 12, kinds, 0.3)
    kw = {"strategy": strategy, "add_indicator": add_indicator, "keep_empty_features": keep_empty,
              "fill_value": fill if strategy == "constant" else None}
    est, want, want2 = sklearn_imputer(x, x2, **kw)
    fitted = bl.Pipeline([bl.SimpleImputer(t.column_names, **kw)]).fit(t)
    assert fitted.transform(t).column_names == list(est.get_feature_names_out(t.column_names))
    for table, expected in ((t, want), (t2, want2)):
        out = fitted.transform(table)
        for j, name in enumerate(out.column_names):
            got = out.column(name).to_pylist()
            if name.startswith("missingindicator_"):
                assert got == [int(v) for v in expected[:, j]]
            else:  # sklearn fills an empty string column kept by keep_empty_features with the integer 0
                assert got == [str(v) for v in expected[:, j]]
                assert out.schema.field(name).type == pa.string()
    assert_serving_consistent(fitted, t2)


@pytest.mark.parametrize("loader", [datasets.load_diabetes, datasets.load_breast_cancer, datasets.load_wine])
@pytest.mark.parametrize("strategy", ["mean", "median", "most_frequent"])
def test_bundled_datasets_with_knocked_out_values(loader, strategy):
    x = loader().data.astype(float)
    rng = np.random.default_rng(3)
    x[rng.random(x.shape) < 0.15] = np.nan
    x[:, 1] = np.nan  # one column entirely missing: dropped, as sklearn does
    names = [f"f{i}" for i in range(x.shape[1])]
    table = pa.table({n: pa.array(x[:, i], from_pandas=True) for i, n in enumerate(names)})
    est, want, _ = sklearn_imputer(x, x, strategy=strategy, add_indicator=True)
    fitted = bl.Pipeline([bl.SimpleImputer(names, strategy=strategy, add_indicator=True)]).fit(table)
    out = fitted.transform(table)
    assert out.column_names == list(est.get_feature_names_out(names)) and "f1" not in out.column_names
    np.testing.assert_allclose(matrix(out), want, rtol=RTOL, atol=ATOL)


def test_most_frequent_ties_go_to_the_smallest_value():
    data = {"x": [3.0, 1.0, 3.0, 1.0, None, 2.0], "i": pa.array([5, 5, -1, -1, 0, None]),
            "s": ["b", "a", "b", "a", None, "c"]}
    fitted = bl.Pipeline([bl.SimpleImputer(["x", "i", "s"], strategy="most_frequent")]).fit(data)
    assert fitted.transform_one({"x": None, "i": None, "s": None}) == {"x": 1.0, "i": -1.0, "s": "a"}
    state = run_analyzer(MostFrequent(["s"]), [pa.record_batch({"s": pa.array(["b", "a", "b", "a", None])})])
    assert state == [{"value": "a", "count": 2, "missing": 1}]


def test_mixed_columns_and_passthrough_placement():
    data = pa.table({"id": [1, 2, 3, 4], "n": [1.0, None, 3.0, 3.0], "s": ["x", None, "y", "y"],
                     "gone": pa.array([None] * 4, type=pa.float64()), "label": [0, 1, 0, 1]})
    step = bl.SimpleImputer(["n", "s", "gone"], strategy="most_frequent", add_indicator=True)
    fitted = bl.Pipeline([step]).fit(data)
    assert fitted.output_schema.names == ["id", "n", "s", "missingindicator_n", "missingindicator_s",
                                          "missingindicator_gone", "label"]
    assert fitted.transform(data).to_pydict()["s"] == ["x", "y", "y", "y"]
    desc = fitted.describe()[0]["fitted"]
    assert desc["n"]["fill"] == 3.0 and desc["n"]["count"] == 2 and desc["gone"]["dropped"]
    assert desc["s"] == {"strategy": "most_frequent", "fill": "y", "missing_at_fit": 1, "dropped": False,
                         "indicator": True, "count": 2}


def test_null_typed_column_kept_with_zero_or_fill_value():
    data = {"a": [None, None, None], "b": [1.0, 2.0, None]}  # "a" is inferred as Arrow null type
    kept = bl.Pipeline([bl.SimpleImputer(["a", "b"], keep_empty_features=True)]).fit(data)
    assert kept.transform(data).to_pydict() == {"a": [0.0, 0.0, 0.0], "b": [1.0, 2.0, 1.5]}
    const = bl.Pipeline([bl.SimpleImputer(["a"], strategy="constant", fill_value="none",
                                          keep_empty_features=True)]).fit(data)
    assert const.transform(data).column("a").to_pylist() == ["none"] * 3
    dropped = bl.Pipeline([bl.SimpleImputer(["a", "b"])]).fit(data)
    assert dropped.output_schema.names == ["b"]
    assert dropped.transform_one({"a": None, "b": None}) == {"b": 1.5}


# ---------------------------------------------------------------------------------------------- merge
@pytest.mark.parametrize("strategy", ["mean", "median", "most_frequent", "constant"])
def test_batching_does_not_change_the_state(strategy):
    t, _ = numeric_table(4, 250, ["normal", "small_int", "int_column", "constant", "all_missing"], 0.1, 0.1)
    step = bl.SimpleImputer(t.column_names, strategy=strategy)
    one = bl.Pipeline([step]).fit(t, batch_size=10_000).states[0]
    many = bl.Pipeline([step]).fit(t, batch_size=7).states[0]
    assert one.keys() == many.keys()
    for name in one:
        if name == "moments":
            for key in ("count", "mean"):
                np.testing.assert_allclose(many[name][key], one[name][key], rtol=1e-12, atol=0)
        elif name == "mode":
            assert many[name] == one[name]
        else:  # row/missing counts and exact quantiles are identical
            for key in one[name]:
                np.testing.assert_array_equal(many[name][key], one[name][key])


# ---------------------------------------------------------------------------------------------- serving
@pytest.mark.parametrize("kw", [{}, {"strategy": "median", "add_indicator": True},
                                {"strategy": "most_frequent", "add_indicator": True,
                                 "keep_empty_features": True},
                                {"strategy": "constant", "keep_empty_features": True}])
def test_transform_one_equals_transform_with_unseen_and_missing(kw):
    t, _ = numeric_table(9, 60, ["normal", "int_column", "all_missing"], 0.2, 0.1)
    t = t.append_column("label", pa.array(["p", None, "q"] * 20))
    cols = t.column_names[:3]
    steps = [bl.SimpleImputer(cols, **kw)]
    if kw.get("strategy") in ("most_frequent", "constant"):
        s, _ = string_table(9, 60, ["few", "all_missing"], 0.2)
        t = pa.Table.from_arrays(t.columns + s.columns, names=t.column_names + s.column_names)
        steps.append(bl.SimpleImputer(s.column_names, **kw))
    fitted = bl.Pipeline(steps).fit(t)
    assert_serving_consistent(fitted, t)
    unseen = {"n0": [float("nan"), None, 1e9], "n1": pa.array([None, 99, -5]),
              "n2": [None, 1.0, float("nan")],
              "label": ["z", None, "p"]}
    if len(steps) == 2:
        unseen.update({"s0": ["never-seen", None, "a"], "s1": [None, "new", None]})
    assert_serving_consistent(fitted, pa.table(unseen))
    rec = {c: None for c in fitted.required_columns}  # label is optional when serving
    assert list(fitted.transform_one(rec)) == fitted.output_schema.names


# ---------------------------------------------------------------------------------------------- artifact
def test_artifact_round_trip(tmp_path):
    n, _ = numeric_table(2, 50, ["normal", "int_column", "all_missing"], 0.2, 0.1)
    s, _ = string_table(2, 50, ["few", "few"], 0.2)
    t = pa.Table.from_arrays(n.columns + s.columns, names=n.column_names + s.column_names)
    fitted = bl.Pipeline([bl.SimpleImputer(["n0"], strategy="median", add_indicator=True),
                          bl.SimpleImputer(["n1", "n2"], keep_empty_features=True),
                          bl.SimpleImputer(["s0"], strategy="most_frequent", add_indicator=True),
                          bl.SimpleImputer(["s1"], strategy="constant", fill_value="?")]).fit(t)
    loaded = bl.load(fitted.save(str(tmp_path / "imputers.zip")))
    assert loaded.steps == fitted.steps and loaded.output_schema == fitted.output_schema
    for got, want in zip(loaded.transform(t).to_pylist(), fitted.transform(t).to_pylist()):
        assert_rows_equal(got, want)
    assert loaded.describe() == fitted.describe()


# ---------------------------------------------------------------------------------------------- chains
@pytest.mark.parametrize("strategy, passes", [("mean", 1), ("median", 3)])  # mean: the scaler's moments derived
def test_imputer_then_scaler_on_the_same_columns(strategy, passes):
    t, x = numeric_table(6, 80, ["normal", "small_int", "int_column"], 0.2, 0.1)
    fitted = bl.Pipeline([bl.SimpleImputer(t.column_names, strategy=strategy),
                          bl.StandardScaler(t.column_names)]).fit(t, batch_size=16)
    assert fitted.lineage["passes"] == passes
    want = make_pipeline(ski.SimpleImputer(strategy=strategy), skp.StandardScaler()).fit_transform(x)
    np.testing.assert_allclose(matrix(fitted.transform(t)), want, rtol=RTOL, atol=ATOL)
    assert_serving_consistent(fitted, t)
    imputed = bl.Pipeline([bl.SimpleImputer(t.column_names, strategy=strategy)]).fit(t).transform(t)
    direct = bl.Pipeline([bl.StandardScaler(t.column_names)]).fit(imputed, batch_size=16).states[0]["moments"]
    for k in ("count", "mean", "var"):  # derived or read, the scaler's statistics are the same
        np.testing.assert_allclose(fitted.states[1]["moments"][k], direct[k], rtol=1e-13, atol=1e-15, err_msg=k)


@pytest.mark.parametrize("keep_empty", [True, False])
def test_derived_moments_cover_empty_and_full_columns(keep_empty):
    t = pa.table({"full": [1.0, 2.0, 4.0, 8.0], "empty": pa.array([None] * 4, pa.float64()),
                  "some": [None, 3.0, float("nan"), 5.0]})
    cols = ["full", "empty", "some"] if keep_empty else ["full", "some"]
    pipe = bl.Pipeline([bl.SimpleImputer(t.column_names, keep_empty_features=keep_empty), bl.StandardScaler(cols)])
    fitted = pipe.fit(t)
    assert fitted.lineage["passes"] == 1
    imputed = bl.Pipeline(pipe.steps[:1]).fit(t).transform(t)
    direct = bl.Pipeline([bl.StandardScaler(cols)]).fit(imputed).states[0]["moments"]
    for k in ("count", "mean", "var"):
        np.testing.assert_allclose(fitted.states[1]["moments"][k], direct[k], rtol=1e-15, atol=0, err_msg=k)


# ---------------------------------------------------------------------------------------------- errors
def test_bad_strategy_is_a_spec_error():
    with pytest.raises(SpecError, match="strategy='avg'"):
        bl.Pipeline([bl.SimpleImputer(["x"], strategy="avg")]).fit({"x": [1.0]})


@pytest.mark.parametrize("kw", [{"fill_value": [0]}, {"add_indicator": "yes"}, {"keep_empty_features": 1}])
def test_bad_parameters_are_spec_errors(kw):
    with pytest.raises(SpecError, match="SimpleImputer"):
        bl.Pipeline([bl.SimpleImputer(["x"], strategy="constant", **kw)]).fit({"x": [1.0]})


@pytest.mark.parametrize("kw, column", [({"strategy": "mean"}, "city"), ({"strategy": "median"}, "city"),
                                        ({"strategy": "constant", "fill_value": "?"}, "x"),
                                        ({"strategy": "constant", "fill_value": 0}, "city")])
def test_column_kind_errors_name_the_column(kw, column):
    with pytest.raises(SchemaError, match=f"'{column}'") as exc:
        bl.Pipeline([bl.SimpleImputer(["x", "city"], **kw)]).fit({"x": [1.0, None], "city": ["a", None]})
    assert exc.value.column == column


def test_other_numeric_types_come_out_float64():
    data = pa.table({"f32": pa.array([1.5, None, float("nan"), 3.5], type=pa.float32()),
                     "i8": pa.array([1, None, 3, 3], type=pa.int8()),
                     "b": pa.array([True, None, False, True])})
    fitted = bl.Pipeline([bl.SimpleImputer(["f32", "i8", "b"], strategy="most_frequent")]).fit(data)
    assert all(f.type == pa.float64() for f in fitted.output_schema)
    assert fitted.transform(data).to_pydict() == {"f32": [1.5, 1.5, 1.5, 3.5], "i8": [1.0, 3.0, 3.0, 3.0],
                                                  "b": [1.0, 1.0, 0.0, 1.0]}
    assert_serving_consistent(fitted, data)
