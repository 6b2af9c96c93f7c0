"""Local benchmark: beamlearn against scikit-learn on the same data, in one run.

Usage::

    .venv/bin/python benchmarks/bench_local.py                # 1M rows in memory, 1M and 10M rows from Parquet
    .venv/bin/python benchmarks/bench_local.py --quick        # 100k rows, small files: a smoke run
    .venv/bin/python benchmarks/bench_local.py --json out/bench/local.json
    .venv/bin/python benchmarks/bench_local.py --profile fit  # cProfile one operation (fit|transform|one)

Prints, on the data of ``benchmarks/_data.py`` (8 float64 columns with 5% nulls, 4 string columns of 50 values):

* fit and transform seconds (best of ``--repeat``) and their peak memory, for beamlearn
  ``Pipeline([SimpleImputer(num), StandardScaler(num), OneHotEncoder(str, handle_unknown="ignore")])`` fitted on a
  pyarrow Table, and for the equivalent scikit-learn ``ColumnTransformer`` fitted on a pandas DataFrame; ratios;
* single-record latency (p50/p99, microseconds) of ``FittedPipeline.transform_one(dict)`` against sklearn's
  ``transform`` on a one-row DataFrame (prebuilt, so DataFrame construction is not counted against sklearn);
* the peak memory of fitting from Parquet files of 1M and 10M rows, and the difference of the two peaks.

Every measurement runs in a fresh subprocess.  Peak memory is the process's resident high-water mark
(``VmHWM``, reset through ``/proc/self/clear_refs`` just before the measured call, minus the RSS at that moment)
and, separately, the peak of Arrow's allocator during the call (a proxy pool installed for the call).  Timings on
a shared machine are noisy: the load average is printed before and after.  Benchmarks print figures, they do not
assert them.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _data  # noqa: E402

MiB, Peak, machine = _data.MiB, _data.Peak, _data.machine
TARGETS = {"fit_ratio": 0.1, "transform_ratio": 0.35, "p50_us": 10.0, "p99_us": 25.0, "files_growth_mib": 64.0}
ANCHORS_US = [("scikit-learn transform, one-row DataFrame (issue)", 2800.0),
              ("ONNX Runtime, skl2onnx-converted pipeline", 18.0),
              ("River sparse transform_one", 5.5), ("hand-written dense dict path", 1.4)]


# ---------------------------------------------------------------------------------------------- pipelines
def beamlearn_pipeline() -> Any:
    import beamlearn as bl

    return bl.Pipeline([bl.SimpleImputer(_data.NUMERIC), bl.StandardScaler(_data.NUMERIC),
                        bl.OneHotEncoder(_data.STRINGS, handle_unknown="ignore")])


def sklearn_pipeline() -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    return ColumnTransformer([("num", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]),
                               _data.NUMERIC),
                              ("cat", OneHotEncoder(sparse_output=False, handle_unknown="ignore"), _data.STRINGS)],
                             verbose_feature_names_out=False)


# ---------------------------------------------------------------------------------------------- workers
def _timed(fn: Any, repeat: int) -> dict[str, Any]:
    """Run ``fn`` once under :class:`Peak`, then ``repeat - 1`` more times for timing: best and median wall
    seconds, and the best CPU seconds of this process (all threads; less sensitive to other load)."""
    c0 = time.process_time()
    with Peak() as p:
        out = fn()
    res, times, cpu = p.result(), [p.seconds], [time.process_time() - c0]
    del out
    for _ in range(repeat - 1):
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        del out
    res["first_seconds"] = times[0]
    times.sort()
    res.update(seconds=times[0], median_seconds=times[len(times) // 2], cpu_seconds=min(cpu), runs=len(times))
    return res


def _load(kw: dict[str, Any], pandas: bool) -> Any:
    table = _data.read_ipc(kw["ipc"])
    if not pandas:
        return table
    df = table.to_pandas()  # float64 with NaN; strings as object (sklearn's usual input, and its faster one)
    del table
    if kw.get("sklearn_strings", "object") == "object":
        df = df.astype({c: object for c in _data.STRINGS})
    return df


def work_bl_fit(kw: dict[str, Any]) -> dict[str, Any]:
    if kw.get("no_profile"):  # what the fit costs without the compact training profile every fit records
        from beamlearn.pipeline import FitPlan

        FitPlan.__init__.__kwdefaults__["profile"] = False
    table, pipe = _load(kw, False), beamlearn_pipeline()
    opts = {"batch_size": kw["batch_size"]} if kw.get("batch_size") else {}
    res = _timed(lambda: pipe.fit(table, **opts), kw["repeat"])
    res["passes"] = pipe.fit(table, **opts).lineage.get("passes")
    return res


def work_bl_transform(kw: dict[str, Any]) -> dict[str, Any]:
    table = _load(kw, False)
    opts = {"batch_size": kw["batch_size"]} if kw.get("batch_size") else {}
    fitted = beamlearn_pipeline().fit(table, **opts)
    res = _timed(lambda: fitted.transform(table, **opts), kw["repeat"])
    res["output_columns"] = len(fitted.output_schema)
    res["output_mib"] = fitted.transform(table, **opts).nbytes / MiB
    return res


def work_sk_fit(kw: dict[str, Any]) -> dict[str, Any]:
    df, ct = _load(kw, True), sklearn_pipeline()
    return _timed(lambda: ct.fit(df), kw["repeat"])


def work_sk_transform(kw: dict[str, Any]) -> dict[str, Any]:
    df = _load(kw, True)
    ct = sklearn_pipeline().fit(df)
    res = _timed(lambda: ct.transform(df), kw["repeat"])
    res["output_columns"] = len(ct.get_feature_names_out())
    return res


def _percentiles(ns: list[int], timer_ns: float) -> dict[str, Any]:
    import numpy as np

    us = np.asarray(ns, dtype=np.float64) / 1000.0
    q = np.percentile(us, [50, 90, 99, 99.9])
    return {"p50_us": q[0], "p90_us": q[1], "p99_us": q[2], "p999_us": q[3], "mean_us": float(us.mean()),
            "max_us": float(us.max()), "iterations": len(ns), "timer_overhead_us": timer_ns / 1000.0}


def _timer_overhead() -> float:
    clock = time.perf_counter_ns
    laps = []
    for _ in range(10_000):
        t0 = clock()
        laps.append(clock() - t0)
    laps.sort()
    return float(laps[len(laps) // 2])


def work_bl_latency(kw: dict[str, Any]) -> dict[str, Any]:
    table = _load(kw, False)
    fitted = beamlearn_pipeline().fit(table)
    records = table.slice(0, kw["n_records"]).to_pylist()
    del table
    return _latency(fitted.transform_one, records, kw)


def work_bl_latency_model(kw: dict[str, Any]) -> dict[str, Any]:
    """The same, with a LogisticRegression appended (fitted on 100k rows of a synthetic label)."""
    import numpy as np
    import pyarrow as pa

    import beamlearn as bl

    table = _load(kw, False).slice(0, 100_000)
    x0, x1 = (np.nan_to_num(table.column(c).to_numpy(zero_copy_only=False)) for c in _data.NUMERIC[:2])
    labelled = table.append_column("y", pa.array((x0 + x1 > 0).astype(np.int64)))
    model = bl.LogisticRegression(_data.NUMERIC + _data.STRINGS, "y")
    fitted = bl.Pipeline([*beamlearn_pipeline().steps, model]).fit(labelled)
    records = table.slice(0, kw["n_records"]).to_pylist()  # served records carry no label
    return _latency(fitted.transform_one, records, kw) | {"passes": fitted.lineage["passes"]}


def _latency(one: Any, records: list[dict], kw: dict[str, Any]) -> dict[str, Any]:
    clock, n = time.perf_counter_ns, len(records)
    for i in range(kw["warmup"]):
        one(records[i % n])
    ns = []
    for i in range(kw["iters"]):
        rec = records[i % n]
        t0 = clock()
        one(rec)
        ns.append(clock() - t0)
    return _percentiles(ns, _timer_overhead())


def work_sk_latency(kw: dict[str, Any]) -> dict[str, Any]:
    df = _load(kw, True)
    ct = sklearn_pipeline().fit(df)
    frames = [df.iloc[[i]] for i in range(min(kw["n_records"], 1000))]
    del df
    clock, n = time.perf_counter_ns, len(frames)
    for i in range(kw["warmup"]):
        ct.transform(frames[i % n])
    ns = []
    for i in range(kw["iters"]):
        frame = frames[i % n]
        t0 = clock()
        ct.transform(frame)
        ns.append(clock() - t0)
    return _percentiles(ns, _timer_overhead())


def work_bl_fit_files(kw: dict[str, Any]) -> dict[str, Any]:
    pipe = beamlearn_pipeline()
    opts = {"batch_size": kw["batch_size"]} if kw.get("batch_size") else {}
    with Peak() as p:
        fitted = pipe.fit(kw["path"], **opts)
    res = p.result()
    res.update(rows=fitted.lineage.get("rows"), passes=fitted.lineage.get("passes"),
               file_mib=os.path.getsize(kw["path"]) / MiB)
    return res


def work_parity(kw: dict[str, Any]) -> dict[str, Any]:
    """Same numbers as scikit-learn, and transform_one == transform, on a slice of the data."""
    import numpy as np

    from beamlearn.testing import assert_serving_consistent

    table = _load(kw, False).slice(0, kw["n_rows"])
    fitted, ct = beamlearn_pipeline().fit(table), sklearn_pipeline().fit(table.to_pandas())
    got, want = fitted.transform(table, output="numpy"), ct.transform(table.to_pandas())
    res: dict[str, Any] = {"names_equal": fitted.output_schema.names == list(ct.get_feature_names_out()),
                           "shape_equal": got.shape == want.shape}
    if got.shape == want.shape:
        res["max_abs_diff"] = float(np.nanmax(np.abs(got - want)))
        res["allclose"] = bool(np.allclose(got, want, rtol=1e-9, atol=1e-12))
    try:
        assert_serving_consistent(fitted, table.slice(0, kw["serving_rows"]))
        res["serving_consistent"] = True
    except AssertionError as exc:
        res["serving_consistent"], res["serving_error"] = False, str(exc)[:300]
    return res


WORKERS = {name[5:]: fn for name, fn in globals().items() if name.startswith("work_")}


def run_worker(task: str, timeout: float, **kw: Any) -> dict[str, Any]:
    """Run a ``work_*`` function in a fresh interpreter; its result, or ``{"error": ...}``."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", task, "--worker-args", json.dumps(kw)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("BENCH_RESULT "):
            res = json.loads(line[len("BENCH_RESULT "):])
            if proc.returncode:  # e.g. a crash at interpreter exit: the figures stand, but say so
                res["exit_code"] = proc.returncode
            return res
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"error": f"exit {proc.returncode}: {tail[:300]}"}


# ---------------------------------------------------------------------------------------------- report
def _f(v: Any, fmt: str = "{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


def _verdict(value: float | None, target: float) -> str:
    return "" if value is None else ("ok" if value <= target else "MISSED")


def print_report(r: dict[str, Any]) -> None:
    m, cfg = r["machine"], r["config"]
    print(f"beamlearn local benchmark: {cfg['rows']:,} rows in memory (8 float64 columns with 5% nulls, 4 string "
          f"columns x 50 values), seed {cfg['seed']}, best of {cfg['repeat']}")
    print(f"machine: {m['cores']} cores ({m['usable_cores']} usable), {m['cpu']}, "
          f"{_f(m['mem_gib'], '{:.0f}')} GiB, {m['platform']}, Python {m['python']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))
    print(f"load average: {r['load_before']} before, {r['load_after']} after")
    for name, res in r["workers"].items():
        if "error" in res:
            print(f"  !! {name}: {res['error']}")
    bl, sk = r["workers"], r["workers"]
    print("\n                          beamlearn   scikit-learn    ratio   target")
    for op in ("fit", "transform"):
        b, s = bl.get(f"bl_{op}", {}), sk.get(f"sk_{op}", {})
        ratio = r["ratios"].get(op)
        print(f"{op + ' seconds':<24}{_f(b.get('seconds')):>11}{_f(s.get('seconds')):>15}{_f(ratio, '{:.3f}x'):>9}"
              f"   <= {TARGETS[op + '_ratio']}x {_verdict(ratio, TARGETS[op + '_ratio'])}")
        print(f"{'  (median)':<24}{_f(b.get('median_seconds')):>11}{_f(s.get('median_seconds')):>15}")
        print(f"{'  (first, cold)':<24}{_f(b.get('first_seconds')):>11}{_f(s.get('first_seconds')):>15}")
        cpu_ratio = b["cpu_seconds"] / s["cpu_seconds"] if b.get("cpu_seconds") and s.get("cpu_seconds") else None
        print(f"{'  CPU seconds (best)':<24}{_f(b.get('cpu_seconds')):>11}{_f(s.get('cpu_seconds')):>15}"
              f"{_f(cpu_ratio, '{:.3f}x'):>9}")
        nb = bl.get(f"bl_{op}_noprofile", {})
        if nb.get("seconds") and s.get("seconds") and s.get("cpu_seconds"):
            print(f"{'  no training profile':<24}{_f(nb['seconds']):>11}{'':>15}{nb['seconds'] / s['seconds']:>8.3f}x"
                  f"   (CPU {nb['cpu_seconds']:.3f} s, {nb['cpu_seconds'] / s['cpu_seconds']:.3f}x)")
        print(f"{'  peak RSS MiB':<24}{_f(b.get('rss_peak_mib'), '{:.0f}'):>11}"
              f"{_f(s.get('rss_peak_mib'), '{:.0f}'):>15}")
        print(f"{'  peak Arrow MiB':<24}{_f(b.get('arrow_peak_mib'), '{:.0f}'):>11}"
              f"{_f(s.get('arrow_peak_mib'), '{:.0f}'):>15}")
    bt, st = bl.get("bl_transform", {}), sk.get("sk_transform", {})
    print(f"output: beamlearn {bt.get('output_columns')} columns ({_f(bt.get('output_mib'), '{:.0f}')} MiB Arrow, "
          f"one-hots uint8), scikit-learn {st.get('output_columns')} columns (dense float64); "
          f"beamlearn fit passes: {bl.get('bl_fit', {}).get('passes')}")
    lb, ls = bl.get("bl_latency", {}), sk.get("sk_latency", {})
    print("\nsingle record, microseconds      p50      p90      p99    p99.9     mean   iterations")
    lm = bl.get("bl_latency_model", {})
    for label, res in (("beamlearn transform_one(dict)", lb), ("  + LogisticRegression appended", lm),
                       ("sklearn transform(1-row DataFrame)", ls)):
        print(f"{label:<31}" + "".join(f"{_f(res.get(k), '{:.1f}'):>9}" for k in
                                       ("p50_us", "p90_us", "p99_us", "p999_us", "mean_us"))
              + f"{res.get('iterations', ''):>13}")
    print(f"targets: p50 <= {TARGETS['p50_us']} us {_verdict(lb.get('p50_us'), TARGETS['p50_us'])}, "
          f"p99 <= {TARGETS['p99_us']} us {_verdict(lb.get('p99_us'), TARGETS['p99_us'])}  "
          f"(timer overhead {_f(lb.get('timer_overhead_us'), '{:.3f}')} us per call, included)")
    print("recorded anchors (quoted from the issue, not run here): "
          + "; ".join(f"{name} {us:g} us" for name, us in ANCHORS_US))
    print("\nfit from Parquet          rows    file MiB   seconds   peak RSS MiB (HWM)   peak Arrow MiB   passes")
    for rows, res in r["files"].items():
        if "error" in res:
            print(f"{'':<16}{int(rows):>13,}   ERROR {res['error']}")
            continue
        print(f"{'':<16}{int(rows):>13,}{res['file_mib']:>12.0f}{res['seconds']:>10.2f}{res['rss_peak_mib']:>9.0f}"
              f" ({res['rss_hwm_mib']:.0f}){res['arrow_peak_mib']:>17.0f}{res['passes']!s:>9}")
    g = r.get("files_growth_mib")
    if g is not None:
        print(f"peak({r['files_sizes'][1]:,}) - peak({r['files_sizes'][0]:,}) = {g:.1f} MiB of RSS high-water "
              f"(target < {TARGETS['files_growth_mib']:.0f} MiB {'ok' if g < TARGETS['files_growth_mib'] else 'MISSED'})"
              f"; Arrow peak difference {r['files_arrow_growth_mib']:.1f} MiB")
    p = bl.get("parity")
    if p:
        print(f"\nparity with scikit-learn on {cfg['parity_rows']:,} rows: {p}")


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100k rows in memory, no 10M-row file (a smoke run)")
    ap.add_argument("--rows", type=int, help="rows of the in-memory table (default 1,000,000; 100,000 quick)")
    ap.add_argument("--file-rows", type=lambda s: [int(x) for x in s.split(",") if x],
                    help="comma-separated rows of the Parquet files (default 1000000,10000000; quick 100000,300000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of fit and transform (best is reported)")
    ap.add_argument("--batch-size", type=int, default=None, help="beamlearn batch_size (default: the library's)")
    ap.add_argument("--latency-iters", type=int, default=50_000)
    ap.add_argument("--sklearn-latency-iters", type=int, default=2_000)
    ap.add_argument("--parity-rows", type=int, default=20_000)
    ap.add_argument("--sklearn-strings", choices=["object", "str"], default="object",
                    help="pandas dtype of string columns given to sklearn (object is faster for it than str)")
    ap.add_argument("--row-group-size", type=int, default=None, help="Parquet rows per group (pyarrow's default)")
    ap.add_argument("--cache-dir", default=_data.default_cache_dir())
    ap.add_argument("--skip", default="",
                    help="comma-separated sections to skip: sklearn,noprofile,latency,files,parity")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed to each measurement")
    ap.add_argument("--json", metavar="PATH", help="also write every figure as JSON to PATH")
    ap.add_argument("--profile", choices=["fit", "transform", "one", "files"],
                    help="instead of benchmarking, cProfile one beamlearn operation in this process")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-args", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.rows = args.rows or (100_000 if args.quick else 1_000_000)
    args.file_rows = args.file_rows or ([100_000, 300_000] if args.quick else [1_000_000, 10_000_000])
    if args.quick:
        args.latency_iters, args.sklearn_latency_iters = min(args.latency_iters, 10_000), min(
            args.sklearn_latency_iters, 300)
    return args


def profile(args: argparse.Namespace) -> None:
    """cProfile one beamlearn operation on the benchmark data; stats also dumped to the cache dir."""
    import cProfile
    import pstats

    table = _data.read_ipc(_data.cached_ipc(args.rows, seed=args.seed, cache_dir=args.cache_dir))
    opts = {"batch_size": args.batch_size} if args.batch_size else {}
    pipe = beamlearn_pipeline()
    fitted = None if args.profile in ("fit", "files") else pipe.fit(table, **opts)
    if args.profile == "one":
        records = table.slice(0, 1000).to_pylist()
        op = lambda: [fitted.transform_one(records[i % 1000]) for i in range(args.latency_iters)]  # noqa: E731
    elif args.profile == "files":
        path = _data.cached_parquet(args.file_rows[0], seed=args.seed, cache_dir=args.cache_dir,
                                    row_group_size=args.row_group_size)
        op = lambda: pipe.fit(path, **opts)  # noqa: E731
    else:
        op = {"fit": lambda: pipe.fit(table, **opts), "transform": lambda: fitted.transform(table, **opts)}[
            args.profile]
    op()  # warm-up
    prof = cProfile.Profile()
    prof.runcall(op)
    out = os.path.join(args.cache_dir, f"profile_{args.profile}.prof")
    prof.dump_stats(out)
    for key in ("tottime", "cumulative"):
        print(f"--- top 25 by {key} ({out}) ---")
        pstats.Stats(prof).sort_stats(key).print_stats(25)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.worker:
        print("BENCH_RESULT " + json.dumps(WORKERS[args.worker](json.loads(args.worker_args or "{}"))))
        return None
    if args.profile:
        profile(args)
        return None
    skip = set(filter(None, args.skip.split(",")))
    t0 = time.perf_counter()
    ipc = _data.cached_ipc(args.rows, seed=args.seed, cache_dir=args.cache_dir)
    common = {"ipc": ipc, "repeat": args.repeat, "batch_size": args.batch_size,
              "sklearn_strings": args.sklearn_strings}
    r: dict[str, Any] = {"machine": machine(), "config": vars(args) | {"ipc": ipc}, "targets": TARGETS,
                         "load_before": os.getloadavg(), "workers": {}, "files": {}, "ratios": {}}
    w = r["workers"]

    def run(name: str, **kw: Any) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {name} ...", file=sys.stderr, flush=True)
        w[name] = run_worker(name, args.timeout, **kw)

    run("bl_fit", **common)
    if "noprofile" not in skip:
        w["bl_fit_noprofile"] = run_worker("bl_fit", args.timeout, **common, no_profile=True)
    run("bl_transform", **common)
    if "sklearn" not in skip:
        run("sk_fit", **common)
        run("sk_transform", **common)
    for op in ("fit", "transform"):
        b, s = w.get(f"bl_{op}", {}).get("seconds"), w.get(f"sk_{op}", {}).get("seconds")
        r["ratios"][op] = b / s if b is not None and s else None
    if "latency" not in skip:
        run("bl_latency", ipc=ipc, n_records=10_000, warmup=2_000, iters=args.latency_iters)
        run("bl_latency_model", ipc=ipc, n_records=10_000, warmup=2_000, iters=args.latency_iters)
        if "sklearn" not in skip:
            run("sk_latency", ipc=ipc, n_records=1_000, warmup=100, iters=args.sklearn_latency_iters,
                sklearn_strings=args.sklearn_strings)
    if "files" not in skip:
        for rows in args.file_rows:
            path = _data.cached_parquet(rows, seed=args.seed, cache_dir=args.cache_dir,
                                        row_group_size=args.row_group_size)
            print(f"[{time.perf_counter() - t0:6.1f}s] fit from {path} ...", file=sys.stderr, flush=True)
            r["files"][str(rows)] = run_worker("bl_fit_files", args.timeout, path=path, batch_size=args.batch_size)
        ok = [int(k) for k, v in r["files"].items() if "error" not in v]
        if len(ok) >= 2:
            lo, hi = str(min(ok)), str(max(ok))
            r["files_sizes"] = [min(ok), max(ok)]
            r["files_growth_mib"] = r["files"][hi]["rss_hwm_mib"] - r["files"][lo]["rss_hwm_mib"]
            r["files_arrow_growth_mib"] = r["files"][hi]["arrow_peak_mib"] - r["files"][lo]["arrow_peak_mib"]
    if "parity" not in skip:
        run("parity", ipc=ipc, n_rows=min(args.parity_rows, args.rows), serving_rows=2_000)
    r["load_after"] = os.getloadavg()
    r["wall_seconds"] = time.perf_counter() - t0
    print_report(r)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(r, fh, indent=1, default=float)
        print(f"\nwrote {args.json}")
    return r


if __name__ == "__main__":
    main()
