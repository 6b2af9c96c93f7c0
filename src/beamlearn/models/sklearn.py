"""Any scikit-learn estimator as a pipeline step, persisted with skops (never pickle).

:class:`SklearnModel` wraps a scikit-learn estimator.  Its parameters hold the estimator as plain data (its class
path and ``get_params()``), so artifacts stay code-free; the fitted estimator is stored in the state as a
**skops** blob (``skops>=0.12``; 0.11 had code execution on load, CVE-2025-54412/54413).  Loading the blob
accepts only types from an allowlist (scikit-learn's own classes, numpy arrays/dtypes/random generators, scipy
sparse matrices); a blob asking for anything else (``builtins.eval``, ``os.system``, a user's class) is rejected
with :class:`~beamlearn.errors.ArtifactError` naming the types (see :mod:`beamlearn.models.sklearn_io`).

How it fits
-----------
- ``partial_fit=False`` (or an estimator without ``partial_fit``): one pass *collects* the prepared feature
  matrix (and label and weights) - the accumulator holds every row, in memory - and ``fit`` runs once on all of
  it, in the process that extracts the pass's result.  Accumulators merge by concatenation, so the analyzer runs
  unchanged through the planner on every engine.  ``fit`` sees the rows in a canonical order (sorted by features,
  label, weight; :func:`canonical_order`), so the model is the same for any batching, worker count or engine -
  and an order-sensitive estimator (a forest's bootstrap, KMeans' initialisation) equals scikit-learn's fitted
  on the rows in that order.
- ``partial_fit=True`` (or ``None`` = auto, when the estimator has ``partial_fit``): each batch is passed to
  ``partial_fit`` as it is read, in batch order, in constant memory (one epoch over the data; classifiers first
  get their classes from a :class:`~beamlearn.models.base.Classes` pass).  The analyzer is ``sequential``: the
  local engine runs that pass on one worker.

Under the Beam engine the analyzer is the same: the collected rows travel to the pass's combine, where ``fit``
runs (in the launching process on the DirectRunner; on one worker, which must hold the matrix, on distributed
runners).  A ``partial_fit`` estimator cannot merge two partly trained copies, so it needs all batches in one
accumulator, in order, as the local engine does; the Beam engine refuses such a (``sequential``) pass with an
:class:`~beamlearn.errors.EngineError`: fit that model with the local engine on the prepared data, or use
``partial_fit=False``.  Predicting runs everywhere.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn.analyzers import Analyzer
from beamlearn.errors import DataError, EngineError, SpecError
from beamlearn.models.base import Classes, Estimator, feature_matrix, label_values, weights_of
from beamlearn.models.sklearn_io import build_estimator, estimator_spec, load_skops
from beamlearn.steps.base import RowFn, register_step

__all__ = ["SklearnModel"]

# ---------------------------------------------------------------------------------------------- analyzers
class _Rows:
    """The training rows of a batch: features, label and weights, rows with a missing feature skipped."""

    def __init__(self, features: Sequence[str], label: str | None, weight: str | None, missing_label: str) -> None:
        self.features, self.label, self.weight, self.missing_label = list(features), label, weight, missing_label

    def __call__(self, batch: pa.RecordBatch) -> tuple[np.ndarray, Any, Any, int, int]:
        X, keep = feature_matrix(batch, self.features)
        skipped = 0 if keep is None else int(batch.num_rows - np.count_nonzero(keep))
        y = w = None
        dropped = 0
        if self.label is not None:
            arr, has = label_values(batch, self.label, self.missing_label)
            if has is not None:
                dropped = int(np.count_nonzero(~has & (keep if keep is not None else True)))
                keep = has if keep is None else keep & has
            y = _label_numpy(arr)
        w = weights_of(batch, self.weight)
        if keep is not None:
            X, y, w = X[keep], None if y is None else y[keep], None if w is None else w[keep]
        return X, y, w, skipped, dropped


def _label_numpy(arr: pa.Array) -> np.ndarray:
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return np.array(arr.fill_null("").to_pylist(), dtype=str)
    if pa.types.is_boolean(arr.type):
        return arr.fill_null(False).to_numpy(zero_copy_only=False)
    return arr.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False) \
        if pa.types.is_floating(arr.type) else arr.fill_null(0).to_numpy(zero_copy_only=False)


class _Fit(Analyzer):
    """Collect the training rows (merge concatenates), then ``fit`` the estimator on all of them at extract."""

    def __init__(self, spec: dict[str, Any], features: Sequence[str], label: str | None, weight: str | None,
                 missing_label: str, proba: bool, classes: list | None = None) -> None:
        self.spec, self.features, self.label, self.weight = spec, list(features), label, weight
        self.missing_label, self.proba, self.classes = missing_label, proba, classes
        self.columns = tuple(self.features + [c for c in (label, weight) if c])

    def __repr__(self) -> str:
        return f"SklearnModel({self.spec['class']}).{'partial_fit' if self.sequential else 'fit'}"

    sequential = False
    mergeable_state = False  # the accumulator is the rows themselves: an update would need the old ones

    def create(self) -> dict[str, Any]:
        return {"chunks": [], "skipped": 0, "dropped": 0}

    def add(self, acc: dict[str, Any], batch: pa.RecordBatch) -> dict[str, Any]:
        X, y, w, skipped, dropped = _Rows(self.features, self.label, self.weight, self.missing_label)(batch)
        if len(X):
            acc["chunks"].append((X, y, w))
        acc["skipped"] += skipped
        acc["dropped"] += dropped
        return acc

    def merge(self, accs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        out = self.create()
        for a in accs:
            out["chunks"] += a["chunks"]
            out["skipped"] += a["skipped"]
            out["dropped"] += a["dropped"]
        return out

    def _fit_kwargs(self, w: Any) -> dict[str, Any]:
        return {} if w is None else {"sample_weight": w}

    def extract(self, acc: dict[str, Any]) -> dict[str, Any]:
        chunks = acc["chunks"]
        if not chunks:
            raise _no_rows()
        X = np.concatenate([c[0] for c in chunks])
        y = None if self.label is None else np.concatenate([c[1] for c in chunks])
        w = None if self.weight is None else np.concatenate([c[2] for c in chunks])
        order = canonical_order(X, y, w)
        X, y, w = X[order], None if y is None else y[order], None if w is None else w[order]
        est = build_estimator(self.spec)
        with _sklearn_errors(est, "fit"):
            est.fit(X, *(() if y is None else (y,)), **self._fit_kwargs(w))
        return _fitted(est, self, len(X), acc["skipped"], acc["dropped"], "fit", X[:1])


def canonical_order(X: np.ndarray, y: np.ndarray | None = None, w: np.ndarray | None = None) -> np.ndarray:
    """The row order :class:`SklearnModel` fits in: sorted by the features (first feature first), then the label
    and weight, so the model does not depend on batching, workers, merge order or engine.

    >>> canonical_order(np.array([[2.0, 0.0], [1.0, 5.0], [1.0, 3.0]])).tolist()
    [2, 1, 0]
    """
    keys = [k for k in (w, y) if k is not None] + [X[:, j] for j in range(X.shape[1] - 1, -1, -1)]
    return np.lexsort(keys) if keys else np.arange(len(X))


class _PartialFit(_Fit):
    """Pass every batch to ``partial_fit`` as it is read (constant memory).  Two partly trained estimators
    cannot merge, so engines must feed every batch to one accumulator, in order (``sequential``)."""

    sequential = True

    def create(self) -> dict[str, Any]:
        return {"est": None, "rows": 0, "skipped": 0, "dropped": 0, "first": None}

    def add(self, acc: dict[str, Any], batch: pa.RecordBatch) -> dict[str, Any]:
        X, y, w, skipped, dropped = _Rows(self.features, self.label, self.weight, self.missing_label)(batch)
        acc["skipped"] += skipped
        acc["dropped"] += dropped
        if len(X):
            if acc["est"] is None:
                acc["est"], acc["first"] = build_estimator(self.spec), X[:1].copy()
            kw = self._fit_kwargs(w)
            if self.classes is not None:
                kw["classes"] = np.asarray(self.classes)
            with _sklearn_errors(acc["est"], "partial_fit"):
                acc["est"].partial_fit(X, *(() if y is None else (y,)), **kw)
            acc["rows"] += len(X)
        return acc

    def merge(self, accs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        fitted = [a for a in accs if a["est"] is not None]
        if len(fitted) > 1:
            raise EngineError("SklearnModel(partial_fit=True) got the data split across workers, and partly "
                              "trained scikit-learn estimators cannot be merged: fit this model with the local "
                              "engine on the prepared data, or pass partial_fit=False (collects rows in memory)")
        out = dict(fitted[0]) if fitted else self.create()
        out["skipped"] = sum(a["skipped"] for a in accs)
        out["dropped"] = sum(a["dropped"] for a in accs)
        return out

    def extract(self, acc: dict[str, Any]) -> dict[str, Any]:
        if acc["est"] is None:
            raise _no_rows()
        return _fitted(acc["est"], self, acc["rows"], acc["skipped"], acc["dropped"], "partial_fit", acc["first"])


class _ClassesThenPartialFit(Classes):
    """The classes of the label (first pass), then :class:`_PartialFit` given them."""

    def __init__(self, fit: _PartialFit) -> None:
        super().__init__(fit.label, weight=fit.weight, missing_label=fit.missing_label)
        self.fit = fit

    def then(self, state: list[dict[str, Any]]) -> Analyzer:
        nxt = _PartialFit(self.fit.spec, self.fit.features, self.fit.label, self.fit.weight, self.fit.missing_label,
                          self.fit.proba, classes=list(state[0]["values"]))
        return nxt


@contextmanager
def _sklearn_errors(est: Any, method: str) -> Iterator[None]:
    """scikit-learn's complaints about the data (one class, infinite values...) as a DataError."""
    try:
        yield
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise DataError(f"{type(est).__name__}.{method} failed: {exc}") from exc


def _no_rows() -> Exception:
    return DataError("SklearnModel: no training row has every feature (and a label); nothing to fit on")


def _fitted(est: Any, an: _Fit, rows: int, skipped: int, dropped: int, mode: str, first: np.ndarray) -> dict:
    """The plain-data state of a fitted estimator."""
    return fitted_estimator_state(est, proba=an.proba, first=first, rows=rows, skipped=skipped, dropped=dropped,
                                  mode=mode)


def fitted_estimator_state(est: Any, *, proba: bool, first: np.ndarray, rows: int = 0, skipped: int = 0,
                           dropped: int = 0, mode: str = "fit") -> dict[str, Any]:
    """The plain-data ``state["model"]`` of :class:`SklearnModel` for an already fitted estimator ``est``
    (``first``: one row of features, to learn a regressor's output type): the skops blob and what predicting
    needs.  :func:`beamlearn.from_sklearn` uses it to adopt a fitted scikit-learn estimator."""
    import skops.io as sio
    from sklearn.base import is_classifier

    classes = np.asarray(est.classes_).tolist() if is_classifier(est) and hasattr(est, "classes_") else None
    if classes is not None:
        out_type = str(pa.array(classes).type) if classes else "string"
    else:
        out_type = "int64" if np.asarray(est.predict(first)).dtype.kind in "iub" else "double"
    proba = classes is not None and proba and hasattr(est, "predict_proba")
    return {"skops": sio.dumps(est), "class": estimator_spec(est)["class"], "classes": classes,
            "output_type": out_type, "proba": bool(proba), "mode": mode, "rows": int(rows),
            "skipped_rows": int(skipped), "dropped_labels": int(dropped)}


_TYPES = {"string": pa.string(), "double": pa.float64(), "int64": pa.int64(), "bool": pa.bool_()}


# ---------------------------------------------------------------------------------------------- the step
@register_step
class SklearnModel(Estimator):
    """Any scikit-learn estimator as a step: fitted in the launching process, predicting on every engine.

    Parameters
    ----------
    estimator:
        A scikit-learn estimator instance (cloned, never mutated), or its spec ``{"class": "sklearn.x.Y",
        "params": {...}}``.  It is stored as that spec (class path + ``get_params()``), never pickled.
    features, label, sample_weight, output, missing_label:
        As for every estimator (:mod:`beamlearn.models.base`).  ``label=None`` fits without ``y`` (clusterers).
    predict_proba:
        Add ``proba_{class}`` columns when the fitted classifier has ``predict_proba``.
    partial_fit:
        ``True``: ``partial_fit`` batch by batch (constant memory); ``False``: ``fit`` on all rows collected in
        memory; ``None``: ``partial_fit`` when the estimator has it.

    Notes
    -----
    ``transform_one`` calls the estimator on a one-row matrix, so it equals ``transform`` up to the last-bit
    rounding scikit-learn's own ``predict`` may show between one row and many (BLAS takes other paths); its
    latency is scikit-learn's (about 0.2-1 ms per record), not beamlearn's microseconds.  Errors scikit-learn
    raises about the data (one class, infinite values) become :class:`~beamlearn.errors.DataError`.

    Examples
    --------
    >>> import beamlearn as bl
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> data = {"x": [0.0, 1.0, 2.0, 3.0], "y": ["a", "a", "b", "b"]}
    >>> f = bl.Pipeline([SklearnModel(DecisionTreeClassifier(), features=["x"], label="y")]).fit(data)
    >>> f.transform({"x": [0.5, 2.5]}).column("prediction").to_pylist()
    ['a', 'b']
    """

    needs_label = False

    def __init__(self, estimator: Any, features: str | list[str], label: str | None = None, *,
                 sample_weight: str | None = None, output: str = "prediction", predict_proba: bool = True,
                 partial_fit: bool | None = None, missing_label: str = "error") -> None:
        self.estimator, self.features, self.label, self.sample_weight = estimator, features, label, sample_weight
        self.output, self.predict_proba, self.partial_fit, self.missing_label = (
            output, predict_proba, partial_fit, missing_label)

    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        params["estimator"] = estimator_spec(self.estimator)
        return params

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_cache"}

    def _incremental(self, est: Any) -> bool:
        has = hasattr(est, "partial_fit")
        if self.partial_fit and not has:
            raise SpecError(f"SklearnModel: {type(est).__name__} has no partial_fit; pass partial_fit=False")
        return has if self.partial_fit is None else bool(self.partial_fit)

    def check(self, schema: pa.Schema) -> None:
        from sklearn.base import is_classifier, is_regressor
        from sklearn.utils.validation import has_fit_parameter

        super().check(schema)
        est = build_estimator(self.estimator)
        if not hasattr(est, "predict"):
            raise SpecError(f"SklearnModel: {type(est).__name__} has no predict(); wrap an estimator that predicts")
        if self.label is None and (is_classifier(est) or is_regressor(est)):
            raise SpecError(f"SklearnModel({type(est).__name__}) needs label= (the column to predict)")
        if self.sample_weight:
            method = "partial_fit" if self._incremental(est) else "fit"
            if "sample_weight" not in inspect.signature(getattr(est, method)).parameters or (
                    method == "fit" and not has_fit_parameter(est, "sample_weight")):
                raise SpecError(f"SklearnModel: {type(est).__name__}.{method} takes no sample_weight")
        self._incremental(est)

    def fit_analyzers(self, features: list[str], schema: pa.Schema) -> dict[str, Analyzer]:
        from sklearn.base import is_classifier

        spec = estimator_spec(self.estimator)
        est = build_estimator(spec)
        args = (spec, features, self.label, self.sample_weight, self.missing_label, self.predict_proba)
        if not self._incremental(est):
            return {"model": _Fit(*args)}
        if is_classifier(est):
            return {"model": _ClassesThenPartialFit(_PartialFit(*args))}
        return {"model": _PartialFit(*args)}

    def max_passes(self) -> int:
        """Passes the fit may need: 2 for ``partial_fit`` classifiers (classes, then training), else 1."""
        from sklearn.base import is_classifier

        est = build_estimator(self.estimator)
        return 2 if self._incremental(est) and is_classifier(est) and self.label else 1

    # -------------------------------------------------------------------- predicting
    def _model(self, state: dict[str, Any]) -> Any:
        m = state["model"]
        cached = self.__dict__.get("_cache")
        if cached is not None and cached[0] is m["skops"]:
            return cached[1]
        est = load_skops(m["skops"], m.get("class"))
        self._cache = (m["skops"], est)
        return est

    def output_types(self, state: dict[str, Any]) -> list[tuple[str, pa.DataType]]:
        m = state["model"]
        types = [(self.output, _TYPES.get(m["output_type"], pa.float64()))]
        if m["proba"]:
            types += [(f"proba_{c}", pa.float64()) for c in m["classes"]]
        return types

    def apply(self, batch: pa.RecordBatch, state: dict[str, Any]) -> pa.RecordBatch:
        self._model(state)  # verifies the stored model (at load, when FittedPipeline builds its schema)
        return super().apply(batch, state)

    def predict_columns(self, X: np.ndarray, state: dict[str, Any]) -> list[tuple[str, np.ndarray]]:
        est = self._model(state)
        with _sklearn_errors(est, "predict"):
            cols = [(self.output, np.asarray(est.predict(X)))]
            p = est.predict_proba(X) if state["model"]["proba"] else None
        if p is not None:
            cols += [(name, p[:, j]) for j, (name, _) in enumerate(self.output_types(state)[1:])]
        return cols

    def row_function(self, state: dict[str, Any], schema: pa.Schema) -> RowFn:
        features = list(state["features"])
        names = [n for n, _ in self.output_types(state)]
        predict = self.predict_columns
        nulls = dict.fromkeys(names)

        def fn(row: dict) -> dict:
            x = [row.get(c) for c in features]
            X = None if None in x else np.array([x], dtype=np.float64)
            if X is None or np.isnan(X).any():
                row.update(nulls)
                return row
            for name, values in predict(X, state):
                row[name] = values[0].item()
            return row

        return fn

    def describe(self, state: dict[str, Any]) -> dict[str, Any]:
        m = state["model"]
        est = self._model(state)
        out: dict[str, Any] = {"estimator": m["class"], "fit": m["mode"], "rows": m["rows"],
                               "skipped_rows": m["skipped_rows"], "features": list(state["features"])}
        if m["dropped_labels"]:
            out["dropped_labels"] = m["dropped_labels"]
        if m["classes"] is not None:
            out["classes"] = m["classes"]
        for attr in ("coef_", "intercept_", "class_prior_", "cluster_centers_", "feature_importances_"):
            value = getattr(est, attr, None)
            if value is not None:
                out[attr.rstrip("_")] = np.asarray(value).tolist()
        if "class_prior" not in out and getattr(est, "class_log_prior_", None) is not None:  # discrete NB
            out["class_prior"] = np.exp(est.class_log_prior_).tolist()
        return out
