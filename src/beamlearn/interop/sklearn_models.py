"""Models between scikit-learn and beamlearn: LogisticRegression, LinearRegression and Ridge translated both ways
(parameters and fitted coefficients), and a :class:`~beamlearn.SklearnModel`'s estimator handed back as it is."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from beamlearn.interop.sklearn_base import Unsupported
from beamlearn.models import LinearRegression, LogisticRegression, Ridge, SklearnModel
from beamlearn.models.sklearn_io import load_skops
from beamlearn.steps import Step

__all__ = ["linear_from_sklearn", "logistic_from_sklearn", "model_to_sklearn"]


def logistic_from_sklearn(est: Any, feats: list[str], label: str | None, output: str, fitted: bool) -> tuple[Step, Any]:
    """A beamlearn LogisticRegression with ``est``'s parameters (and its fitted coefficients when ``fitted``)."""
    p = est.get_params(deep=False)
    solver = {"lbfgs": "lbfgs", "newton-cholesky": "newton-cholesky", "newton-cg": "newton-cholesky",
              "sag": "auto", "saga": "auto"}.get(p["solver"])
    l2 = p.get("penalty", "l2") in ("l2", "deprecated") and p.get("l1_ratio") in (None, 0, 0.0)
    if not fitted and (solver is None or not l2 or p["C"] == np.inf):
        raise Unsupported("beamlearn fits the L2 penalty with a finite C (solvers lbfgs, newton-cg, "
                          f"newton-cholesky, sag, saga); got solver={p['solver']!r}, penalty={p.get('penalty')!r}, "
                          f"l1_ratio={p.get('l1_ratio')!r}, C={p['C']!r}")
    if fitted and p["solver"] == "liblinear" and len(est.classes_) > 2:
        raise Unsupported("a one-vs-rest (liblinear) multiclass model predicts other probabilities")
    step = LogisticRegression(feats, label, C=float(p["C"]) if p["C"] != np.inf else 1e300,
                              fit_intercept=bool(p["fit_intercept"]), class_weight=p["class_weight"],
                              max_iter=int(p["max_iter"]), tol=float(p["tol"]), solver=solver or "auto",
                              output=output)
    if not fitted:
        return step, None
    classes = [v.item() if isinstance(v, np.generic) else v for v in est.classes_]
    model = {"coef": np.asarray(est.coef_, dtype=np.float64),
             "intercept": np.asarray(est.intercept_, dtype=np.float64).reshape(-1),
             "classes": classes, "class_counts": np.full(len(classes), np.nan),
             "n_iter": int(np.max(est.n_iter_)), "converged": True, "loss": float("nan"), "rows": 0, "skipped": 0}
    return step, {"features": list(feats), "model": model}


def linear_from_sklearn(est: Any, feats: list[str], label: str | None, output: str, fitted: bool) -> tuple[Step, Any]:
    """A beamlearn LinearRegression / Ridge with ``est``'s parameters (and fitted coefficients when ``fitted``)."""
    p = est.get_params(deep=False)
    if p.get("positive"):
        raise Unsupported("positive=True is not supported")
    if type(est).__name__ == "Ridge":
        if np.ndim(p["alpha"]) != 0:
            raise Unsupported("one alpha per target is not supported")
        step: Step = Ridge(feats, label, alpha=float(p["alpha"]), fit_intercept=bool(p["fit_intercept"]),
                           output=output)
    else:
        step = LinearRegression(feats, label, fit_intercept=bool(p["fit_intercept"]),
                                tol=float(p.get("tol", 1e-6)), output=output)
    if not fitted:
        return step, None
    coef = np.asarray(est.coef_, dtype=np.float64)
    if coef.ndim != 1:
        raise Unsupported("a multi-output model is not supported")
    model = {"coef": coef, "intercept": float(est.intercept_), "rows": 0, "skipped": 0}
    if hasattr(est, "rank_"):
        model["rank"] = int(est.rank_)
    return step, {"features": list(feats), "model": model}


def _permutation(have: Sequence[str], want: Sequence[str]) -> list[int]:
    if sorted(have) != sorted(want):
        raise Unsupported(f"the estimator reads {list(have)}, but the converted columns are {list(want)}: "
                          "scikit-learn's estimator reads every column the ColumnTransformer outputs")
    return [list(have).index(c) for c in want]


def model_to_sklearn(step: Step, state: dict[str, Any], features: list[str]) -> Any:
    """The fitted scikit-learn estimator of a fitted beamlearn model reading ``features`` in that order."""
    if state.get("decision_threshold"):
        raise Unsupported("a stored decision threshold has no plain scikit-learn counterpart")
    perm = _permutation(state["features"], features)
    m = state["model"]
    if isinstance(step, LogisticRegression):
        from sklearn.linear_model import LogisticRegression as SkLogistic

        est = SkLogistic(C=step.C, fit_intercept=step.fit_intercept, class_weight=step.class_weight,
                         max_iter=step.max_iter, tol=step.tol,
                         solver="newton-cholesky" if step.solver == "newton-cholesky" else "lbfgs")
        est.coef_ = np.asarray(m["coef"], dtype=np.float64)[:, perm]
        est.intercept_ = np.asarray(m["intercept"], dtype=np.float64)
        est.classes_ = np.asarray(m["classes"])
        est.n_iter_ = np.array([int(m["n_iter"])], dtype=np.int32)
    elif isinstance(step, (LinearRegression, Ridge)):
        from sklearn.linear_model import LinearRegression as SkLinear
        from sklearn.linear_model import Ridge as SkRidge

        est = SkRidge(alpha=step.alpha, fit_intercept=step.fit_intercept) if isinstance(step, Ridge) else \
            SkLinear(fit_intercept=step.fit_intercept, tol=step.tol)
        est.coef_ = np.asarray(m["coef"], dtype=np.float64)[perm]
        est.intercept_ = float(m["intercept"])
        if "rank" in m:
            est.rank_ = int(m["rank"])
    elif isinstance(step, SklearnModel):
        if perm != list(range(len(perm))):
            raise Unsupported("the wrapped estimator reads its features in another order than the "
                              "ColumnTransformer outputs them")
        return load_skops(m["skops"], m.get("class"))
    else:
        raise Unsupported(f"{type(step).__name__} has no scikit-learn counterpart here")
    est.n_features_in_ = len(features)
    return est
