"""The estimator contract: model steps fitted by the same reductions as preprocessing.

An estimator is a :class:`~beamlearn.steps.Step` that reads ``features`` (and a ``label``, and optionally a
``sample_weight`` column) and *appends* prediction columns; its inputs pass through.  It is planned after every
earlier step is fitted (``waits_for_previous``), because ``features`` may name outputs of any earlier step:

- an output column name (``"distance"``, ``"carrier_AA"``),
- an input column name, meaning every column derived from it (``"carrier"`` -> all its one-hot columns),
- a glob (``"num*"``).

The resolved list is frozen in the fitted state (``state["features"]``), so serving never re-resolves.  Rows
with a missing feature get a null prediction; at fit they are skipped and counted (``state["skipped_rows"]``).
A missing label is an error by default (``missing_label="error"``, naming the source and row), or the row is
skipped and counted (``missing_label="drop"``).

A binary classifier's fitted state may hold a *decision threshold* (``beamlearn run`` stores the one chosen
by evaluation): ``state["decision_threshold"] = {"threshold": t, "pos_label": c, "labels": [other, c]}``.  The
prediction is then ``c`` when ``proba_{c} >= t`` and ``other`` otherwise, in :meth:`Estimator.apply` and in every
row function alike (:func:`thresholded`); without it each model predicts as scikit-learn does.

Iterative estimators use :class:`Iteration`: each iteration is one pass reducing statistics under the current
parameters; :meth:`Iteration.then` starts the next pass until converged or ``max_iter`` (then a
:class:`ConvergenceWarning`), a mechanism every engine runs unchanged.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beamlearn.analyzers import Analyzer, Constant, ValueCounts
from beamlearn.batches import batch_origin, column_kind, raw_values
from beamlearn.errors import BeamlearnWarning, DataError, SchemaError, SpecError
from beamlearn.steps.base import Step, replace_columns

__all__ = ["Estimator", "Classifier", "Iteration", "Classes", "ConvergenceWarning", "resolve_features",
           "feature_matrix", "label_values", "weights_of", "thresholded"]


class ConvergenceWarning(BeamlearnWarning):
    """An iterative estimator stopped at ``max_iter`` before meeting ``tol``."""


def resolve_features(patterns: str | Sequence[str], schema: pa.Schema, origins: dict[str, tuple[str, ...]],
                     *, exclude: Sequence[str] = ()) -> list[str]:
    """Resolve feature patterns against ``schema``, in schema order within each pattern, without duplicates.

    >>> import pyarrow as pa
    >>> s = pa.schema([("carrier_AA", pa.uint8()), ("carrier_UA", pa.uint8()), ("dist", pa.float64())])
    >>> resolve_features(["carrier", "dist"], s, {"carrier_AA": ("carrier",), "carrier_UA": ("carrier",)})
    ['carrier_AA', 'carrier_UA', 'dist']
    """
    pats = [patterns] if isinstance(patterns, str) else list(patterns)
    skip = set(exclude)
    out: list[str] = []
    for p in pats:
        if not isinstance(p, str):
            raise SpecError(f"features must be column names or globs, got {p!r}")
        if p in schema.names:
            found = [p]
        elif any(ch in p for ch in "*?["):
            found = [c for c in schema.names if fnmatch.fnmatchcase(c, p)]
        else:
            found = [c for c in schema.names if p in origins.get(c, ()) and c != p]
        found = [c for c in found if c not in skip]
        if not found:
            raise SchemaError("no column matches this feature (not a column, a glob, or an input column with "
                              f"derived columns; columns: {', '.join(schema.names)})", column=p)
        for c in found:
            if column_kind(schema.field(c).type) not in ("numeric", "boolean"):
                raise SchemaError(f"a feature must be numeric or boolean, got {schema.field(c).type}; encode it "
                                  "first (e.g. OneHotEncoder)", column=c)
        out += [c for c in found if c not in out]
    return out


def feature_matrix(batch: pa.RecordBatch, features: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """``(X, complete)``: an (n, d) float64 matrix of the features and a mask of rows with every feature
    present (``None`` when all are).  Missing entries of X hold arbitrary values."""
    n = batch.num_rows
    X = np.empty((n, len(features)), dtype=np.float64)
    complete: np.ndarray | None = None
    names = batch.schema.names
    for j, c in enumerate(features):
        if c not in names:
            raise SchemaError("feature column is missing", column=c)
        x, ok = raw_values(batch.column(c))
        X[:, j] = x
        if ok is not None:
            complete = ok.copy() if complete is None else complete & ok
    return X, complete


def weights_of(batch: pa.RecordBatch, column: str | None) -> np.ndarray | None:
    """The sample weights of ``batch`` (missing weight -> 0), or ``None`` without a weight column."""
    if column is None:
        return None
    w, ok = raw_values(batch.column(column))
    if ok is not None:
        w = np.where(ok, w, 0.0)
    if np.any(w < 0):
        raise DataError("sample weights must be non-negative", column=column, source=batch_origin(batch)[0])
    return w


def label_values(batch: pa.RecordBatch, label: str, policy: str) -> tuple[pa.Array, np.ndarray | None]:
    """The label column and a mask of rows that have a label (``None`` when all do); with
    ``policy="error"`` a missing label raises :class:`DataError` naming the source and row."""
    arr = batch.column(label)
    missing = arr.is_null(nan_is_null=pa.types.is_floating(arr.type))
    if not pc.any(missing).as_py():
        return arr, None
    miss = missing.to_numpy(zero_copy_only=False)
    if policy == "error":
        source, offset = batch_origin(batch)
        raise DataError("a training row has no label; fix the data or pass missing_label='drop' to skip such "
                        "rows (they are counted)", column=label, source=source,
                        row=offset + int(np.flatnonzero(miss)[0]))
    return arr, ~miss


class Classes(ValueCounts):
    """The classes of a label column (sorted) with their (weighted) counts, honouring the missing-label policy.

    State: ``{"values": [...], "counts": array, "missing": n}`` as :class:`~beamlearn.analyzers.ValueCounts`.
    """

    reads_dictionary = False  # the label check reads the values

    def __init__(self, label: str, *, weight: str | None = None, missing_label: str = "error") -> None:
        super().__init__([label], weight=weight)
        self.missing_label = missing_label

    def add(self, acc: list, batch: pa.RecordBatch) -> list:
        label_values(batch, self.columns[0], self.missing_label)
        return super().add(acc, batch)


class Iteration(Analyzer):
    """One pass of an iterative fit.  Subclasses implement the reduction (``create/add/merge``) under
    ``self.params`` and :meth:`update`; the planner keeps asking for passes until :meth:`then` returns None.

    State: ``{"params": ..., "n_iter": int, "converged": bool}`` plus whatever :meth:`update` adds.
    """

    def __init__(self, columns: Sequence[str], params: Any, *, iteration: int = 0, max_iter: int = 100,
                 tol: float = 1e-4, context: Any = None) -> None:
        self.columns, self.params, self.iteration, self.max_iter, self.tol, self.context = (
            tuple(columns), params, iteration, max_iter, tol, context)

    def update(self, stats: Any) -> tuple[Any, bool, dict[str, Any]]:
        """From the reduced statistics of this pass: ``(new params, converged, extra state)``."""
        raise NotImplementedError

    def extract(self, acc: Any) -> dict[str, Any]:
        params, converged, extra = self.update(acc)
        return {"params": params, "n_iter": self.iteration + 1, "converged": bool(converged), **extra}

    def then(self, state: dict[str, Any]) -> Analyzer | None:
        if state["converged"]:
            return None
        if state["n_iter"] >= self.max_iter:
            warnings.warn(f"{type(self).__name__} did not converge in max_iter={self.max_iter} passes (tol="
                          f"{self.tol}); increase max_iter or tol", ConvergenceWarning, stacklevel=2)
            return None
        nxt = type(self).__new__(type(self))
        nxt.__dict__.update(self.__dict__)
        nxt.params, nxt.iteration = state["params"], state["n_iter"]
        return nxt


class Estimator(Step):
    """Base of model steps.  Subclasses store their parameters in ``__init__`` (including ``features``,
    ``label``, ``sample_weight``, ``output``) and implement :meth:`fit_analyzers` and :meth:`predict_columns`.
    """

    waits_for_previous = True
    features: Any = None
    label: str | None = None
    sample_weight: str | None = None
    output: str = "prediction"
    missing_label: str = "error"
    needs_label: bool = True

    # -------------------------------------------------------------------- columns
    def input_columns(self) -> list[str]:
        feats = [self.features] if isinstance(self.features, str) else list(self.features or [])
        extra = [c for c in (self.label, self.sample_weight) if c]
        return feats + extra

    def serving_columns(self) -> list[str]:
        return [self.features] if isinstance(self.features, str) else list(self.features or [])

    def fitted_serving_columns(self, state: dict[str, Any]) -> list[str]:
        """The resolved features: a glob or input-column pattern names real columns once fitted."""
        return list(state.get("features", self.serving_columns()))

    def check(self, schema: pa.Schema) -> None:
        if self.needs_label and not self.label:
            raise SpecError(f"{type(self).__name__} needs label= (the column to predict)")
        for c in (self.label, self.sample_weight):
            if c and c not in schema.names:
                raise SchemaError(f"{type(self).__name__} needs this column, which is not in the data", column=c)
        self._check_choice("missing_label", ("error", "drop"))

    def _excluded(self) -> list[str]:
        return [c for c in (self.label, self.sample_weight) if c]

    def plan(self, schema: pa.Schema, origins: dict[str, tuple[str, ...]]) -> dict[str, Analyzer]:
        feats = resolve_features(self.features, schema, origins, exclude=self._excluded())
        return {"features": Constant(feats), **self.fit_analyzers(feats, schema)}

    # -------------------------------------------------------------------- to implement
    def fit_analyzers(self, features: list[str], schema: pa.Schema) -> dict[str, Analyzer]:
        """The analyzers that fit the model on the resolved ``features``."""
        raise NotImplementedError

    def predict_columns(self, X: np.ndarray, state: dict[str, Any]) -> list[tuple[str, np.ndarray | pa.Array]]:
        """Prediction columns for the rows of ``X`` (all complete): ``[(name, values), ...]``."""
        raise NotImplementedError

    def output_types(self, state: dict[str, Any]) -> list[tuple[str, pa.DataType]]:
        """Names and Arrow types of the prediction columns (used for empty batches and null rows)."""
        raise NotImplementedError

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "row_function" in cls.__dict__:  # every row path honours a stored decision threshold
            cls.row_function = thresholded(cls.__dict__["row_function"])

    # -------------------------------------------------------------------- transform
    def apply(self, batch: pa.RecordBatch, state: dict[str, Any]) -> pa.RecordBatch:
        out = self._apply(batch, state)
        dt = state.get("decision_threshold")
        if not dt or self.output not in out.schema.names:
            return out
        pos, (neg, _), t = dt["pos_label"], dt["labels"], float(dt["threshold"])
        j = out.schema.get_field_index(self.output)
        typ = out.schema.field(j).type
        p = out.column(f"proba_{pos}")
        pred = pc.if_else(pc.greater_equal(p, pa.scalar(t)), pa.scalar(pos, typ), pa.scalar(neg, typ))
        return out.set_column(j, out.schema.field(j), pred)

    def _apply(self, batch: pa.RecordBatch, state: dict[str, Any]) -> pa.RecordBatch:
        types = self.output_types(state)
        n = batch.num_rows
        if n == 0:
            return replace_columns(batch, [], [(name, pa.array([], type=t)) for name, t in types])
        X, complete = feature_matrix(batch, state["features"])
        rows = np.arange(n) if complete is None else np.flatnonzero(complete)
        preds = self.predict_columns(X if complete is None else X[rows], state) if len(rows) else \
            [(name, pa.array([], type=t)) for name, t in types]
        outputs = []
        for (name, values), (_, typ) in zip(preds, types):
            arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, type=typ)
            arr = arr.cast(typ) if arr.type != typ else arr
            if complete is not None:  # scatter back, nulls where a feature was missing
                idx = np.full(n, -1, dtype=np.int64)
                idx[rows] = np.arange(len(rows))
                arr = arr.take(pa.array(idx, mask=idx < 0))
            outputs.append((name, arr))
        return replace_columns(batch, [], outputs)

    def row_function(self, state: dict[str, Any], schema: pa.Schema):  # noqa: ANN201 - RowFn
        features = list(state["features"])
        types = self.output_types(state)

        def fn(row: dict) -> dict:
            x = [row.get(c) for c in features]
            if any(v is None or v != v for v in x):
                for name, _ in types:
                    row[name] = None
                return row
            X = np.array([x], dtype=np.float64)
            for (name, values), (_, typ) in zip(self.predict_columns(X, state), types):
                v = values[0]
                row[name] = v.as_py() if isinstance(v, pa.Scalar) else (v.item() if hasattr(v, "item") else v)
            return row

        return fn


def thresholded(row_function: Any) -> Any:
    """Wrap a ``row_function(self, state, schema)`` so a stored ``decision_threshold`` decides binary
    predictions from ``proba_{pos_label}`` (see the module docstring); without one it is returned unchanged."""
    if getattr(row_function, "_thresholded", False):
        return row_function

    def wrapper(self: Estimator, state: dict[str, Any], schema: pa.Schema) -> Any:
        fn = row_function(self, state, schema)
        dt = state.get("decision_threshold")
        if not dt:
            return fn
        out, name, t = self.output, f"proba_{dt['pos_label']}", float(dt["threshold"])
        neg, pos = dt["labels"]

        def decide(row: dict) -> dict:
            row = fn(row)
            p = row.get(name)
            if p is not None:
                row[out] = pos if p >= t else neg
            return row

        return decide

    wrapper._thresholded = True  # type: ignore[attr-defined]
    wrapper.__doc__, wrapper.__name__ = row_function.__doc__, row_function.__name__
    return wrapper


Estimator.row_function = thresholded(Estimator.row_function)  # type: ignore[method-assign]


class Classifier(Estimator):
    """Base of classifiers: a ``classes`` analyzer on the label, and outputs ``output`` (the predicted class,
    typed like the label) plus ``proba_{class}`` columns (float64) when ``predict_proba`` is available."""

    def classes_of(self, state: dict[str, Any]) -> list[Any]:
        return list(state["classes"]["values"])

    def label_type(self, state: dict[str, Any]) -> pa.DataType:
        vals = self.classes_of(state)
        return pa.array(vals).type if vals else pa.string()
