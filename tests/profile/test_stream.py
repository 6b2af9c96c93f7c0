"""Drift per window on a stream: ``transform --follow --drift-every`` gives, window by window, what ``beamlearn drift
MODEL --data ... --by ROWS`` gives on the same rows (dead letters left out), and flags the shifted windows only."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

import beamlearn as bl
from beamlearn.follow import StreamSource, follow
from beamlearn.follow_sinks import StreamSink
from beamlearn.profile import profile_windows, read_profile, training_profile
from beamlearn.profile.drift import drift
from beamlearn.profile.stream import WINDOW_PARAMS, DriftWindows

FIGS = ("psi", "js", "linf", "ks", "ks_pvalue", "chi2_pvalue", "wasserstein", "wasserstein_normed", "drift", "method")


def _records(n, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    cats = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2] if not shift else [0.1, 0.2, 0.7])
    return [{"x": float(v), "c": str(c)} for v, c in zip(rng.normal(shift, 1, n), cats)]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("stream") / "m.blm")
    bl.Pipeline([bl.StandardScaler(["x"]), bl.OneHotEncoder(["c"], handle_unknown="ignore")]).fit(
        _records(20_000, 0)).save(path)
    return path


def _flat(report):
    return {(c, k): f.get(k) for c, f in report["columns"].items() for k in FIGS}


def _same(a, b):
    fa, fb = _flat(a), _flat(b)
    assert fa.keys() == fb.keys()
    for k, v in fa.items():
        assert v == (pytest.approx(fb[k], rel=1e-9) if isinstance(v, float) else fb[k]), k


def test_follow_windows_equal_drift_by_windows_on_the_same_rows(model, tmp_path):
    rows = _records(300, 1) + _records(150, 2, shift=1.0)  # windows of 150 < KLL's k: exact, so equal figures
    lines = [json.dumps(r) for r in rows]
    lines.insert(10, '{"x": "oops", "c": "a"}')  # a dead letter: not served, not in any window
    reports: list[dict] = []
    fitted = bl.load(model)
    windows = DriftWindows(training_profile(fitted), fitted.input_schema, rows=150, emit=reports.append)
    out = io.BytesIO()
    stats = follow(fitted, StreamSource(io.BytesIO("\n".join(lines).encode() + b"\n")), StreamSink(out),
                   batch_size=64, drift=windows)
    assert stats.rows_out == 450 and stats.dead_letters == 1
    data = tmp_path / "good.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ref = read_profile(model)
    want = [dict(drift(ref, cur, columns=["x", "c"]), window=start)
            for start, cur in profile_windows(str(data), rows=150, **WINDOW_PARAMS)]
    assert [(r["window"], r["rows"]) for r in reports] == [(0, 150), (150, 150), (300, 150)]
    assert [r["window"] for r in want] == [0, 150, 300]
    for got, exp in zip(reports, want):
        _same(got, exp)
    assert [r["drift"] for r in reports] == [False, False, True]
    assert reports[2]["drifted"] == ["x", "c"]


def test_cli_drift_every_writes_one_report_per_window(model, tmp_path):
    rows = _records(2000, 3) + _records(1000, 4, shift=1.0)
    out, reports = tmp_path / "out.jsonl", tmp_path / "drift.jsonl"
    proc = subprocess.run([sys.executable, "-m", "beamlearn.cli", "transform", model, "--follow", "--out", str(out),
                           "--drift-every", "1000", "--drift-out", str(reports)],
                          input="".join(json.dumps(r) + "\n" for r in rows), capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(x) for x in reports.read_text().splitlines()]
    assert [(r["window"], r["rows"], r["drift"]) for r in got] == [(0, 1000, False), (1000, 1000, False),
                                                                     (2000, 1000, True)]
    assert "drift: 1,000 rows, window from row 2000: 2 of 2 columns drifted" in proc.stderr
    bad = subprocess.run([sys.executable, "-m", "beamlearn.cli", "transform", model, "--follow", "--drift-out",
                          str(reports)], input="", capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2 and "--drift-out needs --drift-every" in bad.stderr


def test_windows_without_the_stream():
    from beamlearn.profile import profile

    reference = profile({"x": np.arange(1000.0)}, **WINDOW_PARAMS)
    seen: list[dict] = []
    w = DriftWindows(reference, pa.schema([("x", pa.float64())]), rows=400, emit=seen.append, method="psi")
    w.add(pa.record_batch({"x": np.arange(500.0)}))
    w.add(pa.record_batch({"x": np.arange(500.0, 1000.0)}))
    w.finish()
    assert [(r["window"], r["rows"], r["method"]) for r in seen] == [(0, 400, "psi"), (400, 400, "psi"),
                                                                   (800, 200, "psi")]
    assert all(r["drift"] for r in seen)  # each window holds one slice of the range: its PSI is large
    with pytest.raises(bl.errors.SpecError, match="at least 1 row"):
        DriftWindows(reference, pa.schema([("x", pa.float64())]), rows=0, emit=seen.append)
