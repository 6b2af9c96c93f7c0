"""scikit-learn estimators as plain data, and safe loading of fitted ones from skops blobs.

:func:`estimator_spec` turns an estimator into ``{"class": public class path, "params": get_params()}`` (nested
estimators as nested specs, tuples and non-string dict keys tagged), :func:`build_estimator` rebuilds it - only
for scikit-learn's own estimator classes (:func:`sklearn_class`), never by importing anything else.
:func:`load_skops` loads a skops blob trusting only an allowlist of types: scikit-learn's classes, numpy
arrays/scalars/dtypes/random generators and scipy sparse matrices; anything else (``builtins.eval``,
``os.system``, a user's class) is an :class:`~beamlearn.errors.ArtifactError` naming the types.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

import numpy as np

from beamlearn.errors import ArtifactError, SpecError

__all__ = ["build_estimator", "estimator_spec", "load_skops", "sklearn_class", "trusted_type"]

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
def trusted_type(name: str) -> bool:
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
    bad = [t for t in wanted if not trusted_type(t)]
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
