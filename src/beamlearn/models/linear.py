"""Linear models: LinearRegression, Ridge (one pass) and LogisticRegression (one pass per optimizer iteration).

Least squares come from one pass of centred co-moments (:class:`~beamlearn.analyzers.CoMoments` over the
features and the label): ``LinearRegression`` solves them like scikit-learn's ``scipy.linalg.lstsq`` with
``cond=tol`` (singular values of the centred, weight-scaled design below ``tol`` times the largest count as zero,
and the minimum-norm solution is returned, so a rank-deficient design such as one-hot columns without ``drop``
plus an intercept gives scikit-learn's coefficients), ``Ridge`` solves ``(C + alpha I) coef = c`` as
scikit-learn's Cholesky solver does.  ``LogisticRegression`` is described in :mod:`beamlearn.models._logistic`.

Predictions are computed left to right, ``x0*c0 + x1*c1 + ... + intercept``, by both the vectorized path and
the single-record path, so :meth:`~beamlearn.FittedPipeline.transform_one` equals ``transform`` exactly.
Rows with a missing feature get null predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn.analyzers import Analyzer, CoMoments
from beamlearn.batches import column_kind
from beamlearn.errors import SchemaError, SpecError
from beamlearn.models._logistic import ClassCounts
from beamlearn.models.base import Classifier, Estimator, label_values
from beamlearn.steps.base import RowFn, register_step

__all__ = ["LinearRegression", "LogisticRegression", "Ridge"]

NEWTON_MAX_DIM = 2000
"""``solver="auto"`` uses Newton while ``n_parameters = (d + fit_intercept) * (1 or n_classes)`` is at most
this (a pass then reduces a Hessian of that size), L-BFGS above it."""
_EXP_MAX = 709.0  # exp(709) is finite: both prediction paths clamp here, so neither overflows


def linear_scores(X: np.ndarray, coef: Sequence[float], intercept: float) -> np.ndarray:
    """``X @ coef + intercept`` summed left to right (the same operations as the single-record path).

    >>> linear_scores(np.array([[1.0, 2.0], [3.0, 4.0]]), [0.5, -1.0], 2.0).tolist()
    [0.5, -0.5]
    """
    z = X[:, 0] * coef[0]
    for j in range(1, len(coef)):
        z += X[:, j] * coef[j]
    return z + intercept


def _row_scorer(features: Sequence[str], coefs: np.ndarray, intercepts: np.ndarray) -> Any:
    """``fn(row) -> [score per row of coefs]`` or None when a feature is missing, in linear_scores' order.

    Zero features are skipped (one-hot rows are mostly zeros): adding ``0 * c`` to a partial sum leaves it
    unchanged, so the scores equal :func:`linear_scores`' (a zero score may differ in sign only, and -0.0 == 0.0).

    >>> _row_scorer(["a", "b"], np.array([[2.0, 3.0]]), np.array([1.0]))({"a": 0, "b": 0.5})
    [2.5]
    """
    pairs = list(enumerate(features))
    rows = [(c.tolist(), float(b)) for c, b in zip(coefs, intercepts)]
    if len(rows) == 1:
        named = list(zip(features, rows[0][0]))
        b0 = rows[0][1]

        def score(row: dict) -> list[float] | None:
            z = 0.0
            for c, k in named:
                v = row[c]
                if v:
                    if v != v:  # noqa: PLR0124 - NaN is missing
                        return None
                    z += v * k
                elif v is None:
                    return None
            return [z + b0]

        return score

    def scores(row: dict) -> list[float] | None:
        nz = []
        for j, c in pairs:
            v = row[c]
            if v:
                if v != v:  # noqa: PLR0124 - NaN is missing
                    return None
                nz.append((j, v))
            elif v is None:
                return None
        out = []
        for cs, b in rows:
            z = 0.0
            for j, v in nz:
                z += v * cs[j]
            out.append(z + b)
        return out

    return scores


class _Regression(Estimator):
    """LinearRegression and Ridge: one pass of co-moments over the features and the label, solved at extract."""

    def check(self, schema: pa.Schema) -> None:
        super().check(schema)
        if column_kind(schema.field(self.label).type) not in ("numeric", "boolean"):
            raise SchemaError(f"{type(self).__name__} needs a numeric label, got {schema.field(self.label).type}",
                              column=self.label)

    def fit_analyzers(self, features: list[str], schema: pa.Schema) -> dict[str, Analyzer]:
        return {"model": LeastSquares(features, self.label, weight=self.sample_weight,
                                      missing_label=self.missing_label, fit_intercept=self.fit_intercept,
                                      alpha=self._alpha(), tol=getattr(self, "tol", 1e-6))}

    def _alpha(self) -> float | None:
        return None

    def output_types(self, state: dict[str, Any]) -> list[tuple[str, pa.DataType]]:
        return [(self.output, pa.float64())]

    def predict_columns(self, X: np.ndarray, state: dict[str, Any]) -> list[tuple[str, np.ndarray]]:
        m = state["model"]
        return [(self.output, linear_scores(np.asfortranarray(X), m["coef"], float(m["intercept"])))]

    def row_function(self, state: dict[str, Any], schema: pa.Schema) -> RowFn:
        m, out = state["model"], self.output
        scores = _row_scorer(state["features"], m["coef"][None, :], np.array([m["intercept"]]))

        def fn(row: dict) -> dict:
            z = scores(row)
            row[out] = None if z is None else z[0]
            return row

        return fn

    def max_passes(self) -> int:
        """Passes this estimator's analyzers need: one."""
        return 1

    def describe(self, state: dict[str, Any]) -> dict[str, Any]:
        m = state["model"]
        out = {"coefficients": dict(zip(state["features"], m["coef"].tolist())), "intercept": m["intercept"],
               "rows": m["rows"], "skipped_rows": m["skipped"]}
        if "rank" in m:
            out["rank"] = m["rank"]
        return out


class LeastSquares(CoMoments):
    """Co-moments of ``features + [label]`` (the label policy enforced), solved at extract.

    ``alpha=None`` is the minimum-norm least-squares solution with singular values below ``tol`` times the
    largest treated as zero (scikit-learn's ``lstsq(cond=tol)``, from the eigendecomposition of the centred
    co-moment matrix); ``alpha >= 0`` solves ``(C + alpha I) coef = c`` (Cholesky).  State: the
    :class:`~beamlearn.analyzers.CoMoments` state plus ``coef``, ``intercept`` (and ``rank`` for least squares).
    """

    def __init__(self, features: Sequence[str], label: str, *, weight: str | None = None,
                 missing_label: str = "error", fit_intercept: bool = True, alpha: float | None = None,
                 tol: float = 1e-6) -> None:
        super().__init__([*features, label], weight=weight)
        self.label, self.missing_label, self.fit_intercept, self.alpha, self.tol = (
            label, missing_label, fit_intercept, alpha, tol)

    def add(self, acc: list[Any], batch: pa.RecordBatch) -> list[Any]:
        if batch.num_rows:
            label_values(batch, self.label, self.missing_label)  # raises on a missing label unless dropping
        return super().add(acc, batch)

    def extract(self, acc: list[Any]) -> dict[str, Any]:
        st = super().extract(acc)
        d = len(self.columns) - 1
        if st["count"] <= 0:
            return {**st, "coef": np.zeros(d), "intercept": 0.0, **({} if self.alpha is not None else {"rank": 0})}
        C, mean = st["comoment"], st["mean"]
        if not self.fit_intercept:  # raw (uncentred) weighted cross products
            C = C + st["count"] * np.outer(mean, mean)
        A, b = C[:d, :d], C[:d, d]
        extra: dict[str, Any] = {}
        if self.alpha is None:
            coef, extra["rank"] = min_norm_solve(A, b, self.tol)
        else:
            coef = ridge_solve(A, b, self.alpha)
        intercept = float(mean[d] - mean[:d] @ coef) if self.fit_intercept else 0.0
        return {**st, "coef": coef, "intercept": intercept, **extra}


def min_norm_solve(A: np.ndarray, b: np.ndarray, tol: float) -> tuple[np.ndarray, int]:
    """The minimum-norm solution of the normal equations ``A x = b`` (``A = XᵀX``), ignoring singular values
    of ``X`` below ``tol`` times the largest, and the rank: ``lstsq(X, y, cond=tol)`` from ``XᵀX`` and ``Xᵀy``.

    >>> min_norm_solve(np.array([[1.0, 1.0], [1.0, 1.0]]), np.array([2.0, 2.0]), 1e-6)
    (array([1., 1.]), 1)
    """
    lam, V = np.linalg.eigh(A)
    top = lam[-1] if len(lam) else 0.0
    if top <= 0:
        return np.zeros(len(b)), 0
    keep = lam > (tol * tol) * top  # singular values sqrt(lam) above tol * the largest
    Vk = V[:, keep]
    return Vk @ ((Vk.T @ b) / lam[keep]), int(keep.sum())


def ridge_solve(A: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    """``(A + alpha I)^-1 b`` by Cholesky, as scikit-learn's ``_solve_cholesky`` (least squares if singular).

    >>> ridge_solve(np.array([[1.0, 0.0], [0.0, 3.0]]), np.array([2.0, 4.0]), 1.0).tolist()
    [1.0, 1.0]
    """
    from scipy import linalg  # fit-time only: serving imports no scipy

    M = A + alpha * np.eye(len(b))
    try:
        return linalg.solve(M, b, assume_a="pos")
    except (linalg.LinAlgError, ValueError):
        return np.linalg.lstsq(M, b, rcond=None)[0]


@register_step
class LinearRegression(_Regression):
    """Ordinary least squares, as :class:`sklearn.linear_model.LinearRegression`, fitted in one pass.

    Parameters
    ----------
    features:
        Feature columns: output names, input names (every column derived from them) or globs.
    label:
        The numeric column to predict.
    fit_intercept, tol:
        As scikit-learn (``tol`` is ``lstsq``'s ``cond``: relative cutoff of singular values).
    sample_weight:
        A column of non-negative weights (missing = 0).
    output:
        The name of the prediction column (float64, appended; null where a feature is missing).
    missing_label:
        ``"error"`` (default) or ``"drop"`` (rows without a label are skipped and counted).

    Examples
    --------
    >>> import beamlearn as bl
    >>> f = bl.Pipeline([bl.LinearRegression(["x"], "y")]).fit({"x": [0.0, 1.0, 2.0], "y": [1.0, 3.0, 5.0]})
    >>> f.transform({"x": [3.0, None]}).column("prediction").to_pylist()
    [7.0, None]
    """

    def __init__(self, features: Any, label: str, *, fit_intercept: bool = True, tol: float = 1e-6,
                 sample_weight: str | None = None, output: str = "prediction",
                 missing_label: str = "error") -> None:
        self.features, self.label, self.fit_intercept, self.tol = features, label, fit_intercept, tol
        self.sample_weight, self.output, self.missing_label = sample_weight, output, missing_label


@register_step
class Ridge(_Regression):
    """Least squares with an L2 penalty ``alpha * ||coef||^2``, as :class:`sklearn.linear_model.Ridge`
    (its Cholesky solution; the intercept is not penalized), fitted in one pass.

    Parameters are those of :class:`LinearRegression` plus ``alpha`` (a non-negative float).

    Examples
    --------
    >>> import beamlearn as bl
    >>> f = bl.Pipeline([bl.Ridge(["x"], "y", alpha=2.0)]).fit({"x": [0.0, 1.0, 2.0], "y": [1.0, 3.0, 5.0]})
    >>> f.transform({"x": [1.0]}).column("prediction").to_pylist()
    [3.0]
    """

    def __init__(self, features: Any, label: str, *, alpha: float = 1.0, fit_intercept: bool = True,
                 sample_weight: str | None = None, output: str = "prediction",
                 missing_label: str = "error") -> None:
        self.features, self.label, self.alpha, self.fit_intercept = features, label, alpha, fit_intercept
        self.sample_weight, self.output, self.missing_label = sample_weight, output, missing_label

    def check(self, schema: pa.Schema) -> None:
        super().check(schema)
        if not isinstance(self.alpha, (int, float)) or isinstance(self.alpha, bool) or not self.alpha >= 0:
            raise SpecError(f"Ridge: alpha must be a non-negative number, got {self.alpha!r}")

    def _alpha(self) -> float | None:
        return float(self.alpha)



@register_step
class LogisticRegression(Classifier):
    """Logistic regression with an L2 penalty, binary or multinomial, as
    :class:`sklearn.linear_model.LogisticRegression`: it minimizes ``sum_i w_i loss_i + 0.5 / C * ||coef||^2``.

    Every pass is one optimizer iteration (damped Newton while the number of parameters is at most
    :data:`NEWTON_MAX_DIM`, L-BFGS above it; ``solver="newton-cholesky"`` or ``"lbfgs"`` forces one); the first
    also finds the classes (and the class counts for ``class_weight="balanced"``), so a fit takes ``n_iter``
    passes (``state["model"]["n_iter"]``).  Outputs: ``output`` (the predicted class, typed like the classes),
    ``proba_{class}`` (float64, ``predict_proba``) and, for two classes, ``decision`` (``decision_function``).

    Parameters
    ----------
    features, label, sample_weight, output, missing_label:
        As :class:`LinearRegression`; the label may hold strings or numbers.
    C, fit_intercept, class_weight, max_iter, tol:
        As scikit-learn (``class_weight``: None, ``"balanced"`` or a dict by class).  ``tol`` bounds the largest
        gradient entry of the objective divided by the sum of weights; ``max_iter`` counts optimizer passes
        (a :class:`~beamlearn.models.ConvergenceWarning` when reached).
    solver:
        ``"auto"`` (default), ``"newton-cholesky"`` or ``"lbfgs"``.

    Examples
    --------
    >>> import beamlearn as bl
    >>> data = {"x": [-2.0, -1.0, 0.5, -0.5, 1.0, 2.0], "y": ["no", "no", "no", "yes", "yes", "yes"]}
    >>> f = bl.Pipeline([bl.LogisticRegression(["x"], "y")]).fit(data)
    >>> f.transform({"x": [-3.0, 3.0]}).column("prediction").to_pylist()
    ['no', 'yes']
    """

    def __init__(self, features: Any, label: str, *, C: float = 1.0, fit_intercept: bool = True,
                 class_weight: Any = None, max_iter: int = 100, tol: float = 1e-4, solver: str = "auto",
                 sample_weight: str | None = None, output: str = "prediction",
                 missing_label: str = "error") -> None:
        self.features, self.label, self.C, self.fit_intercept = features, label, C, fit_intercept
        self.class_weight, self.max_iter, self.tol, self.solver = class_weight, max_iter, tol, solver
        self.sample_weight, self.output, self.missing_label = sample_weight, output, missing_label

    def check(self, schema: pa.Schema) -> None:
        super().check(schema)
        self._check_choice("solver", ("auto", "newton-cholesky", "lbfgs"))
        for name, ok in (("C", _positive(self.C)), ("tol", _positive(self.tol) or self.tol == 0),
                         ("max_iter", isinstance(self.max_iter, int) and self.max_iter >= 1)):
            if not ok:
                raise SpecError(f"LogisticRegression: {name}={getattr(self, name)!r} must be a positive number")
        if not (self.class_weight is None or self.class_weight == "balanced" or isinstance(self.class_weight, dict)):
            raise SpecError(f"LogisticRegression: class_weight must be None, 'balanced' or a dict by class, got "
                            f"{self.class_weight!r}")

    def fit_analyzers(self, features: list[str], schema: pa.Schema) -> dict[str, Analyzer]:
        settings = {"C": self.C, "fit_intercept": self.fit_intercept, "class_weight": self.class_weight,
                    "max_iter": self.max_iter, "tol": self.tol, "solver": self.solver,
                    "newton_max_dim": NEWTON_MAX_DIM}
        return {"model": ClassCounts(self.label, weight=self.sample_weight, missing_label=self.missing_label,
                                     features=features, settings=settings)}

    def max_passes(self) -> int:
        """Passes this estimator's analyzers may need: ``max_iter`` (class discovery rides on the first)."""
        return int(self.max_iter)

    def classes_of(self, state: dict[str, Any]) -> list[Any]:
        return list(state["model"]["classes"])

    def output_types(self, state: dict[str, Any]) -> list[tuple[str, pa.DataType]]:
        classes = self.classes_of(state)
        out = [(self.output, self.label_type(state))] + [(f"proba_{c}", pa.float64()) for c in classes]
        return out + ([("decision", pa.float64())] if len(classes) == 2 else [])

    def predict_columns(self, X: np.ndarray, state: dict[str, Any]) -> list[tuple[str, Any]]:
        m, classes = state["model"], self.classes_of(state)
        Xf = np.asfortranarray(X)
        Z = [linear_scores(Xf, c, float(b)) for c, b in zip(m["coef"], m["intercept"])]
        names = [self.output] + [f"proba_{c}" for c in classes]
        if len(classes) == 2:
            z = Z[0]
            p1 = 1.0 / (1.0 + np.exp(np.minimum(-z, _EXP_MAX)))
            pred = pa.array(classes).take(pa.array((z > 0).astype(np.int64)))
            return list(zip(names + ["decision"], [pred, 1.0 - p1, p1, z]))
        M = np.maximum.reduce(Z)
        E = [np.exp(z - M) for z in Z]
        S = E[0]
        for e in E[1:]:
            S = S + e
        pred = pa.array(classes).take(pa.array(np.argmax(np.column_stack(Z), axis=1)))
        return list(zip(names, [pred] + [e / S for e in E]))

    def row_function(self, state: dict[str, Any], schema: pa.Schema) -> RowFn:
        m, classes = state["model"], self.classes_of(state)
        scores = _row_scorer(state["features"], m["coef"], m["intercept"])
        names = [f"proba_{c}" for c in classes]
        out, exp = self.output, np.exp
        if len(classes) == 2:
            c0, c1, n0, n1 = classes[0], classes[1], names[0], names[1]

            def binary(row: dict) -> dict:
                zs = scores(row)
                if zs is None:
                    row[out] = row[n0] = row[n1] = row["decision"] = None
                    return row
                z = zs[0]
                t = -z
                p1 = 1.0 / (1.0 + float(exp(min(t, _EXP_MAX))))
                row[out], row[n0], row[n1], row["decision"] = (c1 if z > 0 else c0), 1.0 - p1, p1, z
                return row

            return binary
        pairs = list(zip(names, range(len(classes))))

        def multinomial(row: dict) -> dict:
            zs = scores(row)
            if zs is None:
                row[out] = None
                for n, _ in pairs:
                    row[n] = None
                return row
            mx = max(zs)
            es = [float(exp(z - mx)) for z in zs]
            s = es[0]
            for e in es[1:]:
                s = s + e
            row[out] = classes[zs.index(mx)]
            for n, a in pairs:
                row[n] = es[a] / s
            return row

        return multinomial

    def describe(self, state: dict[str, Any]) -> dict[str, Any]:
        m, classes = state["model"], self.classes_of(state)
        rows = classes[1:] if len(classes) == 2 else classes
        return {"classes": classes, "class_counts": np.asarray(m["class_counts"]).tolist(),
                "coefficients": {str(c): dict(zip(state["features"], co.tolist())) for c, co in zip(rows, m["coef"])},
                "intercept": {str(c): float(b) for c, b in zip(rows, m["intercept"])},
                "n_iter": m["n_iter"], "passes": m["n_iter"], "converged": m["converged"],
                "loss": m["loss"], "rows": m["rows"], "skipped_rows": m["skipped"]}


def _positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 and x != float("inf")
