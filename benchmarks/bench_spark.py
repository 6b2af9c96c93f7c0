"""Spark benchmark: beamlearn's Spark engine against Spark MLlib, on the same standalone cluster and data.

Usage::

    .venv/bin/python benchmarks/bench_spark.py                    # 1M rows (after a 100k-row run)
    .venv/bin/python benchmarks/bench_spark.py --big              # 1M and 10M rows
    .venv/bin/python benchmarks/bench_spark.py --master local[2]  # a Spark you already have (default: start one)

Data: ``benchmarks/_data.py`` (8 float64 columns with 5% nulls, 4 string columns of 50 values), its cached
Parquet file read with ``spark.read.parquet`` and cached in the executors (``df.cache(); df.count()``, not
timed), so both libraries start from the same DataFrame.  The cluster (unless ``--master``): a standalone master
and two one-core workers on 127.0.0.1 (:func:`beamlearn.engines.spark_jobs.standalone_cluster`), executors of
1 GiB.

The same pipeline on both:

- beamlearn: ``SimpleImputer(num) -> StandardScaler(num)``, ``OneHotEncoder(str, handle_unknown="ignore")``
  (two passes: the scaler reads the imputer's output); ``beamlearn.spark.fit`` / ``transform``, its output
  both as 208 Spark columns (``transform``) and as MLlib's shape, one sparse ``VectorUDT`` column
  (``transform_vector``: ``transform(..., output="vector")``).
- the same ``transform`` forced into Python tasks (``compiled=False``: ``mapInArrow``, the path before the
  transform compiled to Spark SQL), both shapes: ``python_transform`` and ``python_transform_vector``.
- two floors on the same cached DataFrame: ``floor_spark_scan`` (``df.write.format("noop")``: Spark alone, no
  transform) and ``floor_identity_mapinarrow`` (an identity ``mapInArrow``: the JVM -> Python -> JVM Arrow hop
  alone, the ceiling of any transform run in Python tasks).
- MLlib: ``Imputer(num)``, ``StringIndexer(str, handleInvalid="keep") -> OneHotEncoder``, ``VectorAssembler``
  of the imputed numbers -> ``StandardScaler(withMean=True)``; ``Pipeline.fit`` / ``model.transform``.

Each transform is also measured in CPU seconds of every process of the run (driver, cluster JVMs, Python
workers; from /proc), which the machine's other load inflates far less than wall time.
The fit is also timed both ways, every pass as Spark SQL aggregations (``sql=True``) and every pass
``mapInArrow`` (``sql=False``, the default), with the floor of the SQL way: one ``df.agg`` of the numeric
columns' moments alone (:func:`fit_paths`).  Every figure is the median of three runs (``REPEAT``).

A warm-up run at ``--small`` rows (not reported) starts the executors' Python workers first.  Transforms are
forced with Spark's ``noop`` sink (every row computed, nothing written).  The local engine
(in-process, one worker thread: per core) fits and transforms the same table from memory, for reference.  Each
size is timed after a run at ``--small`` rows; the two points give a fixed cost and a marginal rate:

    marginal = (N - n_small) / (t(N) - t(n_small)),   fixed = t(n_small) - n_small / marginal
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _data

import beamlearn as bl
from beamlearn import spark as bls
from beamlearn.engines.local import LocalEngine
from beamlearn.engines.spark_jobs import standalone_cluster

REPEAT = 3  # every figure is the median of this many runs (the machine is shared: single runs varied 1.8x)
CONF = {"spark.executor.memory": "1g", "spark.executor.cores": "1", "spark.driver.memory": "1g",
        "spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4"}


def pipeline() -> bl.Pipeline:
    return bl.Pipeline([bl.SimpleImputer(_data.NUMERIC), bl.StandardScaler(_data.NUMERIC),
                        bl.OneHotEncoder(_data.STRINGS, handle_unknown="ignore")])


def mllib() -> Any:
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import Imputer, OneHotEncoder, StandardScaler, StringIndexer, VectorAssembler

    imputed = [f"{c}_imp" for c in _data.NUMERIC]
    return Pipeline(stages=[
        Imputer(inputCols=_data.NUMERIC, outputCols=imputed),
        StringIndexer(inputCols=_data.STRINGS, outputCols=[f"{c}_idx" for c in _data.STRINGS],
                      handleInvalid="keep"),
        OneHotEncoder(inputCols=[f"{c}_idx" for c in _data.STRINGS], outputCols=[f"{c}_oh" for c in _data.STRINGS],
                      handleInvalid="keep"),
        VectorAssembler(inputCols=imputed, outputCol="num_vec", handleInvalid="keep"),
        StandardScaler(inputCol="num_vec", outputCol="num_scaled", withMean=True, withStd=True)])


CPU: dict[str, float] = {}  # the CPU seconds of the last timed call of each measurement (this process and its tree)


def cpu_seconds() -> float:
    """CPU seconds of this process and every process under it (the cluster's JVMs and Python workers), from
    /proc: a measure the machine's other load does not inflate as it does wall time (Linux; else 0)."""
    total = time.process_time()
    try:
        tick, me, stats = os.sysconf("SC_CLK_TCK"), os.getpid(), {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                with contextlib.suppress(OSError), open(f"/proc/{d}/stat") as fh:
                    rest = fh.read().rpartition(")")[2].split()
                    stats[int(d)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / tick)
        tree, grew = {me}, True
        while grew:
            grew = False
            for pid, (parent, _) in stats.items():
                if parent in tree and pid not in tree:
                    tree.add(pid)
                    grew = True
        return total + sum(stats[p][1] for p in tree - {me})
    except (OSError, ValueError):
        return 0.0


def timed(fn: Any, name: str | None = None, repeat: int = 1) -> tuple[float, Any]:
    """``fn()``'s wall seconds (the median of ``repeat`` runs) and its last result; the CPU seconds of that
    median run go to ``CPU[name]``."""
    runs = []
    for _ in range(repeat):
        c0, t0 = cpu_seconds(), time.perf_counter()
        out = fn()
        runs.append((time.perf_counter() - t0, cpu_seconds() - c0))
    wall, cpu = sorted(runs)[len(runs) // 2]
    if name:
        CPU[name] = cpu
    return wall, out


def force(df: Any) -> None:
    df.write.format("noop").mode("overwrite").save()


def measure(spark: Any, n: int) -> dict[str, float]:
    path = _data.cached_parquet(n)
    df = spark.read.parquet(path).repartition(4).cache()
    df.count()
    out: dict[str, float] = {}
    runs = {"beamlearn_transform": lambda: force(bls.transform(fitted, df)),
            "beamlearn_transform_vector": lambda: force(bls.transform(fitted, df, output="vector")),
            "python_transform": lambda: force(bls.transform(fitted, df, compiled=False)),
            "python_transform_vector": lambda: force(bls.transform(fitted, df, output="vector", compiled=False)),
            "floor_spark_scan": lambda: force(df),
            "floor_identity_mapinarrow": lambda: force(df.mapInArrow(_identity, df.schema)),
            "mllib_transform": lambda: force(model.transform(df))}
    out["beamlearn_fit"], fitted = timed(lambda: bls.fit(pipeline(), df), repeat=REPEAT)
    out["mllib_fit"], model = timed(lambda: mllib().fit(df), repeat=REPEAT)
    for name, run in runs.items():
        out[name], _ = timed(run, name, repeat=REPEAT)
    df.unpersist()
    table = _data.read_ipc(_data.cached_ipc(n))
    engine = LocalEngine(workers=1)
    out["local_fit"], local = timed(lambda: engine.fit(pipeline(), table), repeat=REPEAT)
    out["local_transform"], _ = timed(lambda: sum(b.num_rows for b in engine.transform(local, table)),
                                      "local_transform", repeat=REPEAT)
    out.update({f"cpu_{k}": v for k, v in CPU.items()})
    return out


def _identity(batches: Any) -> Any:
    yield from batches


def fit_paths(spark: Any, n: int) -> dict[str, float]:
    """The fit both ways on the same cached DataFrame (median of 3): every pass as Spark SQL aggregations
    (``sql=True``), every pass ``mapInArrow`` (``sql=False``), and the floor of the SQL way: one ``df.agg`` of
    the count, mean and variance of the numeric columns alone (no vocabularies, sketches or missing counts)."""
    from pyspark.sql import functions as F

    df = spark.read.parquet(_data.cached_parquet(n)).repartition(4).cache()
    df.count()
    moments = [e for c in _data.NUMERIC for e in (F.count(c), F.avg(c), F.var_pop(c))]
    runs = {"fit_sql": lambda: bls.fit(pipeline(), df, sql=True),
            "fit_map_in_arrow": lambda: bls.fit(pipeline(), df, sql=False),
            "floor_agg_moments_only": lambda: df.agg(*moments).collect()}
    out = {k: timed(fn, repeat=REPEAT)[0] for k, fn in runs.items()}
    df.unpersist()
    return out


def report_fit_paths(paths: dict[int, dict[str, float]], secs: dict[int, dict[str, float]], small: int) -> dict:
    """Print the fit paths' fixed cost and marginal rate against the local engine's per core."""
    print("\nbeamlearn fit, SQL aggregations vs mapInArrow (median of 3; two-point fit against the small run)")
    out: dict[str, Any] = {}
    for n in [m for m in paths if m != small]:
        local = split((small, secs[small]["local_fit"]), (n, secs[n]["local_fit"]))["marginal_rows_s"]
        for what in paths[n]:
            sp = out.setdefault(what, {})[n] = split((small, paths[small][what]), (n, paths[n][what]))
            rate = sp["marginal_rows_s"] or 0
            print(f"  {n:>11,} {what:24s} {paths[n][what]:6.2f} s; marginal {rate:>11,} rows/s; fixed "
                  f"{sp['fixed_s']:.2f} s; x2 cores / local per core ({local or 0:,}): "
                  f"{rate / 2 / local if local else 0:.2f}")
    return out


def split(small: tuple[int, float], big: tuple[int, float]) -> dict[str, Any]:
    (n1, t1), (n2, t2) = small, big
    if t2 <= t1:
        return {"fixed_s": round(t1, 3), "marginal_rows_s": None}
    marginal = (n2 - n1) / (t2 - t1)
    return {"fixed_s": round(t1 - n1 / marginal, 3), "marginal_rows_s": round(marginal)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--master", help="an existing Spark master (default: start a standalone cluster here)")
    ap.add_argument("--small", type=int, default=100_000)
    ap.add_argument("--big", action="store_true", help="also 10M rows")
    ap.add_argument("--json", help="write the results here")
    opts = ap.parse_args()
    sizes = [1_000_000] + ([10_000_000] if opts.big else [])
    with contextlib.ExitStack() as stack:
        master = opts.master or stack.enter_context(standalone_cluster(2, cores=1, memory="1g"))
        t0 = time.perf_counter()
        spark = bls.session(master, CONF, app_name="beamlearn-bench")
        start = time.perf_counter() - t0
        measure(spark, opts.small)  # warm-up: executors' Python workers, JIT, MLlib classes; not reported
        secs = {n: measure(spark, n) for n in [opts.small, *sizes]}
        paths = {n: fit_paths(spark, n) for n in [opts.small, *sizes]}
        spark.stop()
    print(f"Spark {spark.version} on {master} (session start {start:.1f} s); machine: "
          f"{_data.machine()['cores']} cores\n")
    print(f"  {'rows':>11s} " + " ".join(f"{k[:20]:>20s}" for k in secs[opts.small] if not k.startswith("cpu_")))
    for n, s in secs.items():
        print(f"  {n:>11,} " + " ".join(f"{v:>19.2f}s" for k, v in s.items() if not k.startswith("cpu_")))
    results: dict[str, Any] = {"master": master, "session_start_s": start, "seconds": secs, "split": {}}
    print("\nfixed cost and marginal rate (two-point fit against the small run)")
    for n in sizes:
        for what in secs[n]:
            results["split"].setdefault(what, {})[n] = split((opts.small, secs[opts.small][what]),
                                                             (n, secs[n][what]))
        for kind, base in (("fit", "fit"), ("transform", "transform"), ("transform_vector", "transform")):
            ours, theirs = secs[n][f"beamlearn_{kind}"], secs[n][f"mllib_{base}"]
            sp = results["split"]
            rate, local = sp[f"beamlearn_{kind}"][n]["marginal_rows_s"], sp[f"local_{base}"][n]["marginal_rows_s"]
            ml = sp[f"mllib_{base}"][n]["marginal_rows_s"]
            print(f"  {n:>11,} {kind:16s} beamlearn {ours:6.2f} s vs MLlib {theirs:6.2f} s ({theirs / ours:4.2f}x); "
                  f"marginal rows/s: beamlearn {rate or 0:>11,} MLlib {ml or 0:>11,} local/core {local or 0:>11,}"
                  f" (beamlearn x2 cores / local per core: {(rate or 0) / 2 / local if local else 0:.2f}); fixed "
                  f"beamlearn {sp[f'beamlearn_{kind}'][n]['fixed_s']:.2f} s, MLlib "
                  f"{sp[f'mllib_{base}'][n]['fixed_s']:.2f} s")
        local = results["split"]["local_transform"][n]["marginal_rows_s"] or 0
        local_cpu = results["split"]["cpu_local_transform"][n]["marginal_rows_s"] or 0
        print(f"\n  {n:,} rows: wall and CPU (every process of this run: driver, cluster JVMs, Python workers)")
        for what in ("beamlearn_transform", "beamlearn_transform_vector", "python_transform",
                     "python_transform_vector", "mllib_transform", "floor_spark_scan", "floor_identity_mapinarrow"):
            rate = results["split"][what][n]["marginal_rows_s"] or 0
            cpu = results["split"][f"cpu_{what}"][n]["marginal_rows_s"] or 0
            print(f"  {what:26s} {secs[n][what]:6.2f} s, marginal {rate:>10,} rows/s (/ 2 cores / local per core "
                  f"{rate / 2 / local if local else 0:4.2f}), fixed {results['split'][what][n]['fixed_s']:5.2f} s | "
                  f"CPU {secs[n]['cpu_' + what]:6.2f} s, marginal {cpu:>10,} rows per CPU-s (/ local's "
                  f"{cpu / local_cpu if local_cpu else 0:4.2f})")
    results["fit_paths"] = {"seconds": paths, "split": report_fit_paths(paths, secs, opts.small)}
    if opts.json:
        with open(opts.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
