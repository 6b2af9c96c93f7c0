"""``evaluate``: every metric, overall and per slice, in one read of the data, plus quality gates.

The metrics dict (``EvaluationResult.metrics``, written as ``metrics.json``) has a stable schema, version 1::

    {"schema_version": 1, "task": "classification" | "regression",
     "label", "prediction", "score", "sample_weight": column names (or null),
     "slicing": [[col, ...], ...], "min_slice_count": int,
     "rows": rows read, "skipped": rows without a label or a prediction,
     "exact": true when ROC AUC / AP / median are exact (the data had <= exact_max_rows rows),
     "classes": [...], "pos_label": ...,                       # classification only
     "overall": BLOCK,
     "slices": {"origin=JFK": {"columns": {"origin": "JFK"}, "insufficient": bool, **BLOCK}, ...}}

A classification BLOCK holds ``count`` (rows), ``weight``, ``accuracy``, ``balanced_accuracy``,
``{precision,recall,f1,fbeta}_{micro,macro,weighted}``, for two classes the binary ``precision``, ``recall``,
``f1``, ``fbeta`` of ``pos_label``, ``per_class`` (``{"<class>": {precision, recall, f1, fbeta, support}}``),
``confusion_matrix`` (``labels``, ``matrix``: rows true, columns predicted); with scores ``log_loss``,
``roc_auc``, ``roc_auc_error_bound``, ``roc_auc_method`` (``exact``/``binned``), ``average_precision``,
``average_precision_method``; overall, for a binary score, also ``curves`` (``roc``, ``pr``), ``calibration``,
``threshold_sweep`` and ``decision_threshold``.  A regression BLOCK holds ``count``, ``weight``, ``mae``, ``mse``,
``rmse``, ``r2``, ``mape``, ``median_absolute_error`` (+ ``_method``, and ``_rank_bound`` when sketched).  With
``n_bootstrap`` every block has ``ci``: ``{"metric": [low, high]}``.  Undefined values are NaN (``null`` in JSON).

Examples
--------
>>> r = evaluate({"y": [0, 1, 1, 0], "yhat": [0, 1, 0, 0]}, label="y", prediction="yhat",
...              require=["accuracy>=0.7", "recall[class=1]>=0.6"])
>>> r.metrics["overall"]["accuracy"], [g.passed for g in r.gates]
(0.75, [True, False])
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from beamlearn.batches import DEFAULT_BATCH_SIZE, column_kind
from beamlearn.errors import SchemaError, SpecError
from beamlearn.metrics._accumulate import normalize_slices
from beamlearn.metrics.classification import ClassificationMetrics
from beamlearn.metrics.gates import GateResult, check_gates, parse_gate
from beamlearn.metrics.regression import RegressionMetrics

__all__ = ["SCHEMA_VERSION", "EvaluationResult", "evaluate", "load_metrics", "plain"]

SCHEMA_VERSION = 1


def plain(obj: Any) -> Any:
    """JSON-safe plain data: numpy values become Python numbers and lists; NaN and infinities become null."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return plain(obj.tolist())
    if isinstance(obj, np.generic):
        return plain(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def load_metrics(source: Any) -> dict[str, Any]:
    """Metrics from an :class:`EvaluationResult`, a dict, or a ``metrics.json`` path (a report directory too)."""
    if isinstance(source, EvaluationResult):
        return source.metrics
    if isinstance(source, Mapping):
        return dict(source)
    path = os.fspath(source)
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.json")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path}: not a metrics JSON file ({exc})") from None
    if not isinstance(data, dict) or "overall" not in data:
        raise SpecError(f"{path}: not a beamlearn metrics file (no 'overall' block)")
    return data


class EvaluationResult:
    """What :func:`evaluate` returns: ``metrics`` (see the module docstring), ``gates`` (a list of
    :class:`~beamlearn.metrics.gates.GateResult`) and ``baseline`` (the baseline's metrics, if any)."""

    def __init__(self, metrics: dict[str, Any], gates: list[GateResult],
                 baseline: dict[str, Any] | None = None) -> None:
        self.metrics, self.gates, self.baseline = metrics, gates, baseline

    @property
    def passed(self) -> bool:
        """Whether every gate passed (True without gates)."""
        return all(g.passed for g in self.gates)

    @property
    def failures(self) -> list[GateResult]:
        """The gates that failed."""
        return [g for g in self.gates if not g.passed]

    def check(self, *gates: str, baseline: Any = None) -> list[GateResult]:
        """Check more gates against these metrics (and ``baseline``, default: the evaluation's)."""
        base = load_metrics(baseline) if baseline is not None else self.baseline
        return check_gates(self.metrics, gates, baseline=base)

    def to_dict(self) -> dict[str, Any]:
        """The metrics with the gate results (``"gates"``), as JSON-safe plain data."""
        return plain({**self.metrics, "gates": [g.to_dict() for g in self.gates]})

    def to_json(self, indent: int | None = 1) -> str:
        """:meth:`to_dict` as JSON text (strict: NaN is written as null)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def write_report(self, directory: str) -> dict[str, str]:
        """Write ``metrics.json`` and ``report.html`` into ``directory``; returns their paths."""
        from beamlearn.report import write_report

        return write_report(self, directory)

    def __repr__(self) -> str:
        o = self.metrics.get("overall", {})
        head = ", ".join(f"{k}={o[k]:.4g}" for k in ("accuracy", "f1_macro", "roc_auc", "mae", "r2")
                         if isinstance(o.get(k), float))
        return (f"EvaluationResult({self.metrics.get('task')}, {o.get('count', 0)} rows, {head}, "
                f"{len(self.metrics.get('slices', {}))} slices, gates {len(self.gates) - len(self.failures)}"
                f"/{len(self.gates)} passed)")


def _resolve_score(score: Any, schema: pa.Schema) -> Any:
    """A glob (``"proba_*"``) becomes ``{suffix: column}``; other values pass through."""
    if isinstance(score, str) and any(ch in score for ch in "*?["):
        cols = [n for n in schema.names if fnmatch.fnmatchcase(n, score)]
        if not cols:
            raise SchemaError(f"no column matches the score pattern {score!r}")
        star = score.index("*") if "*" in score else len(score)
        prefix, suffix = score[:star], score[star + 1:] if "*" in score else ""
        return {c[len(prefix):len(c) - len(suffix) or None]: c for c in cols}
    if isinstance(score, Sequence) and not isinstance(score, str):
        raise SpecError("score is one column (binary), a pattern like 'proba_*' or a mapping {class: column}")
    return score


def _check_columns(schema: pa.Schema, columns: Iterable[str]) -> None:
    for c in columns:
        if c not in schema.names:
            close = difflib.get_close_matches(c, schema.names, n=1)
            raise SchemaError(f"no column {c!r} in the data" + (f" (did you mean {close[0]!r}?)" if close else ""),
                              column=c)


def build_analyzer(schema: pa.Schema, *, label: str, prediction: str, score: Any = None, task: str = "auto",
                   pos_label: Any = None, beta: float = 1.0, zero_division: Any = "warn",
                   threshold_criterion: str = "f1", sample_weight: str | None = None, slices: Any = (),
                   min_slice_count: int = 30, n_bootstrap: int = 0, confidence: float = 0.95,
                   exact_max_rows: int = 1_000_000) -> tuple[Any, str, Any]:
    """The metric analyzer :func:`evaluate` runs on data of ``schema`` (checked against it), the resolved task
    and score; shared with the Beam engine (:mod:`beamlearn.engines.beam_eval`).

    Examples
    --------
    >>> a, task, score = build_analyzer(pa.schema([("y", pa.int64()), ("p", pa.int64())]), label="y",
    ...                                 prediction="p")
    >>> type(a).__name__, task
    ('ClassificationMetrics', 'classification')
    """
    slicings = normalize_slices(slices)
    score = _resolve_score(score, schema)
    if task == "auto":
        floating = label in schema.names and pa.types.is_floating(schema.field(label).type)
        task = "regression" if floating else "classification"
    common = {"sample_weight": sample_weight, "slices": slicings, "min_slice_count": min_slice_count,
              "n_bootstrap": n_bootstrap, "confidence": confidence, "exact_max_rows": exact_max_rows}
    if task == "regression":
        if score is not None:
            raise SpecError("score is for classification; a regression is evaluated from label and prediction")
        analyzer: Any = RegressionMetrics(label, prediction, **common)
    else:
        analyzer = ClassificationMetrics(label, prediction, score=score, pos_label=pos_label, beta=beta,
                                         zero_division=zero_division, threshold_criterion=threshold_criterion,
                                         **common)
    if hasattr(analyzer, "check"):
        analyzer.check()
    _check_columns(schema, analyzer.columns)
    if task == "regression":
        for c in (label, prediction):
            if column_kind(schema.field(c).type) != "numeric":
                raise SchemaError(f"a regression needs numeric {c!r}, got {schema.field(c).type}", column=c)
    return analyzer, task, score


def metrics_dict(state: dict[str, Any], *, task: str, label: str, prediction: str, score: Any,
                 sample_weight: str | None, slices: Any, min_slice_count: int) -> dict[str, Any]:
    """The metrics dict (see the module docstring) from an analyzer's extracted ``state``."""
    return {"schema_version": SCHEMA_VERSION, "task": task, "label": label, "prediction": prediction,
            "score": score, "sample_weight": sample_weight,
            "slicing": [list(s) for s in normalize_slices(slices)], "min_slice_count": min_slice_count, **state}


def evaluate(data: Any, *, label: str, prediction: str, score: str | Mapping[Any, str] | None = None,
             slices: Any = (), sample_weight: str | None = None, task: str = "auto", pos_label: Any = None,
             beta: float = 1.0, zero_division: Any = "warn", min_slice_count: int = 30, n_bootstrap: int = 0,
             confidence: float = 0.95, exact_max_rows: int = 1_000_000, threshold_criterion: str = "f1",
             require: Iterable[str] = (), baseline: Any = None, model: Any = None,
             batch_size: int = DEFAULT_BATCH_SIZE, progress: Callable[[int], None] | None = None
             ) -> EvaluationResult:
    """Evaluate predictions in ``data`` in one pass: metrics overall and per slice, then the ``require`` gates.

    Parameters
    ----------
    data:
        Anything :func:`beamlearn.io.read` reads (a table, a DataFrame, files, globs) holding the label and
        prediction columns.  With ``model`` (a fitted pipeline whose output has the prediction column), the data
        is transformed by it batch by batch first.
    label, prediction, score, sample_weight, slices, pos_label, beta, zero_division, min_slice_count,
    n_bootstrap, confidence, exact_max_rows, threshold_criterion:
        See :class:`~beamlearn.metrics.ClassificationMetrics`; ``score`` may also be a pattern such as
        ``"proba_*"`` (one column per class, the class being what ``*`` matches).
    task:
        ``"classification"``, ``"regression"``, or ``"auto"``: regression when the label is floating-point.
    require:
        Gate expressions (:mod:`beamlearn.metrics.gates`) checked on the result.
    baseline:
        Baseline metrics for relative gates: an :class:`EvaluationResult`, a dict, or a ``metrics.json`` path.

    Returns
    -------
    EvaluationResult

    Examples
    --------
    >>> r = evaluate({"y": [1.0, 2.0, 4.0], "yhat": [1.5, 2.0, 3.0]}, label="y", prediction="yhat")
    >>> r.metrics["task"], r.metrics["overall"]["mae"]
    ('regression', 0.5)
    """
    from beamlearn import io

    gates = [parse_gate(g) for g in ([require] if isinstance(require, str) else require)]
    base = load_metrics(baseline) if baseline is not None else None
    if any(g.baseline for g in gates) and base is None:
        raise SpecError("a gate is relative to a baseline ('baseline...'), but no baseline was given")
    slicings = normalize_slices(slices)
    if task not in ("auto", "classification", "regression"):
        raise SpecError(f"task must be 'auto', 'classification' or 'regression', got {task!r}")
    batches = iter(model.iter_batches(data, batch_size=batch_size, progress=progress) if model is not None
                   else io.read(data, batch_size=batch_size))
    first = next(batches, None)
    if first is None:
        raise SchemaError("the data has no rows to evaluate")
    analyzer, task, score = build_analyzer(first.schema, label=label, prediction=prediction, score=score,
                                           task=task, pos_label=pos_label, beta=beta, zero_division=zero_division,
                                           threshold_criterion=threshold_criterion, sample_weight=sample_weight,
                                           slices=slicings, min_slice_count=min_slice_count,
                                           n_bootstrap=n_bootstrap, confidence=confidence,
                                           exact_max_rows=exact_max_rows)
    acc = analyzer.add(analyzer.create(), first)
    if progress is not None and model is None:
        progress(first.num_rows)
    for batch in batches:
        acc = analyzer.add(acc, batch)
        if progress is not None and model is None:
            progress(batch.num_rows)
    state = analyzer.extract(acc)
    metrics = metrics_dict(state, task=task, label=label, prediction=prediction, score=score,
                           sample_weight=sample_weight, slices=slicings, min_slice_count=min_slice_count)
    return EvaluationResult(metrics, check_gates(metrics, gates, baseline=base), base)
