"""Incremental fit: merge the statistics of new data into a fitted pipeline without reading the old data again.

A fit keeps, per step, the final accumulators of the analyzers that produced its state (plain data, stored in
the artifact).  :func:`update` runs the plan's first pass on the new data only, merges each saved accumulator
with the new one and extracts the new states, so ``fitted.update(a).update(b)`` equals a fit on ``a ∪ b``:
counts, extrema and vocabularies identical, moments within rtol 1e-12.

What is exact: every step whose statistics are all computed in the first pass of the fit on raw (or
statelessly transformed) columns — scalers, imputers, one-hot/ordinal encoders, vocabularies, linear and ridge
regression (normal equations), and their combinations when they read different columns.  What raises
:class:`~beamlearn.errors.UpdateError` (naming the step): a step whose statistics need a further pass (exact
quantiles: RobustScaler, QuantileTransformer, quantile bins; iterative models: logistic regression, k-means) or
were computed on the output of an earlier fitted step (e.g. an imputer then a scaler on the same column).
Quantile steps fitted with ``approx: true`` keep their KLL sketches and update (within the sketch's bound).

``half_life`` forgets old data exponentially, for drifting streams: before the merge the saved statistics are
down-weighted by ``0.5 ** (new rows / half_life)`` (a number of rows) or ``0.5 ** (elapsed / half_life)`` (a
duration such as ``"7d"``, ``"12h"``, ``"30m"``, ``"90s"`` or a :class:`datetime.timedelta`, elapsed since the
last fit or update).  Counts, moments, co-moments (linear models) and vocabulary counts decay; extrema and row
counts do not (an extreme does not fade); a KLL sketch cannot be down-weighted and raises.

Examples
--------
>>> import beamlearn as bl
>>> fitted = bl.Pipeline([bl.StandardScaler(["x"])]).fit({"x": [1.0, 2.0]})
>>> fitted.update({"x": [3.0, 4.0]}).states[0]["moments"]["mean"].tolist()
[2.5]
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

from beamlearn import io
from beamlearn.batches import DEFAULT_BATCH_SIZE
from beamlearn.engines.passes import (
    add_batch,
    conformed,
    create_accumulators,
    data_fingerprint,
    finish,
    required_columns,
)
from beamlearn.errors import ArtifactError, DataError, UpdateError
from beamlearn.pipeline import PROFILE, FitPlan, FittedPipeline, provide
from beamlearn.version import __version__

__all__ = ["update"]


def update(fitted: FittedPipeline, data: Any, *, approx: bool = False, half_life: Any = None,
           batch_size: int = DEFAULT_BATCH_SIZE, errors: Any = "raise",
           lineage: dict[str, Any] | None = None) -> FittedPipeline:
    """A new :class:`~beamlearn.pipeline.FittedPipeline` fitted on the old data and ``data`` (which must match
    the fitted input schema), reading ``data`` only (once per pass of the plan).  ``errors``: as for
    :meth:`~beamlearn.Pipeline.fit`.

    ``approx=True`` also updates steps whose statistics were computed on the output of an earlier fitted step
    (a later pass): the new data is read through the updated earlier steps and merged with the old accumulators,
    which were computed through the old ones, so the result is approximate (it is exact when the earlier states
    did not change).  Raises :class:`~beamlearn.errors.UpdateError` when ``fitted`` kept no accumulators (fitted
    by an older beamlearn, or on an engine that does not keep them), or a step's state cannot be merged (exact
    quantiles, iterative models), or needs ``approx=True``.  ``half_life``: see the module docstring."""
    t0 = time.perf_counter()
    saved = _checked(fitted, approx)
    now = dt.datetime.now(dt.timezone.utc)
    span = half_life_of(half_life)
    plan = FitPlan(fitted.steps, fitted.input_schema)
    required = required_columns(fitted.steps, fitted.input_schema)
    dead = io.dead_letter_sink(errors)
    rows, first = 0, True
    try:
        while not plan.done():
            pass_ = plan.next_pass()
            accs = create_accumulators(pass_)
            for batch in conformed(data, fitted.input_schema, required, dead, first, batch_size=batch_size,
                                   columns=pass_.input_columns()):
                n = add_batch(pass_, accs, batch, dead, first)
                rows += n if first else 0
            if first and rows == 0:
                raise DataError("no data to update with (every row was rejected or the data is empty)")
            factor = 1.0 if span is None else decay_factor(span, rows, _last_time(fitted), now)
            first = False
            plan.complete(pass_, _merged(pass_, accs, saved, factor))
    finally:
        if dead is not None and dead.path:
            dead.close()
    info = {k: v for k, v in fitted.lineage.items() if k != "profile"}
    info.update(lineage or {})
    record = {"rows": rows, "dead_letters": dead.count if dead is not None else 0, "data": data_fingerprint(data),
              "time": now.isoformat(timespec="seconds"), "approx": bool(approx),
              "half_life": None if half_life is None else str(half_life),
              "parent_rows": int(fitted.lineage.get("rows", 0)), "beamlearn": __version__,
              "seconds": round(time.perf_counter() - t0, 6)}
    info["updates"] = [*fitted.lineage.get("updates", []), record]
    new = finish((plan, None), engine=str(fitted.lineage.get("engine", "local")), name=fitted.name, lineage=info,
                 rows=int(fitted.lineage.get("rows", 0)) + rows,
                 dead_letters=int(fitted.lineage.get("dead_letters", 0)) + record["dead_letters"])
    new.lineage["profile"] = plan.profile  # the new data's profile (the old profile's accumulators are not kept)
    return new


def _checked(fitted: FittedPipeline, approx: bool) -> list[dict[str, Any]]:
    """The saved accumulators of every step, or the error saying why ``fitted`` cannot be updated."""
    saved = fitted.accumulators
    if saved is None:
        raise UpdateError("this fitted pipeline kept no accumulators to merge new data into (it was fitted by an "
                          "older beamlearn or on an engine that does not keep them): refit it once with this "
                          f"version (beamlearn {__version__}) and the local engine")
    for i, (step, entry) in enumerate(zip(fitted.steps, saved)):
        name = f"step {i} ({type(step).__name__})"
        if entry is None:
            raise UpdateError(f"{name} cannot be updated: its statistics need another pass over all the data "
                              "(exact quantiles, an iterative model) or cannot be merged; refit on all the data "
                              "(a quantile step fitted with approx: true keeps a mergeable sketch)")
        if not isinstance(entry, dict) or not isinstance(entry.get("accumulators"), dict):
            raise ArtifactError(f"the saved accumulators of {name} are malformed")
        if not entry.get("exact", False) and not approx:
            raise UpdateError(f"{name} was fitted on the output of an earlier fitted step, whose state an update "
                              "changes, so merging its statistics is approximate: pass approx=True (--approx) to "
                              "accept that, or refit on all the data")
    return list(saved)


def half_life_of(half_life: Any) -> float | dt.timedelta | None:
    """``half_life`` as rows (a positive number) or a duration (a :class:`~datetime.timedelta` or ``"7d"``,
    ``"12h"``, ``"30m"``, ``"90s"``), or None; anything else is an :class:`~beamlearn.errors.UpdateError`.

    >>> half_life_of("12h"), half_life_of(1000)
    (datetime.timedelta(seconds=43200), 1000.0)
    """
    if half_life is None:
        return None
    if isinstance(half_life, dt.timedelta):
        span: float | dt.timedelta = half_life
        ok = half_life.total_seconds() > 0
    elif isinstance(half_life, (int, float)) and not isinstance(half_life, bool):
        span, ok = float(half_life), 0 < half_life < float("inf")
    elif isinstance(half_life, str) and (m := re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([dhms])\s*", half_life)):
        span = dt.timedelta(seconds=float(m[1]) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[m[2]])
        ok = span.total_seconds() > 0
    elif isinstance(half_life, str) and re.fullmatch(r"\s*\d+(?:\.\d*)?\s*", half_life):
        span, ok = float(half_life), float(half_life) > 0
    else:
        ok = False
    if not ok:
        raise UpdateError(f"half_life must be a positive number of rows or a duration such as '7d', '12h', '30m' "
                          f"or '90s', not {half_life!r}")
    return span


def decay_factor(span: float | dt.timedelta, rows: int, since: dt.datetime | None, now: dt.datetime) -> float:
    """The weight left to the old statistics: ``0.5 ** (rows / span)`` for a span of rows, else
    ``0.5 ** (elapsed / span)`` with the time elapsed since ``since`` (the last fit or update).

    >>> decay_factor(100.0, 200, None, dt.datetime.now())
    0.25
    """
    if not isinstance(span, dt.timedelta):
        return 0.5 ** (rows / span)
    if since is None:
        raise UpdateError("a half_life in time needs the time of the last fit or update, which this fitted "
                          "pipeline does not record (fitted by an older beamlearn): give it in rows instead")
    elapsed = max((now - since).total_seconds(), 0.0)
    return 0.5 ** (elapsed / span.total_seconds())


def _last_time(fitted: FittedPipeline) -> dt.datetime | None:
    """When ``fitted``'s statistics were last fitted or updated (from its lineage), or None."""
    updates = fitted.lineage.get("updates") or []
    stamp = updates[-1].get("time") if updates else fitted.lineage.get("fitted_at")
    try:
        t = dt.datetime.fromisoformat(str(stamp)) if stamp else None
    except ValueError:
        return None
    return t if t is None or t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _merged(pass_: Any, accs: list[Any], saved: list[dict[str, Any]], factor: float = 1.0) -> list[Any]:
    """The states of ``pass_``: each analyzer's new accumulator merged with the saved one (if any), the saved
    one first down-weighted by ``factor`` (:meth:`~beamlearn.analyzers.Analyzer.decay`)."""
    merged, states = [], []
    for a, acc, owners in zip(pass_.analyzers, accs, pass_.owners):
        old = next((saved[i]["accumulators"][n] for i, n in owners
                    if i != PROFILE and n in saved[i]["accumulators"]), None)
        try:
            if old is not None:
                old = a.load(old)
                if factor != 1.0:
                    old = a.decay(old, factor)
                    if old is None:
                        raise UpdateError(f"step {owners[0][0]}: its statistic {owners[0][1]!r} ({type(a).__name__})"
                                          " cannot be down-weighted, so half_life does not apply to it")
            m = acc if old is None else a.merge([old, acc])
            states.append(a.extract(m))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"the saved accumulator {owners[0][1]!r} of step {owners[0][0]} does not match "
                                f"its analyzer {a!r} ({type(exc).__name__}: {exc})") from None
        merged.append(m)
    pass_.merged = merged  # the plan keeps them: the updated pipeline can be updated again
    return states


provide("update", update)
