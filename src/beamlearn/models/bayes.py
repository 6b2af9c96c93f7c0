"""Naive Bayes classifiers: GaussianNB, MultinomialNB and BernoulliNB, each fitted in ONE pass.

The whole fit is one mergeable reduction: per-class (weighted) counts, feature sums and variances
(:class:`~beamlearn.analyzers.GroupedMoments` keyed by the label), from which scikit-learn's fitted attributes
follow in closed form (``class_count_``, ``class_prior_`` / ``class_log_prior_``, ``theta_``, ``var_``,
``feature_log_prob_``, see :meth:`fitted_attributes`).  Predictions and probabilities equal scikit-learn's to
1e-9.  Outputs: ``output`` (the predicted class, typed like the label) and ``proba_{class}`` (float64).

Both prediction paths (vectorized :meth:`apply` and the single-record row function) accumulate the joint
log-likelihood feature by feature in the same order with the same IEEE operations, so they agree exactly.
Rows with a missing feature are skipped at fit (counted) and get null predictions.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn.analyzers import Analyzer, GroupedMoments
from beamlearn.batches import batch_origin
from beamlearn.errors import BeamlearnWarning, DataError, SpecError
from beamlearn.models.base import Classifier, label_values
from beamlearn.steps.base import RowFn, register_step

__all__ = ["BernoulliNB", "GaussianNB", "MultinomialNB"]


class ClassStats(GroupedMoments):
    """Per-class moments of the features for naive Bayes, honouring the missing-label policy.

    ``binarize`` reduces ``x > binarize`` instead of ``x``; ``nonnegative`` rejects negative feature values
    (:class:`~beamlearn.errors.DataError` naming the column and row); ``n_priors`` (when not None) is checked
    against the number of classes found.  State: as :class:`~beamlearn.analyzers.GroupedMoments`, with the
    classes as ``groups``.

    Examples
    --------
    >>> from beamlearn.analyzers import run_analyzer
    >>> s = run_analyzer(ClassStats(["x"], "y", binarize=0.5),
    ...                  [pa.record_batch({"x": [0.0, 1.0, 2.0], "y": [1, 1, 2]})])
    >>> s["groups"], s["sum"].tolist()
    ([1, 2], [[1.0], [1.0]])
    """

    def __init__(self, columns: Sequence[str], label: str, *, weight: str | None = None,
                 missing_label: str = "error", binarize: float | None = None, nonnegative: bool = False,
                 n_priors: int | None = None) -> None:
        super().__init__(columns, by=label, weight=weight)
        self.missing_label, self.binarize, self.nonnegative, self.n_priors = (
            missing_label, binarize, nonnegative, n_priors)

    def matrix(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray | None]:
        X, complete = super().matrix(batch)
        if self.nonnegative:
            bad = X < 0 if complete is None else (X < 0) & complete[:, None]
            if bad.any():
                i, j = np.argwhere(bad)[0]
                source, offset = batch_origin(batch)
                raise DataError("MultinomialNB needs non-negative feature values (counts or frequencies)",
                                column=self.columns[j], source=source, row=offset + int(i), value=float(X[i, j]))
        if self.binarize is not None:
            X = (X > self.binarize).astype(np.float64)
        return X, complete

    def add(self, acc: dict[str, Any], batch: pa.RecordBatch) -> dict[str, Any]:
        label_values(batch, self.by, self.missing_label)  # type: ignore[arg-type]
        return super().add(acc, batch)

    def extract(self, acc: dict[str, Any]) -> dict[str, Any]:
        state = super().extract(acc)
        if not state["groups"]:
            raise DataError("no complete training row (every row has a missing feature or label)")
        if self.n_priors is not None and self.n_priors != len(state["groups"]):
            raise SpecError(f"{self.n_priors} class priors given but the label has {len(state['groups'])} "
                            f"classes: {state['groups']}")
        return state


# ---------------------------------------------------------------------------------------------- kernels
def _linear_jll(X: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``X @ W.T + b``, accumulated feature by feature (the order the row function uses)."""
    acc = np.zeros((X.shape[0], W.shape[0]))
    for j in range(W.shape[1]):
        acc += X[:, j, None] * W[:, j]
    return acc + b


def _gaussian_jll(X: np.ndarray, theta: np.ndarray, var: np.ndarray, log_prior: np.ndarray,
                 norm: np.ndarray) -> np.ndarray:
    """``log_prior + (norm - 0.5 * sum_j (x_j - theta_j)**2 / var_j)`` per class, feature by feature."""
    acc = np.zeros((X.shape[0], theta.shape[0]))
    for j in range(theta.shape[1]):
        d = X[:, j, None] - theta[:, j]
        acc += d * d / var[:, j]
    return log_prior + (norm - 0.5 * acc)


def _proba_from_jll(jll: np.ndarray) -> np.ndarray:
    """Normalized probabilities ``exp(jll - logsumexp(jll))`` (class sums in a fixed order)."""
    m = jll.max(axis=1)
    e = np.exp(jll - m[:, None])
    s = np.zeros(len(jll))
    for i in range(jll.shape[1]):
        s += e[:, i]
    return np.exp(jll - (m + np.log(s))[:, None])


class _NaiveBayes(Classifier):
    """Shared parts: the class statistics analyzer, outputs, both prediction paths and the description."""

    binarize: float | None = None
    _nonnegative = False

    def check(self, schema: pa.Schema) -> None:
        super().check(schema)
        prior = self._given_prior()
        if prior is not None:
            p = np.asarray(prior, dtype=np.float64)
            if p.ndim != 1 or np.any(p < 0):
                raise SpecError(f"{type(self).__name__}: class priors must be a list of non-negative numbers")
            if isinstance(self, GaussianNB) and not np.isclose(p.sum(), 1.0):
                raise SpecError(f"GaussianNB: the priors must sum to 1, got {p.sum()}")

    def _given_prior(self) -> Any:
        return getattr(self, "class_prior", None)

    def max_passes(self) -> int:
        """Naive Bayes needs one pass over the data."""
        return 1

    def fit_analyzers(self, features: list[str], schema: pa.Schema) -> dict[str, Analyzer]:
        prior = self._given_prior()
        return {"stats": ClassStats(features, self.label, weight=self.sample_weight,  # type: ignore[arg-type]
                                    missing_label=self.missing_label, binarize=self.binarize,
                                    nonnegative=self._nonnegative,
                                    n_priors=None if prior is None else len(prior))}

    def classes_of(self, state: dict[str, Any]) -> list[Any]:
        return list(state["stats"]["groups"])

    def output_types(self, state: dict[str, Any]) -> list[tuple[str, pa.DataType]]:
        return [(self.output, self.label_type(state))] + [(f"proba_{c}", pa.float64())
                                                          for c in self.classes_of(state)]

    # -------------------------------------------------------------------- to implement
    def fitted_attributes(self, state: dict[str, Any]) -> dict[str, np.ndarray]:
        """scikit-learn's fitted attributes (``class_count_``, ...) from the fitted state."""
        raise NotImplementedError

    def _jll(self, X: np.ndarray, a: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def _row_jll(self, a: dict[str, np.ndarray]):
        raise NotImplementedError

    # -------------------------------------------------------------------- prediction
    def predict_columns(self, X: np.ndarray, state: dict[str, Any]) -> list[tuple[str, Any]]:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            jll = self._jll(X, self.fitted_attributes(state))
            proba = _proba_from_jll(jll)
        classes = self.classes_of(state)
        pred = pa.array(classes, type=self.label_type(state)).take(pa.array(np.argmax(jll, axis=1)))
        return [(self.output, pred)] + [(f"proba_{c}", proba[:, i]) for i, c in enumerate(classes)]

    def row_function(self, state: dict[str, Any], schema: pa.Schema) -> RowFn:
        features = list(state["features"])
        classes = self.classes_of(state)
        names = [self.output] + [f"proba_{c}" for c in classes]
        out_name, proba_names = names[0], names[1:]
        k = len(classes)
        score = self._row_jll(self.fitted_attributes(state))
        exp, log, asarray = np.exp, np.log, np.asarray

        def fn(row: dict) -> dict:
            xs = []
            for c in features:
                v = row.get(c)
                if v is None or v != v:  # noqa: PLR0124 - NaN is missing
                    for n in names:
                        row[n] = None
                    return row
                xs.append(float(v))
            jll = score(xs)
            best = 0
            for i in range(1, k):
                if jll[i] > jll[best]:
                    best = i
            m = max(jll)
            arr = asarray(jll)
            s = 0.0
            for e in exp(arr - m).tolist():
                s += e
            row[out_name] = classes[best]
            for n, p in zip(proba_names, exp(arr - (m + log(s))).tolist()):
                row[n] = p
            return row

        return fn

    def describe(self, state: dict[str, Any]) -> dict[str, Any]:
        st = state["stats"]
        out: dict[str, Any] = {"features": list(state["features"]), "classes": self.classes_of(state)}
        with np.errstate(divide="ignore", invalid="ignore"):
            for k, v in self.fitted_attributes(state).items():
                if not k.startswith("_"):
                    out[k] = np.round(v, 6).tolist()
        if "class_log_prior_" in out:
            out["class_prior"] = np.round(np.exp(out["class_log_prior_"]), 6).tolist()
        out["skipped_rows"] = int(st["skipped"])
        out["dropped_labels"] = int(st["missing_by"])
        return out


def _class_log_prior(count: np.ndarray, class_prior: Any, fit_prior: bool) -> np.ndarray:
    """scikit-learn's ``class_log_prior_`` of the discrete naive Bayes models."""
    if class_prior is not None:
        return np.log(np.asarray(class_prior, dtype=np.float64))
    if fit_prior:
        return np.log(count) - np.log(count.sum())
    return np.full(len(count), -np.log(len(count)))


class _DiscreteNB(_NaiveBayes):
    """MultinomialNB and BernoulliNB: a linear joint log-likelihood ``X @ W.T + b``."""

    alpha: Any = 1.0
    force_alpha: bool = True

    def check(self, schema: pa.Schema) -> None:
        super().check(schema)
        alpha = np.asarray(self.alpha, dtype=np.float64)
        if alpha.ndim > 1 or np.any(alpha < 0):
            raise SpecError(f"{type(self).__name__}: alpha must be a non-negative number or a list of them")
        if alpha.size and alpha.min() < 1e-10 and not self.force_alpha:
            warnings.warn("alpha too small will result in numeric errors, setting alpha = 1.0e-10. Use "
                          "force_alpha=True to keep alpha unchanged.", BeamlearnWarning, stacklevel=2)

    def _alpha(self, n_features: int) -> np.ndarray | float:
        alpha = np.asarray(self.alpha, dtype=np.float64)
        if alpha.ndim == 1 and alpha.shape[0] != n_features:
            raise SpecError(f"{type(self).__name__}: alpha has {alpha.shape[0]} entries but there are "
                            f"{n_features} features")
        if alpha.min() < 1e-10 and not self.force_alpha:
            alpha = np.maximum(alpha, 1e-10)
        return alpha if alpha.ndim else float(alpha)

    def _jll(self, X: np.ndarray, a: dict[str, np.ndarray]) -> np.ndarray:
        if self.binarize is not None:
            X = (X > self.binarize).astype(np.float64)
        return _linear_jll(X, a["_W"], a["_b"])

    def _row_jll(self, a: dict[str, np.ndarray]):
        W, b = a["_W"].tolist(), a["_b"].tolist()
        pairs = list(zip(W, b))
        thr = self.binarize

        def score(xs: list[float]) -> list[float]:
            if thr is not None:
                xs = [1.0 if x > thr else 0.0 for x in xs]
            out = []
            for w, c in pairs:
                s = 0.0
                for x, wj in zip(xs, w):
                    s += x * wj
                out.append(s + c)
            return out

        return score


@register_step
class GaussianNB(_NaiveBayes):
    """Gaussian naive Bayes, as :class:`sklearn.naive_bayes.GaussianNB`, fitted in one pass.

    Parameters
    ----------
    features:
        Feature columns: output column names, input column names (every column derived from them) or globs.
    label:
        The column to predict (strings or numbers).
    priors:
        Class prior probabilities (in sorted class order); default: the (weighted) class frequencies.
    var_smoothing:
        Added to every variance: ``var_smoothing`` times the largest (unweighted) feature variance.
    sample_weight:
        A column of non-negative sample weights (missing weight = 0).
    output:
        Name of the predicted-class column; probabilities go to ``proba_{class}``.
    missing_label:
        ``"error"`` (default) or ``"drop"`` (rows without a label are skipped and counted).

    Attributes
    ----------
    The fitted state holds the per-class statistics (``stats``); :meth:`fitted_attributes` gives
    ``class_count_``, ``class_prior_``, ``theta_``, ``var_`` and ``epsilon_`` as scikit-learn names them.

    Examples
    --------
    >>> import beamlearn as bl
    >>> data = {"x": [1.0, 1.2, 3.0, 3.3], "y": ["a", "a", "b", "b"]}
    >>> f = bl.Pipeline([bl.GaussianNB(["x"], "y")]).fit(data)
    >>> f.transform({"x": [1.1, 3.1]}).column("prediction").to_pylist()
    ['a', 'b']
    >>> f.transform_one({"x": 1.0})["prediction"]
    'a'
    """

    def __init__(self, features: str | Sequence[str], label: str, *, priors: Sequence[float] | None = None,
                 var_smoothing: float = 1e-9, sample_weight: str | None = None, output: str = "prediction",
                 missing_label: str = "error") -> None:
        self.features, self.label, self.priors, self.var_smoothing = features, label, priors, var_smoothing
        self.sample_weight, self.output, self.missing_label = sample_weight, output, missing_label

    def _given_prior(self) -> Any:
        return self.priors

    def fit_analyzers(self, features: list[str], schema: pa.Schema) -> dict[str, Analyzer]:
        an = super().fit_analyzers(features, schema)
        if self.sample_weight is not None:  # var_smoothing scales by the unweighted variance, as scikit-learn
            an["spread"] = ClassStats(features, self.label, missing_label=self.missing_label)  # type: ignore
        return an

    def fitted_attributes(self, state: dict[str, Any]) -> dict[str, np.ndarray]:
        st = state["stats"]
        un = state.get("spread", st)
        count = np.asarray(st["count"], dtype=np.float64)
        empty = (count == 0)[:, None]
        theta = np.where(empty, 0.0, st["mean"])
        n = np.asarray(un["rows"], dtype=np.float64)[:, None]
        mu = np.asarray(un["sum"]).sum(axis=0) / n.sum()
        spread = ((np.asarray(un["var"]) * n).sum(axis=0) + (n * (np.asarray(un["mean"]) - mu) ** 2).sum(axis=0))
        epsilon = self.var_smoothing * np.max(spread / n.sum())
        var = np.where(empty, 0.0, st["var"]) + epsilon
        prior = np.asarray(self.priors, dtype=np.float64) if self.priors is not None else count / count.sum()
        with np.errstate(divide="ignore"):
            return {"class_count_": count, "class_prior_": prior, "theta_": theta, "var_": var,
                    "epsilon_": np.float64(epsilon), "_log_prior": np.log(prior),
                    "_norm": -0.5 * np.sum(np.log(2.0 * np.pi * var), axis=1)}

    def _jll(self, X: np.ndarray, a: dict[str, np.ndarray]) -> np.ndarray:
        return _gaussian_jll(X, a["theta_"], a["var_"], a["_log_prior"], a["_norm"])

    def _row_jll(self, a: dict[str, np.ndarray]):
        classes = list(zip(a["theta_"].tolist(), a["var_"].tolist(), a["_log_prior"].tolist(),
                           a["_norm"].tolist()))

        def score(xs: list[float]) -> list[float]:
            out = []
            for th, va, lp, nm in classes:
                s = 0.0
                for x, t, v in zip(xs, th, va):
                    d = x - t
                    s += d * d / v
                out.append(lp + (nm - 0.5 * s))
            return out

        return score


@register_step
class MultinomialNB(_DiscreteNB):
    """Multinomial naive Bayes (counts or frequencies), as :class:`sklearn.naive_bayes.MultinomialNB`.

    Parameters
    ----------
    features, label, sample_weight, output, missing_label:
        As :class:`GaussianNB`.  Feature values must be non-negative.
    alpha:
        Additive (Laplace/Lidstone) smoothing, a number or one per feature.
    force_alpha:
        Keep ``alpha`` as given even below 1e-10 (else it is raised to 1e-10 with a warning).
    fit_prior:
        Learn class priors from the (weighted) class counts; else uniform priors.
    class_prior:
        Given class priors (in sorted class order), overriding ``fit_prior``.

    Attributes
    ----------
    :meth:`fitted_attributes` gives ``class_count_``, ``class_log_prior_``, ``feature_count_`` and
    ``feature_log_prob_`` as scikit-learn names them.

    Examples
    --------
    >>> import beamlearn as bl
    >>> data = {"a": [3, 0, 4, 1], "b": [0, 2, 1, 5], "y": [0, 1, 0, 1]}
    >>> f = bl.Pipeline([bl.MultinomialNB(["a", "b"], "y")]).fit(data)
    >>> f.transform({"a": [5, 0], "b": [0, 5]}).column("prediction").to_pylist()
    [0, 1]
    """

    _nonnegative = True

    def __init__(self, features: str | Sequence[str], label: str, *, alpha: float | Sequence[float] = 1.0,
                 force_alpha: bool = True, fit_prior: bool = True, class_prior: Sequence[float] | None = None,
                 sample_weight: str | None = None, output: str = "prediction",
                 missing_label: str = "error") -> None:
        self.features, self.label, self.alpha, self.force_alpha = features, label, alpha, force_alpha
        self.fit_prior, self.class_prior, self.sample_weight = fit_prior, class_prior, sample_weight
        self.output, self.missing_label = output, missing_label

    def fitted_attributes(self, state: dict[str, Any]) -> dict[str, np.ndarray]:
        st = state["stats"]
        count, fc = np.asarray(st["count"], dtype=np.float64), np.asarray(st["sum"], dtype=np.float64)
        smoothed = fc + self._alpha(fc.shape[1])
        with np.errstate(divide="ignore"):
            flp = np.log(smoothed) - np.log(smoothed.sum(axis=1).reshape(-1, 1))
            clp = _class_log_prior(count, self.class_prior, self.fit_prior)
        return {"class_count_": count, "class_log_prior_": clp, "feature_count_": fc, "feature_log_prob_": flp,
                "_W": flp, "_b": clp}


@register_step
class BernoulliNB(_DiscreteNB):
    """Bernoulli naive Bayes (binary features), as :class:`sklearn.naive_bayes.BernoulliNB`.

    Parameters
    ----------
    features, label, sample_weight, output, missing_label:
        As :class:`GaussianNB`.
    alpha, force_alpha, fit_prior, class_prior:
        As :class:`MultinomialNB`.
    binarize:
        Threshold: a feature counts as 1 when ``x > binarize`` (at fit and predict); None means the features
        are binary already.

    Attributes
    ----------
    :meth:`fitted_attributes` gives ``class_count_``, ``class_log_prior_``, ``feature_count_`` and
    ``feature_log_prob_`` as scikit-learn names them.

    Examples
    --------
    >>> import beamlearn as bl
    >>> data = {"a": [1.0, 0.0, 2.0, 0.0], "b": [0.0, 1.0, 0.0, 3.0], "y": ["u", "v", "u", "v"]}
    >>> f = bl.Pipeline([bl.BernoulliNB(["a", "b"], "y")]).fit(data)
    >>> f.transform_one({"a": 5.0, "b": 0.0, "y": None})["prediction"]
    'u'
    """

    def __init__(self, features: str | Sequence[str], label: str, *, alpha: float | Sequence[float] = 1.0,
                 force_alpha: bool = True, binarize: float | None = 0.0, fit_prior: bool = True,
                 class_prior: Sequence[float] | None = None, sample_weight: str | None = None,
                 output: str = "prediction", missing_label: str = "error") -> None:
        self.features, self.label, self.alpha, self.force_alpha = features, label, alpha, force_alpha
        self.binarize, self.fit_prior, self.class_prior = binarize, fit_prior, class_prior
        self.sample_weight, self.output, self.missing_label = sample_weight, output, missing_label

    def fitted_attributes(self, state: dict[str, Any]) -> dict[str, np.ndarray]:
        st = state["stats"]
        count, fc = np.asarray(st["count"], dtype=np.float64), np.asarray(st["sum"], dtype=np.float64)
        alpha = self._alpha(fc.shape[1])
        with np.errstate(divide="ignore", invalid="ignore"):
            flp = np.log(fc + alpha) - np.log(count[:, None] + alpha * 2)
            clp = _class_log_prior(count, self.class_prior, self.fit_prior)
            neg = np.log(1 - np.exp(flp))
        return {"class_count_": count, "class_log_prior_": clp, "feature_count_": fc, "feature_log_prob_": flp,
                "_W": flp - neg, "_b": clp + neg.sum(axis=1)}
