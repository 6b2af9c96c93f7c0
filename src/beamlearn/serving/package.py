"""``beamlearn package lambda``: a deployable AWS Lambda bundle for one artifact, with only what serving needs.

The bundle is a zip laid out as Lambda's ``/var/task``: the artifact as ``model.blm``, the ``beamlearn`` package
and the installed distributions the serving path imports, found by running it: a probe process loads the
artifact and answers real events through :func:`~beamlearn.serving.aws_lambda.lambda_handler` (readiness,
metadata, a transform), and every module it imported is mapped to its distribution
(:func:`importlib.metadata.packages_distributions`).  So Beam, scikit-learn (unless the pipeline holds a
``SklearnModel``), scipy, pandas and matplotlib stay out, and a bundle is 60-70 MB unzipped, well under AWS's
250 MB limit.  Tests, C sources and headers inside packages are left out; compiled wheels come from this
environment, so the bundle runs on the same OS, CPU architecture and Python minor version (the SAM template says
which).  ``template.yaml`` (AWS SAM) declares the function with an HTTP API and a Function URL (IAM auth).
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from beamlearn import artifact
from beamlearn.errors import BeamlearnError

__all__ = ["LAMBDA_LIMIT", "package_lambda", "sam_template"]

LAMBDA_LIMIT = 250 * 1024 * 1024  # AWS Lambda: deployment package, unzipped (layers included)
SKIP_DIRS = {"tests", "test", "__pycache__", "include", "benchmarks"}
SKIP_SUFFIXES = {".pyx", ".pxd", ".pxi", ".h", ".hpp", ".cc", ".cpp", ".c", ".pyi", ".a"}
LEFT_OUT = {"pandas", "cloudpickle", "apache_beam", "matplotlib", "sklearn", "scipy", "pytest", "IPython"}
SKLEARN = {"sklearn", "scipy", "joblib", "threadpoolctl", "skops"}
NATIVE = re.compile(r"lib.*\.so(\.\d+)*$")
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)  # zip entries get one timestamp: the same inputs give the same bundle

_PROBE = r"""
import json, sys
startup = set(sys.modules)  # the interpreter's and site's own (e.g. a .pth hook): not the handler's
blocked = set(json.loads(sys.argv[3]))

class Block:  # optional packages the serving path must do without (pyarrow imports pandas when present)
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is left out of the Lambda bundle")
        return None

sys.meta_path.insert(0, Block())
from beamlearn.serving.aws_lambda import lambda_handler
import beamlearn

model = beamlearn.load(sys.argv[1])
name = sys.argv[2]

def event(method, path, body=None):
    return {"version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
            "headers": {"content-type": "application/json", "host": "probe.lambda-url.us-east-1.on.aws"},
            "requestContext": {"http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                                        "sourceIp": "127.0.0.1", "userAgent": "probe"},
                               "requestId": "probe", "routeKey": "$default", "stage": "$default",
                               "accountId": "0", "apiId": "probe", "domainName": "probe", "domainPrefix": "probe",
                               "time": "01/Jan/2026:00:00:00 +0000", "timeEpoch": 0},
            "body": None if body is None else json.dumps(body), "isBase64Encoded": False}

import base64, pyarrow as pa
sink = pa.BufferOutputStream()
with pa.ipc.new_stream(sink, model.input_schema) as w:
    w.write_table(pa.Table.from_pylist([{}], schema=model.input_schema))
ipc = event("POST", "/v1/transform")
ipc["headers"]["content-type"] = "application/vnd.apache.arrow.stream"
ipc["body"], ipc["isBase64Encoded"] = base64.b64encode(sink.getvalue().to_pybytes()).decode(), True
codes = [lambda_handler(event("GET", "/v2/health/ready"), None)["statusCode"],
         lambda_handler(ipc, None)["statusCode"],
         lambda_handler(event("GET", f"/v2/models/{name}"), None)["statusCode"],
         lambda_handler(event("POST", "/v1/transform", {c: None for c in model.input_schema.names}), None)["statusCode"],
         lambda_handler(event("GET", "/metrics"), None)["statusCode"]]
with open("/proc/self/maps") as fh:  # the native libraries loaded
    mapped = sorted({line.split(None, 5)[5].strip() for line in fh if len(line.split(None, 5)) == 6
                     and ".so" in line})
print(json.dumps({"codes": codes, "modules": sorted({m.split(".")[0] for m in set(sys.modules) - startup}),
                  "mapped": mapped}))
"""


def package_lambda(model: str, out: str, *, name: str | None = None, memory_mb: int = 1024,
                   timeout_s: int = 30) -> dict[str, Any]:
    """Write ``out/bundle.zip`` and ``out/template.yaml`` for ``model``; returns a summary (sizes, the
    distributions included, the runtime).  Raises :class:`~beamlearn.errors.BeamlearnError` when the artifact
    does not load, the serving probe fails, or the bundle would exceed :data:`LAMBDA_LIMIT` unzipped."""
    fitted = artifact.load(model)  # verifies it: a bad artifact fails here, not in AWS
    name = name or fitted.name or Path(model).stem
    runtime = f"python{sys.version_info.major}.{sys.version_info.minor}"
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())
    if sys.platform != "linux" or arch is None:
        raise BeamlearnError(f"package lambda must run on Linux x86_64 or arm64 (the bundle holds this "
                             f"environment's compiled wheels); this is {sys.platform} {platform.machine()}")
    modules, mapped = probe_modules(model, name,
                                    sklearn=any(type(s).__name__ == "SklearnModel" for s in fitted.steps))
    dists = sorted(_distributions(modules))
    files = list(bundle_files(dists, mapped))
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    unzipped = sum(src.stat().st_size for src, _ in files) + os.path.getsize(model)
    if unzipped > LAMBDA_LIMIT:
        raise BeamlearnError(f"the bundle would be {unzipped / 2**20:.0f} MiB unzipped, over AWS Lambda's "
                             f"{LAMBDA_LIMIT / 2**20:.0f} MiB limit; use the container image instead (Dockerfile)")
    tmp = target / ".bundle.zip.tmp"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        _add(zf, Path(model), "model.blm")
        for src, arc in sorted(files, key=lambda f: f[1]):
            _add(zf, src, arc)
    os.replace(tmp, target / "bundle.zip")
    (target / "template.yaml").write_text(sam_template(name, runtime=runtime, arch=arch, memory_mb=memory_mb,
                                                       timeout_s=timeout_s))
    return {"bundle": str(target / "bundle.zip"), "template": str(target / "template.yaml"),
            "zipped": os.path.getsize(target / "bundle.zip"), "unzipped": unzipped, "files": len(files) + 1,
            "distributions": dists, "runtime": runtime, "architecture": arch, "name": name}


def probe_modules(model: str, name: str, *, sklearn: bool = False) -> tuple[list[str], set[str]]:
    """The top-level modules the Lambda handler imports to load ``model`` and answer readiness, metadata,
    transforms (JSON and Arrow IPC) and metrics, and the shared libraries it loaded, run in a fresh interpreter where :data:`LEFT_OUT` cannot be imported (scikit-learn
    and scipy can when ``sklearn``: the pipeline holds a SklearnModel)."""
    env = {**os.environ, "BEAMLEARN_MODEL": os.path.abspath(model), "BEAMLEARN_MODEL_NAME": name}
    blocked = sorted(LEFT_OUT - (SKLEARN if sklearn else set()))
    proc = subprocess.run([sys.executable, "-c", _PROBE, os.path.abspath(model), name, json.dumps(blocked)], env=env,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BeamlearnError(f"the serving probe failed on {model}: {tail}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if any(c >= 500 for c in result["codes"]):
        raise BeamlearnError(f"the serving probe got HTTP {result['codes']} from {model} (readiness, Arrow "
                             "transform, metadata, JSON transform, metrics)")
    return result["modules"], {os.path.realpath(m) for m in result["mapped"]} | set(result["mapped"])


def _distributions(modules: Iterable[str]) -> set[str]:
    owners = metadata.packages_distributions()
    return {d for m in modules for d in owners.get(m, []) if d.lower() != "beamlearn"}


def bundle_files(dists: Iterable[str], mapped: set[str] | None = None) -> Iterable[tuple[Path, str]]:
    """(source file, path in the zip) for the beamlearn package and each distribution in ``dists``;
    with ``mapped`` (the shared libraries the probe loaded), a bundled native library (``lib*.so*``) it did not
    load is left out (pyarrow's Flight, Parquet, Substrait and dataset libraries, copies of a library under its
    other names): the modules that need them (``pyarrow.flight``...) are not importable from the bundle."""
    import beamlearn

    root = Path(beamlearn.__file__).resolve().parent
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root.parent)
        if f.is_file() and "__pycache__" not in rel.parts and f.suffix != ".pyc":
            yield f, rel.as_posix()
    for dist_name in dists:
        dist = metadata.distribution(dist_name)
        for entry in dist.files or ():
            rel = Path(str(entry))
            if rel.parts and rel.parts[0] == "..":  # scripts and data outside site-packages
                continue
            if SKIP_DIRS & set(rel.parts[1:-1]) or rel.suffix in SKIP_SUFFIXES:
                continue
            src = Path(str(dist.locate_file(entry)))
            if mapped is not None and NATIVE.match(rel.name) and str(src) not in mapped \
                    and os.path.realpath(src) not in mapped:
                continue
            if src.is_file():
                yield src, rel.as_posix()


def _add(zf: zipfile.ZipFile, src: Path, arc: str) -> None:
    info = zipfile.ZipInfo(arc, date_time=_FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o755 if os.access(src, os.X_OK) else 0o644) << 16
    with open(src, "rb") as fh:
        zf.writestr(info, fh.read())


def sam_template(name: str, *, runtime: str, arch: str, memory_mb: int = 1024, timeout_s: int = 30) -> str:
    """An AWS SAM template: the function (``bundle.zip``, the beamlearn handler), an HTTP API catching every
    route and a Function URL with IAM auth; outputs the two URLs."""
    logical = "".join(ch for ch in name.title() if ch.isalnum()) or "Model"
    return f"""AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Description: beamlearn model {json.dumps(name)} served over the Open Inference Protocol and /v1/transform

Resources:
  {logical}Function:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: bundle.zip
      Handler: beamlearn.serving.aws_lambda.lambda_handler
      Runtime: {runtime}
      Architectures:
        - {arch}
      MemorySize: {int(memory_mb)}
      Timeout: {int(timeout_s)}
      Environment:
        Variables:
          BEAMLEARN_MODEL_NAME: {json.dumps(name)}
      FunctionUrlConfig:
        AuthType: AWS_IAM
      Events:
        Api:
          Type: HttpApi
          Properties:
            Path: /{{proxy+}}
            Method: ANY

Outputs:
  ApiUrl:
    Description: The HTTP API's base URL
    Value: !Sub "https://${{ServerlessHttpApi}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/"
  FunctionUrl:
    Description: The Function URL (IAM auth)
    Value: !GetAtt {logical}FunctionUrl.FunctionUrl
"""
