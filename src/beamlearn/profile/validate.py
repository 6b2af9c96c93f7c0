"""Schema inference from a profile (:func:`infer_schema`) and validation of data against it (:func:`validate`).

A schema (``schema.yaml``, version 1) constrains each column::

    version: 1
    columns:
      fare: {type: double, max_null_fraction: 0.06, min: 0.0, max: 512.3}
      port: {type: string, max_null_fraction: 0.0, domain: [C, Q, S]}
      id:   {type: string, max_null_fraction: 0.0, distinct: {min: 1000, max: 5000}}   # written by hand

:func:`infer_schema` writes the observed type, the observed missing fraction (nulls and NaN) plus ``null_slack``
(``max_null_fraction: 0.0`` when nothing was missing), numeric ranges, and the domain of string and boolean
columns with at most ``max_domain`` values (every value counted exactly by the frequent-items sketch).  Distinct
count bounds are never inferred (a smaller batch of good data has fewer values); write them by hand.

:func:`validate` reports, each with a count and up to ``examples`` example rows (source and 0-based row):
``missing_column``, ``extra_column``, ``type_change``, ``null_rate``, ``out_of_range``, ``out_of_domain`` and
``distinct_count`` anomalies.  The value checks are one pass of one analyzer (:class:`SchemaCheck`), so they run on
every engine.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beamlearn.analyzers import Analyzer
from beamlearn.analyzers.sketches import DistinctCount, item_string
from beamlearn.batches import DEFAULT_BATCH_SIZE, raw_values
from beamlearn.errors import BeamlearnError, DataError, SpecError
from beamlearn.profile.core import ENGINES, fit_on
from beamlearn.schema import batch_origin, batch_rows
from beamlearn.steps.base import Step, register_step

__all__ = [
    "ANOMALY_KINDS",
    "SCHEMA_VERSION",
    "SchemaCheck",
    "Validator",
    "check_schema",
    "infer_schema",
    "read_schema",
    "validate",
]

SCHEMA_VERSION = 1
ANOMALY_KINDS = ("missing_column", "extra_column", "type_change", "null_rate", "out_of_range", "out_of_domain",
                 "distinct_count")
_KEYS = {"type", "max_null_fraction", "min", "max", "domain", "distinct"}
_MAX_UNKNOWN = 1000  # distinct unknown values kept per column (their total is always counted)


def infer_schema(doc: dict[str, Any], *, max_domain: int = 100, null_slack: float = 0.01) -> dict[str, Any]:
    """A schema (plain data, as ``schema.yaml`` holds) from a profile document.

    >>> from beamlearn.profile import profile
    >>> s = infer_schema(profile({"x": [1.0, 3.0, None], "c": ["a", "b", "a"]}))
    >>> s["columns"]["x"], s["columns"]["c"]["domain"]
    ({'type': 'double', 'max_null_fraction': 0.3434, 'min': 1.0, 'max': 3.0}, ['a', 'b'])
    """
    rows = doc["rows"]
    columns: dict[str, Any] = {}
    for name, c in doc["columns"].items():
        missing = (c["nulls"] + c["nan"]) / rows if rows else 0.0
        entry: dict[str, Any] = {"type": c["type"],
                                 "max_null_fraction": min(1.0, math.ceil((missing + null_slack) * 1e4) / 1e4)
                                 if missing else 0.0}
        if c["kind"] == "numeric" and c.get("min") is not None:
            entry["min"], entry["max"] = c["min"], c["max"]
        freq = c.get("frequent")
        if freq and freq["max_error"] == 0 and c.get("top") is not None:
            from beamlearn.profile.drift import frequent_values

            values = frequent_values(c)
            if 0 < len(values) <= max_domain and sum(values.values()) == freq["total"]:
                entry["domain"] = sorted(values)
        columns[name] = entry
    return {"version": SCHEMA_VERSION, "columns": columns}


def check_schema(schema: Any, source: str = "<schema>") -> dict[str, Any]:
    """``schema`` checked (a :class:`SpecError` naming the entry otherwise) and returned."""
    if not isinstance(schema, dict) or not isinstance(schema.get("columns"), dict):
        raise SpecError(f"{source}: a schema needs 'columns:' (a mapping of column name to constraints)")
    if int(schema.get("version", SCHEMA_VERSION)) > SCHEMA_VERSION:
        raise SpecError(f"{source}: schema version {schema['version']} is newer than this beamlearn reads")
    for name, c in schema["columns"].items():
        if not isinstance(c, dict) or "type" not in c:
            raise SpecError(f"{source}: columns: {name}: expected a mapping with at least 'type:'")
        unknown = set(c) - _KEYS
        if unknown:
            raise SpecError(f"{source}: columns: {name}: unknown key {min(unknown)!r} (known: "
                            f"{', '.join(sorted(_KEYS))})")
        for k in ("max_null_fraction", "min", "max"):
            if k in c and not isinstance(c[k], (int, float)):
                raise SpecError(f"{source}: columns: {name}: {k}: expected a number, got {c[k]!r}")
        if "domain" in c and not isinstance(c["domain"], list):
            raise SpecError(f"{source}: columns: {name}: domain: expected a list of values")
        if "distinct" in c and (not isinstance(c["distinct"], dict) or set(c["distinct"]) - {"min", "max"}):
            raise SpecError(f"{source}: columns: {name}: distinct: expected {{min: N, max: N}}")
    return schema


def read_schema(path: str) -> dict[str, Any]:
    """Read and check a ``schema.yaml``."""
    import yaml

    from beamlearn import stores

    try:
        if stores.is_uri(path):
            content = yaml.safe_load(stores.read_bytes(path).decode("utf-8"))
        else:
            with open(path, encoding="utf-8") as fh:
                content = yaml.safe_load(fh)
    except OSError as exc:
        raise SpecError(f"{path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML ({exc})") from None
    return check_schema(content, path)


# ---------------------------------------------------------------------------------------------- the check pass
class SchemaCheck(Analyzer):
    """Count, per column, missing values, values out of ``[min, max]`` and values out of ``domain``, keeping the
    ``examples`` first rows of each (by source and row), and estimate distinct values where bounded.

    ``constraints``: ``(column, min, max, domain or None, count distinct)`` tuples.
    """

    def __init__(self, constraints: Sequence[Sequence[Any]], *, examples: int = 5) -> None:
        self.constraints = tuple((c, lo, hi, tuple(d) if d is not None else None, bool(dis))
                                 for c, lo, hi, d, dis in constraints)
        self.examples = examples
        self.columns = tuple(c[0] for c in self.constraints)

    def _distinct(self) -> DistinctCount:
        return DistinctCount([c for c, _, _, _, dis in self.constraints if dis])

    def reads(self) -> tuple[str, ...]:
        return self.columns

    def create(self) -> dict[str, Any]:
        return {"rows": 0, "cols": [{"missing": [0, []], "range": [0, []], "domain": [0, [], Counter()]}
                                    for _ in self.constraints], "distinct": self._distinct().create()}

    def _keep(self, slot: list, bad: np.ndarray, where: tuple[str, np.ndarray], values: pa.Array | None) -> None:
        idx = np.flatnonzero(bad)
        slot[0] += len(idx)
        if len(idx) and len(slot[1]) < self.examples:
            src, rows = where
            vals = values.take(pa.array(idx[:self.examples])).to_pylist() if values is not None else \
                [None] * min(len(idx), self.examples)
            slot[1] = sorted(slot[1] + [[src or "", int(rows[i]), v] for i, v in zip(idx, vals)])[:self.examples]

    def add(self, acc: dict[str, Any], batch: pa.RecordBatch) -> dict[str, Any]:
        acc["rows"] += batch.num_rows
        where = (batch_origin(batch)[0], batch_rows(batch))
        for slots, (c, lo, hi, domain, _) in zip(acc["cols"], self.constraints):
            arr = batch.column(c)
            if pa.types.is_dictionary(arr.type):
                arr = arr.dictionary_decode()
            missing = arr.is_null(nan_is_null=True).to_numpy(zero_copy_only=False)
            self._keep(slots["missing"], missing, where, None)
            if lo is not None or hi is not None:
                x, ok = raw_values(arr)
                with np.errstate(invalid="ignore"):
                    bad = ((x < lo) if lo is not None else False) | ((x > hi) if hi is not None else False)
                bad = np.asarray(bad & (ok if ok is not None else True), dtype=bool)
                self._keep(slots["range"], bad, where, arr)
            if domain is not None:
                text = arr if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) else \
                    pa.array([None if v is None else item_string(v) for v in arr.to_pylist()], pa.string())
                known = pc.is_in(text, value_set=pa.array(domain, pa.string())).to_numpy(zero_copy_only=False)
                bad = ~known & ~missing
                self._keep(slots["domain"], bad, where, text)
                if bad.any():
                    counter = slots["domain"][2]
                    vc = pc.value_counts(text.filter(pa.array(bad)))
                    for v, k in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()):
                        if v in counter or len(counter) < _MAX_UNKNOWN:
                            counter[v] += k
        d = self._distinct()
        if d.columns:
            acc["distinct"] = d.add(acc["distinct"], batch)
        return acc

    def merge(self, accs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        out = self.create()
        out["rows"] = sum(a["rows"] for a in accs)
        for i, slots in enumerate(out["cols"]):
            for key, slot in slots.items():
                for a in accs:
                    other = a["cols"][i][key]
                    slot[0] += other[0]
                    slot[1] = sorted(slot[1] + other[1])[:self.examples]
                    if key == "domain":
                        for v, k in other[2].items():
                            if v in slot[2] or len(slot[2]) < _MAX_UNKNOWN:
                                slot[2][v] += k
        out["distinct"] = self._distinct().merge([a["distinct"] for a in accs])
        return out

    def extract(self, acc: dict[str, Any]) -> dict[str, Any]:
        d = self._distinct()
        est = dict(zip(d.columns, d.extract(acc["distinct"]))) if d.columns else {}
        cols = {}
        for slots, (c, *_rest) in zip(acc["cols"], self.constraints):
            cols[c] = {"missing": slots["missing"][:2], "range": slots["range"][:2],
                       "domain": slots["domain"][:2] + [slots["domain"][2].most_common(10)],
                       "distinct": est.get(c)}
        return {"rows": acc["rows"], "columns": cols}


@register_step
class Validator(Step):
    """A step whose fitted state is the :class:`SchemaCheck` of its input; rows pass through unchanged."""

    def __init__(self, constraints: Sequence[Sequence[Any]], *, examples: int = 5) -> None:
        self.constraints, self.examples = constraints, examples

    def input_columns(self) -> list[str]:
        return []

    def analyzers(self) -> dict[str, Analyzer]:
        return {"check": SchemaCheck(self.constraints, examples=self.examples)}

    def apply(self, batch: pa.RecordBatch, state: dict[str, Any]) -> pa.RecordBatch:
        return batch


# ---------------------------------------------------------------------------------------------- validate
def _examples(rows: list) -> list[dict[str, Any]]:
    return [{"source": s or None, "row": r, "value": v} for s, r, v in rows]


def validate(data: Any, schema: dict[str, Any], *, engine: str = "local", batch_size: int = DEFAULT_BATCH_SIZE,
             beam_args: list[str] | None = None, examples: int = 5) -> dict[str, Any]:
    """Check ``data`` against ``schema``: ``{"rows", "anomalies": [...], "passed": bool}``, each anomaly
    ``{"column", "kind", "count", "description", "examples": [{"source", "row", "value"}]}``.

    >>> r = validate({"x": [1.0, 9.0, None]}, {"columns": {"x": {"type": "double", "max_null_fraction": 0.0,
    ...                                                          "max": 5.0}}})
    >>> [(a["kind"], a["count"], a["examples"][0]["row"]) for a in r["anomalies"]]
    [('null_rate', 1, 2), ('out_of_range', 1, 1)]
    """
    from beamlearn import io
    from beamlearn.batches import capture_schema
    from beamlearn.pipeline import Pipeline

    check_schema(schema)
    if engine not in ENGINES:
        raise SpecError(f"unknown engine {engine!r}: validation runs on {', '.join(ENGINES)}")
    if engine == "spark" and not io.is_file_input(data):  # a Spark DataFrame
        from beamlearn.spark import spark_data

        found = spark_data(data).schema
    else:
        first = next(iter(io.read(data, batch_size=batch_size)), None)
        if first is None:
            raise DataError("no data to validate")
        found = capture_schema(first)
    want = schema["columns"]
    anomalies: list[dict[str, Any]] = []

    def anomaly(column: str, kind: str, count: int, description: str, rows: list | None = None) -> None:
        anomalies.append({"column": column, "kind": kind, "count": int(count), "description": description,
                          "examples": _examples(rows or [])})

    for c in want:
        if c not in found.names:
            anomaly(c, "missing_column", 1, f"column {c!r} is in the schema but not in the data")
    for c in found.names:
        if c not in want:
            anomaly(c, "extra_column", 1, f"column {c!r} is in the data but not in the schema")
    checks = []
    for c, w in want.items():
        if c not in found.names:
            continue
        typ = found.field(c).type
        typ = typ.value_type if pa.types.is_dictionary(typ) else typ
        if str(typ) != str(w["type"]):
            anomaly(c, "type_change", 1, f"column {c!r} has type {typ}, the schema says {w['type']}")
            continue
        checks.append((c, w.get("min"), w.get("max"), [str(v) if not isinstance(v, bool) else item_string(v)
                                                       for v in w["domain"]] if "domain" in w else None,
                       "distinct" in w))
    state: dict[str, Any] = {"rows": 0, "columns": {}}
    if checks:
        pipeline = Pipeline([Validator(checks, examples=examples)])
        fitted = fit_on(pipeline, data, engine, batch_size=batch_size, beam_args=beam_args)
        state = fitted.states[0]["check"]
    rows = state["rows"]
    for c, s in state["columns"].items():
        w = want[c]
        miss, frac = s["missing"][0], (s["missing"][0] / rows if rows else 0.0)
        if frac > float(w.get("max_null_fraction", 1.0)):
            anomaly(c, "null_rate", miss, f"{miss:,} missing values ({frac:.2%}); the schema allows at most "
                    f"{float(w.get('max_null_fraction', 1.0)):.2%}", s["missing"][1])
        if s["range"][0]:
            anomaly(c, "out_of_range", s["range"][0], f"{s['range'][0]:,} values outside "
                    f"[{w.get('min', '-inf')}, {w.get('max', 'inf')}]", s["range"][1])
        if s["domain"][0]:
            top = ", ".join(f"{v!r} ({k:,})" for v, k in s["domain"][2][:5])
            anomaly(c, "out_of_domain", s["domain"][0], f"{s['domain'][0]:,} values not in the domain of "
                    f"{len(w['domain'])} values: {top}", s["domain"][1])
        if s["distinct"] is not None:
            lo, hi = w["distinct"].get("min"), w["distinct"].get("max")
            e = s["distinct"]
            if (lo is not None and e["upper"] < lo) or (hi is not None and e["lower"] > hi):
                anomaly(c, "distinct_count", round(e["estimate"]), f"about {e['estimate']:,.0f} distinct values "
                        f"(95% interval {e['lower']:,.0f}-{e['upper']:,.0f}); the schema wants "
                        f"{lo if lo is not None else 0}-{hi if hi is not None else 'any'}")
    order = {k: i for i, k in enumerate(ANOMALY_KINDS)}
    anomalies.sort(key=lambda a: (list(want).index(a["column"]) if a["column"] in want else len(want),
                                  order[a["kind"]]))
    return {"rows": rows, "columns": len(found.names), "anomalies": anomalies, "passed": not anomalies}


class AnomaliesFound(BeamlearnError):
    """Validation found anomalies where they stop the work (``validate:`` in a run spec); ``result`` holds them."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


def check_before_run(paths: Sequence[str], section: dict[str, Any], out_dir: str, *, engine: str = "local",
                     batch_size: int = DEFAULT_BATCH_SIZE, beam_args: list[str] | None = None) -> dict[str, Any]:
    """Validate a run's data (a run spec's ``validate:`` section, read by :mod:`beamlearn.run`); on anomalies
    write ``OUT/validation/{validation.json, report.html}`` and raise :class:`AnomaliesFound`."""
    from beamlearn import stores
    from beamlearn.profile.report import render_validation, write_html, write_json

    result = validate(list(paths), section["schema"], engine=engine, batch_size=batch_size, beam_args=beam_args)
    if not result["passed"]:
        where = stores.make_folder(stores.join(out_dir, "validation"))
        write_json(result, stores.join(where, "validation.json"))
        write_html(render_validation(result, section["path"]), where)
        first = result["anomalies"][0]
        raise AnomaliesFound(f"validate: {len(result['anomalies'])} anomalies in the data against "
                             f"{section['path']} (first: {first['column']}: {first['description']}); "
                             f"report in {where}; the run stopped before training", result)
    return result
