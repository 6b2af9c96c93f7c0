"""Data where it lives: reading 1M rows from PostgreSQL and from S3, in one run.

Usage::

    .venv/bin/python benchmarks/bench_io.py                 # 1M rows, best of 3
    .venv/bin/python benchmarks/bench_io.py --rows 200000 --repeat 1

Starts its own servers on 127.0.0.1 (:mod:`beamlearn.testing_servers`: a PostgreSQL cluster and moto's S3
server) and stops them at the end.  Prints rows/s (best of ``--repeat``) for:

* PostgreSQL, a table of ``--rows`` rows (bigint id, four float8, an int4 and a short text column):
  beamlearn's ``io.read("postgresql://...?table=t")`` (ADBC, binary COPY streamed into Arrow batches of 65,536
  rows) against ``pandas.read_sql`` (SQLAlchemy + psycopg) and against ``COPY t TO STDOUT (FORMAT binary)``
  with the bytes thrown away (the floor: what the server and the socket cost, with no decoding), read by
  psycopg's ``copy`` (the floor the issue names) and by ``psql`` into ``/dev/null`` (libpq's C client);
* S3: ``io.read`` of the same rows as one Parquet file on moto's S3 server, against the same file on local disk.

Goal (issue 13): ADBC >= 5x pandas.read_sql and within 2x of COPY.  Figures, not assertions.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from beamlearn import io
from beamlearn.testing_servers import postgres_server, s3_server

PASSWORD = "bench-pw"


def best(fn: Callable[[], int], repeat: int) -> tuple[float, int]:
    """(best seconds, rows) of ``repeat`` runs of ``fn`` (which returns the rows it read)."""
    times, rows = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        rows = fn()
        times.append(time.perf_counter() - t0)
    return min(times), rows


def count(batches) -> int:
    return sum(b.num_rows for b in batches)


def postgres_section(uri: str, n: int, repeat: int) -> dict[str, float]:
    import psycopg

    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE t AS SELECT g::bigint AS id, random() AS a, random() AS b, random() AS c, "
                     f"random() AS d, (g % 97)::int AS k, 'v' || (g % 50)::text AS s "
                     f"FROM generate_series(1, {n}) AS g")
        conn.execute("VACUUM ANALYZE t")

    def copy_floor() -> int:
        with psycopg.connect(uri) as conn, conn.cursor() as cur, cur.copy("COPY t TO STDOUT (FORMAT binary)") as copy:
            for _ in copy:
                pass
        return n

    def copy_psql() -> int:  # the same COPY read by libpq's C client into /dev/null
        import subprocess

        from beamlearn.testing_servers import postgres_bin

        subprocess.run([f"{postgres_bin()}/psql", uri, "-qAt", "-c", "COPY t TO STDOUT (FORMAT binary)"],
                       stdout=subprocess.DEVNULL, check=True)
        return n

    def adbc() -> int:
        return count(io.read(uri + "?table=t", batch_size=65_536))

    results = {"COPY ... TO STDOUT (binary, psycopg; floor)": copy_floor,
               "COPY ... TO STDOUT (binary, psql > /dev/null)": copy_psql, "beamlearn io.read (ADBC)": adbc}
    try:
        import pandas as pd
        import sqlalchemy

        engine = sqlalchemy.create_engine(uri.replace("postgresql://", "postgresql+psycopg://"))

        def pandas_read_sql() -> int:
            with engine.connect() as conn:
                return len(pd.read_sql("SELECT * FROM t", conn))

        results["pandas.read_sql (SQLAlchemy + psycopg)"] = pandas_read_sql
    except ImportError as exc:
        print(f"  (pandas.read_sql skipped: {exc}; pip install sqlalchemy 'psycopg[binary]')")
    rates = {}
    for name, fn in results.items():
        seconds, rows = best(fn, repeat)
        rates[name] = rows / seconds
        print(f"  {name:<45} {rows:>10,} rows  {seconds:7.3f} s  {rows / seconds:>12,.0f} rows/s")
    return rates


def s3_section(endpoint: str, n: int, repeat: int, tmp: str) -> dict[str, float]:
    rng = np.random.default_rng(0)
    table = pa.table({"id": np.arange(n), "a": rng.random(n), "b": rng.random(n), "c": rng.random(n),
                      "d": rng.random(n), "k": (np.arange(n) % 97).astype(np.int32),
                      "s": pa.array([f"v{i % 50}" for i in range(n)])})
    local = os.path.join(tmp, "t.parquet")
    pq.write_table(table, local)
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(endpoint_override=endpoint.removeprefix("http://"), scheme="http",
                           allow_bucket_creation=True)
    fs.create_dir("bench")
    io.write_batches(table.to_batches(), "s3://bench/t.parquet")
    rates = {}
    for name, path in [("local Parquet file", local), ("S3 (moto on 127.0.0.1) Parquet object", "s3://bench/t.parquet")]:
        seconds, rows = best(lambda p=path: count(io.read(p, batch_size=65_536)), repeat)
        rates[name] = rows / seconds
        print(f"  {name:<45} {rows:>10,} rows  {seconds:7.3f} s  {rows / seconds:>12,.0f} rows/s")
    return rates


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"bench_io: {args.rows:,} rows, best of {args.repeat}; load average {os.getloadavg()[0]:.2f}")
    os.environ["PGPASSWORD"] = PASSWORD
    print("PostgreSQL (a server of our own on 127.0.0.1):")
    try:
        with postgres_server(PASSWORD) as uri:
            pg = postgres_section(uri, args.rows, args.repeat)
    except RuntimeError as exc:
        print(f"  skipped: {exc}")
        pg = {}
    if pg:
        adbc = pg["beamlearn io.read (ADBC)"]
        floor = pg["COPY ... TO STDOUT (binary, psycopg; floor)"]
        print(f"  ADBC / COPY floor: {adbc / floor:.2f}x the floor's rate (goal: >= 0.5x, i.e. within 2x); "
              f"{adbc / pg['COPY ... TO STDOUT (binary, psql > /dev/null)']:.2f}x psql's")
        if "pandas.read_sql (SQLAlchemy + psycopg)" in pg:
            print(f"  ADBC / pandas.read_sql: {adbc / pg['pandas.read_sql (SQLAlchemy + psycopg)']:.1f}x "
                  f"(goal: >= 5x)")
    print("S3 (moto's server on 127.0.0.1) against local disk:")
    with s3_server() as endpoint, tempfile.TemporaryDirectory() as tmp:
        os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint})
        s3 = s3_section(endpoint, args.rows, args.repeat, tmp)
    ratio = s3["S3 (moto on 127.0.0.1) Parquet object"] / s3["local Parquet file"]
    print(f"  S3 / local: {ratio:.2f}x the local rate (moto is a Python server: a real S3 differs)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
