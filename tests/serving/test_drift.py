"""Drift on the server: /v1/drift and /metrics give what ``beamlearn.profile.drift`` gives on the same rows (exactly
while the window's sketch is exact, within the sketches' error beyond), shifted traffic is flagged and unshifted is
not, every route feeds the window, the window is bounded, a reload starts a new one, and the hot path is unchanged."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from starlette.testclient import TestClient

import beamlearn as bl
from beamlearn.profile import profile, read_profile, training_profile
from beamlearn.profile.drift import drift
from beamlearn.serving import create_app
from beamlearn.serving.app import ARROW_STREAM
from beamlearn.serving.drift import FIGURES, DriftMonitor

N = 20_000
PIPE = bl.Pipeline([bl.StandardScaler(["x", "n"]), bl.OneHotEncoder(["c"], handle_unknown="ignore")], name="m")


def _rows(n, seed, shift=0.0, cats=("a", "b", "c"), p=None):
    rng = np.random.default_rng(seed)
    x, k = rng.normal(shift, 1, n), rng.integers(0, 50, n)
    c = rng.choice(list(cats), n, p=p)
    return [{"x": float(a), "n": int(b) + int(shift * 10), "c": str(s)} for a, b, s in zip(x, k, c)]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("drift") / "m.blm")
    PIPE.fit(_rows(N, 0)).save(path)
    return path


def _client(model, **kw):
    return TestClient(create_app(model, drift_every=0, **kw))


def _cli_drift(model, rows, **kw):
    """What ``beamlearn drift MODEL --data ROWS`` computes."""
    return drift(read_profile(model), profile(rows, correlations=0, distinct=False, lengths=False), **kw)


def _figures(report):
    """The figures and decisions of a report, flat (pytest.approx compares flat dicts)."""
    return {(c, k): f.get(k) for c, f in report["columns"].items()
            for k in (*FIGURES, "method", "drift", "current_count")}


def _same(got, want):
    a, b = _figures(got), _figures(want)
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert v == (pytest.approx(b[k], rel=1e-9) if isinstance(v, float) else b[k]), k


def test_server_drift_equals_profile_drift_on_the_same_rows(model):
    rows = _rows(150, 1, shift=0.5, p=[0.6, 0.3, 0.1])  # below the KLL's k: both sketches exact, figures equal
    with _client(model) as c:
        for r in rows[:100]:
            assert c.post("/v1/transform", json=r).status_code == 200
        assert c.post("/v1/transform", json=rows[100:]).status_code == 200
        got = c.get("/v1/drift").json()
    want = _cli_drift(model, rows, pvalues=False)
    assert got["window_rows"] == 150 and got["enabled"] is True
    _same(got, want)
    assert got["drifted"] == want["drifted"]
    full = _cli_drift(model, rows)  # the CLI's figures with p-values: the same distances
    for col, f in got["columns"].items():
        for k in FIGURES:
            assert f.get(k) == pytest.approx(full["columns"][col].get(k)), (col, k)
        assert f.get("ks_pvalue") is None and f.get("chi2_pvalue") is None


@pytest.mark.parametrize("shift", [0.0, 0.8])
def test_shifted_traffic_is_detected_unshifted_is_not(model, shift):
    rows = _rows(5000, 7, shift=shift, p=None if not shift else [0.7, 0.2, 0.1])
    with _client(model) as c:
        assert c.post("/v1/transform", json=rows).status_code == 200
        got = c.get("/v1/drift").json()
        text = c.get("/metrics").text
    want = _cli_drift(model, rows, pvalues=False)
    assert got["drift"] is bool(shift) and want["drift"] is bool(shift)
    assert sorted(got["drifted"]) == (["c", "n", "x"] if shift else [])
    for col in ("x", "n", "c"):  # sketched windows: within the sketches' rank error of each other
        g, w = got["columns"][col], want["columns"][col]
        for k in ("js", "ks", "wasserstein_normed", "linf"):
            if w.get(k) is not None:
                assert g[k] == pytest.approx(w[k], abs=0.04), (col, k)
    assert f'beamlearn_drift_detected{{column="x"}} {1.0 if shift else 0.0}' in text
    assert 'beamlearn_drift{column="c",method="js"}' in text and 'beamlearn_drift{column="x",method="psi"}' in text
    assert "beamlearn_drift_window_rows 5000.0" in text and f"beamlearn_drift_share {1.0 if shift else 0.0}" in text


def test_every_route_feeds_a_bounded_window_and_the_hot_path_is_unchanged(model):
    fitted = bl.load(model)
    rows = _rows(120, 3)
    with _client(model, drift_window=100) as c:
        for r in rows[:10]:  # single records (micro-batched): what transform_one gives
            assert c.post("/v1/transform", json=r).json() == pytest.approx(fitted.transform_one(dict(r)))
        table = pa.Table.from_pylist(rows[10:40], schema=fitted.input_schema)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        assert c.post("/v1/transform", content=sink.getvalue().to_pybytes(),
                      headers={"content-type": ARROW_STREAM}).status_code == 200
        oip = {"inputs": [{"name": k, "shape": [5], "datatype": {"x": "FP64", "n": "INT64", "c": "BYTES"}[k],
                           "data": [r[k] for r in rows[40:45]]} for k in ("x", "n", "c")]}
        assert c.post("/v2/models/m/infer", json=oip).status_code == 200
        assert c.get("/v1/drift").json()["window_rows"] == 45
        bad = c.post("/v1/transform", json={"x": "not a number", "n": 1, "c": "a"})
        assert bad.status_code == 422
        assert c.get("/v1/drift").json()["window_rows"] == 45  # a rejected record is not served, not counted
        assert c.post("/v1/transform", json=rows[45:]).status_code == 200
        got = c.get("/v1/drift").json()
        assert got["window_rows"] == 100 and got["window"] == 100
    app_window = _cli_drift(model, rows[20:], pvalues=False)  # the last 100 records
    _same(got, app_window)


def test_reload_starts_a_new_window_and_drift_can_be_off(model, tmp_path):
    with _client(model) as c:
        c.post("/v1/transform", json=_rows(50, 4))
        assert c.get("/v1/drift").json()["window_rows"] == 50
        assert c.post("/v2/repository/models/m/load").status_code == 200
        assert c.get("/v1/drift").json()["window_rows"] == 0
    with _client(model, drift_window=0) as c:
        c.post("/v1/transform", json=_rows(50, 4))
        assert c.get("/v1/drift").json() == {"enabled": False, "window": 0,
                                             "reason": "drift is off (--drift-window 0)"}
        assert "beamlearn_drift" not in c.get("/metrics").text
    old = bl.load(model)
    old.lineage.pop("profile")  # as an artifact fitted by an older beamlearn
    monitor = DriftMonitor(old)
    monitor.add({"x": 1.0})
    assert not monitor.enabled and "no training profile" in monitor.compute()["reason"]
    with pytest.raises(bl.errors.SpecError, match="p-value"):
        DriftMonitor(old, method="ks")


def test_a_report_is_reused_for_every_seconds(model):
    with TestClient(create_app(model, drift_every=3600)) as c:
        c.post("/v1/transform", json=_rows(20, 5))
        first = c.get("/v1/drift").json()
        c.post("/v1/transform", json=_rows(20, 6))
        assert c.get("/v1/drift").json() == first and first["window_rows"] == 20
    assert training_profile(bl.load(model))["rows"] == N
