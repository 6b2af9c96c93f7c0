"""Single-record latency of the ONNX export under ONNX Runtime, next to ``transform_one``.

The pipeline is the one of ``bench_local.py`` (what a scikit-learn ColumnTransformer of
``Pipeline(SimpleImputer, StandardScaler)`` on 8 numeric columns and ``OneHotEncoder`` on 4 string columns of 50
values does), fitted on 20k rows of ``_data.py``.  Figures: per-record latency p50 / p99 in microseconds over
``--records`` distinct records (after a warm-up), for

- ``transform_one(record)`` (validation included),
- ``InferenceSession.run`` of ``fitted.to_onnx()`` (one output per column) on one-row feeds built beforehand
  (ONNX Runtime, one thread),
- the same for ``fitted.to_onnx(layout="matrix")`` (one output matrix, as skl2onnx's ColumnTransformer),
- the matrix session on a 1000-row batch, per row (what the graph costs when amortized),

and the ratio to the anchor of issue 15: 18 us for a skl2onnx-converted ColumnTransformer under ONNX Runtime.

    .venv/bin/python benchmarks/bench_interop.py [--records 3000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _data

import beamlearn as bl
from beamlearn.interop.onnx import onnx_feeds

ANCHOR_US = 18.0


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 in microseconds of per-call durations in seconds."""
    a = np.asarray(samples) * 1e6
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=3000)
    args = parser.parse_args()
    import onnxruntime as ort

    print(f"load average before: {os.getloadavg()}")
    table = _data.make_table(20_000)
    num = [c for c in table.column_names if c.startswith("num")]
    cat = [c for c in table.column_names if c.startswith("cat")]
    fitted = bl.Pipeline([bl.SimpleImputer(num), bl.StandardScaler(num),
                          bl.OneHotEncoder(cat, handle_unknown="ignore")]).fit(table)
    model = fitted.to_onnx()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    matrix = ort.InferenceSession(fitted.to_onnx(layout="matrix").SerializeToString(), opts,
                                  providers=["CPUExecutionProvider"])
    n = min(args.records, table.num_rows)
    records = table.slice(0, n).to_pylist()
    feeds = [onnx_feeds(model, table.slice(i, 1)) for i in range(n)]
    for r, f in zip(records[:200], feeds[:200]):  # warm-up
        fitted.transform_one(dict(r))
        sess.run(None, f)
        matrix.run(None, f)
    one, onnx_one, onnx_matrix = [], [], []
    for r, f in zip(records, feeds):
        rec = dict(r)
        t0 = time.perf_counter()
        fitted.transform_one(rec)
        t1 = time.perf_counter()
        sess.run(None, f)
        t2 = time.perf_counter()
        matrix.run(None, f)
        t3 = time.perf_counter()
        one.append(t1 - t0)
        onnx_one.append(t2 - t1)
        onnx_matrix.append(t3 - t2)
    batch = onnx_feeds(model, table.slice(0, 1000))
    runs = []
    for _ in range(20):
        t0 = time.perf_counter()
        matrix.run(None, batch)
        runs.append((time.perf_counter() - t0) / 1000)
    print(f"pipeline: SimpleImputer+StandardScaler on {len(num)} numeric, OneHotEncoder on {len(cat)} string "
          f"columns -> {len(fitted.output_schema)} outputs; {n} records")
    print(f"{'path':44s} {'p50 us':>9s} {'p99 us':>9s} {'p50 / 18 us anchor':>20s}")
    for name, samples in (("beamlearn transform_one", one),
                          ("ONNX export (one output per column), 1 row", onnx_one),
                          ("ONNX export (layout='matrix'), 1 row", onnx_matrix),
                          ("ONNX export (layout='matrix'), 1000 rows/row", runs)):
        p50, p99 = percentiles(samples)
        print(f"{name:44s} {p50:9.2f} {p99:9.2f} {p50 / ANCHOR_US:20.2f}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
