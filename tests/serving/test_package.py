"""``beamlearn package lambda``: the bundle holds the artifact and only what serving imports, stays under AWS's
250 MB, answers real API Gateway and Function URL events from a plain interpreter with only the unpacked bundle
on ``sys.path``, and its SAM template passes cfn-lint."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import beamlearn as bl
from beamlearn.cli import main
from beamlearn.serving.package import LAMBDA_LIMIT

from .test_lambda import REC, _v1, _v2

HEAVY = ("apache_beam", "sklearn", "scipy", "pandas", "matplotlib", "cloudpickle", "pytest")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("package")
    fitted = bl.Pipeline([bl.SimpleImputer(["x"]), bl.StandardScaler(["x"]), bl.OneHotEncoder(["c"])]).fit(
        {"x": [1.0, None, 4.0, 2.0], "c": ["a", "b", "a", None]})
    model = str(root / "flights.blm")
    fitted.save(model)
    out = root / "lambda"
    assert main(["package", "lambda", model, "--out", str(out), "--name", "flights", "-q"]) == 0
    return fitted, out


def test_bundle_holds_only_what_serving_needs(bundle):
    _, out = bundle
    with zipfile.ZipFile(out / "bundle.zip") as zf:
        names = zf.namelist()
        unzipped = sum(i.file_size for i in zf.infolist())
    tops = {n.split("/")[0] for n in names}
    assert "model.blm" in tops and "beamlearn" in tops and {"numpy", "pyarrow", "starlette", "mangum"} <= tops
    assert not [t for t in tops if t.split(".")[0].split("-")[0] in HEAVY], sorted(tops)
    assert not [n for n in names if "/tests/" in n or n.endswith((".pyx", ".h"))][:5]
    assert not [n for n in names if "libarrow_flight" in n]  # a native library the handler never loads
    assert unzipped < LAMBDA_LIMIT
    print(f"bundle: {os.path.getsize(out / 'bundle.zip') / 2**20:.1f} MiB zipped, {unzipped / 2**20:.1f} MiB "
          f"unzipped, {len(names)} files")


def test_unpacked_bundle_answers_events_from_a_plain_interpreter(bundle, tmp_path):
    fitted, out = bundle
    task = tmp_path / "task"  # an empty folder, as /var/task
    task.mkdir()
    with zipfile.ZipFile(out / "bundle.zip") as zf:
        zf.extractall(task)
    events = [_v1(REC), _v2(REC), _v2(REC, url=True), _v2(REC, url=True, b64=True), _v2({"c": "a"})]
    script = ("import json, sys\nsys.path[:0] = [sys.argv[1]]\n"
              "from beamlearn.serving.aws_lambda import lambda_handler\n"
              "outs = [lambda_handler(e, None) for e in json.load(sys.stdin)]\n"
              "heavy = sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[2].split(',')))\n"
              "print(json.dumps({'outs': outs, 'heavy': heavy, 'numpy': sys.modules['numpy'].__file__}))\n")
    env = {"PATH": os.environ.get("PATH", ""), "LAMBDA_TASK_ROOT": str(task), "BEAMLEARN_MODEL_NAME": "flights"}
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", script, str(task), ",".join(HEAVY)],
                          input=json.dumps(events), capture_output=True, text=True, env=env, cwd=task, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout)
    assert got["heavy"] == [] and got["numpy"].startswith(str(task))
    *ok, bad = got["outs"]
    for o in ok:
        assert o["statusCode"] == 200
        body = base64.b64decode(o["body"]) if o.get("isBase64Encoded") else o["body"]
        assert json.loads(body) == fitted.transform_one(REC)
    assert bad["statusCode"] == 422 and "'x'" in json.loads(bad["body"])["error"]


def test_sam_template_passes_cfn_lint(bundle):
    _, out = bundle
    text = (out / "template.yaml").read_text()
    assert f"Runtime: python{sys.version_info.major}.{sys.version_info.minor}" in text
    assert "Handler: beamlearn.serving.aws_lambda.lambda_handler" in text and "CodeUri: bundle.zip" in text
    proc = subprocess.run([str(Path(sys.executable).with_name("cfn-lint")), str(out / "template.yaml")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_bad_artifact_is_refused_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.blm"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["package", "lambda", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert main(["package", "lambda", str(tmp_path / "missing.blm"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.blm" in err and "missing.blm" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "bundle.zip").exists()
