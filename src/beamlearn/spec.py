"""YAML pipeline specs: a readable, validated description of a pipeline that the CLI fits.

A spec names the pipeline, lists its steps with their parameters (scikit-learn's names, plus ``columns``), and
may fix the types of some input columns and the batch size::

    name: flights-prep
    batch_size: 65536            # optional; the CLI's --batch-size wins
    schema:                      # optional; types of these columns (the others are inferred from the data)
      dep_delay: double
      tailnum: string
    steps:
      - step: SimpleImputer
        columns: [dep_delay, arr_delay]
        strategy: median
      - step: OneHotEncoder
        columns: [carrier, origin]
        handle_unknown: ignore
    model:                       # optional; appended after the steps, fitted with them
      step: LogisticRegression   # a beamlearn model and its parameters, or any scikit-learn estimator:
      features: [dep_delay, carrier, origin]   #   sklearn: sklearn.ensemble.RandomForestClassifier
      label: late                #   params: {n_estimators: 100}

``beamlearn run`` also reads ``data:``, ``split:``, ``evaluate:`` and ``output:`` (validated by
:mod:`beamlearn.run`; other commands ignore them).

Specs are read with ``yaml.safe_load`` only (no Python objects, no code).  Every mistake raises
:class:`~beamlearn.errors.SpecError` naming the source, the line, the step (``steps[1]``, 0-based) and the key:
unknown step types and parameters get a "did you mean" suggestion, values are checked against the type hints of
the step's ``__init__`` (these step checks live in :mod:`beamlearn.spec_check`), and YAML syntax errors give
their line and column.

:func:`spec_hash` is the SHA-256 of the *canonical* spec (its parsed content as sorted, compact JSON), so
comments, whitespace, key order and quoting do not change it; fitting from a spec records it in the lineage.

Examples
--------
>>> spec = read_spec('''
... name: demo
... steps:
...   - step: StandardScaler
...     columns: [x]
... ''')
>>> spec.pipeline
Pipeline([StandardScaler(columns=['x'])])
>>> spec.fit({"x": [1.0, 2.0, 3.0]}).lineage["spec_name"]
'demo'
>>> load_spec("steps: [{step: StandardScalar, columns: [x]}]")
Traceback (most recent call last):
...
beamlearn.errors.SpecError: <spec>, line 1: steps[0]: unknown step type 'StandardScalar'; did you mean 'StandardScaler'? ...
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import yaml

from beamlearn import stores
from beamlearn.batches import DEFAULT_BATCH_SIZE, capture_schema
from beamlearn.errors import BeamlearnError, SpecError
from beamlearn.pipeline import FittedPipeline, Pipeline
from beamlearn.spec_check import did_you_mean, validate_model, validate_step, yaml_line
from beamlearn.steps.base import registered_steps

__all__ = ["Spec", "load_spec", "merge_schema", "parse_type", "read_spec", "spec_hash"]

SpecSource = typing.Union[str, "os.PathLike[str]", Mapping[str, Any]]
TOP_LEVEL_KEYS = ("name", "description", "batch_size", "schema", "steps", "model",
                  "data", "split", "evaluate", "output", "validate")  # the last five: `beamlearn run` (beamlearn.run)

_SIMPLE_TYPES: dict[str, Callable[[], pa.DataType]] = {
    "bool": pa.bool_, "boolean": pa.bool_, "int8": pa.int8, "int16": pa.int16, "int32": pa.int32,
    "int64": pa.int64, "uint8": pa.uint8, "uint16": pa.uint16, "uint32": pa.uint32, "uint64": pa.uint64,
    "float16": pa.float16, "halffloat": pa.float16, "float32": pa.float32, "float": pa.float32,
    "float64": pa.float64, "double": pa.float64, "string": pa.string, "str": pa.string, "utf8": pa.string,
    "large_string": pa.large_string, "binary": pa.binary, "date32": pa.date32, "date64": pa.date64,
    "date32[day]": pa.date32, "date64[ms]": pa.date64, "null": pa.null,
}
_UNITS = ("s", "ms", "us", "ns")


@dataclass
class Spec:
    """A validated spec: the pipeline it describes and the run settings around it.

    Attributes
    ----------
    pipeline:
        The unfitted :class:`~beamlearn.Pipeline` (named after the spec).
    name:
        The spec's ``name`` (or None).
    schema:
        The column types the spec fixes (a possibly partial :class:`pyarrow.Schema`), or None.
    batch_size:
        The spec's ``batch_size``, or None.
    sha256:
        :func:`spec_hash` of the spec.
    source:
        Where the spec was read from (a path, or ``"<spec>"``).
    """

    pipeline: Pipeline
    name: str | None = None
    schema: pa.Schema | None = None
    batch_size: int | None = None
    sha256: str = ""
    source: str = "<spec>"
    content: dict[str, Any] = field(default_factory=dict, repr=False)

    def lineage(self) -> dict[str, Any]:
        """What fitting records about the spec: ``{"spec_sha256", "spec_name"}``."""
        return {"spec_sha256": self.sha256, "spec_name": self.name}

    def resolve_schema(self, data: Any) -> pa.Schema | None:
        """The full input schema for ``data``: its own (first batch) types, with the spec's ``schema`` applied.

        None when the spec fixes no types (the engine then takes the first batch's types itself).
        """
        return self._resolve(data)[0]

    def _resolve(self, data: Any) -> tuple[pa.Schema | None, Any]:
        """(the full input schema, the data to read): a one-shot iterator is peeked at and put back together."""
        if self.schema is None:
            return None, data
        from beamlearn import io

        if isinstance(data, Iterator):
            first = next(data, None)
            data = itertools.chain([] if first is None else [first], data)
        else:
            first = next(iter(io.read(data, batch_size=self.batch_size or DEFAULT_BATCH_SIZE,
                                      dead=io.DeadLetters())), None)
        if first is None:
            raise SpecError(f"{self.source}: schema: there is no data to apply the schema to")
        return merge_schema(capture_schema(first), self.schema, source=self.source), data

    def fit(self, data: Any, *, batch_size: int | None = None, errors: Any = "raise",
            progress: Callable[[int], None] | None = None) -> FittedPipeline:
        """Fit the pipeline in this process with the spec's schema and batch size, recording the spec's hash
        and name in the lineage.  ``batch_size`` overrides the spec's."""
        size = batch_size or self.batch_size or DEFAULT_BATCH_SIZE
        schema, data = self._resolve(data)
        return self.pipeline.fit(data, batch_size=size, schema=schema, errors=errors, progress=progress,
                                 lineage=self.lineage())


# ---------------------------------------------------------------------------------------------- public API
def read_spec(spec: SpecSource) -> Spec:
    """Read and validate a spec: a file path, YAML text, or an already parsed mapping.

    A ``str`` is a path when it has no newline and either names an existing file or ends in ``.yaml``,
    ``.yml`` or ``.json``; otherwise it is YAML text.
    """
    content, source, nodes = _load(spec)
    return _validate(content, source, nodes)


def load_spec(spec: SpecSource) -> Pipeline:
    """The :class:`~beamlearn.Pipeline` a spec describes (see :func:`read_spec` for the full result).

    Examples
    --------
    >>> load_spec("steps: [{step: StandardScaler, columns: x, with_mean: false}]")
    Pipeline([StandardScaler(columns='x', with_mean=False)])
    """
    return read_spec(spec).pipeline


def spec_hash(spec: SpecSource) -> str:
    """SHA-256 (hex) of the canonical form of a spec: its parsed content as sorted, compact JSON.

    Examples
    --------
    >>> spec_hash("steps: [{step: StandardScaler, columns: [x]}]") == spec_hash('''
    ... # the same spec, written differently
    ... steps:
    ...   - columns: ["x"]
    ...     step: StandardScaler
    ... ''')
    True
    """
    content, _, _ = _load(spec)
    return _canonical_hash(content)


def parse_type(name: str) -> pa.DataType:
    """An Arrow type from its name: ``int64``, ``double``, ``string``, ``bool``, ``date32``,
    ``timestamp[s]``, ``timestamp[ms, tz=UTC]``, ``duration[s]``, ``decimal128(10, 2)``...

    Examples
    --------
    >>> parse_type("timestamp[ms, tz=UTC]")
    TimestampType(timestamp[ms, tz=UTC])
    """
    text = str(name).strip()
    key = text.lower()
    if key in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[key]()
    m = re.fullmatch(r"(timestamp|duration|time32|time64)\[(\w+)(?:,\s*tz=([^\]]+))?\]", text)
    if m and m.group(2) in _UNITS:
        kind, unit, tz = m.groups()
        if kind == "timestamp":
            return pa.timestamp(unit, tz=tz.strip() if tz else None)
        if tz is None:
            try:
                return {"duration": pa.duration, "time32": pa.time32, "time64": pa.time64}[kind](unit)
            except (ValueError, pa.ArrowInvalid):
                pass
    m = re.fullmatch(r"decimal(128|256)?\(\s*(\d+)\s*,\s*(-?\d+)\s*\)", key)
    if m:
        return (pa.decimal256 if m.group(1) == "256" else pa.decimal128)(int(m.group(2)), int(m.group(3)))
    raise SpecError(f"unknown Arrow type {text!r}{did_you_mean(key, list(_SIMPLE_TYPES) + ['timestamp[s]'])} "
                    "(e.g. int64, double, string, bool, timestamp[s])")


def merge_schema(inferred: pa.Schema, fixed: pa.Schema, *, source: str = "<spec>") -> pa.Schema:
    """``inferred`` with the types of ``fixed`` applied; a fixed column missing from the data is an error."""
    missing = [n for n in fixed.names if n not in inferred.names]
    if missing:
        raise SpecError(f"{source}: schema: column {missing[0]!r} is not in the data"
                        f"{did_you_mean(missing[0], inferred.names)}")
    return pa.schema([fixed.field(f.name) if f.name in fixed.names else f for f in inferred])


# ---------------------------------------------------------------------------------------------- reading
def _is_path(spec: str) -> bool:
    return "\n" not in spec and (os.path.isfile(spec) or spec.strip().lower().endswith((".yaml", ".yml", ".json")))


def _load(spec: SpecSource) -> tuple[Any, str, yaml.Node | None]:
    """(parsed content, source name, composed YAML node tree for line numbers)."""
    if isinstance(spec, Mapping):
        return dict(spec), "<spec>", None
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and _is_path(spec)):
        path = os.fspath(spec)
        try:
            if stores.is_uri(path):  # a spec on an object store
                text = stores.read_bytes(path).decode("utf-8")
            else:
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
        except BeamlearnError as exc:
            raise SpecError(f"cannot read the spec: {exc}") from None
        except FileNotFoundError:
            raise SpecError(f"no such spec file: {path!r}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(f"{path}: cannot read the spec ({getattr(exc, 'strerror', None) or exc})") from None
        source = path
    elif isinstance(spec, str):
        text, source = spec, "<spec>"
    else:
        raise SpecError(f"a spec must be a path, YAML text or a mapping, got {type(spec).__name__}")
    try:
        nodes = yaml.compose(text, Loader=yaml.SafeLoader)
        content = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark, ctx = exc.problem_mark or exc.context_mark, exc.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = exc.problem or exc.context or "syntax error"
        if exc.problem and exc.context:
            what += f" ({exc.context}" + (f" at line {ctx.line + 1}" if ctx is not None else "") + ")"
        raise SpecError(f"{source}{where}: invalid YAML: {what}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{source}: invalid YAML: {exc}") from None
    return content, source, nodes


def _canonical_hash(content: Any) -> str:
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------- validation
def _validate(content: Any, source: str, nodes: yaml.Node | None) -> Spec:
    def fail(message: str, *path: Any) -> SpecError:
        line = yaml_line(nodes, *path)
        return SpecError(f"{source}{f', line {line}' if line else ''}: {message}")

    if not isinstance(content, dict):
        raise fail("a spec must be a mapping with a 'steps' list, got "
                   + ("an empty document" if content is None else type(content).__name__))
    for key in content:
        if key not in TOP_LEVEL_KEYS:
            raise fail(f"unknown top-level key {key!r}{did_you_mean(str(key), TOP_LEVEL_KEYS)} "
                       f"(allowed: {', '.join(TOP_LEVEL_KEYS)})", key)
    name = content.get("name")
    if name is not None and not isinstance(name, str):
        raise fail(f"name: expected a string, got {type(name).__name__} {name!r}", "name")
    batch_size = content.get("batch_size")
    if batch_size is not None and (type(batch_size) is not int or batch_size <= 0):
        raise fail(f"batch_size: expected a positive integer, got {batch_size!r}", "batch_size")
    schema = _validate_schema(content.get("schema"), fail)
    steps_spec = content.get("steps", [] if "model" in content else None)
    if not isinstance(steps_spec, list) or not (steps_spec or "model" in content):
        raise fail("'steps' must be a non-empty list of steps", *(["steps"] if "steps" in content else []))
    registry = registered_steps()
    steps = [validate_step(i, entry, registry, fail) for i, entry in enumerate(steps_spec)]
    if "model" in content:
        steps.append(validate_model(content["model"], registry, fail))
    try:
        pipeline = Pipeline(steps, name=name)
    except BeamlearnError as exc:
        raise fail(str(exc), "steps") from None
    return Spec(pipeline, name=name, schema=schema, batch_size=batch_size, sha256=_canonical_hash(content),
                source=source, content=content)


def _validate_schema(schema: Any, fail: Callable[..., SpecError]) -> pa.Schema | None:
    if schema is None:
        return None
    if not isinstance(schema, dict) or not schema:
        raise fail("schema: expected a mapping of column name -> Arrow type name", "schema")
    fields = []
    for col, typ in schema.items():
        if not isinstance(typ, str):
            raise fail(f"schema: column {col!r}: expected an Arrow type name, got {typ!r}", "schema", col)
        try:
            fields.append(pa.field(str(col), parse_type(typ)))
        except SpecError as exc:
            raise fail(f"schema: column {col!r}: {exc}", "schema", col) from None
    return pa.schema(fields)
