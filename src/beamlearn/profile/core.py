"""Profiles: the :class:`Profiler` step, :func:`profile` (one pass on any engine), :func:`merge_profiles`, and
reading a reference profile from a ``profile.json`` or a fitted model artifact."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from beamlearn.analyzers import Analyzer
from beamlearn.analyzers.profile import ColumnProfile
from beamlearn.batches import DEFAULT_BATCH_SIZE, column_kind
from beamlearn.errors import DataError, SpecError
from beamlearn.steps.base import Step, register_step

__all__ = [
    "ENGINES",
    "PROFILE_FORMAT",
    "PROFILE_VERSION",
    "Profiler",
    "WindowProfiler",
    "fit_on",
    "merge_profiles",
    "profile",
    "profile_fields",
    "profile_windows",
    "read_profile",
    "training_profile",
    "write_profile",
]

PROFILE_FORMAT = "beamlearn.profile"
PROFILE_VERSION = 1
ENGINES = ("local", "beam", "spark")
"""The engines :func:`profile` runs on: any engine that fits a pipeline runs a profile (it is one pass of one
analyzer); another engine needs only its ``run_fit``."""


def profile_fields(schema: pa.Schema, columns: Sequence[str] | None = None) -> list[tuple[str, str, str]]:
    """``(name, kind, type)`` of the columns of ``schema`` (all, or ``columns``) for
    :class:`~beamlearn.analyzers.profile.ColumnProfile`."""
    names = list(columns) if columns is not None else schema.names
    out = []
    for n in names:
        typ = schema.field(n).type
        value = typ.value_type if pa.types.is_dictionary(typ) else typ
        out.append((n, column_kind(value), str(value)))
    return out


@register_step
class Profiler(Step):
    """A step that computes the profile of its input (every column, or ``columns``) and passes it through
    unchanged: fitting ``Pipeline([Profiler()])`` on any engine is a one-pass profile.

    Parameters
    ----------
    columns:
        The columns to profile (default: all).
    k, lg_max_map_size, correlations, distinct, lengths:
        :class:`~beamlearn.analyzers.profile.ColumnProfile`'s parameters.

    Examples
    --------
    >>> import beamlearn as bl
    >>> fitted = bl.Pipeline([Profiler()]).fit({"x": [1.0, 2.0, None]})
    >>> fitted.states[0]["profile"]["columns"]["x"]["nulls"]
    1
    """

    profiles_input = True  # the fit's own training profile would repeat this one: the planner skips it

    def __init__(self, columns: Sequence[str] | None = None, *, k: int = 200, lg_max_map_size: int = 8,
                 correlations: int = 50, distinct: bool = True, lengths: bool = True) -> None:
        self.columns, self.k, self.lg_max_map_size = columns, k, lg_max_map_size
        self.correlations, self.distinct, self.lengths = correlations, distinct, lengths

    def input_columns(self) -> list[str]:
        return []  # reads without replacing: every column passes through

    def check(self, schema: pa.Schema) -> None:
        missing = [c for c in self.columns or () if c not in schema.names]
        if missing:
            raise SpecError(f"Profiler: column {missing[0]!r} is not in the data (columns: {', '.join(schema.names)})")

    def plan(self, schema: pa.Schema, origins: dict[str, tuple[str, ...]]) -> dict[str, Analyzer]:
        return {"profile": ColumnProfile(profile_fields(schema, self.columns), k=self.k,
                                         lg_max_map_size=self.lg_max_map_size, correlations=self.correlations,
                                         distinct=self.distinct, lengths=self.lengths)}

    def apply(self, batch: pa.RecordBatch, state: dict[str, Any]) -> pa.RecordBatch:
        return batch


def profile(data: Any, *, engine: str = "local", columns: Sequence[str] | None = None,
            batch_size: int = DEFAULT_BATCH_SIZE, beam_args: list[str] | None = None, errors: Any = "raise",
            **params: Any) -> dict[str, Any]:
    """The profile of ``data`` (anything :func:`beamlearn.io.read` accepts; files for ``engine="beam"``; files
    or a Spark DataFrame for ``engine="spark"``, ``beam_args`` then Spark's options: :func:`fit_on`), in one
    pass: a JSON-ready dict in the documented ``profile.json`` schema (:mod:`beamlearn.profile`).

    ``params`` go to :class:`Profiler` (``k``, ``lg_max_map_size``, ``correlations``, ``distinct``,
    ``lengths``).

    >>> p = profile({"x": [1.0, 2.0, 4.0], "s": ["a", "b", "a"]})
    >>> p["rows"], p["columns"]["x"]["mean"], p["columns"]["s"]["top"][0]
    (3, 2.3333333333333335, ['a', 2])
    """
    from beamlearn.pipeline import Pipeline

    pipeline = Pipeline([Profiler(columns, **params)])
    fitted = fit_on(pipeline, data, engine, batch_size=batch_size, beam_args=beam_args, errors=errors)
    return as_document(fitted.states[0]["profile"], engine=engine, params=pipeline.steps[0].get_params())


def fit_on(pipeline: Any, data: Any, engine: str, *, batch_size: int = DEFAULT_BATCH_SIZE,
           beam_args: list[str] | None = None, errors: Any = "raise") -> Any:
    """``pipeline`` fitted on ``data`` with ``engine`` (one of :data:`ENGINES`): ``beam_args`` are Beam's
    pipeline options, or Spark's ``--master URL --conf key=value`` (``data`` may then be a Spark DataFrame, run
    on its session)."""
    if engine == "local":
        return pipeline.fit(data, batch_size=batch_size, errors=errors)
    if engine == "beam":
        from beamlearn.engines.beam_jobs import run_fit  # not beamlearn.beam: it imports Drift, which imports this

        return run_fit(pipeline, data, beam_args=beam_args, batch_size=batch_size,
                       errors=errors if errors != "raise" else None)
    if engine == "spark":
        from beamlearn import io, spark

        if not io.is_file_input(data):
            return spark.fit(pipeline, data, errors=errors, batch_size=batch_size)
        return spark.run_fit(pipeline, data, spark_args=beam_args, batch_size=batch_size,
                             errors=errors if errors != "raise" else None)
    raise SpecError(f"unknown engine {engine!r}: this runs on {', '.join(ENGINES)}")


def as_document(state: dict[str, Any], *, engine: str | None = None, params: dict[str, Any] | None = None,
                source: Any = None) -> dict[str, Any]:
    """A :class:`~beamlearn.analyzers.profile.ColumnProfile` state as a ``profile.json`` document."""
    doc = {"format": PROFILE_FORMAT, "version": PROFILE_VERSION,
           "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    if engine:
        doc["engine"] = engine
    if params is not None:
        doc["params"] = {k: params[k] for k in ("k", "lg_max_map_size", "correlations", "distinct", "lengths", "moments", "sample")
                          if k in params}
    if source is not None:
        doc["source"] = source
    doc.update(state)
    return doc


def _analyzer(doc: dict[str, Any]) -> ColumnProfile:
    params = doc.get("params", {})
    fields = [(n, c["kind"], c["type"]) for n, c in doc["columns"].items()]
    return ColumnProfile(fields, **params)


def merge_profiles(docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The profile of the union of the data of ``docs`` (profiles of the same columns, same parameters):
    counts, extrema and distinct-value registers exactly, moments within rtol 1e-12, sketches merged.

    >>> a, b = profile({"x": [1.0, 2.0]}), profile({"x": [3.0, None]})
    >>> m = merge_profiles([a, b])
    >>> m["rows"], m["columns"]["x"]["mean"], m["columns"]["x"]["nulls"]
    (4, 2.0, 1)
    """
    if not docs:
        raise DataError("no profiles to merge")
    first = docs[0]
    an = _analyzer(first)
    for d in docs[1:]:
        if _analyzer(d).key() != an.key():
            mine, theirs = set(first["columns"]), set(d["columns"])
            what = (f"columns differ ({', '.join(sorted(mine ^ theirs))})" if mine != theirs else
                    "column types or profile parameters differ")
            raise DataError(f"cannot merge these profiles: {what}")
    merged = an.merge([an.load(d) for d in docs])
    return as_document(an.extract(merged), engine=first.get("engine"), params=first.get("params"))


def write_profile(doc: dict[str, Any], path: str) -> str:
    """Write a profile as JSON (atomically); returns the path."""
    from beamlearn.report import atomic_write

    atomic_write(path, (json.dumps(doc, indent=1) + "\n").encode("utf-8"))
    return path


def read_profile(path: str) -> dict[str, Any]:
    """A reference profile from ``path``: a ``profile.json``, or a fitted model artifact (its training profile,
    recorded by every fit in the artifact's lineage)."""
    from beamlearn import stores

    if stores.is_uri(path):
        data = stores.read_bytes(path)  # a DataError naming the (redacted) URI when it cannot be read
        shown = stores.redact(path)
    elif not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    else:
        with open(path, "rb") as fh:
            data = fh.read()
        shown = path
    if data[:4] == b"PK\x03\x04":  # a zip: a model artifact
        from beamlearn.artifact import load

        doc = training_profile(load(path), source=shown)  # load names the file in its errors
        if doc is None:
            raise DataError(f"{path}: this model artifact has no training profile (fitted by an older beamlearn); "
                            "refit it, or pass a profile.json made with `beamlearn profile`")
        return doc
    try:
        doc = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a profile.json nor a model artifact ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != PROFILE_FORMAT:
        raise DataError(f"{path}: not a beamlearn profile (no \"format\": \"{PROFILE_FORMAT}\")")
    if int(doc.get("version", 0)) > PROFILE_VERSION:
        raise DataError(f"{path}: profile version {doc['version']} is newer than this beamlearn reads "
                        f"({PROFILE_VERSION}); upgrade beamlearn")
    return doc


def training_profile(fitted: Any, *, source: Any = None) -> dict[str, Any] | None:
    """The training profile a fitted pipeline keeps in its lineage, as a profile document (the reference for
    drift), or None when it has none (fitted by an older beamlearn).

    >>> import beamlearn as bl
    >>> ref = training_profile(bl.Pipeline([bl.StandardScaler(["x"])]).fit({"x": [1.0, 2.0, 4.0]}))
    >>> ref["columns"]["x"]["count"], ref["columns"]["x"]["mean"]
    (3, 2.3333333333333335)
    """
    lineage = plain_numbers(fitted.lineage.get("profile", {}))
    if not lineage.get("columns"):
        return None
    from beamlearn.analyzers.profile import COMPACT_PROFILE

    return as_document(join_moments(lineage), params=COMPACT_PROFILE, source=source)


def join_moments(lineage: dict[str, Any]) -> dict[str, Any]:
    """A fit's compact profile (``lineage["profile"]["columns"]``) with the exact moments and ranges of the
    fit's own profile (``"moments"``, ``"range"``, over the numeric columns in schema order) joined in."""
    import math

    doc = lineage["columns"]
    numeric = [n for n, c in doc["columns"].items() if c["kind"] == "numeric"]
    mom, rng = lineage.get("moments", {}), lineage.get("range", {})
    for j, name in enumerate(numeric):
        if j >= len(mom.get("count", [])):
            break
        n, mean, var = (float(mom[k][j]) for k in ("count", "mean", "var"))
        ok = n > 0 and not math.isnan(mean)
        doc["columns"][name].update({
            "min": float(rng["min"][j]) if ok else None, "max": float(rng["max"][j]) if ok else None,
            "mean": mean if ok else None, "std": math.sqrt(var * n / (n - 1)) if ok and n > 1 else None,
            "moments": [n, mean if ok else 0.0, var * n if ok else 0.0]})
    return doc


def comparable(obj: Any) -> Any:
    """``obj`` (a profile, or a fit's lineage profile) with each sketch's bytes replaced by what every engine
    and merge order agree on: KLL sketches by their count, minimum and maximum (their retained items depend on
    the order of updates and on random compaction), frequent-items sketches by their items and counts.  For
    comparing profiles from two engines."""
    if isinstance(obj, dict):
        out = {k: comparable(v) for k, v in obj.items() if k != "quantiles" and k != "histogram"}
        if isinstance(obj.get("kll"), str):
            from datasketches import kll_doubles_sketch

            from beamlearn.analyzers.profile import unb64

            sk = kll_doubles_sketch.deserialize(unb64(obj["kll"]))
            out["kll"] = [sk.n, sk.get_min_value(), sk.get_max_value()] if sk.n else [0]
        if isinstance(obj.get("frequent"), dict):
            from beamlearn.profile.drift import frequent_values

            out["frequent"] = dict(obj["frequent"], sketch=sorted(frequent_values(obj).items()))
        return out
    if isinstance(obj, (list, tuple)):
        return [comparable(v) for v in obj]
    return obj


def plain_numbers(obj: Any) -> Any:
    """``obj`` with numpy scalars and arrays turned into Python numbers and lists (as JSON keeps them)."""
    import numpy as np

    if isinstance(obj, dict):
        return {k: plain_numbers(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_numbers(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return plain_numbers(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


class WindowProfiler:
    """Profiles of consecutive windows of ``rows`` rows of a stream of batches: :meth:`add` a batch, get the
    windows it completed; :meth:`finish` gives the last, shorter one.  What :func:`profile_windows` and the
    streaming drift (``beamlearn transform --follow --drift-every``) run.

    Parameters
    ----------
    schema:
        The batches' schema; ``columns`` (default: all) are profiled.
    rows:
        The rows per window.
    params:
        :class:`~beamlearn.analyzers.profile.ColumnProfile`'s parameters.

    Examples
    --------
    >>> import pyarrow as pa
    >>> w = WindowProfiler(pa.schema([("x", pa.float64())]), rows=2)
    >>> [(s, d["rows"]) for s, d in w.add(pa.record_batch({"x": [1.0, 2.0, 3.0]}))], w.finish()[0][0]
    ([(0, 2)], 2)
    """

    def __init__(self, schema: pa.Schema, *, rows: int, columns: Sequence[str] | None = None,
                 **params: Any) -> None:
        if rows < 1:
            raise SpecError(f"a window needs at least 1 row, got {rows}")
        self.rows, self.params = rows, params
        self.analyzer = ColumnProfile(profile_fields(schema, columns), **params)
        self.acc, self.start, self.filled = self.analyzer.create(), 0, 0

    def add(self, batch: pa.RecordBatch) -> list[tuple[int, dict[str, Any]]]:
        """Add ``batch``; returns ``(first row, profile document)`` of each window it completed."""
        done, offset = [], 0
        while offset < batch.num_rows:
            take = min(self.rows - self.filled, batch.num_rows - offset)
            self.acc = self.analyzer.add(self.acc, batch.slice(offset, take))
            offset, self.filled = offset + take, self.filled + take
            if self.filled == self.rows:
                done.append(self._close())
        return done

    def finish(self) -> list[tuple[int, dict[str, Any]]]:
        """The window in progress, if it holds any row."""
        return [self._close()] if self.filled else []

    def _close(self) -> tuple[int, dict[str, Any]]:
        out = (self.start, as_document(self.analyzer.extract(self.acc), engine="local", params=self.params))
        self.acc, self.start, self.filled = self.analyzer.create(), self.start + self.filled, 0
        return out


def profile_windows(data: Any, *, rows: int, columns: Sequence[str] | None = None,
                    batch_size: int = DEFAULT_BATCH_SIZE, **params: Any) -> Any:
    """Profiles of consecutive windows of ``rows`` rows of ``data`` (the last one may be shorter), in this
    process, one pass: a generator of ``(first row, profile document)``.

    >>> [(start, p["rows"]) for start, p in profile_windows({"x": [1.0, 2.0, 3.0]}, rows=2)]
    [(0, 2), (2, 1)]
    """
    from beamlearn import io
    from beamlearn.batches import capture_schema

    if rows < 1:
        raise SpecError(f"a window needs at least 1 row, got {rows}")
    windows: WindowProfiler | None = None
    for batch in io.read(data, batch_size=batch_size):
        if windows is None:
            windows = WindowProfiler(capture_schema(batch), rows=rows, columns=columns, **params)
        yield from windows.add(batch)
    if windows is not None:
        yield from windows.finish()
