"""The analyzer contract (:class:`Analyzer`), :class:`Constant`, :func:`run_analyzer` and the helpers every
analyzer shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn.batches import float_values


class Analyzer:
    """Base class of mergeable reductions (see the module docstring for the contract).

    Subclasses store their parameters verbatim in ``__init__``; :meth:`key` is derived from them, so two
    analyzers with equal keys compute the same state and an engine may compute it once.
    """

    columns: tuple[str, ...] = ()
    reads_dictionary: bool = False
    """True when :meth:`add` takes a dictionary-encoded string column exactly as the decoded strings (an engine
    may then read such columns encoded: no string is built; :meth:`~beamlearn.pipeline.Pass.encoded_columns`)."""

    mergeable_state: bool = True
    """False when a saved accumulator cannot be merged with one of new data (:meth:`FittedPipeline.update`)."""

    def dump(self, acc: Any) -> Any:
        """The accumulator as plain data (numbers, strings, lists, dicts, numpy arrays), for an artifact."""
        return acc

    def load(self, plain: Any) -> Any:
        """The inverse of :meth:`dump`."""
        return plain

    def decay(self, acc: Any, factor: float) -> Any | None:
        """The accumulator with every row's weight multiplied by ``factor`` (0 < factor <= 1), for an update
        with exponential forgetting; ``None`` when the statistic cannot be down-weighted."""
        return None

    def key(self) -> tuple:
        """A hashable identity: the class and its parameters."""
        return (type(self).__name__,) + tuple(sorted((k, freeze(v)) for k, v in vars(self).items()))

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"

    def create(self) -> Any:
        raise NotImplementedError

    def add(self, acc: Any, batch: pa.RecordBatch) -> Any:
        raise NotImplementedError

    def merge(self, accs: Sequence[Any]) -> Any:
        raise NotImplementedError

    def extract(self, acc: Any) -> Any:
        raise NotImplementedError

    def then(self, state: Any) -> Analyzer | None:
        """The analyzer of the next pass, given this pass's state; ``None`` when the statistic is complete."""
        return None

    def reads(self) -> tuple[str, ...] | None:
        """Every column :meth:`add` reads, or None when the analyzer does not declare them (an engine then
        reads every column).  Engines use it to read only the columns a pass needs."""
        return None

    def _reads(self, *extra: str | None) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self.columns, *(c for c in extra if c)]))


class Constant(Analyzer):
    """A statistic known at planning time (e.g. an estimator's resolved feature list): no data is read, the
    state is ``value``.  It lets plan-time facts travel with the fitted state through every engine.

    >>> run_analyzer(Constant(["a", "b"]), [])
    ['a', 'b']
    """

    def __init__(self, value: Any) -> None:
        self.value = value

    def reads(self) -> tuple[str, ...]:
        return ()

    def create(self) -> None:
        return None

    def add(self, acc: None, batch: pa.RecordBatch) -> None:
        return None

    def merge(self, accs: Sequence[None]) -> None:
        return None

    def extract(self, acc: None) -> Any:
        return self.value


def freeze(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(freeze(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, freeze(x)) for k, x in v.items()))
    if isinstance(v, np.ndarray):
        return ("ndarray", v.dtype.str, v.shape, v.tobytes())
    return v


def run_analyzer(analyzer: Analyzer, batches: Sequence[pa.RecordBatch]) -> Any:
    """Run ``analyzer`` (and the passes it asks for) over in-memory batches; a convenience for tests and docs."""
    state = None
    current: Analyzer | None = analyzer
    while current is not None:
        acc = current.create()
        for b in batches:
            acc = current.add(acc, b)
        state = current.extract(acc)
        current = current.then(state)
    return state


def batch_weights(batch: pa.RecordBatch, weight: str | None) -> np.ndarray | None:
    if weight is None:
        return None
    w = float_values(batch.column(weight))
    return np.where(np.isnan(w), 0.0, w)
