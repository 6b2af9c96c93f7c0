"""SklearnModel: parity with scikit-learn, batching invariance, partial_fit, labels, persistence and skops safety."""

from __future__ import annotations

import io
import json
import warnings
import zipfile

import numpy as np
import pyarrow as pa
import pytest
import skops.io as sio
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.ensemble import BaggingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge, SGDRegressor
from sklearn.naive_bayes import MultinomialNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.tree import DecisionTreeClassifier

import beamlearn as bl
from beamlearn import artifact
from beamlearn.engines.local import LocalEngine
from beamlearn.errors import ArtifactError, DataError, SchemaError, SpecError
from beamlearn.models.sklearn import SklearnModel, canonical_order
from beamlearn.models.sklearn_io import build_estimator, estimator_spec, load_skops, trusted_type
from beamlearn.testing import assert_serving_consistent, random_table

ROUNDING = 1e-12  # scikit-learn's predict on one row may round differently from a matrix (BLAS gemv vs gemm)


def _table(loader, names=None, label_names=None):
    X, y = loader(return_X_y=True)
    cols = {f"f{j}": X[:, j] for j in range(X.shape[1])}
    cols["y"] = np.asarray(label_names)[y] if label_names is not None else y
    return pa.table(cols), [f"f{j}" for j in range(X.shape[1])], X, y


def _sorted(X, y, w=None):
    o = canonical_order(X, y, w)
    return X[o], y[o], None if w is None else w[o]


def test_logistic_regression_on_iris_equals_sklearn_with_string_labels():
    t, _, X, _ = _table(load_iris, label_names=["setosa", "versicolor", "virginica"])
    lr = LogisticRegression(max_iter=5000, tol=1e-10)
    f = bl.Pipeline([SklearnModel(lr, features="f*", label="y")]).fit(t)
    out = f.transform(t)
    labels = t.column("y").to_numpy(zero_copy_only=False).astype(str)
    Xs, ys, _ = _sorted(X, labels)
    sk = LogisticRegression(max_iter=5000, tol=1e-10).fit(Xs, ys)
    assert out.column("prediction").type == pa.string()
    assert out.column("prediction").to_pylist() == sk.predict(X).tolist()
    proba = np.column_stack([out.column(f"proba_{c}").to_numpy() for c in sk.classes_])
    np.testing.assert_array_equal(proba, sk.predict_proba(X))
    # against sklearn on the original row order: the same optimum, up to the solver's tolerance
    np.testing.assert_allclose(proba, LogisticRegression(max_iter=5000, tol=1e-10).fit(X, labels).predict_proba(X),
                               atol=1e-6)
    assert_serving_consistent(f, t, rtol=ROUNDING, atol=ROUNDING)


def test_random_forest_is_identical_for_any_batch_size_and_worker_count():
    t, feats, X, y = _table(load_breast_cancer)
    est = RandomForestClassifier(n_estimators=5, random_state=0)
    one = bl.Pipeline([SklearnModel(est, features=feats, label="y")]).fit(t, batch_size=len(X))
    many = LocalEngine(batch_size=37, workers=2).fit(bl.Pipeline([SklearnModel(est, features=feats, label="y")]), t)
    a, b = one.transform(t), many.transform(t)
    assert a.equals(b)
    Xs, ys, _ = _sorted(X, y)
    sk = RandomForestClassifier(n_estimators=5, random_state=0).fit(Xs, ys)
    assert a.column("prediction").to_pylist() == sk.predict(X).tolist()
    assert a.column("prediction").type == pa.int64()
    np.testing.assert_array_equal(a.column("proba_1").to_numpy(), sk.predict_proba(X)[:, 1])
    assert est.get_params()["n_estimators"] == 5 and not hasattr(est, "estimators_")  # cloned, never fitted


def test_ridge_on_diabetes_with_sample_weight_equals_sklearn():
    t, feats, X, y = _table(load_diabetes)
    w = np.random.default_rng(0).uniform(0.1, 3.0, len(y))
    t = t.append_column("w", pa.array(w))
    f = bl.Pipeline([SklearnModel(Ridge(alpha=0.3), features=feats, label="y", sample_weight="w",
                                  output="y_hat")]).fit(t, batch_size=50)
    Xs, ys, ws = _sorted(X, y.astype(float), w)
    sk = Ridge(alpha=0.3).fit(Xs, ys, sample_weight=ws)
    np.testing.assert_allclose(f.transform(t).column("y_hat").to_numpy(), sk.predict(X), rtol=1e-12)
    coef = f.describe()[0]["fitted"]["coef"]
    np.testing.assert_allclose(coef, sk.coef_, rtol=1e-12)
    unweighted = Ridge(alpha=0.3).fit(X, y)
    assert not np.allclose(coef, unweighted.coef_, rtol=1e-6)  # the weights were honoured


def test_kmeans_without_label_matches_sklearn_centres():
    t, feats, X, _ = _table(load_wine)
    f = bl.Pipeline([SklearnModel(KMeans(3, n_init=1, random_state=0), features=feats)]).fit(t, batch_size=40)
    Xs = X[canonical_order(X)]
    sk = KMeans(3, n_init=1, random_state=0).fit(Xs)
    np.testing.assert_array_equal(f.describe()[0]["fitted"]["cluster_centers"], sk.cluster_centers_)
    out = f.transform(t)
    assert out.column("prediction").type == pa.int64()
    assert out.column("prediction").to_pylist() == sk.predict(X).tolist()


def test_partial_fit_naive_bayes_equals_fit_and_runs_one_lane():
    t, feats, X, y = _table(load_wine)
    model = SklearnModel(MultinomialNB(alpha=0.5), features=feats, label="y")
    assert model.max_passes() == 2
    f = LocalEngine(batch_size=16, workers=2).fit(bl.Pipeline([model]), t)  # the sequential pass: one lane
    state = f.states[0]["model"]
    assert state["mode"] == "partial_fit" and f.lineage["passes"] == 2 and state["rows"] == len(y)
    sk = MultinomialNB(alpha=0.5).fit(X, y)
    np.testing.assert_allclose(f.describe()[0]["fitted"]["class_prior"], np.exp(sk.class_log_prior_), rtol=1e-12)
    nb = load_skops(state["skops"])
    np.testing.assert_allclose(nb.feature_count_, sk.feature_count_, rtol=1e-12)
    np.testing.assert_allclose(nb.class_log_prior_, sk.class_log_prior_, rtol=1e-12)
    out = f.transform(t)
    proba = np.column_stack([out.column(f"proba_{c}").to_numpy() for c in sk.classes_])
    np.testing.assert_allclose(proba, sk.predict_proba(X), rtol=1e-9, atol=1e-12)
    collect = bl.Pipeline([SklearnModel(MultinomialNB(alpha=0.5), features=feats, label="y",
                                        partial_fit=False)]).fit(t)
    assert collect.states[0]["model"]["mode"] == "fit" and collect.lineage["passes"] == 1


def test_partial_fit_regressor_sees_batches_in_order():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 3))
    y = X @ [1.0, -2.0, 0.5] + rng.normal(scale=0.1, size=300)
    t = pa.table({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "y": y})
    f = LocalEngine(batch_size=64, workers=2).fit(bl.Pipeline([SklearnModel(SGDRegressor(random_state=0),
                                                                             ["a", "b", "c"], "y")]), t)
    sk = SGDRegressor(random_state=0)
    for i in range(0, 300, 64):
        sk.partial_fit(X[i:i + 64], y[i:i + 64])
    np.testing.assert_array_equal(f.describe()[0]["fitted"]["coef"], sk.coef_)


def test_missing_features_and_labels():
    t = pa.table({"x": pa.array([0.0, 1.0, None, 3.0, float("nan"), 5.0, 6.0, 7.0]),
                  "y": pa.array(["a", "a", "b", None, "b", "b", "a", "b"])})
    model = SklearnModel(DecisionTreeClassifier(random_state=0), ["x"], "y")
    with pytest.raises(DataError, match="'y'.*no label|no label") as exc:
        bl.Pipeline([model]).fit(t)
    assert exc.value.column == "y" and exc.value.row == 3
    f = bl.Pipeline([SklearnModel(DecisionTreeClassifier(random_state=0), ["x"], "y",
                                  missing_label="drop")]).fit(t)
    m = f.states[0]["model"]
    assert (m["rows"], m["skipped_rows"], m["dropped_labels"]) == (5, 2, 1)
    out = f.transform(t.drop(["y"]))
    assert out.column("prediction").to_pylist()[2] is None and out.column("prediction").to_pylist()[4] is None
    assert out.column("proba_a").null_count == 2
    assert_serving_consistent(f, t)


def test_preprocessing_then_model_resolves_derived_features_and_serves():
    t = random_table(300, n_numeric=2, n_string=1, seed=4)
    y = (np.nan_to_num(t.column("num0").to_numpy(zero_copy_only=False)) > 0).astype(np.int64)
    t = t.append_column("y", pa.array(y))
    pipe = bl.Pipeline([bl.SimpleImputer(["num0", "num1"]), bl.OneHotEncoder(["cat0"]),
                        bl.StandardScaler(["num0", "num1"]),
                        SklearnModel(LogisticRegression(), features=["cat0", "num*"], label="y")])
    f = pipe.fit(t, batch_size=64)
    feats = f.states[-1]["features"]
    assert feats[-2:] == ["num0", "num1"] and all(c.startswith("cat0_") for c in feats[:-2]) and len(feats) > 3
    assert f.output_schema.names[-3:] == ["prediction", "proba_0", "proba_1"]
    g = bl.load(f.save(f"/tmp/beamlearn-sk-{id(f)}.blm"))
    assert g.transform(t).equals(f.transform(t))
    assert_serving_consistent(g, t, rtol=ROUNDING, atol=ROUNDING)


# ---------------------------------------------------------------------------------------------- parameters
def test_parameters_are_plain_data_and_rebuild_the_estimator(tmp_path):
    est = BaggingClassifier(DecisionTreeClassifier(max_depth=2, class_weight={0: 1.0, 1: 3.0}), n_estimators=3,
                            random_state=0)
    spec = estimator_spec(est)
    assert spec["class"] == "sklearn.ensemble.BaggingClassifier"
    json.dumps(spec)  # plain data
    rebuilt = build_estimator(spec)
    assert rebuilt.estimator.class_weight == {0: 1.0, 1: 3.0} and rebuilt.estimator.max_depth == 2
    t, feats, _, _ = _table(load_breast_cancer)
    f = bl.Pipeline([SklearnModel(est, feats[:5], "y")]).fit(t)
    path = f.save(str(tmp_path / "m.blm"))
    manifest = artifact.read_manifest(path)
    params = manifest["steps"][0]["params"]["estimator"]
    assert params["class"] == "sklearn.ensemble.BaggingClassifier"
    assert params["params"]["estimator"]["__estimator__"]["class"] == "sklearn.tree.DecisionTreeClassifier"
    g = bl.load(path)
    assert g.transform(t).equals(f.transform(t))
    assert g.steps[0] == f.steps[0]


class _Mine(LogisticRegression):
    """A user's subclass: its code is not scikit-learn's, so it cannot be rebuilt from an artifact."""


@pytest.mark.parametrize("make,match", [
    (lambda: SklearnModel(KNeighborsClassifier(), ["a"], "y", sample_weight="w"), "takes no sample_weight"),
    (lambda: SklearnModel(RandomForestClassifier(), ["a"], "y", partial_fit=True), "has no partial_fit"),
    (lambda: SklearnModel(LogisticRegression(), ["a"]), "needs label"),
    (lambda: SklearnModel(LogisticRegression(), ["a"], "y", missing_label="skip"), "missing_label"),
    (lambda: SklearnModel({"class": "sklearn.linear_model.LogisticRegresion", "params": {}}, ["a"], "y"),
     "did you mean 'sklearn.linear_model.LogisticRegression'"),
    (lambda: SklearnModel({"class": "sklearn.linear_model.Ridge", "params": {"alpah": 1}}, ["a"], "y"),
     "did you mean 'alpha'"),
    (lambda: SklearnModel({"class": "os.system", "params": {}}, ["a"], "y"), "not a scikit-learn estimator"),
    (lambda: SklearnModel(_Mine(), ["a"], "y"), "scikit-learn's own estimators"),
])
def test_user_mistakes_are_spec_errors(make, match):
    t = pa.table({"a": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1], "w": [1.0, 1.0, 2.0, 2.0]})
    with pytest.raises(SpecError, match=match):
        bl.Pipeline([make()]).fit(t)


def test_callable_parameters_are_refused():
    from sklearn.preprocessing import FunctionTransformer

    with pytest.raises(SpecError, match="not plain data"):
        estimator_spec(FunctionTransformer(np.log1p))


def test_features_must_exist_and_be_numeric():
    t = pa.table({"a": ["x", "y"], "y": [0, 1]})
    with pytest.raises(SchemaError, match="numeric"):
        bl.Pipeline([SklearnModel(LogisticRegression(), ["a"], "y")]).fit(t)


# ---------------------------------------------------------------------------------------------- skops safety
def _fitted_lr():
    t = pa.table({"a": [0.0, 1.0, 2.0, 3.0], "y": [0, 0, 1, 1]})
    return bl.Pipeline([SklearnModel(LogisticRegression(), ["a"], "y")]).fit(t), t


def _with_blob(fitted, blob: bytes, path) -> str:
    """An artifact whose model blob was replaced (an attacker rewriting the whole unsigned file)."""
    states = [dict(s) for s in fitted.states]
    states[0] = {**states[0], "model": {**states[0]["model"], "skops": blob}}
    fitted._states = tuple(states)
    with open(path, "wb") as fh:
        fh.write(artifact.to_bytes(fitted))
    return str(path)


def test_blob_asking_for_eval_is_refused(tmp_path):
    fitted, _ = _fitted_lr()
    est = load_skops(fitted.states[0]["model"]["skops"])
    est.hook = eval
    path = _with_blob(fitted, sio.dumps(est), tmp_path / "evil.blm")
    with pytest.raises(ArtifactError, match="builtins.eval") as exc:
        bl.load(path)
    assert "does not trust" in str(exc.value) and "do not match their steps" not in str(exc.value)


def test_blob_whose_schema_names_os_system_is_refused(tmp_path):
    fitted, _ = _fitted_lr()
    blob = fitted.states[0]["model"]["skops"]
    src, out = zipfile.ZipFile(io.BytesIO(blob)), io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "schema.json":
                schema = json.loads(data)
                schema["__module__"], schema["__class__"] = "os", "system"
                data = json.dumps(schema).encode()
            dst.writestr(name, data)
    with pytest.raises(ArtifactError, match="os.system"):
        bl.load(_with_blob(fitted, out.getvalue(), tmp_path / "evil.blm"))
    with pytest.raises(ArtifactError, match="not a valid skops file|cannot load"):
        bl.load(_with_blob(fitted, b"PK-not-a-zip", tmp_path / "broken.blm"))


def test_blob_of_another_estimator_class_is_refused(tmp_path):
    fitted, _ = _fitted_lr()
    other = DecisionTreeClassifier().fit(np.array([[0.0], [1.0]]), [0, 1])
    with pytest.raises(ArtifactError, match="DecisionTreeClassifier"):
        bl.load(_with_blob(fitted, sio.dumps(other), tmp_path / "swap.blm"))


@pytest.mark.parametrize("name,ok", [
    ("sklearn.tree._tree.Tree", True), ("sklearn.neighbors._kd_tree.KDTree", True),
    ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor", True),
    ("numpy.ndarray", True), ("numpy.random._generator.Generator", True), ("scipy.sparse._csr.csr_matrix", True),
    ("builtins.eval", False), ("os.system", False), ("numpy.load", False), ("scipy.io.loadmat", False),
    ("sklearn.utils._testing.TempMemmap", False), ("subprocess.Popen", False), ("sklearn.nope.Nothing", False),
    ("numpy.lib._npyio_impl.DataSource", False),
])
def test_trusted_types(name, ok):
    assert trusted_type(name) is ok


# ---------------------------------------------------------------------------------------------- Beam
def test_beam_direct_runner_fits_the_same_model(tmp_path):
    apache_beam = pytest.importorskip("apache_beam")
    from apache_beam.options.pipeline_options import PipelineOptions

    from beamlearn.engines.beam import Fit

    t, feats, _, _ = _table(load_iris)
    steps = [bl.StandardScaler(feats), SklearnModel(LogisticRegression(max_iter=500), feats, "y")]
    out = str(tmp_path / "beam.blm")

    def save(fitted):
        fitted.save(out)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with apache_beam.Pipeline(options=PipelineOptions(["--direct_running_mode=in_memory"])) as p:
            (p | apache_beam.Create(t.to_batches(max_chunksize=40)) | Fit(bl.Pipeline(steps), max_passes=3)
             | apache_beam.Map(save))
    beam_fit, local = bl.load(out), bl.Pipeline(steps).fit(t, batch_size=40)
    assert beam_fit.lineage["engine"] == "beam"
    assert beam_fit.transform(t).equals(local.transform(t))


def test_scikit_learn_complaints_are_data_errors_naming_the_row():
    one_class = pa.table({"a": [0.0, 1.0, 2.0], "y": [1, 1, 1]})
    with pytest.raises(DataError, match="LogisticRegression.fit failed: .*class"):
        bl.Pipeline([SklearnModel(LogisticRegression(), ["a"], "y")]).fit(one_class)
    fitted, _ = _fitted_lr()
    with pytest.raises(DataError, match="predict failed") as exc:
        fitted.transform(pa.table({"a": [0.0, 1.0, float("inf"), 2.0]}))
    assert exc.value.row == 2


@settings(max_examples=15, deadline=None)
@given(n=st.integers(5, 120), batch=st.integers(1, 64), workers=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_any_batching_gives_the_same_model_as_sklearn_in_canonical_order(n, batch, workers, seed):
    rng = np.random.default_rng(seed)
    X = rng.integers(-3, 4, size=(n, 2)).astype(float)  # ties: rows equal in features, differing in label
    y = rng.integers(0, 3, n)
    miss = rng.random(n) < 0.1
    t = pa.table({"a": pa.array(X[:, 0], mask=miss), "b": X[:, 1], "y": y})
    model = SklearnModel(RandomForestClassifier(3, random_state=seed), ["a", "b"], "y")  # bootstrap: order matters
    f = LocalEngine(batch_size=batch, workers=workers).fit(bl.Pipeline([model]), t)
    Xk, yk = X[~miss], y[~miss]
    o = canonical_order(Xk, yk)
    sk = RandomForestClassifier(3, random_state=seed).fit(Xk[o], yk[o])
    got = f.transform(t).column("prediction").to_numpy(zero_copy_only=False)
    np.testing.assert_array_equal(got[~miss], sk.predict(X[~miss]))
    assert np.isnan(got[miss]).all() and f.states[0]["model"]["skipped_rows"] == int(miss.sum())
