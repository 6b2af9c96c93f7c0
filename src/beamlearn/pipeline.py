"""Pipeline (an unfitted plan of steps) and FittedPipeline (immutable steps + fitted states).

Fitting is planned in passes.  In each pass every analyzer whose input columns are ready is run, all of them
fused into one read of the data; a step that reads the output of a step not yet fitted waits for a later pass,
and an analyzer that needs another pass (exact quantiles, iterative estimators) asks for it through
:meth:`~beamlearn.analyzers.Analyzer.then`.  :class:`FitPlan` is that planner; engines drive it and know nothing
about any particular step.

Examples
--------
>>> import beamlearn as bl
>>> fitted = bl.Pipeline([bl.SimpleImputer(["x"]), bl.StandardScaler(["x"])]).fit({"x": [1.0, None, 3.0]})
>>> fitted.transform({"x": [1.0, None]}).column("x").to_pylist()
[-1.224744871391589, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from beamlearn import io
from beamlearn.analyzers import Analyzer, MinMax, Moments, RowCount
from beamlearn.analyzers.profile import COMPACT_PROFILE, ColumnProfile
from beamlearn.batches import DEFAULT_BATCH_SIZE, column_kind, empty_batch
from beamlearn.errors import BeamlearnError, SchemaError, SpecError
from beamlearn.rows import compile_row
from beamlearn.steps.base import Step

__all__ = ["FitPlan", "FittedPipeline", "Pass", "Pipeline", "provide"]

PROFILE = -1  # pseudo step index of the training profile computed alongside the first pass

_PROVIDED: dict[str, Any] = {}
ROLES = ("engine", "save", "update", "to_sklearn", "to_onnx")


def provide(role: str, implementation: Any) -> None:
    """Install what the conveniences of this module call, so that this module imports no engine and no
    artifact code (the arrows of the house point one way): ``"engine"``, the class :meth:`Pipeline.fit`,
    :meth:`FittedPipeline.transform` and :meth:`FittedPipeline.iter_batches` run (the local engine provides
    itself when imported), and ``"save"``, what :meth:`FittedPipeline.save` calls (:mod:`beamlearn.artifact`
    provides it).  ``import beamlearn`` imports both; :mod:`beamlearn.interop` provides ``"to_sklearn"`` and ``"to_onnx"``."""
    if role not in ROLES:
        raise SpecError(f"provide: unknown role {role!r} (expected one of {', '.join(map(repr, ROLES))})")
    _PROVIDED[role] = implementation


def _provided(role: str) -> Any:
    try:
        return _PROVIDED[role]
    except KeyError:
        raise BeamlearnError(f"no {role} is installed: import beamlearn (it installs the local engine and the "
                             "artifact writer)") from None


class Pipeline:
    """An ordered list of steps; :meth:`fit` turns it into a :class:`FittedPipeline`.

    Parameters
    ----------
    steps:
        The steps, applied in order.  Each replaces its input columns by its outputs; other columns pass through.
    name:
        An optional name, recorded in artifacts.
    """

    def __init__(self, steps: Sequence[Step], *, name: str | None = None) -> None:
        self.steps, self.name = list(steps), name
        for s in self.steps:
            if not isinstance(s, Step):
                raise SpecError(f"a pipeline step must be a beamlearn Step, got {type(s).__name__}")

    def __repr__(self) -> str:
        return "Pipeline([" + ", ".join(map(repr, self.steps)) + "])"

    def fit(self, data: Any, *, batch_size: int = DEFAULT_BATCH_SIZE, schema: pa.Schema | None = None,
            errors: Any = "raise", progress: Callable[[int], None] | None = None,
            lineage: dict[str, Any] | None = None) -> FittedPipeline:
        """Fit every step in as few passes over ``data`` as its statistics need (in this process).

        ``data`` is anything :func:`beamlearn.io.read` accepts: a table, a DataFrame, dict rows, file paths or
        globs, or a function returning an iterable of RecordBatches.  ``errors`` is ``"raise"`` (default) or a
        dead-letter destination (a path, or a :class:`~beamlearn.io.DeadLetters`): rows that cannot be cast are
        then routed there with their reason, and excluded from every statistic.
        """
        return _provided("engine")(batch_size=batch_size, errors=errors, progress=progress).fit(
            self, data, schema=schema, lineage=lineage)


def _origin_of(column: str, inputs: Sequence[str], origins: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The original columns an output of a step derives from: the input whose name it carries (``x``, ``x_*``,
    ``missingindicator_x``; the longest such name wins), else every input of the step."""
    named = [x for x in inputs if column == x or column.startswith(x + "_") or column == f"missingindicator_{x}"]
    src = [max(named, key=len)] if named else list(inputs)
    return tuple(sorted({o for x in src for o in origins.get(x, (x,))})) or (column,)


def step_seeds(steps: Sequence[Step]) -> dict[str, Any]:
    """The seeds of a pipeline for its lineage: ``{"<index>:<Step>": random_state}`` for steps that have one."""
    return {f"{i}:{type(s).__name__}": s.random_state for i, s in enumerate(steps)
            if "random_state" in s.param_names()}


# ---------------------------------------------------------------------------------------------- planning
@dataclass
class Pass:
    """One read of the data: the analyzers to run and how to compute the batch each one sees."""

    analyzers: list[Analyzer]                    # deduplicated, in a stable order
    positions: list[int]                         # the step index whose input each analyzer reads
    apply_steps: list[int]                       # steps (fitted or stateless) applied on the way
    owners: list[list[tuple[int, str]]]          # (step index, analyzer name) served by each analyzer
    steps: list[Step] = field(repr=False, default_factory=list)
    states: list[Any] = field(repr=False, default_factory=list)
    merged: list[Any] | None = field(repr=False, default=None)  # final accumulators (set by extract_states)

    def views(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        """The batch each analyzer reads: ``batch`` taken through the applicable steps before its position."""
        wanted = sorted(set(self.positions))
        at: dict[int, pa.RecordBatch] = {}
        view, k = batch, 0
        applicable = set(self.apply_steps)
        for pos in wanted:
            while k < pos:
                if k in applicable:
                    view = self.steps[k].apply(view, self.states[k])
                k += 1
            at[pos] = view
        return [at[p] for p in self.positions]

    def encoded_columns(self) -> list[str]:
        """The columns that only analyzers taking dictionary-encoded strings read in this pass (no step applied
        on the way reads them): an engine may read those string columns encoded (:func:`beamlearn.io.read_file`).
        """
        stepped = self._stepped()
        ok: set[str] = set()
        other: set[str] = set()
        for a in self.analyzers:
            cols = a.reads()
            if cols is None or stepped is None:
                return []
            (ok if a.reads_dictionary else other).update(cols)
        return sorted(ok - other - (stepped or set()))

    def input_columns(self) -> list[str] | None:
        """The columns :meth:`views` reads: those of the analyzers and of every step applied before them; None
        (every column) when an analyzer does not declare its columns or an estimator is applied on the way.
        An engine reading files reads only these (columns made by a step are simply absent from the file)."""
        needed = self._stepped()
        for a in self.analyzers:
            cols = a.reads()
            if cols is None or needed is None:
                return None
            needed.update(cols)
        return None if needed is None else sorted(needed)

    def _stepped(self) -> set[str] | None:
        """The columns the steps applied on the way to the analyzers read; None when one is an estimator (it may
        read any column)."""
        last = max(self.positions, default=0)
        out: set[str] = set()
        for k in self.apply_steps:
            if k < last:
                step = self.steps[k]
                if getattr(step, "waits_for_previous", False):
                    return None
                out.update(step.input_columns())
                out.update(step.fitted_serving_columns(self.states[k]))
        return out


class FitPlan:
    """Plans passes over the data until every step of a pipeline has its state.

    A step is planned (its :meth:`~beamlearn.steps.Step.plan` called for its analyzers) when the schema of its
    input is known: when every column it reads exists and no step it may depend on is still unfitted.
    """

    def __init__(self, steps: Sequence[Step], input_schema: pa.Schema, *, profile: bool = True) -> None:
        self.steps, self.input_schema = list(steps), input_schema
        self.states: list[dict[str, Any] | None] = [None] * len(self.steps)
        self.pending: dict[int, dict[str, Analyzer]] = {}
        self.partial: dict[int, dict[str, Any]] = {}
        self.planned: set[int] = set()
        self.checked: set[int] = set()
        self.passes = 0
        self.accumulators: dict[int, dict[str, tuple[Analyzer, Any, bool]]] = {}  # final, mergeable; exact?
        self.derived: set[tuple[int, str]] = set()  # statistics derived from fitted states (Step.derive)
        self.chained: set[tuple[int, str]] = set()  # statistics that asked for a further pass
        numeric = [f.name for f in input_schema if column_kind(f.type) == "numeric"]
        self.profile: dict[str, Any] = {}
        if profile:  # "columns": a compact profile (KLL, frequent items), the reference of `beamlearn drift`
            self.pending[PROFILE] = {"count": RowCount(input_schema.names)}
            if not any(getattr(s, "profiles_input", False) for s in self.steps):  # else that step's state is it
                self.pending[PROFILE].update({"moments": Moments(numeric), "range": MinMax(numeric), "columns":
                                              ColumnProfile([(f.name, column_kind(f.type), str(f.type))
                                                             for f in input_schema], **COMPACT_PROFILE)})

    def done(self) -> bool:
        """True when every step has its state (plans stateless steps that became reachable)."""
        if self.pending:
            return False
        if any(s is None for s in self.states):
            self._walk()
        return not self.pending and all(s is not None for s in self.states)

    def next_pass(self) -> Pass:
        """The analyzers that can run now, fused into one pass."""
        pass_ = self._walk()
        if not pass_.analyzers:
            raise BeamlearnError("internal planning error: no analyzer is ready but steps are unfitted: "
                                 + ", ".join(repr(self.steps[i]) for i, s in enumerate(self.states) if s is None))
        self.passes += 1
        return pass_

    def _walk(self) -> Pass:
        view = self.input_schema
        origins: dict[str, tuple[str, ...]] = {c: (c,) for c in view.names}
        skipped = False
        applied: list[int] = []
        touched: dict[int, set[str]] = {}
        items: dict[tuple, int] = {}
        analyzers: list[Analyzer] = []
        positions: list[int] = []
        owners: list[list[tuple[int, str]]] = []

        def add(i: int, pos: int) -> None:
            for name, a in self.pending[i].items():
                cols = set(a.columns)
                sig = tuple(k for k in applied if touched[k] & cols)
                key = (a.key(), sig)
                if key in items:
                    owners[items[key]].append((i, name))
                else:
                    items[key] = len(analyzers)
                    analyzers.append(a)
                    positions.append(pos)
                    owners.append([(i, name)])

        if PROFILE in self.pending:
            add(PROFILE, 0)
        for i, step in enumerate(self.steps):
            waits = getattr(step, "waits_for_previous", False)
            inputs = [] if waits else step.input_columns()
            if waits and skipped:
                continue
            missing = [c for c in inputs if c not in view.names]
            if missing:
                if skipped:  # produced by a step not fitted yet: wait
                    view = pa.schema([f for f in view if f.name not in inputs])
                    continue
                step.check(view)  # raises the clear missing-column error
                raise SchemaError("column not found", column=missing[0])
            if i not in self.checked:
                step.check(view)
                self.checked.add(i)
            if i not in self.planned:
                self.planned.add(i)
                an = step.plan(view, origins)
                if an:
                    self.pending[i] = dict(an)
                else:
                    self.states[i] = {}
            if self.states[i] is None:
                if i in self.pending:
                    add(i, i)
                view = pa.schema([f for f in view if f.name not in inputs])
                skipped = True
                continue
            after = step.apply(empty_batch(view), self.states[i]).schema
            new = set(after.names) - set(view.names)
            touched[i] = set(inputs) | new
            for c in new | (set(inputs) & set(after.names)):
                origins[c] = _origin_of(c, inputs, origins)
            applied.append(i)
            view = after
        order = sorted(range(len(analyzers)), key=lambda j: owners[j][0][0] == PROFILE)  # the profile's last: it
        return Pass([analyzers[j] for j in order], [positions[j] for j in order], applied,  # reuses what the
                    [owners[j] for j in order], self.steps, self.states)  # steps' analyzers computed (counts)

    def complete(self, pass_: Pass, states: Sequence[Any]) -> None:
        """Record the extracted state of each analyzer of ``pass_``; steps whose analyzers all finished are
        fitted, and analyzers that ask for another pass are scheduled.  Statistics that follow from fitted
        states (:meth:`~beamlearn.steps.Step.derive`) are then recorded without a pass."""
        self._record(pass_, states)
        while True:
            nxt = self._walk()
            derived = [self._derived(a, pos, nxt) for a, pos in zip(nxt.analyzers, nxt.positions)]
            keep = [i for i, d in enumerate(derived) if d is not None]
            if not keep:
                return
            self._record(Pass([nxt.analyzers[i] for i in keep], [nxt.positions[i] for i in keep], nxt.apply_steps,
                              [nxt.owners[i] for i in keep]), [derived[i] for i in keep], derived=True)

    def _derived(self, a: Analyzer, pos: int, pass_: Pass) -> Any | None:
        """``a``'s state derived from the fitted step just before it on its columns, if that step can."""
        cols = set(a.columns)
        touching = [k for k in pass_.apply_steps if k < pos and cols & set(self.steps[k].input_columns())]
        if not touching or not cols <= set(self.steps[touching[-1]].input_columns()):
            return None
        k = touching[-1]
        return self.steps[k].derive(a, self.states[k])  # type: ignore[arg-type]

    def _record(self, pass_: Pass, states: Sequence[Any], derived: bool = False) -> None:
        merged = pass_.merged if pass_.merged is not None else [None] * len(states)
        for a, state, owners, acc in zip(pass_.analyzers, states, pass_.owners, merged):
            nxt = a.then(state)
            keep = pass_.merged is not None and nxt is None and a.mergeable_state
            for i, name in owners:
                if keep:  # exact when read in the first pass (no fitted step on the way)
                    self.accumulators.setdefault(i, {})[name] = (a, acc, self.passes == 1)
                elif derived and nxt is None:  # follows from fitted states: an update derives it again
                    self.derived.add((i, name))
                if nxt is not None:  # a multi-pass statistic (exact quantiles, iterations): its last pass alone
                    self.chained.add((i, name))  # does not merge
                    self.pending[i][name] = nxt
                else:
                    self.partial.setdefault(i, {})[name] = state
                    del self.pending[i][name]
        for i in [i for i, p in self.pending.items() if not p]:
            del self.pending[i]
            if i == PROFILE:
                self.profile = self.partial.pop(i)
            else:
                self.states[i] = self.partial.pop(i)


# ---------------------------------------------------------------------------------------------- fitted
class FittedPipeline:
    """An immutable fitted pipeline: steps, their states, and the schemas around them.

    Built by :meth:`Pipeline.fit` or :func:`beamlearn.load`.
    """

    def __init__(self, steps: Sequence[Step], states: Sequence[dict[str, Any]], input_schema: pa.Schema,
                 *, name: str | None = None, lineage: dict[str, Any] | None = None,
                 accumulators: Sequence[dict[str, Any] | None] | None = None) -> None:
        self._steps, self._states = tuple(steps), tuple(states)
        # per step {"exact": bool, "accumulators": {name: plain data}} (None: not mergeable), for update()
        self.accumulators = tuple(accumulators) if accumulators is not None else None
        self.input_schema, self.name, self.lineage = input_schema, name, dict(lineage or {})
        self.required_columns = self._required()
        self.step_schemas: list[pa.Schema] = []
        batch = empty_batch(input_schema)
        for s, st in zip(self._steps, self._states):
            self.step_schemas.append(batch.schema)
            batch = s.apply(batch, st)
        self.output_schema: pa.Schema = batch.schema
        self._row_fn: Callable[[dict], dict] | None = None

    def encoded_columns(self) -> list[str]:
        """Input columns whose first reader is a step that takes them dictionary-encoded and replaces them (an
        encoder): an engine may read such string columns encoded (:func:`beamlearn.io.read_file`); they never
        reach the output."""
        original, seen, out = set(self.input_schema.names), set(), []
        for s, st in zip(self._steps, self._states):
            reads = list(s.input_columns()) + list(s.fitted_serving_columns(st))
            for c in reads:
                if c in original and c not in seen:
                    seen.add(c)
                    if s.reads_dictionary and c in s.input_columns():
                        out.append(c)
            original -= set(s.input_columns())
        return out

    def _required(self) -> list[str]:
        """Original input columns that some step reads before any step replaces them."""
        original = set(self.input_schema.names)
        required: list[str] = []
        for s, st in zip(self._steps, self._states):
            for c in s.fitted_serving_columns(st):
                if c in original and c not in required:
                    required.append(c)
            original -= set(s.input_columns())
        return required

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_row_fn"] = None  # a compiled closure: rebuilt on demand after unpickling (Beam moves this object)
        return state

    @property
    def steps(self) -> tuple[Step, ...]:
        return self._steps

    @property
    def states(self) -> tuple[dict[str, Any], ...]:
        return self._states

    def __repr__(self) -> str:
        return f"FittedPipeline({len(self._steps)} steps, {len(self.output_schema)} output columns)"

    # -------------------------------------------------------------------- batch transform
    def transform_batch(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Apply every step to one batch already conformed to the input schema."""
        for s, st in zip(self._steps, self._states):
            batch = s.apply(batch, st)
        return batch

    def iter_batches(self, data: Any, *, batch_size: int = DEFAULT_BATCH_SIZE, errors: Any = "raise",
                     progress: Callable[[int], None] | None = None) -> Iterator[pa.RecordBatch]:
        """Transformed batches, one per input batch: constant memory, for feeding other trainers."""
        return _provided("engine")(batch_size=batch_size, errors=errors, progress=progress).transform(self, data)

    def transform(self, data: Any, *, output: str = "arrow", batch_size: int = DEFAULT_BATCH_SIZE,
                  errors: Any = "raise", out: str | None = None,
                  progress: Callable[[int], None] | None = None) -> Any:
        """Transform ``data``: a pyarrow Table (``output="arrow"``), a pandas DataFrame (``"pandas"``), a Polars
        DataFrame (``"polars"``, zero-copy from Arrow), a 2-D float64 numpy array of the output columns (``"numpy"``), or files written to ``out`` (CSV, Parquet or
        JSON lines by extension), returning the number of rows written."""
        batches = self.iter_batches(data, batch_size=batch_size, errors=errors, progress=progress)
        if out is not None:
            return io.write_batches(batches, out, schema=self.output_schema)
        collected = list(batches)
        table = pa.Table.from_batches(collected) if collected else self.output_schema.empty_table()
        if output == "arrow":
            return table
        if output == "pandas":
            return table.to_pandas()
        if output == "numpy":
            return io.table_to_numpy(table)
        if output == "polars":
            import polars as pl  # an optional dependency (the interop extra), never on the serving path

            return pl.from_arrow(table)
        raise SpecError(f"output={output!r} is not one of 'arrow', 'pandas', 'polars', 'numpy'")

    # -------------------------------------------------------------------- single records
    def transform_one(self, record: dict[str, Any]) -> dict[str, Any]:
        """Transform one record (a dict) into a dense dict in ``output_schema`` order.

        The serving path: no pandas, no schema inference, the input validated (a missing required column or a
        value of the wrong type raises :class:`~beamlearn.errors.DataError` naming the column).
        """
        fn = self._row_fn
        if fn is None:
            fn = self._row_fn = compile_row(self)
        return fn(record)

    # -------------------------------------------------------------------- persistence and description
    def save(self, path: str) -> str:
        """Write the artifact (one zip file; see :mod:`beamlearn.artifact`) atomically; returns the path."""
        return _provided("save")(self, path)

    def update(self, data: Any, *, approx: bool = False, half_life: Any = None,
               batch_size: int = DEFAULT_BATCH_SIZE, errors: Any = "raise",
               lineage: dict[str, Any] | None = None) -> FittedPipeline:
        """A new fitted pipeline whose statistics also cover ``data``, without reading the old data again
        (:func:`beamlearn.engines.update.update`: what is exact, what needs ``approx=True``, what raises, and
        ``half_life`` to forget old data exponentially)."""
        return _provided("update")(self, data, approx=approx, half_life=half_life, batch_size=batch_size,
                                   errors=errors, lineage=lineage)

    def to_sklearn(self) -> Any:
        """An equal fitted scikit-learn ``ColumnTransformer`` (in a ``Pipeline`` with the estimator when the
        pipeline ends with one): see :func:`beamlearn.interop.sklearn_export.to_sklearn`."""
        return _provided("to_sklearn")(self)

    def to_onnx(self, *, name: str | None = None, layout: str = "columns") -> Any:
        """An ONNX model (``onnx.ModelProto``) computing this transform in float64, one output per column
        (``layout="columns"``) or one matrix (``"matrix"``): see :mod:`beamlearn.interop.onnx`."""
        return _provided("to_onnx")(self, name=name, layout=layout)

    def describe(self) -> list[dict[str, Any]]:
        """Each step's type, parameters and a readable summary of its fitted state."""
        return [{"step": type(s).__name__, "params": s.get_params(), "fitted": s.describe(st)}
                for s, st in zip(self._steps, self._states)]
