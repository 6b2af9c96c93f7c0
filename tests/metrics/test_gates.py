"""Quality gates: parsing, errors with suggestions, slices, insufficient data, baselines."""

from __future__ import annotations

import numpy as np
import pytest

from beamlearn.errors import SpecError
from beamlearn.metrics import check_gates, evaluate, parse_gate

METRICS = {"overall": {"f1_macro": 0.82, "accuracy": 0.9, "roc_auc": float("nan"),
                       "per_class": {"0": {"recall": 0.95}, "1": {"recall": 0.55}}},
           "slices": {"origin=JFK": {"count": 500, "insufficient": False, "accuracy": 0.75},
                      "origin=EWR": {"count": 3, "insufficient": True, "accuracy": 1.0},
                      "carrier=AA,origin=JFK": {"count": 90, "insufficient": False, "accuracy": 0.6}}}


@pytest.mark.parametrize("gate,passed,reason", [
    ("f1_macro>=0.80", True, ""),
    ("f1_macro >= 0.85", False, "required >= 0.85"),
    ("accuracy>0.9", False, "required > 0.9"),
    ("recall[class=1]>=0.6", False, "required"),
    ("recall[class=0]>=0.6", True, ""),
    ("recall[class=7]>=0.6", False, "class '7' not seen"),
    ("slice[origin=JFK].accuracy>=0.7", True, ""),
    ("slice[origin=EWR].accuracy>=0.7", False, "insufficient data: 3 rows"),
    ("slice[origin=SFO].accuracy>=0.7", False, "no such slice"),
    ("slice[origin=JFK,carrier=AA].accuracy>=0.7", False, "required"),
    ("roc_auc>=0.5", False, "not defined"),
    ("mae<=1", False, "not defined"),
])
def test_gate_outcomes(gate, passed, reason):
    (r,) = check_gates(METRICS, [gate])
    assert r.passed is passed and reason in r.reason
    assert (r.value is None) == (reason != "" and "required" not in reason)


def test_baseline_gates():
    base = {"overall": {"f1_macro": 0.825}, "slices": {}}
    ok, bad = check_gates(METRICS, ["f1_macro>=baseline-0.01", "f1_macro>=baseline+0.01"], baseline=base)
    assert ok.passed and ok.threshold == pytest.approx(0.815)
    assert not bad.passed and bad.value == 0.82
    (missing,) = check_gates(METRICS, ["accuracy>=baseline"], baseline=base)
    assert not missing.passed and "baseline" in missing.reason
    with pytest.raises(SpecError, match="no baseline"):
        check_gates(METRICS, ["f1_macro>=baseline"])


@pytest.mark.parametrize("gate,match", [
    ("f1_macor>=0.8", "did you mean 'f1_macro'"),
    ("acuracy>=0.8", "did you mean 'accuracy'"),
    ("accuracy=>0.8", "malformed gate"),
    ("accuracy>=high", "right side"),
    ("f1_macro[class=1]>=0.8", "no per-class value"),
    ("slice[origin].accuracy>=0.8", "slice\\[column=value"),
    ("", "malformed"),
])
def test_bad_gates_raise_spec_errors(gate, match):
    with pytest.raises(SpecError, match=match):
        parse_gate(gate)


def test_gates_through_evaluate_with_slices():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    o = np.where(np.arange(300) < 10, "EWR", "JFK")
    r = evaluate({"y": y, "p": y, "origin": o}, label="y", prediction="p", slices="origin",
                 require=["accuracy>=0.99", "slice[origin=JFK].accuracy>=0.99", "slice[origin=EWR].accuracy>=0.5"])
    assert [g.passed for g in r.gates] == [True, True, False]
    assert not r.passed and "insufficient data" in r.failures[0].reason
    assert "FAIL slice[origin=EWR].accuracy>=0.5" in str(r.failures[0])
    again = evaluate({"y": y, "p": 1 - y}, label="y", prediction="p", require="accuracy>=baseline-0.1", baseline=r)
    assert not again.passed and again.gates[0].threshold == pytest.approx(0.9)
