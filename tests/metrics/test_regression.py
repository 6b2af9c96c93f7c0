"""Regression metrics: parity with sklearn.metrics (hypothesis), merge invariance, the sketch path."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from beamlearn.analyzers import run_analyzer
from beamlearn.metrics import RegressionMetrics, evaluate
from beamlearn.metrics.regression import weighted_median

TOL = 1e-9


def close(a, b, tol=TOL):
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 80), st.integers(0, 2**32 - 1), st.booleans(), st.integers(1, 30), st.floats(-1e6, 1e6))
def test_regression_metrics_equal_sklearn(n, seed, weighted, size, offset):
    rng = np.random.default_rng(seed)
    y = offset + rng.normal(size=n) * rng.uniform(0.1, 100)
    if rng.random() < 0.3:
        y = y.round()  # ties, zeros
    p = y + rng.normal(size=n) * rng.uniform(0, 10)
    w = rng.integers(0, 5, n).astype(float) if weighted else None
    if w is not None and w.sum() == 0:
        w[0] = 1.0
    table = pa.table({"y": y, "p": p} | ({"w": w} if weighted else {}))
    a = RegressionMetrics("y", "p", sample_weight="w" if weighted else None)
    m = run_analyzer(a, table.to_batches(max_chunksize=size))["overall"]
    assert close(m["mae"], skm.mean_absolute_error(y, p, sample_weight=w))
    assert close(m["mse"], skm.mean_squared_error(y, p, sample_weight=w))
    assert close(m["rmse"], skm.root_mean_squared_error(y, p, sample_weight=w))
    assert close(m["mape"], skm.mean_absolute_percentage_error(y, p, sample_weight=w))
    assert close(m["r2"], skm.r2_score(y, p, sample_weight=w), 1e-7)
    assert close(m["median_absolute_error"], skm.median_absolute_error(y, p, sample_weight=w))


def test_r2_edge_cases_follow_sklearn():
    for y, p in (([1.0, 1.0, 1.0], [1.0, 1.0, 1.0]), ([2.0, 2.0], [1.0, 3.0])):
        m = evaluate({"y": y, "p": p}, label="y", prediction="p").metrics["overall"]
        assert m["r2"] == skm.r2_score(y, p)
    m = evaluate({"y": [1.0], "p": [2.0]}, label="y", prediction="p").metrics["overall"]
    assert math.isnan(m["r2"])


def test_merge_order_and_sketch_path():
    rng = np.random.default_rng(0)
    y = rng.normal(size=30_000)
    p = y + rng.standard_t(3, size=30_000)
    table = pa.table({"y": y, "p": p})
    a = RegressionMetrics("y", "p", exact_max_rows=5_000)
    accs = [a.add(a.create(), b) for b in table.to_batches(max_chunksize=4096)]
    m1 = a.extract(a.merge(accs))["overall"]
    m2 = a.extract(a.merge(accs[::-1]))["overall"]
    for k in ("mae", "mse", "r2", "mape"):
        assert close(m1[k], m2[k], 1e-12)
    assert m1["median_absolute_error_method"] == "kll"
    ae = np.sort(np.abs(p - y))
    rank = np.searchsorted(ae, m1["median_absolute_error"]) / len(ae)
    assert abs(rank - 0.5) <= m1["median_absolute_error_rank_bound"]


def test_weighted_median_matches_numpy_for_unit_weights():
    x = np.array([4.0, 1.0, 3.0, 2.0])
    assert weighted_median(x, np.ones(4)) == np.median(x) == 2.5
