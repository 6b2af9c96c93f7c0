"""scikit-learn -> beamlearn: :func:`from_sklearn` turns a Pipeline / ColumnTransformer into a beamlearn Pipeline
(unfitted) or FittedPipeline (fitted: same state, transforms at once).  The way back is
:func:`beamlearn.interop.sklearn_export.to_sklearn`.

Output layout
-------------
scikit-learn concatenates the outputs of a ColumnTransformer's entries, in entry order, then the remainder, and
names them ``{entry}__{feature}`` (``verbose_feature_names_out=True``).  beamlearn replaces each step's input
columns by its outputs *in place* and passes every other column through, named as the inner transformer's
``get_feature_names_out`` (no entry prefix; a missing category is ``c_nan`` where sklearn may say ``c_None``).
A converted fitted pipeline records the correspondence in ``fitted.lineage["sklearn"]["columns"]``: pairs
``[sklearn name, beamlearn name]`` in scikit-learn's column order, so
``fitted.transform(X).select([b for _, b in pairs])`` is scikit-learn's matrix (one-hot columns are uint8
where sklearn gives float64; values are equal).  A trailing estimator reads the columns in sklearn's order, so
its coefficients apply unchanged; it appends its prediction columns (``prediction``, ``proba_{class}``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn.batches import empty_batch, to_batches
from beamlearn.errors import ConversionError
from beamlearn.interop.sklearn_models import linear_from_sklearn, logistic_from_sklearn
from beamlearn.interop.sklearn_steps import Unsupported, translation_for_sklearn
from beamlearn.models import SklearnModel
from beamlearn.models.sklearn import fitted_estimator_state
from beamlearn.pipeline import FittedPipeline, Pipeline
from beamlearn.steps import Drop, Step

__all__ = ["SUPPORTED", "from_sklearn"]

SUPPORTED = ("StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler", "SimpleImputer", "OneHotEncoder",
             "OrdinalEncoder", "KBinsDiscretizer", "LinearRegression", "Ridge", "LogisticRegression",
             "ColumnTransformer", "Pipeline", "'passthrough'", "'drop'", "any trailing estimator (SklearnModel)")


@dataclass
class _Walk:
    """The conversion in progress: steps (and states when fitted), the current schema, the problems found."""

    fitted: bool
    schema: pa.Schema | None           # the schema the next step reads (None: unknown, unfitted without schema)
    label: str | None
    steps: list[Step] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, step: Step, state: dict[str, Any] | None, inputs: Sequence[str]) -> list[str] | None:
        """Append a step; return its output columns in scikit-learn's order (None when unknown)."""
        self.steps.append(step)
        if not self.fitted or state is None or self.schema is None:
            return None
        self.states.append(state)
        before = self.schema
        after = step.apply(empty_batch(before), state).schema
        self.schema = after
        others = set(before.names) - set(inputs)
        out = [n for n in after.names if n not in others]
        return list(inputs) if set(out) == set(inputs) else out


def _is_fitted(obj: Any) -> bool:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(obj)
        return True
    except (NotFittedError, TypeError, ValueError):
        return False


def _flatten(obj: Any) -> list[tuple[str, Any]]:
    from sklearn.pipeline import Pipeline as SkPipeline

    if isinstance(obj, SkPipeline):
        out = []
        for name, est in obj.steps:
            if est is None or (isinstance(est, str) and est == "passthrough"):
                continue
            out += [(f"{name}>{n}", e) for n, e in _flatten(est)] if isinstance(est, SkPipeline) else [(name, est)]
        return out
    return [(type(obj).__name__, obj)]


def _schema_of(schema: Any) -> pa.Schema | None:
    if schema is None or isinstance(schema, pa.Schema):
        return schema
    return next(iter(to_batches(schema))).schema


def _names(spec: Any, names: Sequence[str], where: str) -> list[str]:
    """A ColumnTransformer column spec (name, names, indices, mask, slice, callable already resolved) as names."""
    if isinstance(spec, str):
        return [spec]
    if isinstance(spec, slice):
        if isinstance(spec.start, str) or isinstance(spec.stop, str):
            lo = 0 if spec.start is None else list(names).index(spec.start)
            hi = len(names) if spec.stop is None else list(names).index(spec.stop) + 1
            return list(names)[lo:hi]
        return list(names)[spec]
    arr = np.asarray(spec)
    if arr.size == 0:
        return []
    if arr.dtype.kind in "OU":
        return [str(v) for v in arr.tolist()]
    if arr.dtype.kind == "b":
        return [n for n, keep in zip(names, arr.tolist()) if keep]
    if arr.dtype.kind in "iu":
        return [names[i] for i in arr.tolist()]
    raise Unsupported(f"{where}: column selection {spec!r} is not understood")


def _resolve_columns(spec: Any, schema: pa.Schema | None, where: str) -> list[str]:
    if callable(spec):  # make_column_selector: sklearn's own semantics, on an empty frame of the schema
        if schema is None:
            raise Unsupported(f"{where}: a column selector needs the schema: pass schema= (a pyarrow schema or a "
                              "sample of the data) or convert the fitted object")
        frame = schema.empty_table().to_pandas()
        for c in frame.columns:  # strings as object columns, as a DataFrame read from a file has them
            if frame[c].dtype != object and pa.types.is_string(schema.field(str(c)).type):
                frame[c] = frame[c].astype(object)
        return [str(c) for c in spec(frame)]
    if schema is None and not (isinstance(spec, str) or (isinstance(spec, (list, tuple))
                                                         and all(isinstance(c, str) for c in spec))):
        raise Unsupported(f"{where}: columns by position need the schema: pass schema=")
    return _names(spec, schema.names if schema is not None else [], where)


# ---------------------------------------------------------------------------------------------- transformers
def _transformer(w: _Walk, est: Any, cols: list[str], where: str) -> list[str] | None:
    """Convert a supported transformer on ``cols``; its outputs (sklearn order), None when not known yet."""
    tr = translation_for_sklearn(est)
    if tr is None:
        w.problems.append(f"{where}: {type(est).__name__} is not supported (supported: {', '.join(SUPPORTED)})")
        return None
    try:
        step = tr.step(list(cols), **tr.params(est))
        state = tr.state(est, cols) if w.fitted else None
    except Unsupported as exc:
        w.problems.append(f"{where}: {type(est).__name__}: {exc}")
        return None
    out = w.add(step, state, cols)
    if out is None and tr.keeps_names(est):
        return list(cols)
    return out


def _chain(w: _Walk, items: list[tuple[str, Any]], cols: list[str] | None, where: str) -> list[str] | None:
    """Transformers applied one after the other, each to every output of the previous one."""
    for name, est in items:
        if cols is None:
            w.problems.append(f"{where} > {name}: reads the outputs of a step whose columns are only known once "
                              "fitted; fit the scikit-learn object before converting it")
            return None
        cols = _transformer(w, est, cols, f"{where} > {name}")
    return cols


def _column_transformer(w: _Walk, ct: Any, where: str) -> tuple[list[str], bool]:
    """Convert a ColumnTransformer: its output columns in sklearn order (input names standing for their outputs
    when not known yet), and whether they are exact."""
    from sklearn.compose import ColumnTransformer

    assert isinstance(ct, ColumnTransformer)
    if ct.get_params(deep=False)["transformer_weights"]:
        w.problems.append(f"{where}: transformer_weights are not supported")
    schema = w.schema
    if w.fitted:
        names = [str(n) for n in ct.feature_names_in_]
        given = {n: t for n, t, _ in ct.transformers} | {"remainder": ct.remainder}
        # sklearn fits a 'passthrough' entry as a FunctionTransformer: keep the given string
        entries = [(n, given[n] if isinstance(given.get(n), str) else t, _names(c, names, where))
                   for n, t, c in ct.transformers_]
    else:
        entries = []
        for n, t, c in ct.transformers:
            try:
                entries.append((n, t, _resolve_columns(c, schema, f"{where} entry {n!r}")))
            except Unsupported as exc:
                w.problems.append(str(exc))
        used = {c for _, _, cs in entries for c in cs}
        rest = None if schema is None else [c for c in schema.names if c not in used and c != w.label]
        remainder = ct.get_params(deep=False)["remainder"]
        if rest is not None:
            entries.append(("remainder", remainder, rest))
        elif not (isinstance(remainder, str) and remainder == "passthrough"):
            w.problems.append(f"{where}: remainder={remainder!r} needs the schema to know the remaining columns: "
                              "pass schema=")
    seen: dict[str, str] = {}
    outputs: list[str] = []
    exact = True
    for name, trans, cols in entries:
        for c in cols:
            if c in seen:
                w.problems.append(f"{where}: column {c!r} is used by both {seen[c]!r} and {name!r}; beamlearn "
                                  "replaces a column once (copy it first)")
            seen[c] = name
        if not cols:
            continue
        if isinstance(trans, str) and trans == "drop":
            w.add(Drop(list(cols)), {}, cols)
            continue
        if isinstance(trans, str) and trans == "passthrough":
            outputs += cols
            continue
        items = _flatten(trans)
        out = _chain(w, items, list(cols), f"{where} entry {name!r}")
        if out is None:
            exact = False
            out = list(cols)
        outputs += out
    return outputs, exact


# ---------------------------------------------------------------------------------------------- estimators
def _estimator(w: _Walk, est: Any, features: list[str] | None, where: str, output: str) -> None:
    from sklearn.base import clone

    name = f"{type(est).__module__.split('._')[0]}.{type(est).__name__}"
    label = w.label
    if not w.fitted and not label:
        w.problems.append(f"{where}: pass label= (the column {type(est).__name__} learns to predict)")
        return
    feats = features if features is not None else ["*"]
    if w.fitted and getattr(est, "n_features_in_", len(feats)) != len(feats):
        w.problems.append(f"{where}: {type(est).__name__} reads {est.n_features_in_} features, but the "
                          f"converted steps give {len(feats)}")
        return
    try:
        if name == "sklearn.linear_model.LogisticRegression":
            step, state = logistic_from_sklearn(est, feats, label, output, w.fitted)
        elif name in ("sklearn.linear_model.LinearRegression", "sklearn.linear_model.Ridge"):
            step, state = linear_from_sklearn(est, feats, label, output, w.fitted)
        else:
            step = SklearnModel(clone(est), features=feats, label=label, output=output)
            state = None
            if w.fitted:
                first = np.zeros((1, len(feats)))
                state = {"features": list(feats), "model": fitted_estimator_state(est, proba=True, first=first)}
    except Unsupported as exc:
        w.problems.append(f"{where}: {type(est).__name__}: {exc}")
        return
    w.add(step, state, [])


# ---------------------------------------------------------------------------------------------- entry point
def _input_schema(obj: Any, items: list[tuple[str, Any]], schema: pa.Schema | None) -> pa.Schema | None:
    """The fitted object's input columns, typed: ``schema`` when given, else float64, except columns an
    encoder reads first, typed like its categories."""
    names = getattr(obj, "feature_names_in_", None)
    if names is None:
        return None
    names = [str(n) for n in names]
    if schema is not None:
        missing = [n for n in names if n not in schema.names]
        if missing:
            raise ConversionError(f"schema= lacks the columns {missing} the scikit-learn object was fitted on")
        return pa.schema([schema.field(n) for n in names])
    types = dict.fromkeys(names, pa.float64())
    first = items[0][1] if items else None
    firsts: list[tuple[Any, list[str]]] = []
    if first is not None and type(first).__name__ == "ColumnTransformer":
        for _, t, c in first.transformers_:
            if not isinstance(t, str):
                firsts.append((_flatten(t)[0][1], _names(c, names, "")))
    elif first is not None:
        firsts.append((first, names))
    kinds = {"O": pa.string(), "U": pa.string(), "i": pa.int64(), "u": pa.int64(), "b": pa.bool_()}
    for est, cols in firsts:
        if hasattr(est, "categories_"):
            for c, cats in zip(cols, est.categories_):
                types[c] = kinds.get(np.asarray(cats).dtype.kind, pa.float64())
        elif getattr(est, "statistics_", None) is not None and np.asarray(est.statistics_).dtype.kind in "OU":
            for c in cols:  # an imputer fitted on objects: strings
                types[c] = pa.string()
    return pa.schema([(n, types[n]) for n in names])


def from_sklearn(obj: Any, *, schema: Any = None, label: str | None = None,
                 output: str = "prediction") -> Pipeline | FittedPipeline:
    """A beamlearn pipeline equal to a scikit-learn ``Pipeline`` / ``ColumnTransformer`` / transformer.

    Unfitted: a :class:`~beamlearn.Pipeline` with the same parameters (fit it on Beam, Spark or in-process).
    Fitted (on a DataFrame, so columns have names): a :class:`~beamlearn.FittedPipeline` with the same state,
    ready to transform; ``lineage["sklearn"]["columns"]`` maps scikit-learn's output columns to ours (see the
    module docstring for the layout).

    Parameters
    ----------
    obj:
        The scikit-learn object.  Supported: ``Pipeline`` (nested ones too), ``ColumnTransformer`` (entries by
        name, position, mask or ``make_column_selector``; ``"passthrough"``, ``"drop"``, ``remainder``),
        StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler, SimpleImputer, OneHotEncoder, OrdinalEncoder,
        KBinsDiscretizer, LinearRegression, Ridge, LogisticRegression; any other *trailing* estimator runs in a
        :class:`~beamlearn.SklearnModel`.
    schema:
        The input schema (a ``pyarrow.Schema`` or a sample of the data): needed to resolve
        ``make_column_selector``, positions and ``remainder`` of an unfitted object; for a fitted one it types
        the input columns (default: float64, encoder inputs typed like their categories).
    label:
        The label column of a trailing estimator (required to fit an unfitted one).
    output:
        The name of the prediction column.

    Raises
    ------
    ConversionError
        Listing every unsupported piece at once.

    Examples
    --------
    >>> import pandas as pd
    >>> from sklearn.compose import ColumnTransformer
    >>> from sklearn.preprocessing import StandardScaler
    >>> X = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.0, 1.0, 0.0]})
    >>> ct = ColumnTransformer([("s", StandardScaler(), ["a"])], remainder="passthrough").fit(X)
    >>> fitted = from_sklearn(ct)
    >>> fitted.transform(X).column("a").to_pylist() == ct.transform(X)[:, 0].tolist()
    True
    >>> fitted.lineage["sklearn"]["columns"]
    [['s__a', 'a'], ['remainder__b', 'b']]
    """
    from sklearn.pipeline import Pipeline as SkPipeline

    schema = _schema_of(schema)
    items = _flatten(obj)
    fitted = _is_fitted(obj)
    in_schema = _input_schema(obj, items, schema) if fitted else schema
    if fitted and in_schema is None:
        raise ConversionError("the scikit-learn object was fitted on an array without column names: fit it on a "
                              "DataFrame (beamlearn steps read named columns)")
    w = _Walk(fitted, in_schema, label)
    cols: list[str] | None = list(in_schema.names) if in_schema is not None else None
    exact = cols is not None
    last = len(items) - 1
    for i, (name, est) in enumerate(items):
        where = f"{type(obj).__name__} step {name!r}" if isinstance(obj, SkPipeline) else type(obj).__name__
        if type(est).__name__ == "ColumnTransformer":
            cols, exact = _column_transformer(w, est, where)
        elif translation_for_sklearn(est) is not None or not (i == last and hasattr(est, "predict")):
            if cols is None or not exact:
                w.problems.append(f"{where}: {type(est).__name__} applies to every column: pass schema= (or "
                                  "convert the fitted object)")
                cols = None
                continue
            cols = _transformer(w, est, cols, where)
            exact = cols is not None
        else:
            _estimator(w, est, cols, where, output)
    if w.problems:
        raise ConversionError("cannot convert this scikit-learn object to beamlearn:\n- " + "\n- ".join(w.problems))
    if not fitted:
        return Pipeline(w.steps, name=f"from_sklearn:{type(obj).__name__}")
    lineage = {"engine": "scikit-learn (from_sklearn)", "passes": 0,
               "sklearn": {"class": f"{type(obj).__module__.split('._')[0]}.{type(obj).__name__}",
                           "columns": _column_pairs(obj, items, cols)}}
    return FittedPipeline(w.steps, w.states, in_schema, name=f"from_sklearn:{type(obj).__name__}",
                          lineage=lineage)


def _column_pairs(obj: Any, items: list[tuple[str, Any]], cols: list[str] | None) -> list[list[str]]:
    """``[sklearn name, beamlearn name]`` for the columns the transformers output (before any estimator)."""
    from sklearn.pipeline import Pipeline as SkPipeline

    if cols is None:
        return []
    head = obj
    if isinstance(obj, SkPipeline) and hasattr(items[-1][1], "predict") and not hasattr(items[-1][1], "transform"):
        head = obj[:-1]
    try:
        names = [str(n) for n in head.get_feature_names_out()]
    except (AttributeError, ValueError, TypeError):
        names = list(cols)
    if len(names) != len(cols):
        return [[c, c] for c in cols]
    return [[s, b] for s, b in zip(names, cols)]
