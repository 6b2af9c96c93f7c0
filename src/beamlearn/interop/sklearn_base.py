"""The shared parts of the scikit-learn translations (:mod:`beamlearn.interop.sklearn_steps`,
:mod:`beamlearn.interop.sklearn_encoders`): the :class:`Translation` contract, the :class:`Unsupported` signal, and
the helpers that read sklearn parameters and set fitted attributes.  sklearn and pandas are imported lazily."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn.steps import Step

__all__ = ["Translation", "Unsupported", "frame", "is_missing_value", "plain", "reindex", "require", "set_fitted"]


class Unsupported(Exception):
    """One piece that cannot be translated; collected by the caller into one ConversionError."""


def is_missing_value(v: Any) -> bool:
    """None or a float NaN (scikit-learn's two spellings of a missing category)."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def require(est: Any, **allowed: Any) -> None:
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


def reindex(step: Step, order: Sequence[str]) -> list[int]:
    cols = step.input_columns()
    if sorted(cols) != sorted(order):
        raise Unsupported(f"{type(step).__name__} reads {cols}, not the columns {list(order)} of its group")
    return [cols.index(c) for c in order]


def set_fitted(est: Any, order: Sequence[str], named: bool, **attrs: Any) -> Any:
    for k, v in attrs.items():
        setattr(est, k, v)
    est.n_features_in_ = len(order)
    if named:
        est.feature_names_in_ = np.array(list(order), dtype=object)
    return est


def frame(columns: dict[str, list], named: bool) -> Any:
    import pandas as pd

    df = pd.DataFrame({c: pd.Series(v, dtype=object if any(isinstance(x, str) for x in v) else "float64")
                       for c, v in columns.items()})
    return df if named else df.to_numpy()
