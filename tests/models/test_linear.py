"""Linear models: parity with scikit-learn (bundled datasets, random data, weights, rank deficiency), batching
invariance, labels, convergence, serving consistency, artifacts, Beam; and the CoMoments analyzer."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import linear_model as sk
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.preprocessing import StandardScaler

import beamlearn as bl
from beamlearn.analyzers import CoMoments, run_analyzer
from beamlearn.errors import DataError, SchemaError, SpecError
from beamlearn.models import ConvergenceWarning
from beamlearn.testing import assert_serving_consistent


def table_of(X, y=None, **extra):
    cols = {f"f{j}": X[:, j] for j in range(X.shape[1])}
    if y is not None:
        cols["y"] = y
    cols.update(extra)
    return pa.table(cols)


def feats(X):
    return [f"f{j}" for j in range(X.shape[1])]


def batches(t, size):
    return t.to_batches(max_chunksize=size)


# ---------------------------------------------------------------------------------------------- CoMoments
@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 60), d=st.integers(1, 4), cut=st.data(), weighted=st.booleans(), seed=st.integers(0, 99))
def test_comoments_equal_numpy_under_any_split(n, d, cut, weighted, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(rng.uniform(-1e3, 1e3, d), rng.uniform(0.1, 10, d), size=(n, d))
    w = rng.uniform(0, 3, n)
    t = table_of(X, w=w)
    a = CoMoments(feats(X), weight="w" if weighted else None)
    k = cut.draw(st.integers(1, n))
    parts = [a.add(a.create(), b) for b in batches(t, k)]
    got = a.extract(a.merge(parts[::-1]))
    ww = w if weighted else np.ones(n)
    mean = ww @ X / ww.sum()
    C = (X - mean).T @ ((X - mean) * ww[:, None])
    assert got["rows"] == n and got["skipped"] == 0
    np.testing.assert_allclose(got["count"], ww.sum(), rtol=1e-12)
    np.testing.assert_allclose(got["mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(got["comoment"], C, rtol=1e-9, atol=1e-9 * np.abs(C).max())


def test_comoments_skip_rows_with_a_missing_value():
    t = pa.table({"a": [1.0, None, 3.0, 5.0], "b": [2.0, 1.0, float("nan"), 6.0]})
    s = run_analyzer(CoMoments(["a", "b"]), batches(t, 2))
    assert (s["rows"], s["skipped"], s["count"]) == (2, 2, 2.0)
    assert s["mean"].tolist() == [3.0, 4.0] and s["comoment"].tolist() == [[8.0, 8.0], [8.0, 8.0]]


# ---------------------------------------------------------------------------------------------- regression
def diabetes():
    X, y = load_diabetes(return_X_y=True)
    return X, y, table_of(X, y)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_linear_regression_equals_sklearn_on_diabetes(fit_intercept):
    X, y, t = diabetes()
    f = bl.Pipeline([bl.LinearRegression(feats(X), "y", fit_intercept=fit_intercept)]).fit(t, batch_size=37)
    ref = sk.LinearRegression(fit_intercept=fit_intercept).fit(X, y)
    m = f.states[0]["model"]
    np.testing.assert_allclose(m["coef"], ref.coef_, rtol=1e-8)
    np.testing.assert_allclose(m["intercept"], ref.intercept_, rtol=1e-8, atol=1e-9)
    assert m["rank"] == ref.rank_
    np.testing.assert_allclose(f.transform(t).column("prediction").to_numpy(), ref.predict(X), rtol=1e-9)


@pytest.mark.parametrize("alpha", [0.01, 1.0, 30.0])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_ridge_equals_sklearn_on_diabetes(alpha, fit_intercept):
    X, y, t = diabetes()
    f = bl.Pipeline([bl.Ridge(feats(X), "y", alpha=alpha, fit_intercept=fit_intercept)]).fit(t, batch_size=50)
    ref = sk.Ridge(alpha=alpha, fit_intercept=fit_intercept).fit(X, y)
    np.testing.assert_allclose(f.states[0]["model"]["coef"], ref.coef_, rtol=1e-8)
    np.testing.assert_allclose(f.transform(t).column("prediction").to_numpy(), ref.predict(X), rtol=1e-9)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(8, 80), d=st.integers(1, 5), seed=st.integers(0, 10_000), ridge=st.booleans(),
       weighted=st.booleans(), size=st.integers(1, 30))
def test_regression_equals_sklearn_on_random_data(n, d, seed, ridge, weighted, size):
    rng = np.random.default_rng(seed)
    X = rng.normal(rng.uniform(-50, 50, d), rng.uniform(0.5, 20, d), size=(n, d))
    y = X @ rng.normal(size=d) + rng.normal(size=n) + 3.0
    w = rng.uniform(0.1, 4, n)
    t = table_of(X, y, w=w)
    kw = {"sample_weight": "w"} if weighted else {}
    step = bl.Ridge(feats(X), "y", alpha=0.5, **kw) if ridge else bl.LinearRegression(feats(X), "y", **kw)
    ref = (sk.Ridge(alpha=0.5) if ridge else sk.LinearRegression()).fit(X, y, sample_weight=w if weighted else None)
    f = bl.Pipeline([step]).fit(t, batch_size=size)
    np.testing.assert_allclose(f.states[0]["model"]["coef"], ref.coef_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(f.transform(t).column("prediction").to_numpy(), ref.predict(X), rtol=1e-8,
                               atol=1e-8 * np.abs(y).max())


def test_rank_deficient_one_hot_gives_sklearns_minimum_norm_solution():
    rng = np.random.default_rng(4)
    n = 300
    cat = rng.choice(["a", "b", "c", "d"], n)
    x = rng.normal(size=n)
    y = 2 * x + (cat == "b") * 3.0 - (cat == "d") + rng.normal(scale=0.1, size=n)
    t = pa.table({"cat": cat, "x": x, "y": y})
    f = bl.Pipeline([bl.OneHotEncoder(["cat"]), bl.LinearRegression(["cat", "x"], "y")]).fit(t, batch_size=41)
    onehot = (cat[:, None] == np.array(["a", "b", "c", "d"])).astype(float)
    ref = sk.LinearRegression().fit(np.column_stack([onehot, x]), y)
    m = f.states[1]["model"]
    assert f.states[1]["features"] == ["cat_a", "cat_b", "cat_c", "cat_d", "x"]
    assert m["rank"] == ref.rank_ - 1 + 1 == 4  # the one-hot columns sum to the (centred away) intercept
    np.testing.assert_allclose(m["coef"], ref.coef_, rtol=1e-8)
    np.testing.assert_allclose(f.transform(t).column("prediction").to_numpy(), ref.predict(np.column_stack(
        [onehot, x])), rtol=1e-9)


def test_regression_batch_size_invariance_and_missing_features():
    X, y, t = diabetes()
    Xn = X.copy()
    Xn[::7, 2] = np.nan
    t = table_of(Xn, y)
    one = bl.Pipeline([bl.LinearRegression(feats(X), "y")]).fit(t, batch_size=10_000)
    many = bl.Pipeline([bl.LinearRegression(feats(X), "y")]).fit(t, batch_size=9)
    a, b = one.states[0]["model"], many.states[0]["model"]
    np.testing.assert_allclose(a["coef"], b["coef"], rtol=1e-10)
    assert a["skipped"] == b["skipped"] == len(range(0, len(y), 7))
    keep = ~np.isnan(Xn).any(axis=1)
    np.testing.assert_allclose(a["coef"], sk.LinearRegression().fit(X[keep], y[keep]).coef_, rtol=1e-8)
    pred = one.transform(t).column("prediction")
    assert pred.null_count == (~keep).sum()
    assert_serving_consistent(one, t)


def test_regression_needs_a_numeric_label_and_valid_alpha():
    t = pa.table({"x": [1.0, 2.0], "y": ["a", "b"]})
    with pytest.raises(SchemaError, match="numeric label"):
        bl.Pipeline([bl.LinearRegression(["x"], "y")]).fit(t)
    with pytest.raises(SpecError, match="alpha"):
        bl.Pipeline([bl.Ridge(["x"], "x2", alpha=-1)]).fit({"x": [1.0, 2.0], "x2": [1.0, 3.0]})


def test_missing_label_errors_name_the_row_or_are_dropped():
    t = pa.table({"x": [1.0, 2.0, 3.0, 4.0], "y": [1.0, None, 3.0, float("nan")]})
    with pytest.raises(DataError, match=r"row 1.*'y'.*missing_label='drop'"):
        bl.Pipeline([bl.LinearRegression(["x"], "y")]).fit(t)
    f = bl.Pipeline([bl.LinearRegression(["x"], "y", missing_label="drop")]).fit(t)
    assert f.states[0]["model"]["skipped"] == 2 and f.states[0]["model"]["rows"] == 2
    np.testing.assert_allclose(f.states[0]["model"]["coef"], [1.0])
    tl = pa.table({"x": [1.0, 2.0, 3.0], "y": ["a", None, "b"]})
    with pytest.raises(DataError, match="row 1"):
        bl.Pipeline([bl.LogisticRegression(["x"], "y")]).fit(tl)
    f = bl.Pipeline([bl.LogisticRegression(["x"], "y", missing_label="drop")]).fit(tl)
    assert f.states[0]["model"]["skipped"] == 1 and f.states[0]["model"]["classes"] == ["a", "b"]


# ---------------------------------------------------------------------------------------------- logistic
def _logistic_case(loader, *, labels=None, **params):
    X, y = loader(return_X_y=True)
    yy = np.asarray(labels)[y] if labels is not None else y
    t = table_of(X, yy)
    Xs = StandardScaler().fit_transform(X)
    steps = [bl.StandardScaler(feats(X)), bl.LogisticRegression(feats(X), "y", tol=1e-8, **params)]
    f = bl.Pipeline(steps).fit(t, batch_size=64)
    skp = {k: v for k, v in params.items() if k in ("C", "class_weight", "fit_intercept")}
    ref = sk.LogisticRegression(tol=1e-10, max_iter=10_000, **skp).fit(Xs, yy)
    return f, ref, t, Xs, yy


def _check_logistic(f, ref, t, Xs, yy, *, rel=1e-4):
    m = f.states[-1]["model"]
    assert m["converged"] and list(m["classes"]) == list(ref.classes_)
    w = np.hstack([m["coef"], m["intercept"][:, None]])
    w_sk = np.hstack([ref.coef_, ref.intercept_[:, None]])
    assert np.linalg.norm(w - w_sk) / np.linalg.norm(w_sk) <= rel
    out = f.transform(t)
    P = np.column_stack([out.column(f"proba_{c}").to_numpy() for c in ref.classes_])
    P_sk = ref.predict_proba(Xs)
    assert abs(log_loss(yy, P, labels=ref.classes_) - log_loss(yy, P_sk, labels=ref.classes_)) <= 1e-4
    if len(ref.classes_) == 2:
        assert abs(roc_auc_score(yy, P[:, 1]) - roc_auc_score(yy, P_sk[:, 1])) <= 1e-4
        np.testing.assert_allclose(out.column("decision").to_numpy(), ref.decision_function(Xs), rtol=1e-3,
                                   atol=1e-4)
    else:
        assert abs(roc_auc_score(yy, P, multi_class="ovr") - roc_auc_score(yy, P_sk, multi_class="ovr")) <= 1e-4
    agree = np.mean(np.asarray(out.column("prediction").to_pylist()) == ref.predict(Xs))
    assert agree >= 0.995
    return m


@pytest.mark.parametrize("loader", [load_breast_cancer, load_wine, load_iris])
def test_logistic_regression_converges_to_sklearns_solution(loader):
    m = _check_logistic(*_logistic_case(loader))
    assert m["n_iter"] <= 15  # Newton: a handful of passes


@pytest.mark.parametrize("class_weight", ["balanced", {0: 3.0, 2: 0.5}])
@pytest.mark.parametrize("C", [0.05, 10.0])
def test_logistic_class_weight_and_C(class_weight, C):
    _check_logistic(*_logistic_case(load_wine, class_weight=class_weight, C=C))


def test_logistic_string_labels_without_intercept():
    f, ref, t, Xs, yy = _logistic_case(load_iris, labels=["setosa", "versicolor", "virginica"], fit_intercept=False)
    _check_logistic(f, ref, t, Xs, yy)
    assert f.output_schema.field("prediction").type == pa.string()
    assert set(f.transform(t).column("prediction").to_pylist()) <= {"setosa", "versicolor", "virginica"}


def test_logistic_lbfgs_solver_reaches_the_same_solution():
    f, ref, t, Xs, yy = _logistic_case(load_breast_cancer, solver="lbfgs", max_iter=500)
    m = _check_logistic(f, ref, t, Xs, yy)
    assert m["n_iter"] > 15  # really the first-order path


@pytest.mark.parametrize("classes", [2, 3])
def test_logistic_sample_weights_equal_sklearn_and_repeated_rows(classes):
    rng = np.random.default_rng(classes)
    n, d = 400, 3
    X = rng.normal(size=(n, d))
    y = (X @ rng.normal(size=(d, classes)) + rng.gumbel(size=(n, classes))).argmax(axis=1)
    w = rng.integers(0, 4, n).astype(float)
    t = table_of(X, y, w=w)
    f = bl.Pipeline([bl.LogisticRegression(feats(X), "y", sample_weight="w", tol=1e-9)]).fit(t, batch_size=33)
    ref = sk.LogisticRegression(tol=1e-10, max_iter=10_000).fit(X, y, sample_weight=w)
    m = _check_logistic(f, ref, t, X, y)
    rep = np.repeat(np.arange(n), w.astype(int))  # integer weights = repeated rows
    g = bl.Pipeline([bl.LogisticRegression(feats(X), "y", tol=1e-9)]).fit(table_of(X[rep], y[rep]))
    np.testing.assert_allclose(g.states[0]["model"]["coef"], m["coef"], rtol=1e-6, atol=1e-9)


def test_logistic_batch_size_invariance_serving_and_artifact(tmp_path):
    X, y = load_breast_cancer(return_X_y=True)
    Xn = X.copy()
    Xn[::11, 4] = np.nan
    t = table_of(Xn, np.where(y == 1, "benign", "malignant"))
    steps = [bl.StandardScaler(feats(X)), bl.LogisticRegression("f*", "y", tol=1e-8)]
    one = bl.Pipeline(steps).fit(t, batch_size=100_000)
    many = bl.Pipeline(steps).fit(t, batch_size=45)
    a, b = one.states[1]["model"], many.states[1]["model"]
    assert a["n_iter"] == b["n_iter"] and a["skipped"] == b["skipped"] == len(range(0, len(y), 11))
    np.testing.assert_allclose(a["coef"], b["coef"], rtol=1e-8, atol=1e-10)
    out = one.transform(t)
    assert out.column("prediction").null_count == len(range(0, len(y), 11))
    assert_serving_consistent(one, t)
    path = one.save(str(tmp_path / "m.bl"))
    again = bl.load(path)
    assert again.transform(t).to_pandas().equals(out.to_pandas())  # NaN inputs pass through: compare as frames
    assert again.transform_one(t.slice(3, 1).to_pylist()[0]) == one.transform_one(t.slice(3, 1).to_pylist()[0])


def test_serving_consistent_for_every_model_with_nulls():
    rng = np.random.default_rng(7)
    n = 200
    X = rng.normal(size=(n, 3))
    X[rng.random((n, 3)) < 0.1] = np.nan
    yr = rng.normal(size=n)
    yc = rng.choice(["x", "y", "z"], n)
    t = pa.table({**{f"f{j}": pa.array(X[:, j], from_pandas=j == 1) for j in range(3)}, "r": yr, "c": yc,
                  "b": rng.choice([3, 7], n)})
    for step in (bl.LinearRegression(feats(X), "r"), bl.Ridge(feats(X), "r", alpha=3.0),
                 bl.LogisticRegression(feats(X), "c"), bl.LogisticRegression(feats(X), "b")):
        f = bl.Pipeline([step]).fit(t)
        assert_serving_consistent(f, t)


def test_logistic_outputs_and_describe():
    f, ref, t, Xs, _ = _logistic_case(load_breast_cancer)
    assert f.output_schema.names[-4:] == ["prediction", "proba_0", "proba_1", "decision"]
    d = f.describe()[-1]["fitted"]
    assert d["classes"] == [0, 1] and d["passes"] == d["n_iter"] and d["converged"]
    assert set(d["coefficients"]["1"]) == set(feats(Xs))
    np.testing.assert_allclose(d["coefficients"]["1"]["f0"], ref.coef_[0, 0], rtol=1e-3)
    assert bl.LogisticRegression(["x"], "y", max_iter=7).max_passes() == 7
    assert bl.LinearRegression(["x"], "y").max_passes() == 1
    r = bl.Pipeline([bl.LinearRegression(["f0", "f1"], "y")]).fit(t.drop(["y"]).append_column("y", pa.array(
        Xs[:, 2]))).describe()[0]["fitted"]
    assert set(r["coefficients"]) == {"f0", "f1"} and r["rank"] == 2


def test_non_convergence_warns():
    X, y = load_breast_cancer(return_X_y=True)
    with pytest.warns(ConvergenceWarning, match="max_iter=1"):
        f = bl.Pipeline([bl.StandardScaler(feats(X)), bl.LogisticRegression(feats(X), "y", max_iter=1)]).fit(
            table_of(X, y))
    m = f.states[1]["model"]
    assert m["n_iter"] == 1 and not m["converged"] and set(m["params"]) == {"w"}


def test_logistic_errors():
    with pytest.raises(DataError, match="at least 2 classes"):
        bl.Pipeline([bl.LogisticRegression(["x"], "y")]).fit({"x": [1.0, 2.0], "y": ["a", "a"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for bad in ({"C": 0}, {"solver": "sag"}, {"max_iter": 0}, {"class_weight": "auto"}):
            with pytest.raises(SpecError):
                bl.Pipeline([bl.LogisticRegression(["x"], "y", **bad)]).fit({"x": [1.0, 2.0], "y": ["a", "b"]})


# ---------------------------------------------------------------------------------------------- Beam
def test_beam_direct_runner_fits_the_same_models(tmp_path):
    pytest.importorskip("apache_beam")
    from beamlearn.testing import fit_on_beam

    X, y = load_iris(return_X_y=True)
    t = table_of(X, y)
    steps = [bl.StandardScaler(feats(X)), bl.LogisticRegression(feats(X), "y", tol=1e-6, max_iter=12),
             bl.Ridge(feats(X)[1:], "f0", output="ridge")]
    local = bl.Pipeline(steps).fit(t, batch_size=40)
    remote = fit_on_beam(bl.Pipeline(steps), t, batch_size=40, max_passes=steps[1].max_passes() + 2)
    got, want = remote.states[1]["model"], local.states[1]["model"]
    assert got["n_iter"] == want["n_iter"]
    np.testing.assert_allclose(got["coef"], want["coef"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(remote.states[2]["model"]["coef"], local.states[2]["model"]["coef"], rtol=1e-10)
    assert remote.transform(t).column("prediction").equals(local.transform(t).column("prediction"))


def test_logistic_with_one_hot_features_uses_the_sparse_block_and_equals_sklearn():
    from beamlearn.models._design import Design

    X, y = load_breast_cancer(return_X_y=True)
    rng = np.random.default_rng(5)
    levels = np.array([f"c{k:02d}" for k in range(20)])
    cat = levels[rng.integers(0, 20, len(y))]
    cat[:5] = levels[:5]
    t = table_of(X[:, :4], y, cat=cat)
    steps = [bl.StandardScaler(feats(X[:, :4])), bl.OneHotEncoder(["cat"]),
             bl.LogisticRegression([*feats(X[:, :4]), "cat"], "y", tol=1e-9)]
    f = bl.Pipeline(steps).fit(t, batch_size=200)
    b = bl.Pipeline(steps[:2]).fit(t).transform(t).to_batches()[0]
    design = Design(b, f.states[2]["features"], True, None)
    assert len(design.sparse_pos) == 20 and len(design.dense_pos) == 5
    Xs = np.column_stack([StandardScaler().fit_transform(X[:, :4]), (cat[:, None] == levels).astype(float)])
    ref = sk.LogisticRegression(tol=1e-10, max_iter=10_000).fit(Xs, y)
    _check_logistic(f, ref, t, Xs, y)


@pytest.mark.parametrize("missing", [False, True])
def test_design_products_equal_the_dense_matrix(missing):
    from beamlearn.models._design import Design

    rng = np.random.default_rng(11)
    n = 500
    cols = {"x": rng.normal(size=n), "f": rng.choice([0.0, 2.5], n, p=[0.95, 0.05])}
    for g in range(3):
        v = rng.integers(0, 15, n)
        cols.update({f"c{g}_{k}": pa.array((v == k).astype(np.uint8)) for k in range(15)})
    names = list(cols)
    keep = rng.random(n) > 0.1 if missing else None
    X = np.column_stack([np.asarray(cols[c], float) for c in names] + [np.ones(n)])
    if missing:
        X[~keep] = 0.0
    for feats_ in (names, [c for c in names if c != "f"]):
        sub = X[:, [names.index(c) for c in feats_] + [len(names)]]
        d = Design(pa.record_batch(cols), feats_, True, keep)
        assert len(d.sparse_pos) >= 45 and (d._rows is not None) == (not missing and "f" not in feats_)
        h, W, R = rng.random(n), rng.normal(size=(2, len(feats_) + 1)), rng.normal(size=(n, 2))
        np.testing.assert_allclose(d.gram(h, len(feats_) + 1), (sub * h[:, None]).T @ sub, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(d.matvec(W), sub @ W.T, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(d.rmatvec(R, len(feats_) + 1), R.T @ sub, rtol=1e-12, atol=1e-12)
