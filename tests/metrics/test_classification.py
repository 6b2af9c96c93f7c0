"""Classification metrics: parity with sklearn.metrics (hypothesis), edge cases, merge invariance, binning."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from beamlearn.analyzers import run_analyzer
from beamlearn.errors import SchemaError, SpecError
from beamlearn.metrics import ClassificationMetrics, evaluate

TOL = 1e-9
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def close(a: float, b: float, tol: float = TOL) -> bool:
    if isinstance(b, float) and math.isnan(b):
        return isinstance(a, float) and math.isnan(a)
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def sk_quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def batches_of(table: pa.Table, size: int) -> list[pa.RecordBatch]:
    return table.to_batches(max_chunksize=max(1, size))


@st.composite
def problems(draw, max_classes: int = 4):
    n = draw(st.integers(1, 60))
    k = draw(st.integers(1, max_classes))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    p = np.where(rng.random(n) < draw(st.floats(0, 1)), y, rng.integers(0, k + 1, n))  # k+1: never true
    w = rng.integers(0, 4, n).astype(float) if draw(st.booleans()) else None
    if w is not None and not w.any():
        w[0] = 1.0  # sklearn refuses all-zero weights
    return y, p, w, draw(st.integers(1, 25)), seed


@SETTINGS
@given(problems(), st.sampled_from(["warn", 0, 1, np.nan]), st.sampled_from([1.0, 0.5, 2.0]))
def test_confusion_metrics_equal_sklearn(problem, zero_division, beta):
    y, p, w, size, _ = problem
    cols = {"y": y, "p": p} | ({"w": w} if w is not None else {})
    table = pa.table(cols)
    a = ClassificationMetrics("y", "p", sample_weight="w" if w is not None else None, beta=beta,
                              zero_division=zero_division)
    m = run_analyzer(a, batches_of(table, size))["overall"]
    labels = sorted(set(y) | set(p))
    cm = sk_quiet(skm.confusion_matrix, y, p, labels=labels, sample_weight=w)
    assert m["confusion_matrix"]["labels"] == labels
    np.testing.assert_allclose(m["confusion_matrix"]["matrix"], cm, rtol=TOL)
    if w is None or w.sum() > 0:
        assert close(m["accuracy"], skm.accuracy_score(y, p, sample_weight=w))
        assert close(m["balanced_accuracy"], sk_quiet(skm.balanced_accuracy_score, y, p, sample_weight=w))
    for avg in ("micro", "macro", "weighted"):
        want = sk_quiet(skm.precision_recall_fscore_support, y, p, beta=beta, average=avg, sample_weight=w,
                        zero_division=zero_division)
        f1 = sk_quiet(skm.f1_score, y, p, average=avg, sample_weight=w, zero_division=zero_division)
        assert close(m[f"precision_{avg}"], want[0]), (avg, m[f"precision_{avg}"], want[0])
        assert close(m[f"recall_{avg}"], want[1]), avg
        assert close(m[f"fbeta_{avg}"], want[2]), avg
        assert close(m[f"f1_{avg}"], f1), avg
    per = sk_quiet(skm.precision_recall_fscore_support, y, p, labels=labels, sample_weight=w,
                   zero_division=zero_division, beta=beta)
    for i, c in enumerate(labels):
        got = m["per_class"][str(c)]
        assert close(got["precision"], per[0][i]) and close(got["recall"], per[1][i])
        assert close(got["fbeta"], per[2][i]) and close(got["support"], float(per[3][i]))
    if len(labels) <= 2:
        pos = max(labels) if len(labels) == 2 else 1
        for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
            want = sk_quiet(fn, y, p, pos_label=pos, sample_weight=w, zero_division=zero_division)
            assert close(m[name], want), (name, m[name], want)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 300), st.integers(0, 2**32 - 1), st.booleans(), st.integers(1, 50))
def test_binary_scores_equal_sklearn(n, seed, weighted, size):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.25), 0, 1).round(rng.integers(1, 4))  # ties and exact 0 / 1
    w = rng.uniform(0.1, 3, n) if weighted else None
    table = pa.table({"y": y, "p": (s >= 0.5).astype(int), "s": s} | ({"w": w} if weighted else {}))
    m = run_analyzer(ClassificationMetrics("y", "p", score="s", sample_weight="w" if weighted else None),
                     batches_of(table, size))["overall"]
    assert m["roc_auc_method"] == "exact" and m["roc_auc_error_bound"] == 0.0
    if len(set(y)) == 2:
        assert close(m["roc_auc"], skm.roc_auc_score(y, s, sample_weight=w))
        assert close(m["average_precision"], skm.average_precision_score(y, s, sample_weight=w))
        assert close(m["log_loss"], skm.log_loss(y, s, sample_weight=w))
    else:
        assert math.isnan(m["roc_auc"])
    sweep = m["threshold_sweep"]
    for t, pr, rc, f1 in list(zip(*(sweep[k] for k in ("threshold", "precision", "recall", "f1"))))[::12]:
        yp = (s >= t).astype(int)
        assert close(pr, sk_quiet(skm.precision_score, y, yp, sample_weight=w, zero_division=0))
        if y.any():
            assert close(rc, skm.recall_score(y, yp, sample_weight=w, zero_division=0))
        assert close(f1, sk_quiet(skm.f1_score, y, yp, sample_weight=w, zero_division=0))


def test_binned_auc_within_reported_bound_and_merge_invariant():
    rng = np.random.default_rng(3)
    n = 20_000
    y = rng.integers(0, 2, n)
    s = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.2 * y)))
    table = pa.table({"y": y, "p": (s > 0.5).astype(int), "s": s})
    a = ClassificationMetrics("y", "p", score="s", exact_max_rows=1000, n_bins=100, n_thresholds=11)
    m = run_analyzer(a, batches_of(table, 3000))["overall"]
    exact = skm.roc_auc_score(y, s)
    assert m["roc_auc_method"] == "binned" and 0 < m["roc_auc_error_bound"] < 0.01
    assert abs(m["roc_auc"] - exact) <= m["roc_auc_error_bound"] + 1e-12
    assert abs(m["average_precision"] - skm.average_precision_score(y, s)) < 0.01
    accs = [a.add(a.create(), b) for b in batches_of(table, 1234)]
    merged = a.extract(a.merge(accs[::-1]))["overall"]
    assert merged["confusion_matrix"] == m["confusion_matrix"]
    assert close(merged["roc_auc"], m["roc_auc"], 1e-12)


def test_calibration_table_matches_sklearn_on_interior_scores():
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(1)
    s = rng.uniform(0.001, 0.999, 500)
    y = (rng.random(500) < s).astype(int)
    m = run_analyzer(ClassificationMetrics("y", "p", score="s"),
                     [pa.record_batch({"y": y, "p": (s > 0.5).astype(int), "s": s})])["overall"]
    prob_true, prob_pred = calibration_curve(y, s, n_bins=10)
    np.testing.assert_allclose(m["calibration"]["prob_true"], prob_true, rtol=TOL)
    np.testing.assert_allclose(m["calibration"]["prob_pred"], prob_pred, rtol=TOL)


@pytest.mark.parametrize("criterion,check", [("f1", None), ("precision>=0.8", "precision"),
                                             ("recall>=0.9", "recall")])
def test_decision_threshold(criterion, check):
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 400)
    s = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1)
    m = run_analyzer(ClassificationMetrics("y", "p", score="s", threshold_criterion=criterion),
                     [pa.record_batch({"y": y, "p": (s > 0.5).astype(int), "s": s})])["overall"]
    d, sweep = m["decision_threshold"], m["threshold_sweep"]
    if check is None:
        assert d["f1"] == max(sweep["f1"])
        assert d["threshold"] == sweep["threshold"][sweep["f1"].index(max(sweep["f1"]))]
    else:
        target = float(criterion.split(">=")[1])
        assert d[check] >= target
        ok = [t for t, v in zip(sweep["threshold"], sweep[check]) if v >= target]
        assert d["threshold"] == (min(ok) if check == "precision" else max(ok))


def test_multiclass_scores_equal_sklearn():
    rng = np.random.default_rng(4)
    n, classes = 300, ["a", "b", "c"]
    logits = rng.normal(size=(n, 3))
    y = np.array(classes)[rng.integers(0, 3, n)]
    logits[np.arange(n), [classes.index(v) for v in y]] += 1.0
    P = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pred = np.array(classes)[P.argmax(axis=1)]
    cols = {"y": y, "pred": pred} | {f"proba_{c}": P[:, i] for i, c in enumerate(classes)}
    r = evaluate(pa.table(cols), label="y", prediction="pred", score="proba_*", batch_size=37)
    m = r.metrics["overall"]
    assert close(m["roc_auc"], skm.roc_auc_score(y, P, multi_class="ovr", labels=classes))
    assert close(m["log_loss"], skm.log_loss(y, P, labels=classes))
    assert close(m["average_precision"], skm.average_precision_score(
        (y[:, None] == np.array(classes)).astype(int), P, average="macro"))
    assert close(m["f1_macro"], skm.f1_score(y, pred, average="macro"))


def test_edge_cases_single_class_and_never_predicted():
    m = evaluate({"y": [1, 1, 1], "p": [1, 1, 1]}, label="y", prediction="p").metrics["overall"]
    assert m["accuracy"] == 1.0 and m["f1"] == skm.f1_score([1, 1, 1], [1, 1, 1])
    m = evaluate({"y": [0, 0, 0], "p": [0, 0, 0]}, label="y", prediction="p", zero_division=1).metrics["overall"]
    assert m["precision"] == skm.precision_score([0, 0, 0], [0, 0, 0], zero_division=1) == 1.0
    y, p = [0, 1, 2, 2], [0, 0, 0, 0]  # classes 1 and 2 never predicted
    m = evaluate({"y": y, "p": p}, label="y", prediction="p", zero_division=np.nan).metrics["overall"]
    assert close(m["precision_macro"], skm.precision_score(y, p, average="macro", zero_division=np.nan))
    assert m["per_class"]["1"]["precision"] != m["per_class"]["1"]["precision"]  # NaN


def test_missing_labels_and_predictions_are_skipped_and_counted():
    r = evaluate({"y": ["a", None, "b", "b"], "p": ["a", "a", None, "b"]}, label="y", prediction="p")
    assert r.metrics["rows"] == 4 and r.metrics["skipped"] == 2
    assert r.metrics["overall"]["count"] == 2 and r.metrics["overall"]["accuracy"] == 1.0


def test_string_and_mixed_numeric_labels():
    r = evaluate({"y": [0, 1, 1], "p": [0.0, 1.0, 0.0]}, label="y", prediction="p", task="classification")
    assert r.metrics["classes"] == [0.0, 1.0] and close(r.metrics["overall"]["accuracy"], 2 / 3)
    with pytest.raises(SpecError, match="pos_label"):
        evaluate({"y": ["x", "y"], "p": ["x", "y"], "s": [0.2, 0.8]}, label="y", prediction="p", score="s")
    with pytest.raises(SchemaError, match="did you mean 'pred'"):
        evaluate({"y": [1], "pred": [1]}, label="y", prediction="prd")


@pytest.mark.parametrize("kwargs,match", [
    ({"threshold_criterion": "recal>=0.5"}, "unknown threshold criterion"),
    ({"zero_division": "nan"}, "zero_division"),
    ({"beta": -1.0}, "beta"),
    ({"task": "ranking"}, "task must be"),
])
def test_bad_parameters_fail_before_reading(kwargs, match):
    with pytest.raises(SpecError, match=match):
        evaluate({"y": [0, 1], "p": [0, 1]}, label="y", prediction="p", **kwargs)


def test_a_fitted_pipeline_plugs_in_as_the_model():
    """``model=``: the data is transformed batch by batch first; its output carries the prediction column."""
    import beamlearn as bl

    rng = np.random.default_rng(8)
    x = rng.normal(size=500)
    table = pa.table({"x": x, "y": (x > 0).astype(int), "p": (x > 0.1).astype(int)})
    fitted = bl.Pipeline([bl.StandardScaler(["x"])]).fit(table)
    r = evaluate(table, label="y", prediction="p", model=fitted, batch_size=64)
    assert r.metrics["overall"]["accuracy"] == skm.accuracy_score(table["y"], table["p"])


def test_multiclass_binned_auc_within_bound():
    rng = np.random.default_rng(9)
    n, k = 6000, 3
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.0
    P = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    cols = {"y": y, "pred": P.argmax(axis=1)} | {f"proba_{c}": P[:, c] for c in range(k)}
    m = evaluate(pa.table(cols), label="y", prediction="pred", score="proba_*", exact_max_rows=1000,
                 batch_size=700).metrics["overall"]
    assert m["roc_auc_method"] == "binned" and 0 < m["roc_auc_error_bound"] < 0.01
    assert abs(m["roc_auc"] - skm.roc_auc_score(y, P, multi_class="ovr")) <= m["roc_auc_error_bound"] + 1e-12
    assert m["per_class"]["2"]["roc_auc"] == pytest.approx(skm.roc_auc_score(y == 2, P[:, 2]), abs=0.01)
