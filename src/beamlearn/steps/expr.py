"""Stateless column expressions: Log1p, Clip, Drop, and Function (a user's vectorized function, by name).

They fit nothing.  Numeric outputs are float64 under the input names; missing values (null or NaN) stay
missing.  :class:`Function` refers to its function by a registered *name*: an artifact stores only the name, and
loading it in a process where that name is not registered fails with a clear error (nothing is ever imported or
evaluated from an artifact).

Examples
--------
>>> import numpy as np
>>> import beamlearn as bl
>>> @bl.register_function("doc_square")
... def square(x):
...     return x * x
>>> f = bl.Pipeline([bl.Function("x", func="doc_square"), bl.Drop("id")]).fit({"x": [1.0, 2.0], "id": [7, 8]})
>>> f.transform({"x": [3.0, None], "id": [9, 10]}).to_pydict()
{'x': [9.0, None]}
>>> f.transform_one({"x": 4.0})
{'x': 16.0}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from numbers import Real
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from beamlearn.batches import from_float, raw_values
from beamlearn.errors import ArtifactError, SpecError
from beamlearn.steps.base import RowFn, Step, map_columns, register_step

__all__ = ["Clip", "Drop", "Function", "Log1p", "register_function", "registered_functions"]

F = TypeVar("F", bound=Callable[..., Any])
_FUNCTIONS: dict[str, Callable[..., Any]] = {}
_np_log1p = np.log1p


def register_function(name: str) -> Callable[[F], F]:
    """Decorator: make a vectorized function usable by :class:`Function` (and in specs and artifacts) as ``name``.

    The function takes a float64 numpy array (NaN for missing values) and keyword arguments, and returns an
    array of the same length; it must be elementwise (each output depends only on its input) so that single
    records transform as whole tables do.  Re-registering the same function (same module and name, e.g. a
    re-run notebook cell) replaces it; another function under a taken name is an error.

    Examples
    --------
    >>> import numpy as np
    >>> import beamlearn as bl
    >>> @bl.register_function("doc_cube_root")
    ... def cube_root(x):
    ...     return np.cbrt(x)
    >>> bl.registered_functions()["doc_cube_root"] is cube_root
    True
    """
    if not isinstance(name, str) or not name:
        raise SpecError(f"register_function needs a non-empty name, got {name!r}")

    def decorate(fn: F) -> F:
        if not callable(fn):
            raise SpecError(f"register_function({name!r}) must decorate a function, got {type(fn).__name__}")
        other = _FUNCTIONS.get(name)
        if other is not None and other is not fn and _qualname(other) != _qualname(fn):
            raise SpecError(f"a function named {name!r} is already registered ({_qualname(other)})")
        _FUNCTIONS[name] = fn
        return fn

    return decorate


def registered_functions() -> dict[str, Callable[..., Any]]:
    """A copy of the function registry: name -> function."""
    return dict(_FUNCTIONS)


def _qualname(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def lookup_function(name: Any, error: type[Exception]) -> Callable[..., Any]:
    fn = _FUNCTIONS.get(name) if isinstance(name, str) else None
    if fn is None:
        known = ", ".join(sorted(_FUNCTIONS)) or "none"
        raise error(f"Function: func={name!r} is not a registered function in this process (registered: "
                    f"{known}); define it with @beamlearn.register_function({name!r}) before fitting or loading")
    return fn


class _Numeric(Step):
    """Base of stateless elementwise steps on numeric columns: float64 outputs under the input names."""

    def check(self, schema: pa.Schema) -> None:
        super().check(schema)
        self._check_kind(schema, ["numeric", "boolean"])

    def _vector(self, i: int) -> Callable[[np.ndarray], np.ndarray]:
        raise NotImplementedError

    def _scalar(self, i: int) -> Callable[[float], float]:
        raise NotImplementedError

    def apply(self, batch: pa.RecordBatch, state: dict[str, Any]) -> pa.RecordBatch:
        fns = [self._vector(i) for i in range(len(self.input_columns()))]
        with np.errstate(all="ignore"):  # null slots hold arbitrary numbers; domain errors give NaN
            return map_columns(batch, self.input_columns(), lambda x, i: fns[i](x))

    def row_function(self, state: dict[str, Any], schema: pa.Schema) -> RowFn:
        spec = [(c, self._scalar(i)) for i, c in enumerate(self.input_columns())]

        def fn(row: dict) -> dict:
            for c, f in spec:
                v = row[c]
                row[c] = None if v is None or v != v else f(float(v))
            return row

        return fn


def _log1p(v: float) -> float:
    # numpy's ufunc on the one value: the very kernel the batch path runs (SIMD on AVX-512 hosts, whose last
    # bit may differ from libm's ``math.log1p``); outside the domain, numpy's answers without its warning
    if v > -1.0:
        return float(_np_log1p(v))
    return -math.inf if v == -1.0 else math.nan


@register_step
class Log1p(_Numeric):
    """``log(1 + x)`` of numeric columns (:func:`numpy.log1p`): -1 gives -inf, values below -1 give NaN.

    Parameters
    ----------
    columns:
        Numeric columns, replaced in place by float64 columns.

    Examples
    --------
    >>> import beamlearn as bl
    >>> f = bl.Pipeline([bl.Log1p("x")]).fit({"x": [0.0, 1.0]})
    >>> f.transform({"x": [0.0, None]}).column("x").to_pylist()
    [0.0, None]
    >>> f.transform_one({"x": 1.0})
    {'x': 0.6931471805599453}
    """

    def __init__(self, columns: str | Sequence[str]) -> None:
        self.columns = columns

    def _vector(self, i: int) -> Callable[[np.ndarray], np.ndarray]:
        return np.log1p

    def _scalar(self, i: int) -> Callable[[float], float]:
        return _log1p


@register_step
class Clip(_Numeric):
    """Limit numeric columns to ``[lower, upper]`` (:func:`numpy.clip`).

    Parameters
    ----------
    columns:
        Numeric columns, replaced in place by float64 columns.
    lower, upper:
        A bound for every column, a list with one bound per column, or ``None`` (no bound on that side).

    Examples
    --------
    >>> import beamlearn as bl
    >>> f = bl.Pipeline([bl.Clip(["x", "y"], lower=0.0, upper=[1.0, 10.0])]).fit({"x": [0.5], "y": [5.0]})
    >>> f.transform_one({"x": 3.0, "y": -2.0})
    {'x': 1.0, 'y': 0.0}
    """

    def __init__(self, columns: str | Sequence[str], *, lower: float | Sequence[float | None] | None = None,
                 upper: float | Sequence[float | None] | None = None) -> None:
        self.columns, self.lower, self.upper = columns, lower, upper

    def _bounds(self, name: str) -> list[float]:
        value, cols = getattr(self, name), self.input_columns()
        per = list(value) if isinstance(value, (list, tuple)) else [value] * len(cols)
        if len(per) != len(cols):
            raise SpecError(f"Clip: {name} has {len(per)} bounds for {len(cols)} columns")
        default = -math.inf if name == "lower" else math.inf
        out = []
        for c, b in zip(cols, per):
            if b is not None and (not isinstance(b, Real) or isinstance(b, bool) or b != b):
                raise SpecError(f"Clip: {name} bound for column {c!r} must be a number or None, got {b!r}")
            out.append(default if b is None else float(b))
        return out

    def check(self, schema: pa.Schema) -> None:
        for c, lo, hi in zip(self.input_columns(), self._bounds("lower"), self._bounds("upper")):
            if lo > hi:
                raise SpecError(f"Clip: lower bound {lo} exceeds upper bound {hi} for column {c!r}")
        super().check(schema)

    def _vector(self, i: int) -> Callable[[np.ndarray], np.ndarray]:
        lo, hi = self._bounds("lower")[i], self._bounds("upper")[i]
        return lambda x: np.clip(x, lo, hi)

    def _scalar(self, i: int) -> Callable[[float], float]:
        lo, hi = self._bounds("lower")[i], self._bounds("upper")[i]

        def clip(v: float) -> float:  # numpy.clip's rule, signed zeros included: a bound replaces v only when
            v = lo if v < lo else v  # noqa: FURB136 - v is strictly beyond it (np.clip(-0.0, 0.0, 1) is -0.0;
            return hi if v > hi else v  # noqa: FURB136 - max() and min() differ there)

        return clip

    def describe(self, state: dict[str, Any]) -> dict[str, Any]:
        return {c: {"lower": lo, "upper": hi} for c, lo, hi in
                zip(self.input_columns(), self._bounds("lower"), self._bounds("upper"))}


@register_step
class Drop(Step):
    """Remove columns (ids, labels, raw columns no longer needed); every other column passes through.

    The dropped columns must exist when fitting; when transforming they are optional (a served record need not
    carry the label the training data had).

    Parameters
    ----------
    columns:
        The columns to remove.

    Examples
    --------
    >>> import beamlearn as bl
    >>> f = bl.Pipeline([bl.Drop("label")]).fit({"x": [1.0], "label": [0]})
    >>> f.transform_one({"x": 2.0})
    {'x': 2.0}
    """

    def __init__(self, columns: str | Sequence[str]) -> None:
        self.columns = columns

    def serving_columns(self) -> list[str]:
        return []

    def apply(self, batch: pa.RecordBatch, state: dict[str, Any]) -> pa.RecordBatch:
        drop = set(self.input_columns())
        keep = [i for i, n in enumerate(batch.schema.names) if n not in drop]
        if len(keep) == batch.num_columns:
            return batch
        return batch.select(keep)

    def row_function(self, state: dict[str, Any], schema: pa.Schema) -> RowFn:
        cols = self.input_columns()

        def fn(row: dict) -> dict:
            for c in cols:
                row.pop(c, None)
            return row

        return fn

    def describe(self, state: dict[str, Any]) -> dict[str, Any]:
        return {"dropped": self.input_columns()}


@register_step
class Function(Step):
    """Apply a registered vectorized function (see :func:`register_function`) to numeric columns.

    Parameters
    ----------
    columns:
        Numeric columns, replaced in place by float64 columns.  Missing values reach the function as NaN; a
        NaN it returns is missing.
    func:
        The *name* the function was registered under.  Artifacts store only this name.
    kw_args:
        Keyword arguments for the function (plain data: numbers, strings, lists, dicts), as
        :class:`sklearn.preprocessing.FunctionTransformer`'s ``kw_args``.

    Examples
    --------
    >>> import numpy as np
    >>> import beamlearn as bl
    >>> @bl.register_function("doc_power")
    ... def power(x, p=2.0):
    ...     return np.power(x, p)
    >>> f = bl.Pipeline([bl.Function("x", func="doc_power", kw_args={"p": 3.0})]).fit({"x": [1.0]})
    >>> f.transform_one({"x": 2.0})
    {'x': 8.0}
    """

    def __init__(self, columns: str | Sequence[str], *, func: str, kw_args: Mapping[str, Any] | None = None) -> None:
        self.columns, self.func, self.kw_args = columns, func, kw_args

    def check(self, schema: pa.Schema) -> None:
        lookup_function(self.func, SpecError)
        if self.kw_args is not None and (not isinstance(self.kw_args, Mapping)
                                         or not all(isinstance(k, str) for k in self.kw_args)):
            raise SpecError(f"Function: kw_args must be a dict with string keys, got {self.kw_args!r}")
        super().check(schema)
        self._check_kind(schema, ["numeric", "boolean"])

    def _call(self) -> Callable[[np.ndarray], np.ndarray]:
        fn, kw, name = lookup_function(self.func, ArtifactError), dict(self.kw_args or {}), self.func

        def call(x: np.ndarray) -> np.ndarray:
            out = np.asarray(fn(x, **kw), dtype=np.float64)
            if out.shape != x.shape:
                raise SpecError(f"Function: {name!r} returned shape {out.shape} for an input of shape {x.shape}; "
                                "it must be elementwise")
            return out

        return call

    def apply(self, batch: pa.RecordBatch, state: dict[str, Any]) -> pa.RecordBatch:
        call, arrays, names = self._call(), list(batch.columns), batch.schema.names
        for c in self.input_columns():
            j = names.index(c)
            x, valid = raw_values(arrays[j])
            # the function sees NaN for every missing value, in an array of its own (it may write to it)
            x = np.array(x) if valid is None else np.where(valid, x, np.nan)
            with np.errstate(all="ignore"):
                arrays[j] = from_float(call(x))  # what it returns as NaN is missing
        return pa.RecordBatch.from_arrays(arrays, names=names)

    def row_function(self, state: dict[str, Any], schema: pa.Schema) -> RowFn:
        call, cols = self._call(), self.input_columns()

        def fn(row: dict) -> dict:
            with np.errstate(all="ignore"):
                for c in cols:
                    v = row[c]
                    out = float(call(np.array([math.nan if v is None else v], dtype=np.float64))[0])
                    row[c] = None if out != out else out
            return row

        return fn

    def describe(self, state: dict[str, Any]) -> dict[str, Any]:
        return {"func": self.func, "kw_args": dict(self.kw_args or {}), "columns": self.input_columns()}
