"""Benchmark: the full classification report, overall and for 2 slice columns, beamlearn against sklearn.metrics.

Data: generated binary predictions (``y`` ~22% positive, a probability ``s``, the prediction ``p = s >= 0.5``,
``origin`` of 3 values and ``carrier`` of 16), generated in chunks from ``default_rng([seed, chunk])`` and cached
as a Parquet file per size in ``out/bench/``.

* **beamlearn, in memory**: ``evaluate(table, label, prediction, score, slices=["origin", "carrier"])`` on the
  Arrow table read fully into memory first — one fused pass computing, for the whole data and every slice value:
  confusion matrix, accuracy, balanced accuracy, precision/recall/F1 (binary, micro, macro, weighted), log loss,
  ROC AUC and average precision (binned above 1M rows, with the error bound), calibration table and a 101-point
  threshold sweep (overall).
* **sklearn, in memory**: the same set from ``sklearn.metrics`` on numpy arrays already in memory:
  ``confusion_matrix``, ``accuracy_score``, ``balanced_accuracy_score``, ``precision_recall_fscore_support``
  (binary, micro, macro, weighted), ``log_loss``, ``roc_auc_score``, ``average_precision_score`` for the whole
  data and every slice value (boolean masks), plus ``calibration_curve`` and ``precision_recall_curve`` (overall).
* **memory from files**: ``evaluate("file.parquet", ...)`` on files of 1M and 10M rows; the peak RSS difference
  should be flat in rows (the scores are kept only up to 1M rows, then the histograms take over).

Every measurement runs in a fresh subprocess.  Figures are printed, not asserted.

::

    .venv/bin/python benchmarks/bench_metrics.py               # 10M rows (+ files of 1M and 10M rows)
    .venv/bin/python benchmarks/bench_metrics.py --rows 1000000 --file-rows 300000,1000000   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _data import Peak, default_cache_dir, machine

CHUNK = 500_000
ORIGINS = np.array(["EWR", "JFK", "LGA"])
CARRIERS = np.array(["9E", "AA", "AS", "B6", "DL", "EV", "F9", "FL", "HA", "MQ", "OO", "UA", "US", "VX", "WN", "YV"])
SLICES = ["origin", "carrier"]


def chunk(k: int, n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng([seed, k])
    carrier = rng.integers(0, len(CARRIERS), n)
    y = (rng.random(n) < 0.15 + 0.01 * carrier).astype(np.int64)
    s = 1 / (1 + np.exp(-(rng.normal(size=n) * 1.2 + 1.6 * y - 1.6)))
    return pa.table({"y": y, "p": (s >= 0.5).astype(np.int64), "s": s,
                     "origin": ORIGINS[rng.integers(0, 3, n)], "carrier": CARRIERS[carrier]})


def cached_parquet(rows: int, cache: str) -> str:
    path = os.path.join(cache, f"metrics-{rows}.parquet")
    if not os.path.exists(path):
        os.makedirs(cache, exist_ok=True)
        tmp = path + ".tmp"
        writer = None
        for k, start in enumerate(range(0, rows, CHUNK)):
            t = chunk(k, min(CHUNK, rows - start))
            writer = writer or pq.ParquetWriter(tmp, t.schema)
            writer.write_table(t)
        writer.close()  # type: ignore[union-attr]
        os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------- workers
def work_beamlearn(kw: dict[str, Any]) -> dict[str, Any]:
    from beamlearn.metrics import evaluate

    table = pq.read_table(kw["path"])
    c0 = time.process_time()
    with Peak() as peak:
        r = evaluate(table, label="y", prediction="p", score="s", slices=SLICES)
    o = r.metrics["overall"]
    return {**peak.result(), "cpu_seconds": time.process_time() - c0, "slices": len(r.metrics["slices"]), "accuracy": o["accuracy"], "f1": o["f1"],
            "log_loss": o["log_loss"], "roc_auc": o["roc_auc"], "roc_auc_error_bound": o["roc_auc_error_bound"],
            "roc_auc_method": o["roc_auc_method"], "average_precision": o["average_precision"]}


def _sk_report(y: np.ndarray, p: np.ndarray, s: np.ndarray, overall: bool) -> dict[str, float]:
    import warnings

    from sklearn import metrics as skm

    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        skm.confusion_matrix(y, p)
        out["accuracy"] = skm.accuracy_score(y, p)
        skm.balanced_accuracy_score(y, p)
        out["f1"] = skm.precision_recall_fscore_support(y, p, average="binary")[2]
        for avg in ("micro", "macro", "weighted"):
            skm.precision_recall_fscore_support(y, p, average=avg)
        out["log_loss"] = skm.log_loss(y, s, labels=[0, 1])
        if len(np.unique(y)) == 2:
            out["roc_auc"] = skm.roc_auc_score(y, s)
            out["average_precision"] = skm.average_precision_score(y, s)
        if overall:
            from sklearn.calibration import calibration_curve

            calibration_curve(y, s, n_bins=10)
            skm.precision_recall_curve(y, s)
    return out


def work_sklearn(kw: dict[str, Any]) -> dict[str, Any]:
    table = pq.read_table(kw["path"])
    y, p, s = (table.column(c).to_numpy() for c in ("y", "p", "s"))
    cols = {c: table.column(c).to_numpy(zero_copy_only=False) for c in SLICES}
    c0 = time.process_time()
    with Peak() as peak:
        o = _sk_report(y, p, s, True)
        n_slices = 0
        for c in SLICES:
            for v in np.unique(cols[c]):
                m = cols[c] == v
                _sk_report(y[m], p[m], s[m], False)
                n_slices += 1
    return {**peak.result(), "cpu_seconds": time.process_time() - c0, "slices": n_slices, **o}


def work_files(kw: dict[str, Any]) -> dict[str, Any]:
    from beamlearn.metrics import evaluate

    with Peak() as peak:
        r = evaluate(kw["path"], label="y", prediction="p", score="s", slices=SLICES)
    return {**peak.result(), "rows": r.metrics["rows"], "file_mib": os.path.getsize(kw["path"]) / 2**20}


def run_worker(task: str, timeout: float, **kw: Any) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", task, "--worker-args", json.dumps(kw)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT "):])
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"error": f"exit {proc.returncode}: {tail[:300]}"}


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--file-rows", default="1000000,10000000", help="two sizes for the memory-from-files test")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json", default=None, help="also write every figure to this JSON file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-args", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        res = globals()[f"work_{a.worker}"](json.loads(a.worker_args))
        print("BENCH_RESULT " + json.dumps(res), flush=True)
        return 0
    cache = a.cache_dir or os.path.join(default_cache_dir(), "")
    report: dict[str, Any] = {"machine": machine(), "rows": a.rows, "load_before": os.getloadavg()}
    print(f"full classification report, overall + slices by {SLICES}, {a.rows:,} rows")
    t0 = time.perf_counter()
    path = cached_parquet(a.rows, cache)
    print(f"data: {path} ({time.perf_counter() - t0:.1f} s to prepare)")
    bl = report["beamlearn"] = run_worker("beamlearn", a.timeout, path=path)
    sk = report["sklearn"] = run_worker("sklearn", a.timeout, path=path)
    print(f"{'':<26}{'beamlearn':>12}{'sklearn':>12}")
    for key, fmt in (("seconds", "{:.2f}"), ("cpu_seconds", "{:.2f}"), ("rss_peak_mib", "{:.0f}"),
                     ("slices", "{}"), ("accuracy", "{:.6f}"), ("f1", "{:.6f}"), ("log_loss", "{:.6f}"),
                     ("roc_auc", "{:.6f}"), ("average_precision", "{:.6f}")):
        row = [fmt.format(r[key]) if isinstance(r.get(key), (int, float)) else r.get("error", "-")[:40]
               for r in (bl, sk)]
        print(f"{key:<26}{row[0]:>12}{row[1]:>12}")
    if "roc_auc_error_bound" in bl:
        print(f"beamlearn roc_auc is {bl['roc_auc_method']} with error bound {bl['roc_auc_error_bound']:.2e}"
              + (f" (|difference| to sklearn {abs(bl['roc_auc'] - sk['roc_auc']):.2e})" if "roc_auc" in sk else ""))
    if "seconds" in bl and "seconds" in sk:
        report["speedup"] = sk["seconds"] / bl["seconds"]
        print(f"speed-up: sklearn / beamlearn = {report['speedup']:.1f}x (target >= 3x)")
    sizes = [int(x) for x in a.file_rows.split(",")]
    files = report["files"] = {}
    print("\nevaluate from Parquet         rows   file MiB   seconds   peak RSS MiB")
    for n in sizes:
        r = files[n] = run_worker("files", a.timeout, path=cached_parquet(n, cache))
        if "error" in r:
            print(f"{n:>30,}   {r['error']}")
            continue
        print(f"{n:>30,}{r['file_mib']:>11.0f}{r['seconds']:>10.2f}{r['rss_peak_mib']:>15.0f}")
    if all("rss_peak_mib" in files[n] for n in sizes):
        growth = files[sizes[1]]["rss_peak_mib"] - files[sizes[0]]["rss_peak_mib"]
        report["files_growth_mib"] = growth
        print(f"peak({sizes[1]:,}) - peak({sizes[0]:,}) = {growth:.1f} MiB")
    report["load_after"] = os.getloadavg()
    print(f"load average before {report['load_before'][0]:.2f}, after {report['load_after'][0]:.2f}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(report, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
