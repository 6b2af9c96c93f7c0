"""The Dockerfile (no Docker daemon here): a non-root user, a HEALTHCHECK on /v2/health/ready, and its entry
point run for real, with pandas, scikit-learn, scipy and Beam made unimportable (the image does not install them)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx

import beamlearn as bl

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKERFILE = open(os.path.join(ROOT, "Dockerfile"), encoding="utf-8").read()  # noqa: SIM115

BLOCK = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pandas", "sklearn", "scipy", "apache_beam", "matplotlib"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
sys.argv = ["beamlearn.serving"]
runpy.run_module("beamlearn.serving", run_name="__main__")
"""


def _final_stage() -> str:
    return DOCKERFILE.split("\nFROM ")[-1]


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck():
    assert len(re.findall(r"^FROM ", DOCKERFILE, re.MULTILINE)) == 2
    final = _final_stage()
    user = re.search(r"^USER (\S+)", final, re.MULTILINE)
    assert user and user.group(1) not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*?/v2/health/ready", final, re.MULTILINE | re.DOTALL)
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])", final, re.MULTILINE).group(1))
    assert entry == ["python", "-m", "beamlearn.serving"]


def test_the_entry_point_serves_the_mounted_model_without_heavy_packages(tmp_path):
    f = bl.Pipeline([bl.StandardScaler(["x"])], name="m").fit({"x": [1.0, 3.0]})
    model = tmp_path / "model.blm"
    f.save(str(model))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "BEAMLEARN_MODEL": str(model), "PORT": str(port), "HOST": "127.0.0.1"}
    proc = subprocess.Popen([sys.executable, "-c", BLOCK], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.time() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < end, "not ready"
            try:
                if httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        assert httpx.post(url + "/v1/transform", json={"x": 3.0}).json() == {"x": 1.0}
        # the HEALTHCHECK's own command, run as Docker would
        check = json.loads(re.search(r"CMD (\[.*\])", _final_stage().split("HEALTHCHECK", 1)[1]).group(1))
        if check[0] == "python":
            check = [sys.executable, *check[1:]]
        assert subprocess.run(check, env=env, timeout=10, check=False).returncode == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def test_the_entry_point_refuses_a_bad_model_with_exit_2(tmp_path):
    bad = tmp_path / "model.blm"
    bad.write_bytes(b"junk")
    env = {**os.environ, "BEAMLEARN_MODEL": str(bad), "PORT": "0"}
    r = subprocess.run([sys.executable, "-m", "beamlearn.serving"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("beamlearn: error:") and "model.blm" in r.stderr
