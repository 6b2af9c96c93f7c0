"""Evaluation as mergeable reductions: classification and regression metrics, slices, quality gates.

Every metric is computed by an :class:`~beamlearn.analyzers.Analyzer` (create / add / merge / extract over
record batches), so the same code runs in-process and on Beam; :func:`evaluate` runs it over any data in one
pass and checks gates.  See :mod:`beamlearn.metrics.evaluate` for the metrics schema and
:mod:`beamlearn.metrics.gates` for the gate grammar.

Examples
--------
>>> from beamlearn.metrics import evaluate
>>> r = evaluate({"y": ["a", "b", "b"], "yhat": ["a", "b", "a"]}, label="y", prediction="yhat")
>>> r.metrics["overall"]["accuracy"]
0.6666666666666666
"""

from beamlearn.metrics.classification import ClassificationMetrics
from beamlearn.metrics.evaluate import EvaluationResult, evaluate, load_metrics
from beamlearn.metrics.gates import GateResult, check_gates, parse_gate
from beamlearn.metrics.regression import RegressionMetrics

__all__ = [
           "ClassificationMetrics",
           "EvaluationResult",
           "GateResult",
           "RegressionMetrics",
           "check_gates",
           "evaluate",
           "load_metrics",
           "parse_gate",
]
