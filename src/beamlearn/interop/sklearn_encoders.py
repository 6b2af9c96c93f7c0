"""scikit-learn translations of the categorical and binning steps: OneHotEncoder, OrdinalEncoder and
KBinsDiscretizer (see :mod:`beamlearn.interop.sklearn_steps` for the contract).  From scikit-learn, an encoder's
``categories_`` (and infrequent grouping, drop index) become the vocabulary state, with zero counts; to
scikit-learn, the encoder is fitted on rows holding its categories, given explicitly, then ``categories`` is set
back to the step's own.  Bins copy ``bin_edges_`` / ``n_bins_`` both ways."""

from __future__ import annotations

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
    require,
    set_fitted,
)
from beamlearn.steps import KBinsDiscretizer, OneHotEncoder, OrdinalEncoder, Step

__all__ = ["KBinsTranslation", "OneHotTranslation", "OrdinalTranslation"]


def _vocab_from_sklearn(est: Any, i: int, missing_infrequent: bool) -> dict[str, Any]:
    cats = [plain(v) for v in est.categories_[i]]
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
        cats = [[plain(v) for v in c] for c in cats]
    return {"categories": cats, "handle_unknown": p["handle_unknown"], "min_frequency": plain(p["min_frequency"]),
            "max_categories": plain(p["max_categories"])}


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


class OneHotTranslation(Translation):
    """OneHotEncoder both ways."""

    sklearn, step, names_kept = "sklearn.preprocessing.OneHotEncoder", OneHotEncoder, False

    def params(self, est: Any) -> dict[str, Any]:
        require(est, feature_name_combiner="concat")
        p = est.get_params(deep=False)
        drop = p["drop"]
        if drop is not None and not isinstance(drop, str):
            drop = [plain(v) for v in drop]
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
        ix = reindex(step, order)
        drop = step.drop if step.drop is None or isinstance(step.drop, str) else [list(step.drop)[i] for i in ix]
        est = self.sklearn_class()(categories=given, drop=drop, handle_unknown=step.handle_unknown,
                                   sparse_output=False)
        est.fit(frame(data, named))
        return est.set_params(categories=step.categories if step.categories == "auto"
                              else [step.categories[i] for i in ix])


class OrdinalTranslation(Translation):
    """OrdinalEncoder both ways."""

    sklearn, step = "sklearn.preprocessing.OrdinalEncoder", OrdinalEncoder

    def params(self, est: Any) -> dict[str, Any]:
        p = est.get_params(deep=False)
        return {**_encoder_params(est), "unknown_value": plain(p["unknown_value"]),
                "encoded_missing_value": plain(p["encoded_missing_value"])}

    def state(self, est: Any, columns: Sequence[str]) -> dict[str, Any]:
        return {"vocabulary": [_vocab_from_sklearn(est, i, False) for i in range(len(columns))]}

    def to_sklearn(self, step: Step, state: dict[str, Any], order: Sequence[str], schema: pa.Schema,
                   named: bool) -> Any:
        data, given = _synthetic_categories(step, state, order)
        ix = reindex(step, order)
        est = self.sklearn_class()(categories=given, handle_unknown=step.handle_unknown,
                                   unknown_value=step.unknown_value,
                                   encoded_missing_value=step.encoded_missing_value)
        est.fit(frame(data, named))
        return est.set_params(categories=step.categories if step.categories == "auto"
                              else [step.categories[i] for i in ix])


class KBinsTranslation(Translation):
    """KBinsDiscretizer both ways."""

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
        ix = reindex(step, order)
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
        return set_fitted(est, order, named, **attrs)
