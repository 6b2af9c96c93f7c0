"""Per-step translations between scikit-learn transformers and beamlearn steps: parameters, and fitted state
(sklearn's fitted attributes <-> beamlearn's plain-data state), both ways.

Each supported pair is one :class:`Translation`.  Going to beamlearn, :meth:`Translation.params` maps sklearn's
parameters (raising :class:`Unsupported` for values beamlearn does not implement) and :meth:`Translation.state`
rebuilds the fitted state from the fitted attributes.  Statistics sklearn does not keep are filled so the
*transform* is the same: a RobustScaler's quantiles are rebuilt from ``center_`` and ``scale_``, an imputer's
counts from ``statistics_`` and ``indicator_.features_``, encoder counts are zeros (``describe`` shows them as
such).  Going to scikit-learn, :meth:`Translation.to_sklearn` builds the estimator with its fitted attributes
(imputers and encoders are fitted on a few synthetic rows that reproduce the state exactly: one value per
statistic, the categories as given; scalers and bins get their attributes set).  sklearn is imported lazily.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn.steps import (
    KBinsDiscretizer,
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    RobustScaler,
    SimpleImputer,
    StandardScaler,
    Step,
)

__all__ = [
    "TRANSLATIONS",
    "Translation",
    "Unsupported",
    "is_missing_value",
    "translation_for_sklearn",
    "translation_for_step",
]


class Unsupported(Exception):
    """One piece that cannot be translated; collected by the caller into one ConversionError."""


def is_missing_value(v: Any) -> bool:
    """None or a float NaN (scikit-learn's two spellings of a missing category)."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _require(est: Any, **allowed: Any) -> None:
    """Raise Unsupported for each parameter of ``est`` whose value is not the allowed one (a tuple: any of)."""
    params = est.get_params(deep=False)
    for name, ok in allowed.items():
        if name not in params:
            continue
        value = params[name]
        choices = ok if isinstance(ok, tuple) else (ok,)
        if not any(value is c or (not isinstance(value, np.ndarray) and value == c) for c in choices):
            raise Unsupported(f"{name}={value!r} is not supported (beamlearn implements "
                              + " or ".join(repr(c) for c in choices) + ")")


def _nan_missing(est: Any) -> None:
    mv = est.get_params(deep=False).get("missing_values", np.nan)
    if not (mv is None or (isinstance(mv, float) and math.isnan(mv))):
        raise Unsupported(f"missing_values={mv!r} is not supported (beamlearn's missing values are null/NaN)")


class Translation:
    """How one sklearn transformer class maps to one beamlearn step class (see the module docstring)."""

    sklearn: str = ""          # "sklearn.preprocessing.StandardScaler"
    step: type[Step] = Step
    names_kept: bool = True    # the output columns are the input columns (shape-preserving), when unfitted

    def params(self, est: Any) -> dict[str, Any]:
        """The beamlearn parameters (``columns`` excepted) of an sklearn estimator's parameters."""
        raise NotImplementedError

    def state(self, est: Any, columns: Sequence[str]) -> dict[str, Any]:
        """The beamlearn fitted state of a fitted sklearn estimator reading ``columns``."""
        raise NotImplementedError

    def keeps_names(self, est: Any) -> bool:
        """Whether the outputs are named as the inputs, in order (known before fitting)."""
        return self.names_kept

    def to_sklearn(self, step: Step, state: dict[str, Any], order: Sequence[str], schema: pa.Schema,
                   named: bool) -> Any:
        """A fitted sklearn estimator equal to ``step`` with ``state``, reading the step's columns in ``order``;
        ``named``: it receives a DataFrame (sets ``feature_names_in_``), else a numpy array."""
        raise NotImplementedError

    def sklearn_class(self) -> type:
        import importlib

        module, _, name = self.sklearn.rpartition(".")
        return getattr(importlib.import_module(module), name)


def _reindex(step: Step, order: Sequence[str]) -> list[int]:
    cols = step.input_columns()
    if sorted(cols) != sorted(order):
        raise Unsupported(f"{type(step).__name__} reads {cols}, not the columns {list(order)} of its group")
    return [cols.index(c) for c in order]


def _set_fitted(est: Any, order: Sequence[str], named: bool, **attrs: Any) -> Any:
    for k, v in attrs.items():
        setattr(est, k, v)
    est.n_features_in_ = len(order)
    if named:
        est.feature_names_in_ = np.array(list(order), dtype=object)
    return est


def _frame(columns: dict[str, list], named: bool) -> Any:
    import pandas as pd

    df = pd.DataFrame({c: pd.Series(v, dtype=object if any(isinstance(x, str) for x in v) else "float64")
                       for c, v in columns.items()})
    return df if named else df.to_numpy()


# ---------------------------------------------------------------------------------------------- scalers
class _StandardScaler(Translation):
    sklearn, step = "sklearn.preprocessing.StandardScaler", StandardScaler

    def params(self, est: Any) -> dict[str, Any]:
        p = est.get_params(deep=False)
        return {"with_mean": bool(p["with_mean"]), "with_std": bool(p["with_std"])}

    def state(self, est: Any, columns: Sequence[str]) -> dict[str, Any]:
        k = len(columns)
        n = np.broadcast_to(np.asarray(est.n_samples_seen_, dtype=np.float64), (k,)).copy()
        mean = np.zeros(k) if est.mean_ is None else np.asarray(est.mean_, dtype=np.float64)
        var = np.ones(k) if est.var_ is None else np.asarray(est.var_, dtype=np.float64)
        return {"moments": {"count": n, "mean": mean, "var": var}}

    def to_sklearn(self, step: Step, state: dict[str, Any], order: Sequence[str], schema: pa.Schema,
                   named: bool) -> Any:
        ix = _reindex(step, order)
        m = state["moments"]
        scale = step.affine(state).scale
        est = self.sklearn_class()(**self.params_of(step))
        return _set_fitted(est, order, named, mean_=np.asarray(m["mean"])[ix], var_=np.asarray(m["var"])[ix],
                           scale_=np.asarray(scale)[ix] if step.with_std else None,
                           n_samples_seen_=np.asarray(m["count"]).astype(np.int64)[ix])

    @staticmethod
    def params_of(step: Step) -> dict[str, Any]:
        return {"with_mean": step.with_mean, "with_std": step.with_std}


class _MinMaxScaler(Translation):
    sklearn, step = "sklearn.preprocessing.MinMaxScaler", MinMaxScaler

    def params(self, est: Any) -> dict[str, Any]:
        p = est.get_params(deep=False)
        return {"feature_range": tuple(p["feature_range"]), "clip": bool(p["clip"])}

    def state(self, est: Any, columns: Sequence[str]) -> dict[str, Any]:
        return {"range": {"min": np.asarray(est.data_min_, dtype=np.float64),
                          "max": np.asarray(est.data_max_, dtype=np.float64)}}

    def to_sklearn(self, step: Step, state: dict[str, Any], order: Sequence[str], schema: pa.Schema,
                   named: bool) -> Any:
        ix = _reindex(step, order)
        a = step.affine(state)
        lo, hi = np.asarray(state["range"]["min"])[ix], np.asarray(state["range"]["max"])[ix]
        est = self.sklearn_class()(feature_range=tuple(step.feature_range), clip=step.clip)
        return _set_fitted(est, order, named, data_min_=lo, data_max_=hi, data_range_=hi - lo,
                           scale_=a.scale[ix], min_=a.shift[ix], n_samples_seen_=0)


class _MaxAbsScaler(Translation):
    sklearn, step = "sklearn.preprocessing.MaxAbsScaler", MaxAbsScaler

    def params(self, est: Any) -> dict[str, Any]:
        return {}

    def state(self, est: Any, columns: Sequence[str]) -> dict[str, Any]:
        m = np.asarray(est.max_abs_, dtype=np.float64)
        return {"range": {"min": -m, "max": m}}

    def to_sklearn(self, step: Step, state: dict[str, Any], order: Sequence[str], schema: pa.Schema,
                   named: bool) -> Any:
        ix = _reindex(step, order)
        lo, hi = np.asarray(state["range"]["min"])[ix], np.asarray(state["range"]["max"])[ix]
        return _set_fitted(self.sklearn_class()(), order, named, max_abs_=np.fmax(np.abs(lo), np.abs(hi)),
                           scale_=step.affine(state).scale[ix], n_samples_seen_=0)


class _RobustScaler(Translation):
    sklearn, step = "sklearn.preprocessing.RobustScaler", RobustScaler

    def params(self, est: Any) -> dict[str, Any]:
        p = est.get_params(deep=False)
        return {"with_centering": bool(p["with_centering"]), "with_scaling": bool(p["with_scaling"]),
                "quantile_range": tuple(float(q) for q in p["quantile_range"]),
                "unit_variance": bool(p["unit_variance"])}

    def state(self, est: Any, columns: Sequence[str]) -> dict[str, Any]:
        """Quantiles that give sklearn's ``center_`` and ``scale_``: ``[center, 0, raw range]`` (the range before
        the unit-variance adjustment); sklearn does not keep the quantiles themselves."""
        k, p = len(columns), self.params(est)
        rows = []
        if p["with_centering"]:
            rows.append(np.asarray(est.center_, dtype=np.float64))
        if p["with_scaling"]:
            scale = np.asarray(est.scale_, dtype=np.float64)
            if p["unit_variance"]:
                from statistics import NormalDist

                lo, hi = p["quantile_range"]
                scale = scale * (NormalDist().inv_cdf(hi / 100) - NormalDist().inv_cdf(lo / 100))
            rows += [np.zeros(k), scale]
        if not rows:
            return {}
        return {"quantiles": {"quantiles": np.column_stack(rows), "count": np.zeros(k, dtype=np.int64)}}

    def to_sklearn(self, step: Step, state: dict[str, Any], order: Sequence[str], schema: pa.Schema,
                   named: bool) -> Any:
        ix = _reindex(step, order)
        a = step.affine(state)
        est = self.sklearn_class()(with_centering=step.with_centering, with_scaling=step.with_scaling,
                                   quantile_range=tuple(step.quantile_range), unit_variance=step.unit_variance)
        return _set_fitted(est, order, named, center_=a.offset[ix] if step.with_centering else None,
                           scale_=a.scale[ix] if step.with_scaling else None)


# ---------------------------------------------------------------------------------------------- imputer
class _SimpleImputer(Translation):
    sklearn, step = "sklearn.impute.SimpleImputer", SimpleImputer

    def params(self, est: Any) -> dict[str, Any]:
        _nan_missing(est)
        p = est.get_params(deep=False)
        if callable(p["strategy"]):
            raise Unsupported("a callable strategy is not supported")
        fv = _plain(p["fill_value"])
        return {"strategy": p["strategy"], "fill_value": fv, "add_indicator": bool(p["add_indicator"]),
                "keep_empty_features": bool(p["keep_empty_features"])}

    def keeps_names(self, est: Any) -> bool:
        return not est.get_params(deep=False)["add_indicator"]

    def state(self, est: Any, columns: Sequence[str]) -> dict[str, Any]:
        """Two synthetic rows' worth of counts: an empty column (NaN statistic) is all missing, a column with an
        indicator has one missing value; the statistic is sklearn's ``statistics_``."""
        p = self.params(est)
        stats = list(est.statistics_)
        k = len(columns)
        ind = set(est.indicator_.features_.tolist()) if getattr(est, "indicator_", None) is not None else set()
        empty = [not isinstance(s, str) and s is not None and isinstance(s, (float, np.floating)) and np.isnan(s)
                 for s in stats]
        missing = np.array([2 if e else (1 if i in ind else 0) for i, e in enumerate(empty)], dtype=np.int64)
        out: dict[str, Any] = {"count": {"rows": 2, "missing": missing}}
        values = [np.nan if e else _plain(s) for s, e in zip(stats, empty)]
        if p["strategy"] == "mean":
            out["moments"] = {"count": 2.0 - missing, "mean": np.array(values, dtype=np.float64), "var": np.zeros(k)}
        elif p["strategy"] == "median":
            out["median"] = {"quantiles": np.array(values, dtype=np.float64).reshape(k, 1),
                             "count": 2 - missing}
        elif p["strategy"] == "most_frequent":
            out["mode"] = [{"value": None if e else v, "count": 0 if e else 1, "missing": int(m)}
                           for v, e, m in zip(values, empty, missing)]
        return out

    def to_sklearn(self, step: Step, state: dict[str, Any], order: Sequence[str], schema: pa.Schema,
                   named: bool) -> Any:
        """Fit sklearn's imputer on two synthetic rows: the statistic (NaN for a column empty at fit), then the
        statistic again or NaN where the column had missing values (so the indicator sees them)."""
        ix = _reindex(step, order)
        plan = step.fill_plan(state, schema)
        fills = {f.column: f.value for f in plan.fills}
        string = {f.column: f.string for f in plan.fills}
        if len({string.get(c, False) for c in order}) > 1:
            raise Unsupported("SimpleImputer over both string and numeric columns: scikit-learn would return "
                              "objects for all of them; split it into one imputer per kind")
        cols: dict[str, list] = {}
        for c, i in zip(order, ix):
            missing = int(state["count"]["missing"][i]) > 0
            first = fills.get(c, np.nan) if c not in plan.dropped else np.nan
            if step.strategy == "constant" and c in plan.dropped:
                first = np.nan
            cols[c] = [first, np.nan if missing else first]
        est = self.sklearn_class()(strategy=step.strategy, fill_value=step.fill_value,
                                   add_indicator=step.add_indicator, keep_empty_features=step.keep_empty_features)
        return est.fit(_frame(cols, named))


# ---------------------------------------------------------------------------------------------- encoders
def _vocab_from_sklearn(est: Any, i: int, missing_infrequent: bool) -> dict[str, Any]:
    cats = [_plain(v) for v in est.categories_[i]]
    has_missing = bool(cats) and is_missing_value(cats[-1])
    values = cats[:-1] if has_missing else cats
    n = len(cats) if missing_infrequent else len(values)
    mask = np.zeros(n, dtype=bool)
    idx = getattr(est, "_infrequent_indices", [None] * len(est.categories_))[i]
    if idx is not None:
        mask[np.asarray(idx, dtype=np.int64)] = True
    group = np.cumsum(~mask) - 1
    group[mask] = np.count_nonzero(~mask)
    if has_missing and not missing_infrequent:
        group = np.append(group, -1)
    return {"categories": values, "counts": np.zeros(len(values), dtype=np.int64), "missing": 0,
            "has_missing": has_missing, "infrequent": np.flatnonzero(mask).astype(np.int64),
            "group": group.astype(np.int64)}


def _encoder_params(est: Any) -> dict[str, Any]:
    p = est.get_params(deep=False)
    cats = p["categories"]
    if not isinstance(cats, str):
        cats = [[_plain(v) for v in c] for c in cats]
    return {"categories": cats, "handle_unknown": p["handle_unknown"], "min_frequency": _plain(p["min_frequency"]),
            "max_categories": _plain(p["max_categories"])}


def _synthetic_categories(step: Step, state: dict[str, Any], order: Sequence[str]) -> tuple[dict, list]:
    """Rows holding every category of each column (padded by repeating the first) and the explicit
    ``categories`` that make sklearn's encoder fit the same vocabulary."""
    if any(len(v["infrequent"]) for v in state["vocabulary"]):
        raise Unsupported("infrequent categories (min_frequency / max_categories) cannot be exported: the "
                          "grouping depends on counts scikit-learn would have to refit")
    cols = step.input_columns()
    given, data = [], {}
    for c in order:
        v = state["vocabulary"][cols.index(c)]
        cats = list(v["categories"]) + ([np.nan] if v["has_missing"] else [])
        if not cats:
            raise Unsupported(f"column {c!r} has no category")
        given.append(cats)
        data[c] = cats
    width = max(len(v) for v in data.values())
    return {c: v + [v[0]] * (width - len(v)) for c, v in data.items()}, given


class _OneHotEncoder(Translation):
    sklearn, step, names_kept = "sklearn.preprocessing.OneHotEncoder", OneHotEncoder, False

    def params(self, est: Any) -> dict[str, Any]:
        _require(est, feature_name_combiner="concat")
        p = est.get_params(deep=False)
        drop = p["drop"]
        if drop is not None and not isinstance(drop, str):
            drop = [_plain(v) for v in drop]
        return {**_encoder_params(est), "drop": drop}

    def state(self, est: Any, columns: Sequence[str]) -> dict[str, Any]:
        drops = getattr(est, "_drop_idx_after_grouping", None)
        vocab = []
        for i in range(len(columns)):
            v = _vocab_from_sklearn(est, i, True)
            d = None if drops is None else drops[i]
            v["drop"] = None if d is None else int(d)
            vocab.append(v)
        return {"vocabulary": vocab}

    def to_sklearn(self, step: Step, state: dict[str, Any], order: Sequence[str], schema: pa.Schema,
                   named: bool) -> Any:
        data, given = _synthetic_categories(step, state, order)
        ix = _reindex(step, order)
        drop = step.drop if step.drop is None or isinstance(step.drop, str) else [list(step.drop)[i] for i in ix]
        est = self.sklearn_class()(categories=given, drop=drop, handle_unknown=step.handle_unknown,
                                   sparse_output=False)
        est.fit(_frame(data, named))
        return est.set_params(categories=step.categories if step.categories == "auto"
                              else [step.categories[i] for i in ix])


class _OrdinalEncoder(Translation):
    sklearn, step = "sklearn.preprocessing.OrdinalEncoder", OrdinalEncoder

    def params(self, est: Any) -> dict[str, Any]:
        p = est.get_params(deep=False)
        return {**_encoder_params(est), "unknown_value": _plain(p["unknown_value"]),
                "encoded_missing_value": _plain(p["encoded_missing_value"])}

    def state(self, est: Any, columns: Sequence[str]) -> dict[str, Any]:
        return {"vocabulary": [_vocab_from_sklearn(est, i, False) for i in range(len(columns))]}

    def to_sklearn(self, step: Step, state: dict[str, Any], order: Sequence[str], schema: pa.Schema,
                   named: bool) -> Any:
        data, given = _synthetic_categories(step, state, order)
        ix = _reindex(step, order)
        est = self.sklearn_class()(categories=given, handle_unknown=step.handle_unknown,
                                   unknown_value=step.unknown_value,
                                   encoded_missing_value=step.encoded_missing_value)
        est.fit(_frame(data, named))
        return est.set_params(categories=step.categories if step.categories == "auto"
                              else [step.categories[i] for i in ix])


class _KBinsDiscretizer(Translation):
    sklearn, step = "sklearn.preprocessing.KBinsDiscretizer", KBinsDiscretizer

    def params(self, est: Any) -> dict[str, Any]:
        p = est.get_params(deep=False)
        if p["strategy"] == "kmeans":
            raise Unsupported("strategy='kmeans' is not supported (uniform and quantile are)")
        if p["dtype"] not in (None, np.float64, "float64"):
            raise Unsupported(f"dtype={p['dtype']!r}: beamlearn bins are float64 (ordinal) or uint8 (one-hot)")
        n_bins = p["n_bins"]
        n_bins = [int(b) for b in n_bins] if isinstance(n_bins, (list, tuple, np.ndarray)) else int(n_bins)
        return {"n_bins": n_bins, "encode": p["encode"], "strategy": p["strategy"],
                "quantile_method": p.get("quantile_method", "linear")}

    def keeps_names(self, est: Any) -> bool:
        return est.get_params(deep=False)["encode"] == "ordinal"

    def state(self, est: Any, columns: Sequence[str]) -> dict[str, Any]:
        return {"bins": {"edges": [np.asarray(e, dtype=np.float64) for e in est.bin_edges_],
                         "n_bins": np.asarray(est.n_bins_, dtype=np.int64)}}

    def to_sklearn(self, step: Step, state: dict[str, Any], order: Sequence[str], schema: pa.Schema,
                   named: bool) -> Any:
        ix = _reindex(step, order)
        sk = self.sklearn_class()
        from sklearn.preprocessing import OneHotEncoder as SkOneHot

        n_bins = np.asarray(state["bins"]["n_bins"], dtype=np.int64)[ix]
        edges = np.empty(len(ix), dtype=object)
        edges[:] = [np.asarray(state["bins"]["edges"][i], dtype=np.float64) for i in ix]
        per = step.n_bins if isinstance(step.n_bins, int) else [step.n_bins[i] for i in ix]
        est = sk(n_bins=per, encode=step.encode, strategy=step.strategy, quantile_method=step.quantile_method,
                 subsample=None)
        attrs: dict[str, Any] = {"bin_edges_": edges, "n_bins_": n_bins}
        if step.encode != "ordinal":
            attrs["_encoder"] = SkOneHot(categories=[np.arange(n) for n in n_bins],
                                         sparse_output=step.encode == "onehot", dtype=np.float64).fit(
                np.zeros((1, len(ix))))
        return _set_fitted(est, order, named, **attrs)


TRANSLATIONS: list[Translation] = [_StandardScaler(), _MinMaxScaler(), _MaxAbsScaler(), _RobustScaler(),
                                   _SimpleImputer(), _OneHotEncoder(), _OrdinalEncoder(), _KBinsDiscretizer()]


def translation_for_sklearn(est: Any) -> Translation | None:
    """The translation of an sklearn estimator's exact class (subclasses may behave differently: None)."""
    path = f"{type(est).__module__.split('._')[0]}.{type(est).__name__}"
    return next((t for t in TRANSLATIONS if t.sklearn == path), None)


def translation_for_step(step: Step) -> Translation | None:
    """The translation of a beamlearn step's exact class, or None."""
    return next((t for t in TRANSLATIONS if type(step) is t.step), None)
