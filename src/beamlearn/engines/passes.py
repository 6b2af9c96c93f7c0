"""The engine-neutral pass runner: what every engine does to run a :class:`~beamlearn.pipeline.FitPlan`.

An engine only moves batches and accumulators.  Everything else is here, shared by the local engine, the Beam
engine (and the engines to come): conforming batches to the fit schema with bad rows routed to dead letters
(:func:`conformed`), guarding a step so that the rows it rejects are found and routed (:func:`guard`), adding a
batch to a pass's accumulators (:func:`add_batch`), merging and extracting them (:func:`merge_accumulators`,
:func:`extract_states`), and stepping the plan from pass to pass (:func:`first_pass`, :func:`next_pass`,
:func:`finish`).  A fit's position is a :data:`FitState`, ``(plan, pass)`` with ``pass`` None once the plan is
done: plain picklable data that a Beam side input, a Spark broadcast or a driver loop can carry.

Examples
--------
>>> import beamlearn as bl
>>> import pyarrow as pa
>>> batch = pa.record_batch({"x": [1.0, 2.0, 4.0]})
>>> state = first_pass(bl.Pipeline([bl.StandardScaler(["x"])]).steps, batch.schema)
>>> accs = create_accumulators(state[1])
>>> add_batch(state[1], accs, batch, dead=None)
3
>>> state = next_pass(state, extract_states(state[1], [accs]))
>>> finish(state, engine="doc").states[0]["moments"]["mean"].tolist()
[2.3333333333333335]
"""

from __future__ import annotations

import datetime as dt
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn import io, stores
from beamlearn.analyzers import Analyzer
from beamlearn.batches import batch_origin, batch_rows, conform, is_file_input, source_line, tag_rows
from beamlearn.errors import BeamlearnError, DataError, EngineError
from beamlearn.pipeline import FitPlan, FittedPipeline, Pass, step_seeds
from beamlearn.steps import register_step, registered_steps
from beamlearn.steps.base import Step
from beamlearn.steps.expr import register_function, registered_functions

__all__ = [
    "FitState",
    "Registry",
    "add_batch",
    "conformed",
    "create_accumulators",
    "data_fingerprint",
    "extract_states",
    "find_bad_rows",
    "finish",
    "first_pass",
    "guard",
    "merge_accumulators",
    "next_pass",
    "pass_bound",
    "plan_accumulators",
    "required_columns",
]

FitState = tuple[FitPlan, "Pass | None"]


# ---------------------------------------------------------------------------------------------- rows
def conformed(data: Any, schema: pa.Schema, required: list[str], dead: io.DeadLetters | None, report: bool, *,
              batch_size: int, columns: list[str] | None = None, encoded: Sequence[str] = (),
              progress: Callable[[int], None] | None = None) -> Iterator[pa.RecordBatch]:
    """Batches of ``data`` conformed to ``schema``: bad rows raise, or go to ``dead`` (when ``report``; a later
    pass drops the same rows silently) and are dropped, the kept rows tagged with their rows in the source.
    Files are read for ``columns`` only when that cannot change the rows kept, with the string columns of
    ``encoded`` dictionary-encoded (:func:`beamlearn.io.read_file`)."""
    if not io.is_file_input(data):  # in-memory batches are whole already, with their own encodings
        columns, encoded = None, ()
    for raw in io.read(data, batch_size=batch_size, schema=schema, dead=dead if report else
                       (io.DeadLetters() if dead is not None else None), required=required, columns=columns,
                       encoded=encoded):
        # a projected read checked the required columns it skipped
        need = required if columns is None else [c for c in required if c in raw.schema.names]
        batch, bad = conform(raw, schema, required=need, collect=dead is not None, encoded=encoded)
        if len(bad):
            if report:
                dead.add_rows(raw, bad.indices, bad.columns, bad.reasons)  # type: ignore[union-attr]  # as sent
            keep = np.ones(batch.num_rows, bool)
            keep[bad.indices] = False
            batch = tag_rows(batch.filter(pa.array(keep)), batch_rows(batch)[keep])  # rows in the source
        if report and progress is not None:
            progress(raw.num_rows)
        yield batch


def guard(fn: Callable[[pa.RecordBatch], Any], batch: pa.RecordBatch, dead: io.DeadLetters | None,
          report: bool = True) -> tuple[Any, pa.RecordBatch]:
    """``fn(batch)``; if it raises DataError, find the guilty rows, raise (naming source, row and column) or
    dead-letter them (when ``report``), and rerun on the rest.  Returns the result and the batch it was computed
    on."""
    try:
        return fn(batch), batch
    except DataError:
        pass
    bad = find_bad_rows(fn, batch)
    if not bad:  # the failure needs the whole batch: no single row to blame
        fn(batch)
    source, _ = batch_origin(batch)
    idx = np.array([i for i, _ in bad], dtype=np.int64)
    orig = batch_rows(batch)[idx]  # conformed batches carry the source rows of the rows they kept
    if dead is None:
        i, exc = bad[0]
        raise type(exc)(exc.reason, column=exc.column, source=exc.source or source,
                        row=int(orig[0]), value=exc.value,
                        line=source_line(source, int(orig[0]))) from exc
    if report:
        rows = batch.take(pa.array(idx)).to_pylist()
        for k, (_, exc) in enumerate(bad):
            dead.add(source=source, row=int(orig[k]), column=exc.column, reason=exc.reason,
                     record=rows[k], line=source_line(source, int(orig[k])))
    keep = np.ones(batch.num_rows, bool)
    keep[idx] = False
    rest = batch.filter(pa.array(keep))
    return fn(rest), rest


def find_bad_rows(fn: Callable[[pa.RecordBatch], Any], batch: pa.RecordBatch) -> list[tuple[int, DataError]]:
    """The rows of ``batch`` on which ``fn`` raises DataError, found by bisection (O(bad · log n) calls)."""
    bad: list[tuple[int, DataError]] = []
    stack = [(0, batch.num_rows)]
    while stack:
        lo, hi = stack.pop()
        try:
            fn(batch.slice(lo, hi - lo))
        except DataError as exc:
            if hi - lo == 1:
                bad.append((lo, exc))
            else:
                mid = (lo + hi) // 2
                stack += [(mid, hi), (lo, mid)]
    return sorted(bad, key=lambda t: t[0])


# ---------------------------------------------------------------------------------------------- accumulators
def create_accumulators(pass_: Pass) -> list[Any]:
    """Fresh accumulators, one per analyzer of the pass."""
    return [a.create() for a in pass_.analyzers]


def add_batch(pass_: Pass, accs: list[Any], batch: pa.RecordBatch, dead: io.DeadLetters | None,
              report: bool = True) -> int:
    """Add a conformed batch to ``accs`` (in place), the steps on the way guarded (:func:`guard`); returns the
    rows added."""
    views, batch = guard(pass_.views, batch, dead, report)
    for j, (a, view) in enumerate(zip(pass_.analyzers, views)):
        accs[j] = a.add(accs[j], view)
    return batch.num_rows


def merge_accumulators(analyzers: Sequence[Any], parts: Sequence[list[Any]]) -> list[Any]:
    """Merge several accumulator lists of the same analyzers into one, analyzer by analyzer, in order."""
    return [a.merge([p[j] for p in parts]) for j, a in enumerate(analyzers)]


def extract_states(pass_: Pass, parts: Sequence[list[Any]]) -> list[Any]:
    """The pass's fitted states from its accumulator lists (one per worker or bundle), merged in order."""
    merged = merge_accumulators(pass_.analyzers, parts)
    pass_.merged = merged  # kept by the plan for FittedPipeline.update (engine-neutral)
    return [a.extract(acc) for a, acc in zip(pass_.analyzers, merged)]


# ---------------------------------------------------------------------------------------------- the plan
def required_columns(steps: Sequence[Any], schema: pa.Schema) -> list[str]:
    """The input columns the steps read that the schema has: every batch of a fit must carry them."""
    return [c for s in steps for c in s.input_columns() if c in schema.names]


def _planned(plan: FitPlan, mergeable: bool) -> FitState:
    if plan.done():
        return plan, None
    pass_ = plan.next_pass()
    sequential = [a for a in pass_.analyzers if getattr(a, "sequential", False)]
    if mergeable and sequential:
        raise EngineError(f"{sequential[0]!r} must see the batches in order and cannot merge accumulators, so it "
                          "cannot run on an engine that combines partial results; fit this pipeline with the "
                          "local engine")
    return plan, pass_


def first_pass(steps: Sequence[Any], schema: pa.Schema | None, *, mergeable: bool = True) -> FitState:
    """Plan a fit of ``steps`` on data of ``schema`` and its first pass.  ``mergeable``: the engine combines
    partial accumulators, so a pass whose analyzers must see every batch in order is refused."""
    if schema is None:
        raise DataError("no data to fit on")
    return _planned(FitPlan(steps, schema), mergeable)


def next_pass(state: FitState, states: list[Any] | None, *, copy: bool = False,
              mergeable: bool = True) -> FitState:
    """Complete the current pass with its extracted ``states`` and plan the next one.  ``copy``: work on a copy
    of the plan (a Beam side input is shared; it must not change under its readers)."""
    if copy:
        state = pickle.loads(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))  # safe: our own object
    plan, pass_ = state
    if pass_ is None:
        return plan, None
    if states is None:
        raise DataError("no data to fit on (every row was rejected)")
    plan.complete(pass_, states)
    return _planned(plan, mergeable)


def finish(state: FitState, *, engine: str, name: str | None = None, lineage: dict[str, Any] | None = None,
           rows: int | None = None, dead_letters: int = 0, bound: int | None = None) -> FittedPipeline:
    """The fitted pipeline of a finished plan, its lineage recording the engine, rows (by default the training
    profile's count), dead letters, passes, profile and seeds.  ``bound``: the passes an engine unrolled; a plan
    not done within them is an error."""
    plan, pass_ = state
    if pass_ is not None or not plan.done():
        raise EngineError(f"the fit is not done after {bound} passes (the bound unrolled in the Beam graph); "
                          f"pass a larger max_passes to Fit")
    info = dict(lineage or {})
    info.update({"rows": int(plan.profile["count"]["rows"]) if rows is None else rows,
                 "dead_letters": int(dead_letters), "passes": plan.passes, "profile": plan.profile,
                 "engine": engine, "seeds": step_seeds(plan.steps)})
    info.setdefault("fitted_at", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    return FittedPipeline(plan.steps, plan.states, plan.input_schema, name=name, lineage=info,
                          accumulators=plan_accumulators(plan))


def plan_accumulators(plan: FitPlan) -> list[dict[str, Any] | None]:
    """Per step, ``{"exact": bool, "accumulators": {analyzer name: plain accumulator}}`` when every statistic of
    its state came from a mergeable final accumulator or is derived from fitted states
    (:meth:`~beamlearn.steps.Step.derive`), so :meth:`FittedPipeline.update` can merge new data into it; else
    None.  ``exact``: every accumulator was read in the first pass (on raw columns, no fitted step on the way).
    Stateless steps get ``{"exact": True, "accumulators": {}}``."""
    out: list[dict[str, Any] | None] = []
    for i, st in enumerate(plan.states):
        got = plan.accumulators.get(i, {})
        names = {n for n in st or {} if (i, n) not in plan.derived}
        out.append({"exact": all(e for _, _, e in got.values()),
                    "accumulators": {n: a.dump(acc) for n, (a, acc, _) in got.items()}}
                   if set(got) == names and not any(j == i for j, _ in plan.chained) else None)
    return out


def data_fingerprint(data: Any) -> dict[str, Any]:
    """What the training data was: file names and sizes (URIs with passwords masked; no size for a database
    source), or the kind of in-memory object."""
    if is_file_input(data):
        try:
            files = io.expand_paths(data)
        except BeamlearnError:
            files = []
        return {"files": [{"name": os.path.basename(f.split("?", 1)[0] if io.file_format(f) == "sql" else f),
                           "path": stores.redact(f) if "://" in f else os.path.abspath(f),
                           "bytes": io.source_size(f)} for f in files]}
    return {"in_memory": type(data).__name__}


# ---------------------------------------------------------------------------------------------- workers
class Registry:
    """The custom steps and functions registered on the driver, re-registered on each worker before any step
    runs, so custom steps and ``Function`` steps work on every distributed engine.

    Only what ``steps`` use is shipped when the steps are known (all registered ones otherwise), each as its
    own cloudpickle blob: a worker that cannot import one (a module only the driver has) skips it, and a step
    that needs it then fails with the usual "not registered" error instead of the whole job failing to start.
    """

    def __init__(self, steps: Sequence[Any] | None = None) -> None:
        import cloudpickle  # shipped with the distributed engines (Beam), not needed to serve

        custom = {n: c for n, c in registered_steps().items() if not c.__module__.startswith("beamlearn.")}
        functions = registered_functions()
        if steps is not None:
            used = {type(s).__name__ for s in steps}
            named = {v for s in steps for v in s.get_params().values() if isinstance(v, str)}
            custom = {n: c for n, c in custom.items() if n in used}
            functions = {n: f for n, f in functions.items() if n in named}
        self.steps = {n: cloudpickle.dumps(c) for n, c in custom.items()}
        self.functions = {n: cloudpickle.dumps(f) for n, f in functions.items()}

    def restore(self) -> None:
        """Register here whatever of the driver's steps and functions this process lacks and can import."""
        known, fns = registered_steps(), registered_functions()
        for table, have, register in ((self.steps, known, lambda n, o: register_step(o)),
                                      (self.functions, fns, lambda n, o: register_function(n)(o))):
            for name, blob in table.items():
                if name in have:
                    continue
                try:
                    obj = pickle.loads(blob)  # safe: pickled by this pipeline's own driver
                except Exception:  # noqa: BLE001 - not importable here; a step that needs it says so clearly
                    continue
                register(name, obj)


def pass_bound(steps: Sequence[Any], schema: pa.Schema | None = None) -> int:
    """An upper bound on the passes a fit of ``steps`` takes: the longest chain of dependent statistics.

    A statistic whose analyzer may ask for a further pass (:meth:`~beamlearn.analyzers.Analyzer.then`) counts
    two, an iterative estimator its own ``max_passes()``.  An estimator (``waits_for_previous``) depends on every
    earlier step.  A step depends on an earlier step that reads one of its columns; a
    column not in ``schema`` is produced by a step, so the step reading it depends on every earlier step.  Without
    a schema, a column named after an earlier step's input (``x_a``, ``missingindicator_x``) is taken as that
    step's output.  When a statistic may ask for a further pass, one pass of slack covers a rare repeated
    quantile selection (a sketch bracket that missed).

    Examples
    --------
    >>> import beamlearn as bl
    >>> pass_bound([bl.StandardScaler(["x"]), bl.MinMaxScaler(["y"])])
    1
    >>> pass_bound([bl.StandardScaler(["x"]), bl.MinMaxScaler(["x"])])
    2
    >>> pass_bound([bl.RobustScaler(["x"]), bl.MinMaxScaler(["x"])])  # exact quantiles: two passes, + slack
    4
    """
    depth: list[int] = []
    inputs = [set(s.input_columns()) for s in steps]
    slack = 0

    def derived_from(c: str, j: int) -> bool:
        if schema is not None:
            return c not in schema.names
        return any(c.startswith(x + "_") or c.endswith("_" + x) for x in inputs[j])

    for i, s in enumerate(steps):
        an = s.analyzers()
        own = max([1 if type(a).then is Analyzer.then else 2 for a in an.values()], default=0) if an else 0
        slack = max(slack, 1 if own > 1 else 0)
        if callable(getattr(s, "max_passes", None)):  # iterative estimators bound their own passes
            own, slack = max(own, int(s.max_passes())), max(slack, 1)
        elif an or type(s).plan is not Step.plan:  # analyzers chosen at planning time: assume one
            own = max(own, 1, int(getattr(s, "max_iter", 0) or 0))
        waits = getattr(s, "waits_for_previous", False)  # may read the output of any earlier step
        deps = [depth[j] for j in range(i) if waits or inputs[i] & inputs[j]
                or any(derived_from(c, j) for c in inputs[i])]
        depth.append(own + max(deps, default=0))
    return max(depth, default=0) + slack
