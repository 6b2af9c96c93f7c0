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

This module holds the scalers, the imputer and the registry (:data:`TRANSLATIONS`); the encoders and bins are in
:mod:`beamlearn.interop.sklearn_encoders`, the models in :mod:`beamlearn.interop.sklearn_models`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn.interop.sklearn_base import (
    Translation,
    Unsupported,
    frame,
    is_missing_value,
    plain,
    reindex,
    set_fitted,
)
from beamlearn.interop.sklearn_encoders import KBinsTranslation, OneHotTranslation, OrdinalTranslation
from beamlearn.steps import MaxAbsScaler, MinMaxScaler, RobustScaler, SimpleImputer, StandardScaler, Step

__all__ = ["TRANSLATIONS", "Translation", "Unsupported", "is_missing_value", "translation_for_sklearn",
           "translation_for_step"]


def _nan_missing(est: Any) -> None:
    mv = est.get_params(deep=False).get("missing_values", np.nan)
    if not (mv is None or (isinstance(mv, float) and math.isnan(mv))):
        raise Unsupported(f"missing_values={mv!r} is not supported (beamlearn's missing values are null/NaN)")


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
        ix = reindex(step, order)
        m = state["moments"]
        scale = step.affine(state).scale
        est = self.sklearn_class()(**self.params_of(step))
        return set_fitted(est, order, named, mean_=np.asarray(m["mean"])[ix], var_=np.asarray(m["var"])[ix],
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
        ix = reindex(step, order)
        a = step.affine(state)
        lo, hi = np.asarray(state["range"]["min"])[ix], np.asarray(state["range"]["max"])[ix]
        est = self.sklearn_class()(feature_range=tuple(step.feature_range), clip=step.clip)
        return set_fitted(est, order, named, data_min_=lo, data_max_=hi, data_range_=hi - lo,
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
        ix = reindex(step, order)
        lo, hi = np.asarray(state["range"]["min"])[ix], np.asarray(state["range"]["max"])[ix]
        return set_fitted(self.sklearn_class()(), order, named, max_abs_=np.fmax(np.abs(lo), np.abs(hi)),
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
        ix = reindex(step, order)
        a = step.affine(state)
        est = self.sklearn_class()(with_centering=step.with_centering, with_scaling=step.with_scaling,
                                   quantile_range=tuple(step.quantile_range), unit_variance=step.unit_variance)
        return set_fitted(est, order, named, center_=a.offset[ix] if step.with_centering else None,
                           scale_=a.scale[ix] if step.with_scaling else None)


# ---------------------------------------------------------------------------------------------- imputer
class _SimpleImputer(Translation):
    sklearn, step = "sklearn.impute.SimpleImputer", SimpleImputer

    def params(self, est: Any) -> dict[str, Any]:
        _nan_missing(est)
        p = est.get_params(deep=False)
        if callable(p["strategy"]):
            raise Unsupported("a callable strategy is not supported")
        fv = plain(p["fill_value"])
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
        values = [np.nan if e else plain(s) for s, e in zip(stats, empty)]
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
        ix = reindex(step, order)
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
        return est.fit(frame(cols, named))


TRANSLATIONS: list[Translation] = [_StandardScaler(), _MinMaxScaler(), _MaxAbsScaler(), _RobustScaler(),
                                   _SimpleImputer(), OneHotTranslation(), OrdinalTranslation(), KBinsTranslation()]


def translation_for_sklearn(est: Any) -> Translation | None:
    """The translation of an sklearn estimator's exact class (subclasses may behave differently: None)."""
    path = f"{type(est).__module__.split('._')[0]}.{type(est).__name__}"
    return next((t for t in TRANSLATIONS if t.sklearn == path), None)


def translation_for_step(step: Step) -> Translation | None:
    """The translation of a beamlearn step's exact class, or None."""
    return next((t for t in TRANSLATIONS if type(step) is t.step), None)
