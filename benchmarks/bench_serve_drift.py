"""Drift on the server: what it costs a request, and what a report costs.

Rows:

- the hot path: ``DriftMonitor.add`` per record (one ``deque.append``), against the ~90 µs of CPU a served request
  costs (benchmarks/bench_serve.py);
- in-process requests (``POST /v1/transform``, one record each, httpx's ASGI transport, sequential) with drift on
  (``--drift-window 10000``) and off: µs per request and the ratio;
- one report (``GET /metrics`` / ``/v1/drift`` when stale): the window's records to Arrow, profiled, compared, for
  windows of 1,000 and 10,000 records of 15 and 60 columns (2/3 numeric, 1/3 strings).

Run: ``.venv/bin/python benchmarks/bench_serve_drift.py [--requests 3000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import timeit

import numpy as np

import beamlearn as bl
from beamlearn.serving import create_app
from beamlearn.serving.drift import DriftMonitor


def _data(n: int, cols: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    num = cols * 2 // 3
    out = {f"x{i}": rng.normal(0, 1, n) for i in range(num)}
    out.update({f"c{i}": rng.choice(["a", "b", "c", "d"], n).tolist() for i in range(cols - num)})
    return out


def _records(data: dict, n: int) -> list[dict]:
    return [{k: (float(v[i]) if k[0] == "x" else v[i]) for k, v in data.items()} for i in range(n)]


def _model(cols: int) -> bl.FittedPipeline:
    data = _data(20_000, cols)
    num = [k for k in data if k[0] == "x"]
    return bl.Pipeline([bl.StandardScaler(num), bl.OneHotEncoder([k for k in data if k[0] == "c"])]).fit(data)


async def _requests(app, records: list[dict]) -> float:
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as c:
        for r in records[:200]:  # warm-up
            await c.post("/v1/transform", json=r)
        t0 = time.perf_counter()
        for r in records:
            await c.post("/v1/transform", json=r)
        return (time.perf_counter() - t0) / len(records)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    args = ap.parse_args()

    fitted = _model(15)
    monitor = DriftMonitor(fitted, window=10_000)
    rec = _records(_data(1, 15, seed=1), 1)[0]
    n = 1_000_000
    add = timeit.timeit(lambda: monitor.add(rec), number=n) / n
    empty = timeit.timeit(lambda: None, number=n) / n
    print(f"hot path: DriftMonitor.add {1e9 * (add - empty):.0f} ns per record "
          f"({100 * (add - empty) / 90e-6:.3f}% of a ~90 us request)")

    records = _records(_data(args.requests, 15, seed=2), args.requests)
    per = {}
    for label, window in (("off", 0), ("on", 10_000)):
        app = create_app(fitted, drift_window=window)
        per[label] = min(asyncio.run(_requests(app, records)) for _ in range(2))
    print(f"in-process requests, 15 columns: drift off {1e6 * per['off']:.1f} us, on {1e6 * per['on']:.1f} us "
          f"per request (on/off {per['on'] / per['off']:.3f})")

    for cols in (15, 60):
        model = fitted if cols == 15 else _model(cols)
        for size in (1_000, 10_000):
            m = DriftMonitor(model, window=size)
            m.extend(_records(_data(size, cols, seed=3), size))
            m.compute()  # imports and first-use costs
            t0 = time.perf_counter()
            report = m.compute()
            print(f"report: {size:>6,} records x {cols} columns: {1e3 * (time.perf_counter() - t0):6.1f} ms "
                  f"({report['compared']} columns compared, drift={report['drift']})")


if __name__ == "__main__":
    main()
