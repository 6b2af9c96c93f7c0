"""`beamlearn serve` as a real server on 127.0.0.1: requests over TCP, SIGHUP reload, a clean stop; a bad
artifact is one line and exit code 2."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pyarrow as pa

import beamlearn as bl


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, seconds: float = 30) -> None:
    end = time.time() + seconds
    while time.time() < end:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode())
        try:
            if httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the server did not become ready")


def test_serve_answers_over_tcp_reloads_on_sighup_and_stops(tmp_path):
    data = pa.table({"x": [1.0, 2.0, 3.0, 4.0], "c": ["a", "b", "a", "c"]})
    first = bl.Pipeline([bl.StandardScaler(["x"]), bl.OneHotEncoder(["c"])], name="m").fit(data)
    second = bl.Pipeline([bl.MinMaxScaler(["x"]), bl.OneHotEncoder(["c"])], name="m").fit(data)
    path = str(tmp_path / "m.blm")
    first.save(path)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "beamlearn.cli", "serve", path, "--port", str(port),
                             "--drift-window", "3", "--drift-every", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        _wait_ready(url, proc)
        rec = {"x": 2.5, "c": "b"}
        assert httpx.post(url + "/v1/transform", json=rec).json() == first.transform_one(rec)
        httpx.post(url + "/v1/transform", json=[rec] * 5)
        assert httpx.get(url + "/v1/drift").json()["window_rows"] == 3  # --drift-window reached the worker
        assert "beamlearn_drift_window_rows 3.0" in httpx.get(url + "/metrics").text
        assert httpx.get(url + "/v2/models/m").json()["name"] == "m"
        tmp = str(tmp_path / ".m.tmp")
        second.save(tmp)
        os.replace(tmp, path)
        proc.send_signal(signal.SIGHUP)
        end = time.time() + 10
        while httpx.post(url + "/v1/transform", json=rec).json() != second.transform_one(rec):
            assert time.time() < end, "SIGHUP did not reload the artifact"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert proc.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after its graceful shutdown


def test_serve_refuses_a_bad_artifact_with_one_line(tmp_path):
    bad = tmp_path / "bad.blm"
    bad.write_bytes(b"not an artifact")
    r = subprocess.run([sys.executable, "-m", "beamlearn.cli", "serve", str(bad), "--port", str(_free_port())],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("beamlearn: error:") and "bad.blm" in r.stderr
