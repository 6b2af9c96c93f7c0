"""Every beamlearn step and model as a scikit-learn estimator: a thin adapter, one class per step, named like it.

>>> from beamlearn.interop.sklearn_estimators import StandardScaler   # doctest: +SKIP

Each class takes the step's parameters (``columns`` / ``features`` optional: every column) and follows scikit-learn's
contract: parameters stored verbatim (``get_params`` / ``set_params`` / ``clone``), ``fit(X, y=None,
sample_weight=None)``, ``transform`` (steps) or ``predict`` / ``predict_proba`` / ``decision_function`` (models),
``get_feature_names_out``, ``set_output(transform="pandas" | "polars")`` (scikit-learn's own, from
``get_feature_names_out``), ``n_features_in_`` / ``feature_names_in_``.  ``X`` is a DataFrame (pandas, Polars, a
pyarrow Table: column types kept, strings included) or an array (columns named ``x0, x1, ...`` as scikit-learn
names them).  The label and weights become hidden columns of the table the beamlearn pipeline is fitted on;
``fitted_`` is that :class:`~beamlearn.FittedPipeline`.  ``transform`` returns float64 (object when an output is a
string column), with NaN where beamlearn gives null.

This module imports scikit-learn (its classes subclass ``BaseEstimator``), so ``import beamlearn`` does not
import it.  Steps needing a parameter without default (``Function``, ``Derive``, ``Drop``, ``SklearnModel``) are
adapted too but are not default-constructible, as scikit-learn's checks require.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.base import BaseEstimator, ClassifierMixin, ClusterMixin, RegressorMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from beamlearn.batches import column_kind, to_batches
from beamlearn.errors import BeamlearnError
from beamlearn.models.base import Classifier, Estimator
from beamlearn.pipeline import Pipeline
from beamlearn.steps import Step, registered_steps

__all__ = ["ADAPTERS", "BeamlearnEstimator", "adapter_class"]

LABEL, WEIGHT = "__label__", "__sample_weight__"
HIDDEN = ("label", "sample_weight", "output", "missing_label")


@contextmanager
def _as_value_errors() -> Iterator[None]:
    """beamlearn's data and parameter errors as the ValueError scikit-learn's callers expect (message kept)."""
    try:
        yield
    except BeamlearnError as exc:
        raise ValueError(str(exc)) from exc


def _is_frame(X: Any) -> bool:
    return hasattr(X, "columns") and (hasattr(X, "dtypes") or isinstance(X, pa.Table))


class BeamlearnEstimator(BaseEstimator):
    """Base of the adapters: a beamlearn step fitted in a one-step pipeline (see the module docstring)."""

    step_class: type[Step] = Step

    # -------------------------------------------------------------------- parameters
    @classmethod
    def _columns_param(cls) -> str:
        return "features" if issubclass(cls.step_class, Estimator) else "columns"

    def _step(self, names: list[str], supervised: bool, weighted: bool) -> Step:
        params = self.get_params(deep=False)
        key = self._columns_param()
        if params.get(key) is None:
            params[key] = list(names)
        if issubclass(self.step_class, Estimator):
            sig = inspect.signature(self.step_class.__init__).parameters
            if "label" in sig:
                params["label"] = LABEL if supervised else None
            if weighted:
                params["sample_weight"] = WEIGHT
        return self.step_class(**params)

    # -------------------------------------------------------------------- data
    def _table(self, X: Any, y: Any = None, sample_weight: Any = None, *, reset: bool) -> pa.Table:
        model = issubclass(self.step_class, Estimator)
        finite: Any = True if model else "allow-nan"
        if y is not None:
            X_arr, y = validate_data(self, X, y, reset=reset, dtype=None, ensure_all_finite=finite,
                                     y_numeric=isinstance(self, RegressorMixin))
        else:
            X_arr = validate_data(self, X, reset=reset, dtype=None, ensure_all_finite=finite)
        names = [str(n) for n in getattr(self, "feature_names_in_", [f"x{i}" for i in range(X_arr.shape[1])])]
        if _is_frame(X):
            table = pa.Table.from_batches(list(to_batches(X)))
            table = table.select([str(c) for c in table.column_names][: len(names)])
        else:
            cols = {}
            for n, j in zip(names, range(X_arr.shape[1])):
                col = X_arr[:, j]
                try:
                    cols[n] = pa.array(col.tolist() if col.dtype.kind == "O" else col, from_pandas=True)
                except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
                    raise TypeError(f"column {n!r}: argument must be a string or a number ({exc})") from None
            table = pa.table(cols) if cols else pa.table({})
        if y is not None:
            table = table.append_column(LABEL, pa.array(np.asarray(y).tolist() if np.asarray(y).dtype.kind in "OU"
                                                        else np.asarray(y)))
        if sample_weight is not None:
            sw = np.broadcast_to(np.asarray(sample_weight, dtype=np.float64), (table.num_rows,))
            if not (sw > 0).any():
                raise ValueError("Sample weights must contain at least one non-zero number.")
            table = table.append_column(WEIGHT, pa.array(sw))
        return table

    # -------------------------------------------------------------------- fit
    def _fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> BeamlearnEstimator:
        supervised = issubclass(self.step_class, Estimator) and not isinstance(self, ClusterMixin)
        if supervised and y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        if isinstance(self, ClassifierMixin):
            from sklearn.utils.multiclass import check_classification_targets

            check_classification_targets(y)
            if self.step_class.__name__ == "LogisticRegression" and len(np.unique(np.asarray(y))) < 2:
                raise ValueError("LogisticRegression needs samples of at least 2 classes in the data, but the "
                                 "data contains only one class")
        table = self._table(X, y if supervised else None, sample_weight, reset=True)
        if self.__sklearn_tags__().input_tags.positive_only and any(
                column_kind(f.type) == "numeric" and f.name not in (LABEL, WEIGHT)
                and (pc.min(table.column(f.name)).as_py() or 0) < 0 for f in table.schema):
            raise ValueError(f"Negative values in data passed to {type(self).__name__} (it needs counts)")
        names = [n for n in table.column_names if n not in (LABEL, WEIGHT)]
        step = self._step(names, supervised, sample_weight is not None)
        with _as_value_errors():
            self.fitted_ = Pipeline([step]).fit(table)
        state = self.fitted_.states[0]
        if isinstance(self, ClassifierMixin):
            self.classes_ = np.asarray(step.classes_of(state))
        model = state.get("model", state.get("kmeans", {}))
        if "n_iter" in model:
            self.n_iter_ = int(np.max(model["n_iter"]))
        if isinstance(self, ClusterMixin):
            self.labels_ = self.predict(X)
        return self

    def _outputs(self, X: Any) -> pa.Table:
        check_is_fitted(self, "fitted_")
        table = self._table(X, reset=False)
        with _as_value_errors():
            return self.fitted_.transform(table)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """The output columns of ``transform`` (beamlearn's names, as scikit-learn's)."""
        check_is_fitted(self, "fitted_")
        if input_features is not None and list(input_features) != list(self.fitted_.input_schema.names):
            raise ValueError("input_features is not equal to feature_names_in_")
        return np.asarray([n for n in self.fitted_.output_schema.names if n not in (LABEL, WEIGHT)], dtype=object)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = not issubclass(self.step_class, Estimator)
        tags.input_tags.positive_only = self.step_class.__name__ == "MultinomialNB"
        tags.non_deterministic = False
        return tags


def _matrix(table: pa.Table) -> np.ndarray:
    """The table as a 2-D array: float64 (NaN for nulls) when every column is numeric, else objects."""
    if all(column_kind(t) in ("numeric", "boolean") for t in table.schema.types):
        return np.column_stack([np.asarray(table.column(i).to_numpy(zero_copy_only=False), dtype=np.float64)
                                for i in range(table.num_columns)]) if table.num_columns else \
            np.empty((table.num_rows, 0))
    out = np.empty((table.num_rows, table.num_columns), dtype=object)
    for i, t in enumerate(table.schema.types):
        col = table.column(i)
        numeric = column_kind(t) in ("numeric", "boolean")
        out[:, i] = _matrix(table.select([i]))[:, 0] if numeric else col.to_pylist()
    return out


class _Transformer(TransformerMixin, BeamlearnEstimator):
    def fit(self, X: Any, y: Any = None) -> _Transformer:
        """Fit the step on ``X`` (``y`` is ignored)."""
        return self._fit(X)

    def transform(self, X: Any) -> Any:
        """The step's output columns (``get_feature_names_out``) as a 2-D array; a hashed column (FeatureHasher)
        becomes ``n_features`` columns of a scipy CSR matrix, as scikit-learn's FeatureHasher returns."""
        out = self._outputs(X)
        hashed = [f.name for f in out.schema if pa.types.is_list(f.type) and pa.types.is_struct(f.type.value_type)]
        if not hashed:
            return _matrix(out)
        import scipy.sparse as sp

        parts = []
        for f in out.schema:
            col = out.column(f.name).combine_chunks()
            if f.name not in hashed:
                parts.append(sp.csr_matrix(_matrix(out.select([f.name]))))
                continue
            flat = col.flatten()
            indptr = np.asarray(col.offsets, dtype=np.int64)
            parts.append(sp.csr_matrix((flat.field("value").to_numpy(), flat.field("index").to_numpy(), indptr),
                                       shape=(out.num_rows, int(self.fitted_.steps[0].n_features))))
        return sp.hstack(parts, format="csr")

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """The output columns (a hashed column counts as ``n_features`` columns, ``{name}_{i}``)."""
        names = super().get_feature_names_out(input_features)
        hashed = {f.name for f in self.fitted_.output_schema if pa.types.is_list(f.type)}
        if not hashed:
            return names
        n = int(self.fitted_.steps[0].n_features)
        return np.asarray([x for c in names for x in ([f"{c}_{i}" for i in range(n)] if c in hashed else [c])],
                          dtype=object)


class _Model(BeamlearnEstimator):
    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> _Model:
        """Fit the model on ``X``, ``y`` (clusterers: ``y`` ignored) and optional ``sample_weight``."""
        return self._fit(X, y, sample_weight)

    def _column(self, X: Any, name: str) -> np.ndarray:
        out = self._outputs(X).column(name)
        values = out.to_numpy(zero_copy_only=False)
        return values if values.dtype.kind != "O" else np.asarray(out.to_pylist())

    def predict(self, X: Any) -> np.ndarray:
        """The ``prediction`` column (the cluster for clusterers)."""
        check_is_fitted(self, "fitted_")
        return self._column(X, self.fitted_.steps[0].output)


class _Classifier(ClassifierMixin, _Model):
    def predict(self, X: Any) -> np.ndarray:
        """The predicted classes, typed like ``classes_``."""
        return super().predict(X).astype(self.classes_.dtype, copy=False)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        if self.step_class.__name__ in ("MultinomialNB", "BernoulliNB"):
            tags.classifier_tags.poor_score = True  # as scikit-learn's own naive Bayes: blobs are not counts
        return tags

    def predict_proba(self, X: Any) -> np.ndarray:
        """``proba_{class}`` columns, in ``classes_`` order."""
        out = self._outputs(X)
        return _matrix(out.select([f"proba_{c}" for c in self.classes_]))


class _Regressor(RegressorMixin, _Model):
    pass


class _Clusterer(ClusterMixin, _Model):
    pass


def adapter_class(step_class: type[Step]) -> type[BeamlearnEstimator]:
    """The scikit-learn estimator class adapting ``step_class`` (its parameters, ``columns``/``features``
    optional; a model's label, weights and output names are handled by ``fit``)."""
    if issubclass(step_class, Classifier):
        base: type = _Classifier
    elif issubclass(step_class, Estimator):
        base = _Clusterer if "label" not in inspect.signature(step_class.__init__).parameters else _Regressor
    else:
        base = _Transformer
    key = "features" if issubclass(step_class, Estimator) else "columns"
    hidden = HIDDEN if issubclass(step_class, Estimator) else ()
    params = [p for p in inspect.signature(step_class.__init__).parameters.values()
              if p.name != "self" and p.name not in hidden]
    params = [p.replace(kind=p.KEYWORD_ONLY, default=None) if p.name == key else p.replace(kind=p.KEYWORD_ONLY)
              for p in params]
    names = [p.name for p in params]

    def __init__(self: Any, **kwargs: Any) -> None:
        for p in params:
            setattr(self, p.name, kwargs.get(p.name, p.default))

    __init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *params])
    cls = type(step_class.__name__, (base,), {"__init__": __init__, "step_class": step_class,
                                               "__module__": __name__, "__qualname__": step_class.__name__,
                                               "__doc__": f"scikit-learn adapter of beamlearn's "
                                                          f":class:`~beamlearn.{step_class.__name__}` "
                                                          f"(parameters: {', '.join(names)})."})
    return cls


ADAPTERS: dict[str, type[BeamlearnEstimator]] = {name: adapter_class(cls) for name, cls in registered_steps().items()}
globals().update(ADAPTERS)
