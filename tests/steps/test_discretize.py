"""KBinsDiscretizer: parity with scikit-learn (subsample=None), missing values, batching, serving, artifacts."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pytest
from datasketches import kll_doubles_sketch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn import datasets
from sklearn.preprocessing import KBinsDiscretizer as SkKBins

import beamlearn as bl
from beamlearn.errors import DataWarning, SchemaError, SpecError
from beamlearn.testing import assert_serving_consistent

METHODS = ["averaged_inverted_cdf", "inverted_cdf", "linear", "hazen", "closest_observation", "median_unbiased"]


def sk_fit(x: np.ndarray, **kw) -> SkKBins:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SkKBins(subsample=None, **kw).fit(x)


def bl_fit(table: pa.Table, *, batch_size: int = 65_536, **kw) -> bl.FittedPipeline:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return bl.Pipeline([bl.KBinsDiscretizer(table.column_names, **kw)]).fit(table, batch_size=batch_size)


def dense(out: pa.Table, names: list[str]) -> np.ndarray:
    return np.column_stack([np.array(out.column(n).to_pylist(), dtype=float) for n in names])


def mixed(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.c_[rng.normal(size=n), rng.integers(0, 3, n).astype(float), np.full(n, 2.5),
                 rng.exponential(size=n) * 1e3, rng.uniform(-1, 1, n)]


def table_of(x: np.ndarray) -> pa.Table:
    return pa.table({f"c{j}": x[:, j] for j in range(x.shape[1])})


# ---------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("strategy,method", [("uniform", "averaged_inverted_cdf")]
                         + [("quantile", m) for m in METHODS])
@pytest.mark.parametrize("encode", ["ordinal", "onehot", "onehot-dense"])
def test_matches_sklearn(strategy, method, encode):
    x = mixed(701)
    t = table_of(x)
    n_bins = [3, 5, 4, 7, 2]
    sk = sk_fit(x, n_bins=n_bins, encode="onehot-dense" if "onehot" in encode else encode, strategy=strategy,
                quantile_method=method)
    f = bl_fit(t, n_bins=n_bins, encode=encode, strategy=strategy, quantile_method=method, batch_size=97)
    state = f.states[0]["bins"]
    for got, want in zip(state["edges"], sk.bin_edges_):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(state["n_bins"], sk.n_bins_)
    names = list(sk.get_feature_names_out(t.column_names))
    out = f.transform(t)
    assert out.column_names == names
    np.testing.assert_array_equal(dense(out, names), sk.transform(x))
    want_type = pa.float64() if encode == "ordinal" else pa.uint8()
    assert all(fld.type == want_type for fld in f.output_schema)
    new = mixed(300, seed=1) * 1.5  # values outside the fitted range land in the end bins, as in sklearn
    np.testing.assert_array_equal(dense(f.transform(table_of(new)), names), sk.transform(new))


def test_bundled_dataset_matches_sklearn():
    x = datasets.load_diabetes().data
    t = table_of(x)
    for strategy in ("uniform", "quantile"):
        sk = sk_fit(x, n_bins=6, encode="ordinal", strategy=strategy)
        f = bl_fit(t, n_bins=6, encode="ordinal", strategy=strategy, batch_size=50)
        np.testing.assert_array_equal(dense(f.transform(t), t.column_names), sk.transform(x))


def test_narrow_bins_removed_with_warning():
    x = np.r_[np.zeros(60), np.arange(1, 41, dtype=float)][:, None]  # most quantiles are 0
    with pytest.warns(DataWarning, match="too small.*'c0'"):
        f = bl.Pipeline([bl.KBinsDiscretizer("c0", n_bins=5, encode="ordinal")]).fit(table_of(x))
    sk = sk_fit(x, n_bins=5, encode="ordinal")
    assert f.states[0]["bins"]["n_bins"].tolist() == sk.n_bins_.tolist() == [3]
    np.testing.assert_array_equal(f.states[0]["bins"]["edges"][0], sk.bin_edges_[0])


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_constant_and_empty_columns_get_one_bin(strategy):
    t = pa.table({"k": [3.0] * 5, "e": pa.array([None] * 5, pa.float64())})
    with pytest.warns(DataWarning) as caught:
        f = bl.Pipeline([bl.KBinsDiscretizer(["k", "e"], strategy=strategy)]).fit(t)
    assert sorted(str(w.message) for w in caught) == [
        "KBinsDiscretizer: column 'e' has no values; it gets a single bin (0)",
        "KBinsDiscretizer: column 'k' is constant; it gets a single bin (0)"]
    sk = sk_fit(np.full((5, 1), 3.0), strategy=strategy)
    assert f.output_schema.names == ["k_0.0", "e_0.0"] and list(sk.get_feature_names_out(["k"])) == ["k_0.0"]
    assert f.transform(t).to_pydict() == {"k_0.0": [1] * 5, "e_0.0": [0] * 5}


# ---------------------------------------------------------------------------------------------- missing values
@pytest.mark.parametrize("encode", ["ordinal", "onehot"])
def test_missing_values_are_ignored_at_fit_and_stay_missing(encode):
    rng = np.random.default_rng(3)
    x = rng.normal(size=400)
    miss = rng.random(400) < 0.2
    t = pa.table({"a": pa.array(np.where(rng.random(400) < 0.5, np.nan, x), mask=miss & (rng.random(400) < .5)),
                  "i": pa.array(rng.integers(0, 50, 400), mask=miss)})
    a = np.array(t.column("a").to_pylist(), dtype=float)
    i = np.array(t.column("i").to_pylist(), dtype=float)
    f = bl_fit(t, n_bins=4, encode=encode)
    out = f.transform(t)
    for name, col in (("a", a), ("i", i)):
        ok = ~np.isnan(col)
        sk = sk_fit(col[ok][:, None], n_bins=4, encode="ordinal")
        codes = sk.transform(col[ok][:, None])[:, 0]
        if encode == "ordinal":
            got = np.array(out.column(name).to_pylist(), dtype=float)
            assert np.isnan(got[~ok]).all() and out.column(name).null_count == (~ok).sum()
            np.testing.assert_array_equal(got[ok], codes)
        else:
            onehot = dense(out, [f"{name}_{j}.0" for j in range(4)])
            assert (onehot[~ok] == 0).all()
            np.testing.assert_array_equal(onehot[ok].argmax(axis=1), codes)
    assert_serving_consistent(f, t)


# ---------------------------------------------------------------------------------------------- properties
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(2, 120), n_bins=st.integers(2, 8),
       strategy=st.sampled_from(["uniform", "quantile"]), method=st.sampled_from(METHODS),
       encode=st.sampled_from(["ordinal", "onehot"]), batch=st.integers(1, 50))
def test_random_tables_match_sklearn_and_serve_consistently(seed, n, n_bins, strategy, method, encode, batch):
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=(n, 2)) * rng.choice([1e-3, 1, 1e4], 2), int(rng.integers(0, 4)))
    t = table_of(x)
    f = bl_fit(t, n_bins=n_bins, encode=encode, strategy=strategy, quantile_method=method, batch_size=batch)
    sk = sk_fit(x, n_bins=n_bins, encode="ordinal" if encode == "ordinal" else "onehot-dense", strategy=strategy,
                quantile_method=method)
    names = list(sk.get_feature_names_out(t.column_names))
    out = f.transform(t)
    assert out.column_names == names
    np.testing.assert_array_equal(dense(out, names), sk.transform(x))
    probe = table_of(np.r_[x, rng.normal(size=(5, 2)) * 1e4, np.full((1, 2), np.nan)])
    assert_serving_consistent(f, probe)


def test_batching_does_not_change_the_state():
    t = table_of(mixed(301, seed=5))
    ref = bl_fit(t, n_bins=6, batch_size=10_000).states[0]["bins"]
    for bs in (2, 13, 256):
        got = bl_fit(t, n_bins=6, batch_size=bs).states[0]["bins"]
        assert got["n_bins"].tolist() == ref["n_bins"].tolist()
        for a, b in zip(got["edges"], ref["edges"]):
            np.testing.assert_array_equal(a, b)


def test_passes_exact_quantiles_two_uniform_and_approx_one():
    t = table_of(mixed(200))
    assert bl_fit(t, strategy="uniform").lineage["passes"] == 1
    assert bl_fit(t, strategy="quantile").lineage["passes"] == 2
    assert bl_fit(t, strategy="quantile", approx=True).lineage["passes"] == 1


def test_approx_edges_within_rank_bound():
    rng = np.random.default_rng(11)
    x = rng.lognormal(size=20_000)
    f = bl_fit(pa.table({"x": x}), n_bins=10, approx=True, encode="ordinal", batch_size=3000)
    edges = f.states[0]["bins"]["edges"][0]
    assert edges[0] == x.min() and edges[-1] == x.max() and len(edges) == 11
    eps = 2 * kll_doubles_sketch.get_normalized_rank_error(400, False)
    xs = np.sort(x)
    for q, e in zip(np.linspace(0, 1, 11)[1:-1], edges[1:-1]):
        assert abs(np.searchsorted(xs, e, side="right") / len(x) - q) <= eps


# ---------------------------------------------------------------------------------------------- artifacts, describe
def test_artifact_round_trip_and_describe(tmp_path):
    t = table_of(mixed(300))
    f = bl_fit(t, n_bins=[3, 4, 2, 5, 6], encode="onehot")
    g = bl.load(f.save(str(tmp_path / "kb.zip")))
    assert g.transform(t).equals(f.transform(t))
    assert g.transform_one(t.slice(7, 1).to_pylist()[0]) == f.transform_one(t.slice(7, 1).to_pylist()[0])
    d = g.describe()[0]["fitted"]
    assert d["c0"]["n_bins"] == 3 and len(d["c0"]["bin_edges"]) == 4 and d["c2"]["n_bins"] == 1


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kw,match", [
    ({"n_bins": 1}, "n_bins for column 'a'.*>= 2"),
    ({"n_bins": [3]}, "one integer per column"),
    ({"n_bins": [3, 2.5]}, "column 'b'"),
    ({"strategy": "kmeans"}, "strategy='kmeans'"),
    ({"encode": "sparse"}, "encode='sparse'"),
    ({"quantile_method": "lower"}, "quantile_method='lower'"),
])
def test_bad_parameters_are_spec_errors(kw, match):
    with pytest.raises(SpecError, match=match):
        bl.Pipeline([bl.KBinsDiscretizer(["a", "b"], **kw)]).fit({"a": [1.0, 2.0], "b": [1.0, 3.0]})


def test_bad_columns_are_schema_errors_naming_them():
    with pytest.raises(SchemaError, match="'s'"):
        bl.Pipeline([bl.KBinsDiscretizer(["a", "s"])]).fit({"a": [1.0, 2.0], "s": ["x", "y"]})
    with pytest.raises(SchemaError, match="'zz'"):
        bl.Pipeline([bl.KBinsDiscretizer(["zz"])]).fit({"a": [1.0, 2.0]})


def test_analyzer_merges_pickled_partial_accumulators_in_any_order():
    """What a distributed engine does: partial accumulators per partition, pickled, merged in any order."""
    import pickle

    t = table_of(mixed(400, seed=8))
    batches = t.to_batches(max_chunksize=37)
    step = bl.KBinsDiscretizer(t.column_names, n_bins=[3, 5, 4, 7, 2], strategy="quantile")
    ref = bl_fit(t, n_bins=[3, 5, 4, 7, 2]).states[0]["bins"]
    rng = np.random.default_rng(0)
    analyzer, state = step.analyzers()["bins"], None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        while analyzer is not None:
            parts = [analyzer.create() for _ in range(3)]
            for b in batches:
                k = int(rng.integers(0, 3))
                parts[k] = analyzer.add(parts[k], b)
            parts = [pickle.loads(pickle.dumps(p)) for p in parts]
            state = analyzer.extract(analyzer.merge([parts[i] for i in rng.permutation(3)]))
            analyzer = pickle.loads(pickle.dumps(analyzer)).then(state)
    assert state["n_bins"].tolist() == ref["n_bins"].tolist()
    for a, b in zip(state["edges"], ref["edges"]):
        np.testing.assert_array_equal(a, b)
