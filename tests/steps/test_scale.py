"""Scalers: parity with scikit-learn, merge invariance, serving consistency, artifacts, passes and errors."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pytest
from datasketches import kll_doubles_sketch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn import datasets
from sklearn import preprocessing as skp

import beamlearn as bl
from beamlearn.errors import SchemaError, SpecError
from beamlearn.testing import assert_rows_equal, assert_serving_consistent

RTOL, ATOL = 1e-9, 1e-12
KINDS = ("normal", "small_int", "constant", "all_missing", "wide")


# ---------------------------------------------------------------------------------------------- helpers
def make_table(seed: int, n: int, kinds: list[str], null_frac: float,
               nan_frac: float) -> tuple[pa.Table, np.ndarray]:
    """A table of numeric columns of the given kinds (nulls and NaN), and the same data as a float matrix
    with NaN for every missing value (what scikit-learn sees)."""
    rng = np.random.default_rng(seed)
    cols, mat = {}, []
    for j, kind in enumerate(kinds):
        if kind == "normal":
            x = rng.normal(rng.uniform(-3, 3), rng.uniform(0.1, 5), n)
        elif kind == "small_int":
            x = rng.integers(-3, 4, n).astype(float)
        elif kind == "constant":
            x = np.full(n, 0.1 * (j + 1))
        elif kind == "wide":
            x = rng.standard_cauchy(n) * 1e6
        else:
            x = np.full(n, np.nan)
        x[rng.random(n) < nan_frac] = np.nan
        null = rng.random(n) < null_frac
        if kind == "all_missing":
            null[:] = True
        if kind == "small_int":  # an integer column: missing values are nulls only
            null |= np.isnan(x)
            arr = pa.array(np.nan_to_num(x).astype(np.int64), mask=null)
        else:
            arr = pa.array(x, mask=null, type=pa.float64())
        cols[f"x{j}"] = arr
        mat.append(np.where(null, np.nan, x))
    return pa.table(cols), np.column_stack(mat)


def as_matrix(table: pa.Table, cols: list[str]) -> np.ndarray:
    return np.column_stack([np.array(table.column(c).to_pylist(), dtype=float) for c in cols])


def sklearn_fit_transform(est, x_fit: np.ndarray, x_new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # all-NaN columns warn in numpy/sklearn
        est.fit(x_fit)
        return est.transform(x_fit), est.transform(x_new)


def check_parity(ours: bl.Step, theirs, table: pa.Table, x: np.ndarray, table2: pa.Table, x2: np.ndarray,
                 atol: float = ATOL) -> bl.FittedPipeline:
    cols = table.column_names
    fitted = bl.Pipeline([ours]).fit(table)
    want1, want2 = sklearn_fit_transform(theirs, x, x2)
    np.testing.assert_allclose(as_matrix(fitted.transform(table), cols), want1, rtol=RTOL, atol=atol)
    np.testing.assert_allclose(as_matrix(fitted.transform(table2), cols), want2, rtol=RTOL, atol=atol)
    return fitted


tables = st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 40), st.lists(st.sampled_from(KINDS), min_size=1,
                   max_size=3), st.sampled_from([0.0, 0.1, 0.5]), st.sampled_from([0.0, 0.1]))
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def two_tables(spec):
    seed, n, kinds, nf, nanf = spec
    t, x = make_table(seed, n, kinds, nf, nanf)
    t2, x2 = make_table(seed + 1, 15, kinds, nf, nanf)
    return t, x, t2, x2


# ---------------------------------------------------------------------------------------------- parity
@SETTINGS
@given(tables, st.booleans(), st.booleans())
def test_standard_scaler_matches_sklearn(spec, with_mean, with_std):
    t, x, t2, x2 = two_tables(spec)
    check_parity(bl.StandardScaler(t.column_names, with_mean=with_mean, with_std=with_std),
                 skp.StandardScaler(with_mean=with_mean, with_std=with_std), t, x, t2, x2)


@SETTINGS
@given(tables, st.sampled_from([(0, 1), (-1, 1), (2.5, 7), (-10, -3)]), st.booleans())
def test_minmax_scaler_matches_sklearn(spec, feature_range, clip):
    t, x, t2, x2 = two_tables(spec)
    check_parity(bl.MinMaxScaler(t.column_names, feature_range=feature_range, clip=clip),
                 skp.MinMaxScaler(feature_range=feature_range, clip=clip), t, x, t2, x2, atol=1e-15)


@SETTINGS
@given(tables)
def test_maxabs_scaler_matches_sklearn(spec):
    t, x, t2, x2 = two_tables(spec)
    check_parity(bl.MaxAbsScaler(t.column_names), skp.MaxAbsScaler(), t, x, t2, x2)


@SETTINGS
@given(tables, st.booleans(), st.booleans(), st.sampled_from([(25.0, 75.0), (10, 90), (0, 100), (5.5, 60.25),
                                                              (50, 50)]), st.booleans())
def test_robust_scaler_matches_sklearn(spec, with_centering, with_scaling, quantile_range, unit_variance):
    t, x, t2, x2 = two_tables(spec)
    if unit_variance and not 0 < quantile_range[0] < quantile_range[1] < 100:
        unit_variance = False  # rejected by check() (tested below)
    kw = {"with_centering": with_centering, "with_scaling": with_scaling, "quantile_range": quantile_range,
              "unit_variance": unit_variance}
    check_parity(bl.RobustScaler(t.column_names, **kw), skp.RobustScaler(**kw), t, x, t2, x2)


def test_constant_columns_get_scale_one():
    t = pa.table({"a": [2.5] * 6, "b": [0.0] * 6, "c": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    for step in (bl.MinMaxScaler(["a", "b"]), bl.MaxAbsScaler(["b"]), bl.RobustScaler(["a", "b"])):
        fitted = bl.Pipeline([step]).fit(t)
        out = fitted.transform(t)
        for c in step.input_columns():
            assert all(v is not None and np.isfinite(v) for v in out.column(c).to_pylist()), step
    robust = bl.Pipeline([bl.RobustScaler(["a"])]).fit(t)
    assert robust.transform({"a": [3.5]}).column("a").to_pylist() == [1.0]  # (3.5 - 2.5) / 1


@pytest.mark.parametrize("loader", [datasets.load_diabetes, datasets.load_breast_cancer, datasets.load_wine])
def test_bundled_datasets_with_knocked_out_values(loader):
    x = loader().data.astype(float)
    rng = np.random.default_rng(7)
    x[rng.random(x.shape) < 0.1] = np.nan
    names = [f"f{i}" for i in range(x.shape[1])]
    table = pa.table({n: pa.array(x[:, i], from_pandas=True) for i, n in enumerate(names)})  # NaN -> null
    for ours, theirs in [(bl.StandardScaler(names), skp.StandardScaler()),
                         (bl.MinMaxScaler(names, feature_range=(-1, 2)),
                          skp.MinMaxScaler(feature_range=(-1, 2))),
                         (bl.MaxAbsScaler(names), skp.MaxAbsScaler()),
                         (bl.RobustScaler(names, quantile_range=(10, 80), unit_variance=True),
                          skp.RobustScaler(quantile_range=(10, 80), unit_variance=True))]:
        fitted = check_parity(ours, theirs, table, x, table, x)
        assert fitted.output_schema.names == names
        assert all(f.type == pa.float64() for f in fitted.output_schema)


# ---------------------------------------------------------------------------------------------- merge
@pytest.mark.parametrize("step", [bl.StandardScaler, bl.MinMaxScaler, bl.MaxAbsScaler, bl.RobustScaler])
def test_batching_does_not_change_the_state(step):
    t, _ = make_table(3, 300, ["normal", "small_int", "constant", "all_missing", "wide"], 0.1, 0.05)
    one = bl.Pipeline([step(t.column_names)]).fit(t, batch_size=10_000).states[0]
    many = bl.Pipeline([step(t.column_names)]).fit(t, batch_size=7).states[0]
    for name, st1 in one.items():
        for key, v1 in st1.items():
            v1, v7 = np.asarray(v1, dtype=float), np.asarray(many[name][key], dtype=float)
            if name == "moments" and key != "count":  # a constant column's variance is noise (~1e-32)
                np.testing.assert_allclose(v7, v1, rtol=1e-12, atol=1e-24 if key == "var" else 0)
            else:  # counts, extrema and exact quantiles are identical
                np.testing.assert_array_equal(v7, v1)


# ---------------------------------------------------------------------------------------------- serving
@pytest.mark.parametrize("step", [
    bl.StandardScaler(["x0", "x1", "x2"]),
    bl.MinMaxScaler(["x0", "x1", "x2"], feature_range=(-2, 3), clip=True),
    bl.MinMaxScaler(["x0", "x1"]), bl.MaxAbsScaler(["x0", "x1", "x2"]),
    bl.RobustScaler(["x0", "x1", "x2"], unit_variance=True), bl.RobustScaler(["x0"], with_centering=False)])
def test_transform_one_equals_transform(step):
    t, _ = make_table(11, 120, ["normal", "small_int", "all_missing"], 0.1, 0.1)
    t = t.append_column("label", pa.array(["a", "b", None] * 40))
    fitted = bl.Pipeline([step]).fit(t)
    assert_serving_consistent(fitted, t)
    unseen = pa.table({"x0": [1e9, -1e9, None, float("nan"), 0.0], "x1": pa.array([100, -100, None, 0, 1]),
                       "x2": pa.array([1.0, None, 2.0, 3.0, float("nan")]), "label": ["z"] * 5})
    assert_serving_consistent(fitted, unseen)
    row = fitted.transform_one({"x0": 2.0, "x1": 1, "x2": None})  # label is optional when serving
    assert list(row) == fitted.output_schema.names and row["x2"] is None


def test_missing_values_stay_missing():
    fitted = bl.Pipeline([bl.MinMaxScaler(["x"]), bl.RobustScaler(["y"])]).fit(
        {"x": [1.0, 2.0, 4.0], "y": [1.0, 5.0, 9.0]})
    out = fitted.transform(pa.table({"x": pa.array([None, 2.0]), "y": [float("nan"), 5.0]}))
    assert out.column("x").to_pylist() == [None, 1 / 3]
    y = out.column("y").to_pylist()
    assert np.isnan(y[0]) and y[1] == 0.0
    assert fitted.transform_one({"x": None, "y": 9.0}) == {"x": None, "y": 1.0}


# ---------------------------------------------------------------------------------------------- artifact
def test_artifact_round_trip(tmp_path):
    t, _ = make_table(5, 80, ["normal", "small_int", "constant"], 0.1, 0.05)
    cols = t.column_names
    pipe = bl.Pipeline([bl.RobustScaler(cols[:1]),
                        bl.MinMaxScaler(cols[1:], feature_range=(-1, 1), clip=True),
                        bl.MaxAbsScaler(cols[2:]), bl.StandardScaler(cols[:2])])
    fitted = pipe.fit(t)
    loaded = bl.load(fitted.save(str(tmp_path / "scalers.zip")))
    assert loaded.steps == fitted.steps
    for got, want in zip(loaded.transform(t).to_pylist(), fitted.transform(t).to_pylist()):
        assert_rows_equal(got, want)
    rec = {"x0": 1.5, "x1": 2, "x2": None}
    assert loaded.transform_one(dict(rec)) == fitted.transform_one(dict(rec))
    assert [d["fitted"] for d in loaded.describe()] == [d["fitted"] for d in fitted.describe()]


def test_describe_reports_fitted_parameters():
    fitted = bl.Pipeline([bl.MinMaxScaler(["x"]), bl.RobustScaler(["y"]), bl.MaxAbsScaler(["z"])]).fit(
        {"x": [1.0, 3.0], "y": [0.0, 4.0], "z": [-8.0, 2.0]})
    mm, rb, ma = (d["fitted"] for d in fitted.describe())
    assert mm["x"] == {"data_min": 1.0, "data_max": 3.0, "scale": 0.5, "min": -0.5}
    assert rb["y"] == {"center": 2.0, "scale": 2.0}
    assert ma["z"] == {"max_abs": 8.0}


# ---------------------------------------------------------------------------------------------- quantiles
def test_robust_scaler_passes_and_approx_rank_bound():
    rng = np.random.default_rng(0)
    n = 20_000
    x = rng.lognormal(size=n)
    t = pa.table({"x": x})
    exact = bl.Pipeline([bl.RobustScaler(["x"])]).fit(t, batch_size=4096)
    approx = bl.Pipeline([bl.RobustScaler(["x"], approx=True)]).fit(t, batch_size=4096)
    assert exact.lineage["passes"] == 2 and approx.lineage["passes"] == 1
    np.testing.assert_array_equal(exact.states[0]["quantiles"]["quantiles"][0],
                                  np.percentile(x, [50, 25, 75]))
    bound = 2 * kll_doubles_sketch.get_normalized_rank_error(400, False)
    xs = np.sort(x)
    for q, est in zip([0.5, 0.25, 0.75], approx.states[0]["quantiles"]["quantiles"][0]):
        lo, hi = np.searchsorted(xs, est, "left") / n, np.searchsorted(xs, est, "right") / n
        assert min(abs(lo - q), abs(hi - q)) <= bound, (q, est, lo, hi, bound)


def test_no_statistics_when_neither_centering_nor_scaling():
    step = bl.RobustScaler(["x"], with_centering=False, with_scaling=False)
    assert step.analyzers() == {}
    fitted = bl.Pipeline([step]).fit({"x": [1.0, 2.0]})
    assert fitted.transform({"x": [5, None]}).column("x").to_pylist() == [5.0, None]


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("step", [bl.StandardScaler, bl.MinMaxScaler, bl.MaxAbsScaler, bl.RobustScaler])
def test_string_column_is_a_schema_error_naming_it(step):
    with pytest.raises(SchemaError, match="'city'") as exc:
        bl.Pipeline([step(["x", "city"])]).fit({"x": [1.0, 2.0], "city": ["a", "b"]})
    assert exc.value.column == "city"


@pytest.mark.parametrize("step", [
    bl.MinMaxScaler(["x"], feature_range=(1, 1)), bl.MinMaxScaler(["x"], feature_range=(2, 0)),
    bl.MinMaxScaler(["x"], feature_range=(0, "1")), bl.RobustScaler(["x"], quantile_range=(80, 20)),
    bl.RobustScaler(["x"], quantile_range=(-1, 50)), bl.RobustScaler(["x"], quantile_range=(25,)),
    bl.RobustScaler(["x"], quantile_range=(0, 75), unit_variance=True)])
def test_bad_parameters_are_spec_errors(step):
    with pytest.raises(SpecError, match=type(step).__name__):
        bl.Pipeline([step]).fit({"x": [1.0, 2.0]})
