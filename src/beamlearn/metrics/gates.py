"""Quality gates: threshold expressions checked against an evaluation's metrics.

Grammar (spaces are ignored)::

    gate   := [ "slice[" col "=" value { "," col "=" value } "]." ] metric [ "[class=" value "]" ] op rhs
    op     := ">=" | "<=" | ">" | "<" | "=="
    rhs    := number | "baseline" [ ("+" | "-") number ]

``f1_macro>=0.80``, ``recall[class=1]>=0.6``, ``slice[origin=JFK].accuracy>=0.7``,
``slice[carrier=AA,origin=JFK].f1>=0.5``, ``f1_macro>=baseline-0.01``.  A gate fails (never passes silently)
when its slice is flagged as below the minimum count ("insufficient data"), when the slice or the metric is
absent, or when the value is undefined (NaN).  A malformed gate or an unknown metric raises
:class:`~beamlearn.errors.SpecError` (with a suggestion).

Examples
--------
>>> g = parse_gate("slice[origin=JFK].recall[class=1] >= baseline - 0.02")
>>> g.slice, g.metric, g.cls, g.op, g.baseline, g.offset
({'origin': 'JFK'}, 'recall', '1', '>=', True, -0.02)
>>> check_gates({"overall": {"f1_macro": 0.83}, "slices": {}}, ["f1_macro>=0.8"])[0].passed
True
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from beamlearn.errors import SpecError
from beamlearn.metrics.confusion import CM_SCALARS

__all__ = ["METRIC_NAMES", "PER_CLASS_METRICS", "Gate", "GateResult", "check_gates", "parse_gate"]

#: Every metric a gate may name at the top level of a metrics block.
METRIC_NAMES = (*CM_SCALARS, "log_loss", "roc_auc", "average_precision", "count", "weight", "mae", "mse",
                "rmse", "r2", "mape", "median_absolute_error")
#: Metrics a gate may name with ``[class=...]``.
PER_CLASS_METRICS = ("precision", "recall", "f1", "fbeta", "support", "roc_auc")
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_GATE = re.compile(r"^(?:slice\[(?P<slice>[^\]]+)\]\.)?(?P<metric>[A-Za-z_][A-Za-z0-9_]*)"
                   r"(?:\[class=(?P<cls>[^\]]+)\])?(?P<op>>=|<=|==|>|<)(?P<rhs>.+)$")
_RHS = re.compile(r"^baseline(?:(?P<sign>[+-])(?P<num>[0-9.eE+-]+))?$")


@dataclass(frozen=True)
class Gate:
    """A parsed gate; see the module docstring for the grammar."""

    text: str
    metric: str
    op: str
    threshold: float = 0.0
    slice: dict[str, str] = field(default_factory=dict)
    cls: str | None = None
    baseline: bool = False
    offset: float = 0.0


@dataclass
class GateResult:
    """The outcome of one gate: ``passed``, the ``value`` seen, the ``threshold`` it was held to, and the
    ``reason`` of a failure."""

    gate: str
    passed: bool
    value: float | None
    threshold: float | None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {"gate": self.gate, "passed": self.passed, "value": self.value, "threshold": self.threshold,
                "reason": self.reason}

    def __str__(self) -> str:
        value = "n/a" if self.value is None else f"{self.value:.6g}"
        status = "PASS" if self.passed else "FAIL"
        return f"{status} {self.gate}: value {value}" + (f" ({self.reason})" if self.reason else "")


def _suggest(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_gate(text: str) -> Gate:
    """Parse one gate expression; :class:`SpecError` if it is malformed or names an unknown metric."""
    src = "".join(str(text).split())
    m = _GATE.match(src)
    if not m:
        raise SpecError(f"malformed gate {text!r}: expected e.g. 'f1_macro>=0.8', 'recall[class=1]>=0.6', "
                        "'slice[origin=JFK].accuracy>=0.7' or 'f1_macro>=baseline-0.01'")
    metric, cls = m["metric"], m["cls"]
    if cls is not None and metric not in PER_CLASS_METRICS:
        raise SpecError(f"gate {text!r}: {metric!r} has no per-class value; per-class metrics are "
                        + ", ".join(PER_CLASS_METRICS) + _suggest(metric, PER_CLASS_METRICS))
    if metric not in METRIC_NAMES:
        raise SpecError(f"gate {text!r}: unknown metric {metric!r}" + _suggest(metric, METRIC_NAMES))
    where: dict[str, str] = {}
    if m["slice"]:
        for part in m["slice"].split(","):
            col, eq, value = part.partition("=")
            if not eq or not col or not value:
                raise SpecError(f"gate {text!r}: a slice is written slice[column=value,...], got {part!r}")
            where[col] = value
    rhs, baseline, offset, threshold = m["rhs"], False, 0.0, 0.0
    b = _RHS.match(rhs)
    try:
        if b:
            baseline = True
            offset = float(b["num"]) * (-1 if b["sign"] == "-" else 1) if b["num"] else 0.0
        else:
            threshold = float(rhs)
    except ValueError:
        raise SpecError(f"gate {text!r}: the right side must be a number or 'baseline[+-number]', "
                        f"got {rhs!r}") from None
    return Gate(text=str(text).strip(), metric=metric, op=m["op"], threshold=threshold, slice=where, cls=cls,
                baseline=baseline, offset=offset)


def _find_slice(metrics: Mapping[str, Any], where: dict[str, str]) -> tuple[str, dict[str, Any]] | None:
    for name, block in metrics.get("slices", {}).items():
        parts = dict(p.split("=", 1) for p in name.split(","))
        if parts == where:
            return name, block
    return None


def _lookup(metrics: Mapping[str, Any], gate: Gate) -> tuple[float | None, str]:
    """The gate's value in ``metrics``, or ``(None, reason)``."""
    block = metrics.get("overall", {})
    if gate.slice:
        found = _find_slice(metrics, gate.slice)
        if found is None:
            return None, "no such slice (no rows with " + ",".join(f"{k}={v}" for k, v in gate.slice.items()) + ")"
        _, block = found
        if block.get("insufficient"):
            return None, f"insufficient data: {block.get('count', 0)} rows, below the minimum slice count"
    if gate.cls is not None:
        per = block.get("per_class", {})
        if gate.cls not in per:
            return None, f"class {gate.cls!r} not seen" + (f" (classes: {', '.join(per)})" if per else "")
        value = per[gate.cls].get(gate.metric)
    else:
        value = block.get(gate.metric)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, f"{gate.metric} is not defined for this data"
    if not isinstance(value, (int, float)):
        return None, f"{gate.metric} is not a number"
    return float(value), ""


def check_gates(metrics: Mapping[str, Any], gates: Iterable[str | Gate], *,
                baseline: Mapping[str, Any] | None = None) -> list[GateResult]:
    """Check each gate against ``metrics`` (an evaluation's metrics dict) and an optional ``baseline``'s."""
    parsed = [g if isinstance(g, Gate) else parse_gate(g) for g in gates]
    out = []
    for g in parsed:
        threshold: float | None = g.threshold
        if g.baseline:
            if baseline is None:
                raise SpecError(f"gate {g.text!r} is relative to a baseline, but no baseline metrics were given")
            base, why = _lookup(baseline, g)
            if base is None:
                out.append(GateResult(g.text, False, None, None, f"baseline: {why}"))
                continue
            threshold = base + g.offset
        value, why = _lookup(metrics, g)
        if value is None:
            out.append(GateResult(g.text, False, None, threshold, why))
            continue
        ok = bool(_OPS[g.op](value, threshold))
        out.append(GateResult(g.text, ok, value, threshold, "" if ok else f"required {g.op} {threshold:.6g}"))
    return out
