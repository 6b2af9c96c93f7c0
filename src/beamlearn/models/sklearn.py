"""Any scikit-learn estimator as a pipeline step, persisted with skops (never pickle).

:class:`SklearnModel` wraps a scikit-learn estimator.  Its parameters hold the estimator as plain data (its class
path and ``get_params()``), so artifacts stay code-free; the fitted estimator is stored in the state as a
**skops** blob (``skops>=0.12``; 0.11 had code execution on load, CVE-2025-54412/54413).  Loading the blob
accepts only types from an allowlist (scikit-learn's own classes, numpy arrays/dtypes/random generators, scipy
sparse matrices); a blob asking for anything else (``builtins.eval``, ``os.system``, a user's class) is rejected
with :class:`~beamlearn.errors.ArtifactError` naming the types.

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
accumulator, as the local engine does; on Beam that holds only when the runner combines in one bundle - a
split raises :class:`~beamlearn.errors.EngineError`: fit the model with the local engine on the prepared data
(or use ``partial_fit=False``).  Predicting runs everywhere.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn.analyzers import Analyzer
from beamlearn.errors import ArtifactError, EngineError, SpecError
from beamlearn.models.base import Classes, Estimator, feature_matrix, label_values, weights_of
from beamlearn.steps.base import register_step

__all__ = ["SklearnModel"]

_PATH = re.compile(r"^sklearn(\.[a-z][a-z0-9_]*)+\.[A-Za-z][A-Za-z0-9_]*$")


# ---------------------------------------------------------------------------------------------- estimator specs
def sklearn_class(path: str) -> type:
    """The scikit-learn estimator class at a public module path, e.g. ``"sklearn.linear_model.Ridge"``.

    Only paths inside ``sklearn.`` whose every module part is public resolve, and only to subclasses of
    ``sklearn.base.BaseEstimator``; anything else is a :class:`~beamlearn.errors.SpecError`.

    >>> sklearn_class("sklearn.linear_model.Ridge").__name__
    'Ridge'
    """
    from sklearn.base import BaseEstimator

    if not isinstance(path, str) or not _PATH.match(path):
        raise SpecError(f"{path!r} is not a scikit-learn estimator path (like sklearn.linear_model.Ridge)"
                        f"{_suggest(path)}")
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name, None)
    except ImportError:
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, BaseEstimator)):
        raise SpecError(f"{path!r} is not a scikit-learn estimator class{_suggest(path)}")
    return cls


def _suggest(path: Any) -> str:
    import difflib

    try:
        from sklearn.utils import all_estimators

        known = [f"{_public_module(c)}.{n}" for n, c in all_estimators()]
    except Exception:  # noqa: BLE001 - only a hint
        return ""
    close = difflib.get_close_matches(str(path), known, n=1, cutoff=0.6) or [
        k for k in known if k.rsplit(".", 1)[1].lower() == str(path).rsplit(".", 1)[-1].lower()]
    return f"; did you mean {close[0]!r}?" if close else ""


def _public_module(cls: type) -> str:
    parts = cls.__module__.split(".")
    for k in range(2, len(parts) + 1):
        mod = ".".join(parts[:k])
        if not parts[k - 1].startswith("_") and getattr(importlib.import_module(mod), cls.__name__, None) is cls:
            return mod
    return cls.__module__


def _plain(value: Any, where: str) -> Any:
    """A scikit-learn parameter value as plain data (nested estimators as specs)."""
    from sklearn.base import BaseEstimator

    if isinstance(value, BaseEstimator):
        return {"__estimator__": estimator_spec(value)}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return value
    if isinstance(value, tuple):
        return {"__tuple__": [_plain(v, where) for v in value]}
    if isinstance(value, list):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _plain(v, where) for k, v in value.items()}
        return {"__items__": [[_plain(k, where), _plain(v, where)] for k, v in value.items()]}
    raise SpecError(f"SklearnModel: parameter {where} = {value!r} is not plain data (numbers, strings, lists, "
                    "dicts, arrays or scikit-learn estimators), so it cannot be stored in an artifact")


def _unplain(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__estimator__"}:
            return build_estimator(value["__estimator__"])
        if set(value) == {"__tuple__"}:
            return tuple(_unplain(v) for v in value["__tuple__"])
        if set(value) == {"__items__"}:
            return {_hashable(_unplain(k)): _unplain(v) for k, v in value["__items__"]}
        return {k: _unplain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unplain(v) for v in value]
    return value


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def estimator_spec(estimator: Any) -> dict[str, Any]:
    """``{"class": public class path, "params": get_params(deep=False) as plain data}`` of an estimator.

    >>> from sklearn.linear_model import LogisticRegression
    >>> estimator_spec(LogisticRegression(C=0.5))["class"]
    'sklearn.linear_model.LogisticRegression'
    """
    if isinstance(estimator, dict):
        return estimator
    from sklearn.base import BaseEstimator

    if not isinstance(estimator, BaseEstimator):
        raise SpecError(f"SklearnModel wraps a scikit-learn estimator, got {type(estimator).__name__}")
    path = f"{_public_module(type(estimator))}.{type(estimator).__name__}"
    if not path.startswith("sklearn.") or sklearn_class(path) is not type(estimator):  # e.g. a user's subclass
        raise SpecError(f"SklearnModel wraps scikit-learn's own estimators only, got {type(estimator).__module__}."
                        f"{type(estimator).__qualname__}")
    return {"class": path, "params": {k: _plain(v, k) for k, v in estimator.get_params(deep=False).items()}}


def build_estimator(spec: Any) -> Any:
    """A new, unfitted estimator from :func:`estimator_spec`'s output (or a clone of an estimator)."""
    if not isinstance(spec, dict):
        from sklearn.base import clone

        estimator_spec(spec)  # the same checks as the stored form
        return clone(spec)
    if set(spec) - {"class", "params"} or not isinstance(spec.get("params", {}), dict):
        raise SpecError(f"an estimator spec is {{'class': path, 'params': {{...}}}}, got {spec!r}")
    cls = sklearn_class(spec.get("class"))
    params = spec.get("params", {})
    known = cls._get_param_names()
    unknown = sorted(set(params) - set(known))
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], list(known), n=1)
        raise SpecError(f"{spec['class']}: unknown parameter {unknown[0]!r}"
                        + (f"; did you mean {close[0]!r}?" if close else "")
                        + f" (parameters: {', '.join(known)})")
    try:
        return cls(**{k: _unplain(v) for k, v in params.items()})
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{spec['class']}: invalid parameters ({exc})") from None


# ---------------------------------------------------------------------------------------------- skops
def _trusted_type(name: str) -> bool:
    """True for the types a stored model may contain: scikit-learn's classes, numpy arrays/scalars/dtypes/random
    generators, scipy sparse matrices.  Resolving imports only modules of those three packages."""
    top = name.split(".", 1)[0]
    if top not in ("sklearn", "numpy", "scipy") or not re.fullmatch(r"[A-Za-z_][\w.]*", name):
        return False
    parts, obj = name.split("."), None
    for k in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        for attr in parts[k:]:
            obj = getattr(obj, attr, None)
        break
    if not isinstance(obj, type) or not obj.__module__.startswith(top):
        return False
    if top == "sklearn":
        return not obj.__module__.startswith(("sklearn.externals", "sklearn.utils._testing"))
    if top == "numpy":
        rnd = np.random
        return issubclass(obj, (np.ndarray, np.generic, np.dtype, rnd.BitGenerator, rnd.Generator, rnd.RandomState))
    import scipy.sparse as sp

    return issubclass(obj, (sp.spmatrix, sp.sparray))


def load_skops(blob: bytes, expected: str | None = None) -> Any:
    """Load a skops blob, trusting only allowlisted types (see the module docstring).

    Raises :class:`~beamlearn.errors.ArtifactError` naming any other type the blob asks for, and when the
    loaded object is not of the ``expected`` class path.
    """
    import skops
    import skops.io as sio

    if tuple(int(p) for p in re.findall(r"\d+", skops.__version__)[:2]) < (0, 12):
        raise ArtifactError(f"skops {skops.__version__} is unsafe to load models with (CVE-2025-54412/54413); "
                            "install skops>=0.12")
    try:
        wanted = sio.get_untrusted_types(data=blob)
    except Exception as exc:  # noqa: BLE001 - a damaged blob
        raise ArtifactError(f"the stored scikit-learn model is not a valid skops file ({exc})") from None
    bad = [t for t in wanted if not _trusted_type(t)]
    if bad:
        raise ArtifactError("the stored scikit-learn model asks for types beamlearn does not trust: "
                            f"{', '.join(bad)}; refusing to load it (only scikit-learn, numpy and scipy types are "
                            "allowed)")
    try:
        est = sio.loads(blob, trusted=wanted)
    except Exception as exc:  # noqa: BLE001 - skops raises many kinds
        raise ArtifactError(f"cannot load the stored scikit-learn model ({type(exc).__name__}: {exc})") from None
    if expected is not None and type(est) is not sklearn_class(expected):
        raise ArtifactError(f"the stored model is a {type(est).__name__}, but the step says {expected}")
    return est


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
        est.fit(X, y, **self._fit_kwargs(w)) if y is not None else est.fit(X, **self._fit_kwargs(w))
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


def _no_rows() -> Exception:
    from beamlearn.errors import DataError

    return DataError("SklearnModel: no training row has every feature (and a label); nothing to fit on")


def _fitted(est: Any, an: _Fit, rows: int, skipped: int, dropped: int, mode: str, first: np.ndarray) -> dict:
    """The plain-data state of a fitted estimator."""
    import skops.io as sio
    from sklearn.base import is_classifier

    classes = np.asarray(est.classes_).tolist() if is_classifier(est) and hasattr(est, "classes_") else None
    if classes is not None:
        out_type = str(pa.array(classes).type) if classes else "string"
    else:
        out_type = "int64" if np.asarray(est.predict(first)).dtype.kind in "iub" else "double"
    proba = classes is not None and an.proba and hasattr(est, "predict_proba")
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
        cols = [(self.output, np.asarray(est.predict(X)))]
        if state["model"]["proba"]:
            p = est.predict_proba(X)
            cols += [(name, p[:, j]) for j, (name, _) in enumerate(self.output_types(state)[1:])]
        return cols

    def row_function(self, state: dict[str, Any], schema: pa.Schema):  # noqa: ANN201 - RowFn
        features = list(state["features"])
        names = [n for n, _ in self.output_types(state)]
        predict = self.predict_columns
        nulls = dict.fromkeys(names)

        def fn(row: dict) -> dict:
            x = [row.get(c) for c in features]
            if None in x or any(v != v for v in x):
                row.update(nulls)
                return row
            for name, values in predict(np.array([x], dtype=np.float64), state):
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
        return out
