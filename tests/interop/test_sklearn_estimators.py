"""Every default-constructible beamlearn step and model as a scikit-learn estimator: scikit-learn's own estimator
checks (``parametrize_with_checks``, the peer suite), plus DataFrames with strings, set_output to pandas and
Polars, get/set_params, and use inside scikit-learn's Pipeline and model selection."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler as SkStandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from beamlearn.interop import sklearn_estimators as E

# Instances as scikit-learn checks its own: encoders that tolerate the unseen values of random test data, a
# small hash space.  Steps with a required parameter (Function, Derive, SklearnModel) are not
# default-constructible and are left out (Drop is: by default it drops every column).
SETTINGS = {"OneHotEncoder": {"handle_unknown": "ignore"},
            "OrdinalEncoder": {"handle_unknown": "use_encoded_value", "unknown_value": -1},
            "FeatureHasher": {"n_features": 16}}
CHECKED = [cls(**SETTINGS.get(name, {})) for name, cls in sorted(E.ADAPTERS.items())
           if all(p.default is not p.empty for p in inspect.signature(cls.__init__).parameters.values()
                  if p.name != "self")]

# Checks expected to fail, by estimator, with the reason.  Every check passes at present; an entry here must say
# why beamlearn's behaviour differs from scikit-learn's contract.
EXPECTED_FAILED: dict[str, dict[str, str]] = {}


def test_every_default_constructible_step_is_checked():
    names = {type(e).__name__ for e in CHECKED}
    assert names >= {"StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler", "SimpleImputer",
                     "OneHotEncoder", "OrdinalEncoder", "KBinsDiscretizer", "Log1p", "Clip", "FeatureHasher",
                     "LinearRegression", "Ridge", "LogisticRegression", "GaussianNB", "MultinomialNB",
                     "BernoulliNB", "KMeans"}
    assert set(E.ADAPTERS) - names == {"Function", "Derive", "SklearnModel"}


@parametrize_with_checks(CHECKED, expected_failed_checks=lambda est: EXPECTED_FAILED.get(type(est).__name__, {}))
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ---------------------------------------------------------------------------------------------- DataFrames
@pytest.fixture(scope="module")
def frame() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 120
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n) * 3,
                      "c": pd.Series(rng.choice(["u", "v", "w"], n).tolist(), dtype=object)})
    X.loc[::9, "a"] = np.nan
    y = np.where(X["b"] + (X["c"] == "u") > 0, "yes", "no")
    return X, y


def test_dataframe_with_strings_and_set_output(frame):
    X, _ = frame
    enc = E.OneHotEncoder(columns=["c"]).set_output(transform="pandas")
    out = enc.fit_transform(X)
    assert list(out.columns) == ["a", "b", "c_u", "c_v", "c_w"] == list(enc.get_feature_names_out())
    assert (out["c_u"].to_numpy() == (X["c"] == "u").to_numpy()).all()
    imp = E.SimpleImputer(columns=["a"], add_indicator=True).set_output(transform="polars")
    pl_out = imp.fit_transform(X[["a", "b"]])
    assert type(pl_out).__module__.startswith("polars")
    assert pl_out.columns == ["a", "missingindicator_a", "b"]
    assert pl_out["a"].null_count() == 0 and pl_out["missingindicator_a"].sum() == X["a"].isna().sum()


def test_params_clone_and_model_selection(frame):
    X, y = frame
    lr = E.LogisticRegression(C=0.1)
    assert lr.get_params()["C"] == 0.1 and "label" not in lr.get_params()
    pipe = make_pipeline(E.SimpleImputer(columns=["a"]), E.OneHotEncoder(columns=["c"]), SkStandardScaler(),
                         E.LogisticRegression()).set_output(transform="pandas")
    search = GridSearchCV(pipe, {"logisticregression__C": [0.01, 1.0]}, cv=3).fit(X, y)
    assert search.best_params_["logisticregression__C"] in (0.01, 1.0)
    assert set(search.predict(X)) <= {"yes", "no"}
    proba = search.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert list(search.classes_) == ["no", "yes"]


def test_fitted_pipeline_is_the_beamlearn_one(frame):
    X, _ = frame
    sc = E.StandardScaler(columns=["a", "b"]).fit(X)
    np.testing.assert_allclose(sc.transform(X)[:, :2].astype(float), sc.fitted_.transform(X).select(["a", "b"]).to_pandas())
    assert list(sc.feature_names_in_) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="feature names"):
        sc.transform(X[["a", "b"]])
