"""KMeans: centres equal scikit-learn's after every iteration from the same initial centres, empty-cluster
relocation, weights, variance-scaled tol, deterministic hash-sampled initialisation under any batching and row
order, serving consistency, artifacts, errors, and one Beam DirectRunner equivalence check."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn import cluster as skc
from sklearn import datasets

import beamlearn as bl
from beamlearn.errors import DataError, SpecError
from beamlearn.models import ConvergenceWarning
from beamlearn.testing import assert_serving_consistent

FEATS4 = ["f0", "f1", "f2", "f3"]


def table_of(X: np.ndarray, w: np.ndarray | None = None) -> pa.Table:
    cols = {f"f{j}": pa.array(X[:, j]) for j in range(X.shape[1])}
    if w is not None:
        cols["w"] = pa.array(w)
    return pa.table(cols)


def fit(data, batch_size: int = 65_536, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return bl.Pipeline([bl.KMeans("f*", **params)]).fit(data, batch_size=batch_size)


def sklearn_fit(X, init, w=None, **params):
    return skc.KMeans(len(init), init=np.asarray(init), n_init=1, algorithm="lloyd", **params).fit(
        X, sample_weight=w)


def assert_same(fitted, table, sk, rtol=1e-9):
    km = fitted.states[0]["kmeans"]
    np.testing.assert_allclose(km["centers"], sk.cluster_centers_, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(km["inertia"], sk.inertia_, rtol=rtol)
    assert km["n_iter_run"] == sk.n_iter_
    assert fitted.transform(table).column("cluster").to_numpy().tolist() == sk.labels_.tolist()


def iris() -> np.ndarray:
    return datasets.load_iris(return_X_y=True)[0]


# ---------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("max_iter", [1, 2, 3, 4, 6, 300])
def test_iris_centres_match_sklearn_after_every_iteration(max_iter):
    X = iris()
    init = X[[0, 50, 100]] + 0.3
    t = table_of(X)
    fitted = fit(t, batch_size=13, n_clusters=3, init_centers=init.tolist(), max_iter=max_iter)
    assert_same(fitted, t, sklearn_fit(X, init, max_iter=max_iter))
    n_iter = fitted.states[0]["kmeans"]["n_iter_run"]
    assert fitted.lineage["passes"] in (1 + n_iter, 2 + n_iter)  # start, Lloyd passes, final inertia if moved
    assert fitted.lineage["passes"] <= fitted.steps[0].max_passes()


def test_empty_cluster_is_relocated_as_sklearn_does():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (60, 2)), rng.normal(8, 1, (60, 2))])
    init = np.array([[0.0, 0.0], [8.0, 8.0], [100.0, 100.0], [-50.0, 3.0]])  # the last two start empty
    w = rng.uniform(0.5, 2, len(X))
    t = table_of(X, w)
    for max_iter in (1, 2, 50):
        fitted = fit(t, batch_size=11, n_clusters=4, init_centers=init.tolist(), max_iter=max_iter,
                     sample_weight="w")
        assert_same(fitted, t, sklearn_fit(X, init, w=w, max_iter=max_iter))


def test_variance_scaled_tol_stops_where_sklearn_stops():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(400, 3)) * [1, 20, 300]
    init = X[:5]
    t = table_of(X)
    for tol in (1e-1, 1e-3, 0.0):
        sk = sklearn_fit(X, init, tol=tol)
        fitted = fit(t, n_clusters=5, init_centers=init.tolist(), tol=tol)
        assert_same(fitted, t, sk)
    assert sklearn_fit(X, init, tol=1e-1).n_iter_ < sklearn_fit(X, init, tol=0.0).n_iter_  # tol matters here


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), k=st.integers(1, 5), batch=st.integers(3, 60), weighted=st.booleans())
def test_random_data_any_batching_matches_sklearn(seed, k, batch, weighted):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(k + 5, 120))
    X = rng.normal(size=(n, 3)) * rng.uniform(0.1, 10, 3) + rng.integers(0, 3, (n, 1)) * 5
    init = X[rng.choice(n, k, replace=False)]
    w = rng.uniform(0.1, 3, n) if weighted else None
    t = table_of(X, w)
    fitted = fit(t, batch_size=batch, n_clusters=k, init_centers=init.tolist(), max_iter=50,
                 sample_weight="w" if weighted else None)
    assert_same(fitted, t, sklearn_fit(X, init, w=w, max_iter=50), rtol=1e-8)


# ---------------------------------------------------------------------------------------------- initialisation
def blobs(n: int, seed: int = 0) -> np.ndarray:
    X, _ = datasets.make_blobs(n, n_features=3, centers=4, cluster_std=0.5, random_state=seed)
    return X


def test_kmeans_pp_finds_the_blobs_sklearn_finds():
    X = blobs(600)
    fitted = fit(table_of(X), n_clusters=4)
    sk = skc.KMeans(4, n_init=10, random_state=0).fit(X)
    ours = np.array(sorted(fitted.states[0]["kmeans"]["centers"].tolist()))
    np.testing.assert_allclose(ours, np.array(sorted(sk.cluster_centers_.tolist())), rtol=1e-9)
    np.testing.assert_allclose(fitted.states[0]["kmeans"]["inertia"], sk.inertia_, rtol=1e-9)


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_initialisation_is_deterministic_under_any_batching_and_row_order(init):
    X = blobs(2000, seed=1) + np.random.default_rng(2).normal(0, 2, (2000, 3))  # overlapping: init matters
    perm = np.random.default_rng(3).permutation(len(X))
    params = {"n_clusters": 6, "init": init, "init_size": 300, "random_state": 7, "max_iter": 3}
    runs = [fit(table_of(X), **params), fit(table_of(X[perm]), batch_size=97, **params),
            fit(table_of(X[perm[::-1]]), batch_size=500, **params)]
    ref = runs[0].states[0]["kmeans"]
    for other in runs[1:]:
        np.testing.assert_allclose(other.states[0]["kmeans"]["centers"], ref["centers"], rtol=1e-10)
    other_seed = fit(table_of(X), **{**params, "random_state": 8}).states[0]["kmeans"]["centers"]
    assert not np.allclose(other_seed, ref["centers"])


def test_more_inits_never_increase_inertia():
    X = blobs(500, seed=5) + np.random.default_rng(1).normal(0, 1.5, (500, 3))
    one = fit(table_of(X), n_clusters=7, n_init=1).states[0]["kmeans"]["inertia"]
    four = fit(table_of(X), n_clusters=7, n_init=4).states[0]["kmeans"]["inertia"]
    assert four <= one


# ---------------------------------------------------------------------------------------------- outputs
def test_distances_missing_features_and_serving_consistency():
    X = iris()
    Xm = X.copy()
    Xm[::9, 2] = np.nan
    t = table_of(Xm)
    init = X[[0, 50, 100]]
    fitted = fit(t, n_clusters=3, init_centers=init.tolist(), distances=True, output="k")
    keep = ~np.isnan(Xm).any(axis=1)
    sk = sklearn_fit(X[keep], init)
    assert_same_centres = fitted.states[0]["kmeans"]["centers"]
    np.testing.assert_allclose(assert_same_centres, sk.cluster_centers_, rtol=1e-9)
    out = fitted.transform(t)
    assert out.schema.names[-4:] == ["k", "k_distance_0", "k_distance_1", "k_distance_2"]
    assert out.schema.field("k").type == pa.int64()
    labels = out.column("k").to_pylist()
    assert [v is None for v in labels] == (~keep).tolist()
    dist = np.stack([out.column(f"k_distance_{i}").to_numpy(zero_copy_only=False) for i in range(3)], axis=1)
    np.testing.assert_allclose(dist[keep], sk.transform(X[keep]), rtol=1e-7, atol=1e-7)
    assert fitted.describe()[0]["fitted"]["skipped_rows"] == int((~keep).sum())
    assert_serving_consistent(fitted, t)


def test_artifact_round_trip_and_describe(tmp_path):
    t = table_of(iris())
    fitted = fit(t, n_clusters=3, random_state=3, distances=True)
    loaded = bl.load(fitted.save(str(tmp_path / "km.blm")))
    assert loaded.transform(t).equals(fitted.transform(t))
    info = loaded.describe()[0]["fitted"]
    assert len(info["centroids"]) == 3 and info["inertia"] > 0 and info["n_iter"] >= 1 and info["converged"]


def test_non_convergence_warns():
    X = iris()
    with pytest.warns(ConvergenceWarning, match="max_iter=1"):
        bl.Pipeline([bl.KMeans(FEATS4, n_clusters=3, max_iter=1)]).fit(table_of(X))


@pytest.mark.parametrize("params,match", [({"init": "kmeans"}, "init"), ({"n_clusters": 0}, "n_clusters"),
                                          ({"init_centers": [[1.0, 2.0]]}, "init_centers"),
                                          ({"random_state": None}, "random_state"),
                                          ({"random_state": -1}, "random_state"), ({"tol": -1.0}, "tol")])
def test_bad_parameters_are_spec_errors(params, match):
    with pytest.raises(SpecError, match=match):
        bl.Pipeline([bl.KMeans(FEATS4, **{"n_clusters": 3, **params})]).fit(table_of(iris()))


def test_fewer_rows_than_clusters_is_a_data_error():
    with pytest.raises(DataError, match="fewer than n_clusters"):
        bl.Pipeline([bl.KMeans(FEATS4, n_clusters=20)]).fit(table_of(iris()[:10]))


# ---------------------------------------------------------------------------------------------- Beam
@pytest.mark.filterwarnings("ignore::beamlearn.models.ConvergenceWarning")
def test_beam_direct_runner_fits_the_same_models(tmp_path):
    """Naive Bayes and KMeans in one pipeline: the Beam engine (DirectRunner, in memory) fits the same models."""
    pytest.importorskip("apache_beam")
    from beamlearn.testing import fit_on_beam

    X, y = datasets.load_iris(return_X_y=True)
    t = table_of(X).append_column("y", pa.array(y))
    steps = [bl.StandardScaler(FEATS4), bl.GaussianNB(FEATS4, "y", output="species"),
             bl.KMeans(FEATS4, n_clusters=3, max_iter=6, distances=True)]
    local = bl.Pipeline(steps).fit(t, batch_size=40)
    remote = fit_on_beam(bl.Pipeline(steps), t, batch_size=40)
    assert remote.lineage["passes"] == local.lineage["passes"]
    nb, want_nb = remote.states[1]["stats"], local.states[1]["stats"]
    assert nb["groups"] == want_nb["groups"] and np.array_equal(nb["rows"], want_nb["rows"])
    for key in ("count", "sum", "mean", "var"):
        np.testing.assert_allclose(nb[key], want_nb[key], rtol=1e-12)
    km, want = remote.states[2]["kmeans"], local.states[2]["kmeans"]
    np.testing.assert_allclose(km["centers"], want["centers"], rtol=1e-10)
    assert km["n_iter_run"] == want["n_iter_run"]
    got, ref = remote.transform(t), local.transform(t)
    for col in ("species", "cluster"):
        assert got.column(col).equals(ref.column(col))


def test_fit_from_files_in_small_batches_equals_one_batch(tmp_path):
    import pyarrow.parquet as pq

    X = blobs(900, seed=4)
    t = table_of(X)
    for i in range(3):
        pq.write_table(t.slice(300 * i, 300), str(tmp_path / f"part{i}.parquet"))
    files = fit(str(tmp_path / "*.parquet"), batch_size=25, n_clusters=4, random_state=1)
    memory = fit(t, n_clusters=4, random_state=1)
    np.testing.assert_allclose(files.states[0]["kmeans"]["centers"], memory.states[0]["kmeans"]["centers"],
                               rtol=1e-10)
    assert files.lineage["passes"] == memory.lineage["passes"]
