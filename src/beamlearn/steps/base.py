"""The step contract, the step registry, and the column helpers every step is built from.

A step is a set of parameters (stored verbatim in ``__init__``, scikit-learn's rule), the analyzers that compute
its fitted state in full passes, and two pure functions of a fitted state: :meth:`Step.apply` on a whole
RecordBatch (vectorized) and :meth:`Step.row_function` on one dict record (the tuned serving path).  Steps know
nothing about engines.

Writing your own step takes a few lines::

    from beamlearn.steps import Step, register_step, map_columns
    from beamlearn.analyzers import MinMax

    @register_step
    class CenterRange(Step):
        '''Subtract the midpoint of each column's fitted range.'''

        def __init__(self, columns):
            self.columns = columns

        def analyzers(self):
            return {"range": MinMax(self.input_columns())}

        def apply(self, batch, state):
            mid = (state["range"]["min"] + state["range"]["max"]) / 2
            return map_columns(batch, self.input_columns(), lambda x, i: x - mid[i])

Registration makes the step loadable from artifacts by name; nothing else is ever imported at load time.
A step that implements only :meth:`apply` still serves single records: the default :meth:`row_function` runs
``apply`` on a one-row batch (correct, but slower than a hand-tuned row function).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn.analyzers import Analyzer
from beamlearn.batches import column_kind, raw_values, with_validity
from beamlearn.errors import ArtifactError, SchemaError, SpecError

__all__ = ["Step", "register_step", "registered_steps", "step_class", "replace_columns", "map_columns",
           "RowFn"]

RowFn = Callable[[dict], dict]
_REGISTRY: dict[str, type[Step]] = {}


def register_step(cls: type[Step]) -> type[Step]:
    """Class decorator: make a step type known to specs and artifacts under its class name."""
    name = cls.__name__
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        other = _REGISTRY[name]
        raise SpecError(f"a step named {name!r} is already registered ({other.__module__}.{other.__qualname__})")
    _REGISTRY[name] = cls
    return cls


def registered_steps() -> dict[str, type[Step]]:
    """A copy of the registry: step type name -> class."""
    return dict(_REGISTRY)


def step_class(name: str) -> type[Step]:
    """The registered step class called ``name``; :class:`ArtifactError` if there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ArtifactError(f"unknown step type {name!r}: not a registered beamlearn step (register custom steps "
                            "with @beamlearn.register_step before loading)") from None


def _as_list(columns: str | Sequence[str] | None) -> list[str]:
    if columns is None:
        return []
    if isinstance(columns, str):
        return [columns]
    return list(columns)


class Step:
    """Base class of pipeline steps.  Subclasses store parameters in ``__init__`` and override:

    - :meth:`analyzers` (stateful steps): the full-pass statistics, by name;
    - :meth:`apply`: ``(batch, state) -> batch``, vectorized and pure;
    - :meth:`row_function` (optional): a fast single-record version of :meth:`apply`;
    - :meth:`check` (optional): validate parameters and input column types at fit.
    """

    columns: Any = None

    # -------------------------------------------------------------------- parameters (scikit-learn's rules)
    @classmethod
    def param_names(cls) -> list[str]:
        """The names of the parameters of ``__init__``, in order."""
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self) -> dict[str, Any]:
        """The parameters as passed to ``__init__``."""
        return {name: getattr(self, name) for name in self.param_names()}

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        shown = [f"{k}={v!r}" for k, v in self.get_params().items()
                 if k == "columns" or defaults.get(k, inspect.Parameter.empty) is inspect.Parameter.empty
                 or not _same(defaults[k], v)]
        return f"{type(self).__name__}({', '.join(shown)})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and all(
            _same(a, b) for a, b in zip(self.get_params().values(), other.get_params().values()))  # type: ignore

    def __hash__(self) -> int:
        return hash(type(self).__name__)

    # -------------------------------------------------------------------- contract
    def input_columns(self) -> list[str]:
        """The columns this step reads (and replaces)."""
        return _as_list(self.columns)

    def fitted_serving_columns(self, state: dict[str, Any]) -> list[str]:
        """:meth:`serving_columns` once fitted (an estimator's resolved features); default: the same."""
        return self.serving_columns()

    def serving_columns(self) -> list[str]:
        """The input columns a record must carry when transforming (default: every input column; a step that
        only removes columns, like :class:`~beamlearn.Drop`, needs none of them)."""
        return self.input_columns()

    def derive(self, analyzer: Analyzer, state: dict[str, Any]) -> Any | None:
        """The state ``analyzer`` would compute over this step's output, derived from this step's fitted
        ``state`` without reading the data, or None (the default) when it does not follow.  The planner uses it
        to save a pass: the moments of mean-imputed columns are the raw moments, rescaled
        (:meth:`~beamlearn.SimpleImputer.derive`)."""
        return None

    reads_dictionary: bool = False
    """True when :meth:`apply` takes its string input columns dictionary-encoded exactly as decoded, and replaces
    them (encoders): an engine may then read them encoded (:meth:`~beamlearn.FittedPipeline.encoded_columns`)."""

    waits_for_previous: bool = False
    """When true the step is planned only after every earlier step is fitted (estimators, whose ``features``
    may name outputs of any earlier step)."""

    def analyzers(self) -> dict[str, Analyzer]:
        """Named full-pass statistics this step needs; empty for a stateless step."""
        return {}

    def plan(self, schema: pa.Schema, origins: dict[str, tuple[str, ...]]) -> dict[str, Analyzer]:
        """The analyzers to run, given the schema of this step's input and, for each column in it, the original
        input columns it derives from.  The default returns :meth:`analyzers`; override it when the statistics
        depend on the schema (e.g. features given as globs)."""
        return self.analyzers()

    def check(self, schema: pa.Schema) -> None:
        """Validate parameters against the input schema the step will see; raise SpecError/SchemaError."""
        for c in self.input_columns():
            if c not in schema.names:
                raise SchemaError(f"{type(self).__name__} needs this column, which is not in the data "
                                  f"(columns: {', '.join(schema.names)})", column=c)

    def apply(self, batch: pa.RecordBatch, state: dict[str, Any]) -> pa.RecordBatch:
        """Transform a batch with the fitted ``state``: vectorized, no I/O."""
        raise NotImplementedError

    def row_function(self, state: dict[str, Any], schema: pa.Schema) -> RowFn:
        """A function transforming one record (a dict) in place and returning it.

        ``schema`` is the schema of this step's input.  The default runs :meth:`apply` on a one-row batch.
        """
        names = schema.names

        def run(row: dict) -> dict:
            batch = pa.RecordBatch.from_pylist([{n: row.get(n) for n in names}], schema=schema)
            out = self.apply(batch, state).to_pylist()[0]
            for c in names:
                if c not in out:
                    row.pop(c, None)
            row.update(out)
            return row

        return run

    def describe(self, state: dict[str, Any]) -> dict[str, Any]:
        """A human-readable summary of the fitted state, for ``beamlearn inspect``."""
        return {}

    # -------------------------------------------------------------------- helpers for subclasses
    def _check_choice(self, name: str, allowed: Iterable[Any]) -> None:
        allowed = list(allowed)
        value = getattr(self, name)
        if value not in allowed:
            raise SpecError(f"{type(self).__name__}: {name}={value!r} is not one of "
                            + ", ".join(repr(a) for a in allowed))

    def _check_kind(self, schema: pa.Schema, kinds: Iterable[str]) -> None:
        kinds = tuple(kinds)
        for c in self.input_columns():
            kind = column_kind(schema.field(c).type)
            if kind not in kinds and not pa.types.is_null(schema.field(c).type):
                raise SchemaError(f"{type(self).__name__} needs a {' or '.join(kinds)} column, got "
                                  f"{schema.field(c).type}", column=c)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - arrays and other exotic parameters
        return a is b


# ---------------------------------------------------------------------------------------------- columns
def replace_columns(batch: pa.RecordBatch, inputs: Sequence[str],
                    outputs: Sequence[tuple[str, pa.Array]]) -> pa.RecordBatch:
    """Remove ``inputs`` from ``batch`` and insert ``outputs`` where the first input was.

    Every other column passes through in its place.  An output named like a passed-through column is an error
    (it would silently shadow data).
    """
    drop = set(inputs)
    names = batch.schema.names
    pos = min((names.index(c) for c in inputs if c in names), default=len(names))
    kept = [(n, a) for n, a in zip(names, batch.columns) if n not in drop]
    kept_names = {n for n, _ in kept}
    seen: set[str] = set()
    for n, _ in outputs:
        if n in kept_names or n in seen:
            raise SchemaError("output column name collides with another column; rename or drop one of them",
                              column=n)
        seen.add(n)
    before = sum(1 for n in names[:pos] if n not in drop)
    cols = kept[:before] + list(outputs) + kept[before:]
    if not cols:
        return pa.RecordBatch.from_pylist([])
    return pa.RecordBatch.from_arrays([a for _, a in cols], names=[n for n, _ in cols])


def map_columns(batch: pa.RecordBatch, columns: Sequence[str],
                fn: Callable[[np.ndarray, int], np.ndarray]) -> pa.RecordBatch:
    """Apply ``fn(values, i)`` to each numeric column ``columns[i]``, under the same name and in the same place.

    ``values`` is a read-only float64 view of the column (zero-copy; the slots of nulls hold arbitrary numbers,
    NaN stays NaN).  The output is float64 and null exactly where the input was null, so missing values stay
    missing and ``fn`` needs no masking: it must be elementwise.
    """
    arrays = list(batch.columns)
    names = batch.schema.names
    for i, c in enumerate(columns):
        j = names.index(c)
        x, _ = raw_values(arrays[j])
        arrays[j] = with_validity(np.asarray(fn(x, i), dtype=np.float64), arrays[j])
    return pa.RecordBatch.from_arrays(arrays, names=names)
