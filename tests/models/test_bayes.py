"""Naive Bayes: parity with scikit-learn (fitted attributes, predictions, probabilities), one pass, batch
invariance, weights, missing labels and features, serving consistency, artifacts and errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn import datasets
from sklearn import naive_bayes as sknb

import beamlearn as bl
from beamlearn.errors import DataError, SpecError
from beamlearn.testing import assert_serving_consistent

RTOL, ATOL = 1e-9, 1e-12


def table_of(X: np.ndarray, y, w: np.ndarray | None = None) -> pa.Table:
    cols = {f"f{j}": pa.array(X[:, j]) for j in range(X.shape[1])}
    cols["y"] = pa.array(list(y))
    if w is not None:
        cols["w"] = pa.array(w)
    return pa.table(cols)


def features(d: int) -> list[str]:
    return [f"f{j}" for j in range(d)]


def fit(step: bl.Estimator, table: pa.Table, batch_size: int = 65_536):
    fitted = bl.Pipeline([step]).fit(table, batch_size=batch_size)
    return fitted, fitted.steps[0].fitted_attributes(fitted.states[0])


def assert_predictions(fitted, table: pa.Table, sk, X: np.ndarray) -> None:
    out = fitted.transform(table)
    assert out.column("prediction").to_pylist() == sk.predict(X).tolist()
    proba = sk.predict_proba(X)
    for i, c in enumerate(sk.classes_):
        np.testing.assert_allclose(out.column(f"proba_{c}").to_numpy(), proba[:, i], rtol=RTOL, atol=ATOL)


def assert_attrs(ours: dict, sk, names: list[str]) -> None:
    for name in names:
        np.testing.assert_allclose(ours[name], getattr(sk, name), rtol=RTOL, atol=ATOL, err_msg=name)


GAUSS_ATTRS = ["class_count_", "class_prior_", "theta_", "var_", "epsilon_"]
DISCRETE_ATTRS = ["class_count_", "class_log_prior_", "feature_count_", "feature_log_prob_"]


def bundled(name: str) -> tuple[np.ndarray, np.ndarray]:
    return getattr(datasets, f"load_{name}")(return_X_y=True)


# ---------------------------------------------------------------------------------------------- GaussianNB
@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer"])
def test_gaussian_matches_sklearn_on_bundled_data(name):
    X, y = bundled(name)
    t = table_of(X, y)
    fitted, ours = fit(bl.GaussianNB(features(X.shape[1]), "y"), t)
    sk = sknb.GaussianNB().fit(X, y)
    assert_attrs(ours, sk, GAUSS_ATTRS)
    assert_predictions(fitted, t, sk, X)
    assert fitted.lineage["passes"] == 1
    assert_serving_consistent(fitted, t.slice(0, 60))


def test_gaussian_string_labels_weights_priors_and_smoothing():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 4)) * [1, 10, 0.1, 3] + rng.integers(0, 3, 300)[:, None]
    y = np.array(["low", "mid", "high"])[rng.integers(0, 3, 300)]
    w = rng.uniform(0, 3, 300)
    t = table_of(X, y, w)
    step = bl.GaussianNB(features(4), "y", priors=[0.2, 0.5, 0.3], var_smoothing=1e-3, sample_weight="w")
    fitted, ours = fit(step, t)
    sk = sknb.GaussianNB(priors=[0.2, 0.5, 0.3], var_smoothing=1e-3).fit(X, y, sample_weight=w)
    assert_attrs(ours, sk, GAUSS_ATTRS)
    assert_predictions(fitted, t, sk, X)
    assert fitted.output_schema.field("prediction").type == pa.string()
    assert_serving_consistent(fitted, t.slice(0, 50))


def test_gaussian_integer_weights_equal_repeated_rows():
    X, y = bundled("iris")
    w = np.arange(len(y)) % 3
    _, weighted = fit(bl.GaussianNB(features(4), "y", sample_weight="w"), table_of(X, y, w.astype(float)))
    rep = np.repeat(np.arange(len(y)), w)
    _, repeated = fit(bl.GaussianNB(features(4), "y"), table_of(X[rep], y[rep]))
    for k in ("class_count_", "theta_"):
        np.testing.assert_allclose(weighted[k], repeated[k], rtol=1e-12)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 40), k=st.integers(1, 4), weighted=st.booleans())
def test_gaussian_random_data_any_batching(seed, batch, k, weighted):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(k * 3, 80))
    X = rng.normal(size=(n, 3)) * rng.uniform(0.01, 100, 3) + rng.normal(size=3) * 50
    y = np.sort(rng.choice(k, n)) if rng.random() < 0.3 else rng.integers(0, k, n)  # sorted labels: batch-pure
    y[:k] = np.arange(k)
    w = rng.uniform(0.1, 2, n) if weighted else None
    t = table_of(X, y, w)
    step = bl.GaussianNB(features(3), "y", sample_weight="w" if weighted else None)
    _, a = fit(step, t)
    many, b = fit(step, t, batch_size=batch)
    for key in GAUSS_ATTRS:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-12, atol=1e-300, err_msg=key)
    sk = sknb.GaussianNB().fit(X, y, sample_weight=w)
    assert_attrs(a, sk, GAUSS_ATTRS)
    assert_predictions(many, t, sk, X)


# ---------------------------------------------------------------------------------------------- discrete
def counts_data(seed: int, n: int = 250, d: int = 6, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    rates = rng.uniform(0.2, 5, (k, d))
    return rng.poisson(rates[y]).astype(float), np.array(["c0", "c1", "c2", "c3"])[y]


@pytest.mark.parametrize("params", [{}, {"alpha": 0.3}, {"fit_prior": False}, {"class_prior": [0.5, 0.3, 0.2]},
                                    {"alpha": [0.1, 1, 2, 0.5, 0.0, 3]}, {"alpha": 0.0, "force_alpha": False}])
def test_multinomial_matches_sklearn(params):
    X, y = counts_data(1)
    t = table_of(X, y)
    if params.get("force_alpha") is False:
        with pytest.warns(UserWarning, match="alpha too small"):
            fitted, ours = fit(bl.MultinomialNB(features(6), "y", **params), t)
    else:
        fitted, ours = fit(bl.MultinomialNB(features(6), "y", **params), t)
    sk_params = {k: (np.array(v) if k == "alpha" and isinstance(v, list) else v) for k, v in params.items()}
    with pytest.warns(UserWarning) if params.get("force_alpha") is False else _nothing():
        sk = sknb.MultinomialNB(**sk_params).fit(X, y)
    assert_attrs(ours, sk, DISCRETE_ATTRS)
    assert_predictions(fitted, t, sk, X)
    assert_serving_consistent(fitted, t.slice(0, 40))


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_multinomial_weights_and_small_batches():
    X, y = counts_data(2)
    w = np.random.default_rng(0).uniform(0, 4, len(y))
    t = table_of(X, y, w)
    fitted, ours = fit(bl.MultinomialNB(features(6), "y", sample_weight="w"), t, batch_size=7)
    sk = sknb.MultinomialNB().fit(X, y, sample_weight=w)
    assert_attrs(ours, sk, DISCRETE_ATTRS)
    assert_predictions(fitted, t, sk, X)


def test_multinomial_rejects_negative_counts_naming_the_column():
    t = pa.table({"a": [1.0, 2.0, -1.0], "b": [0.0, 1.0, 1.0], "y": [0, 1, 0]})
    with pytest.raises(DataError, match="non-negative") as err:
        bl.Pipeline([bl.MultinomialNB(["a", "b"], "y")]).fit(t)
    assert err.value.column == "a" and err.value.row == 2


@pytest.mark.parametrize("params", [{}, {"binarize": 5.0, "alpha": 0.5}, {"fit_prior": False},
                                    {"class_prior": [0.7, 0.3]}])
def test_bernoulli_matches_sklearn_on_breast_cancer(params):
    X, y = bundled("breast_cancer")
    X = X - np.median(X, axis=0)  # binarize at 0 splits each feature at its median
    t = table_of(X, y)
    fitted, ours = fit(bl.BernoulliNB(features(X.shape[1]), "y", **params), t, batch_size=100)
    sk = sknb.BernoulliNB(**params).fit(X, y)
    assert_attrs(ours, sk, DISCRETE_ATTRS)
    assert_predictions(fitted, t, sk, X)
    assert_serving_consistent(fitted, t.slice(0, 60))


def test_bernoulli_without_binarize_uses_values_and_weights():
    rng = np.random.default_rng(5)
    X = (rng.random((200, 5)) < rng.uniform(0.1, 0.9, 5)).astype(float)
    y = rng.integers(0, 3, 200)
    w = rng.uniform(0, 2, 200)
    t = table_of(X, y, w)
    fitted, ours = fit(bl.BernoulliNB(features(5), "y", binarize=None, sample_weight="w"), t)
    sk = sknb.BernoulliNB(binarize=None).fit(X, y, sample_weight=w)
    assert_attrs(ours, sk, DISCRETE_ATTRS)
    assert_predictions(fitted, t, sk, X)


# ---------------------------------------------------------------------------------------------- data edges
def test_missing_features_are_skipped_at_fit_and_predict_null():
    X, y = bundled("iris")
    Xm = X.copy()
    Xm[::7, 1] = np.nan
    t = table_of(Xm, y)
    fitted, ours = fit(bl.GaussianNB(features(4), "y"), t)
    keep = ~np.isnan(Xm).any(axis=1)
    sk = sknb.GaussianNB().fit(X[keep], y[keep])
    assert_attrs(ours, sk, GAUSS_ATTRS)
    pred = fitted.transform(t).column("prediction").to_pylist()
    assert [p is None for p in pred] == (~keep).tolist()
    assert fitted.describe()[0]["fitted"]["skipped_rows"] == int((~keep).sum())
    assert_serving_consistent(fitted, t.slice(0, 30))


def test_missing_label_error_names_the_row_or_drops_when_asked():
    X, y = bundled("iris")
    labels = pa.array([None if i == 5 else int(v) for i, v in enumerate(y)])
    t = table_of(X, y).set_column(4, "y", labels)
    with pytest.raises(DataError, match="no label") as err:
        bl.Pipeline([bl.GaussianNB(features(4), "y")]).fit(t)
    assert err.value.row == 5 and err.value.column == "y"
    fitted, ours = fit(bl.GaussianNB(features(4), "y", missing_label="drop"), t)
    keep = np.arange(len(y)) != 5
    assert_attrs(ours, sknb.GaussianNB().fit(X[keep], y[keep]), GAUSS_ATTRS)
    assert fitted.describe()[0]["fitted"]["dropped_labels"] == 1


def test_wrong_number_of_priors_is_a_spec_error():
    X, y = bundled("iris")
    with pytest.raises(SpecError, match="2 class priors"):
        bl.Pipeline([bl.MultinomialNB(features(4), "y", class_prior=[0.5, 0.5])]).fit(table_of(X, y))
    with pytest.raises(SpecError, match="sum to 1"):
        bl.Pipeline([bl.GaussianNB(features(4), "y", priors=[0.5, 0.6, 0.1])]).fit(table_of(X, y))


def test_features_from_an_encoder_and_a_glob_in_a_pipeline():
    rng = np.random.default_rng(7)
    n = 300
    city = rng.choice(["a", "b", "c"], n)
    y = np.where((city == "a") ^ (rng.random(n) < 0.2), "yes", "no")
    t = pa.table({"city": city, "num0": rng.poisson(2, n).astype(float), "y": y})
    pipe = bl.Pipeline([bl.OneHotEncoder(["city"]), bl.MultinomialNB(["city", "num*"], "y")])
    fitted = pipe.fit(t)
    assert fitted.states[1]["features"] == ["city_a", "city_b", "city_c", "num0"]
    onehot = np.stack([(city == c).astype(float) for c in "abc"] + [t.column("num0").to_numpy()], axis=1)
    sk = sknb.MultinomialNB().fit(onehot, y)
    assert fitted.transform(t).column("prediction").to_pylist() == sk.predict(onehot).tolist()
    assert_serving_consistent(fitted, t.slice(0, 40))


def test_artifact_round_trip_and_describe(tmp_path):
    X, y = bundled("wine")
    t = table_of(X, y)
    for step in (bl.GaussianNB(features(13), "y"), bl.MultinomialNB(features(13), "y"),
                 bl.BernoulliNB(features(13), "y", binarize=10.0)):
        fitted = bl.Pipeline([step]).fit(t)
        loaded = bl.load(fitted.save(str(tmp_path / f"{type(step).__name__}.blm")))
        assert loaded.transform(t).equals(fitted.transform(t))
        info = loaded.describe()[0]["fitted"]
        assert info["classes"] == [0, 1, 2] and len(info["class_count_"]) == 3
        assert loaded.steps[0].max_passes() == 1


def test_fit_from_files_in_small_batches_equals_one_batch(tmp_path):
    import pyarrow.parquet as pq

    X, y = counts_data(9, n=400)
    t = table_of(X, y, np.random.default_rng(1).uniform(0, 2, 400))
    pq.write_table(t.slice(0, 150), str(tmp_path / "a.parquet"))
    pq.write_table(t.slice(150), str(tmp_path / "b.parquet"))
    for step in (bl.MultinomialNB(features(6), "y", sample_weight="w"), bl.GaussianNB(features(6), "y")):
        files = bl.Pipeline([step]).fit(str(tmp_path / "*.parquet"), batch_size=9)
        memory = bl.Pipeline([step]).fit(t)
        a, b = (f.steps[0].fitted_attributes(f.states[0]) for f in (files, memory))
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-12, err_msg=k)
        assert files.transform(t).column("prediction").equals(memory.transform(t).column("prediction"))
