"""Profiling benchmark: beamlearn's one-pass profile against ydata-profiling (minimal mode) and whylogs on the same
1M rows of ``_data.py`` (one Parquet file), then beamlearn on 10M rows from Parquet (bounded memory), in one run.

Every measurement runs in a fresh subprocess that prints its wall seconds and its resident-set high-water mark
(``VmHWM``), both total and above the RSS after its imports.  Each tool runs ``--repeat`` times (3) and the run of
median wall time is reported (the machines are shared: one run can be off by 50%), after the data file was read
once untimed, so that no tool pays for a cold page cache (this machine's memory manager evicts idle files).  ydata-profiling and whylogs are heavy and pin
conflicting versions, so they live in their own virtualenv, ``out/bench/profile-venv``, which this script creates
on first use (``python -m venv`` + ``pip install ydata-profiling whylogs pyarrow``); they read the Parquet file
with pandas (included in their time, as beamlearn's read is in its own).

::

    .venv/bin/python benchmarks/bench_profile.py              # 1M rows (all three) and 10M rows (beamlearn)
    .venv/bin/python benchmarks/bench_profile.py --quick      # 100k and 300k rows
    .venv/bin/python benchmarks/bench_profile.py --skip ydata,whylogs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _data import cached_parquet, machine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, "out", "bench", "profile-venv")

_MEASURE = textwrap.dedent(r"""
    import json, re, sys, time
    def status(key):
        with open("/proc/self/status") as fh:
            return int(re.search("^" + key + ":\\s+(\\d+) kB", fh.read(), re.M).group(1)) / 1024
    {imports}
    rss0 = status("VmRSS")
    import resource
    def cpu():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime
    t0, c0 = time.perf_counter(), cpu()
    {body}
    seconds, cpu_seconds = time.perf_counter() - t0, cpu() - c0
    print(json.dumps({{"seconds": seconds, "cpu": cpu_seconds, "peak_mib": status("VmHWM"),
                      "above_mib": status("VmHWM") - rss0}}))
""")

TOOLS = {
    "beamlearn": ("from beamlearn.profile import profile",
                  "p = profile([PATH]); assert p['rows'] > 0"),
    "beamlearn-compact": (("import pyarrow.parquet as pq\n"
                           "from beamlearn.analyzers.profile import COMPACT_PROFILE, ColumnProfile\n"
                           "from beamlearn.profile import profile_fields"),
                          ("f = pq.ParquetFile(PATH)\n"
                           "a = ColumnProfile(profile_fields(f.schema_arrow), **COMPACT_PROFILE)\n"
                           "acc = a.create()\n"
                           "for b in f.iter_batches(65536): acc = a.add(acc, b)\n"
                           "s = a.extract(acc)")),
    "ydata-profiling": ("import pandas as pd\nfrom ydata_profiling import ProfileReport",
                        ("df = pd.read_parquet(PATH)\n"
                         "d = ProfileReport(df, minimal=True, progress_bar=False).get_description()")),
    "whylogs": ("import pandas as pd\nimport whylogs as why",
                "df = pd.read_parquet(PATH)\nv = why.log(df).view(); v.to_pandas()"),
}


def ensure_venv() -> str:
    """The Python of the ydata-profiling / whylogs virtualenv, created on first use."""
    python = os.path.join(VENV, "bin", "python")
    probe = [python, "-c", "import ydata_profiling, whylogs, pyarrow"]
    if not os.path.exists(python) or subprocess.run(probe, capture_output=True, check=False).returncode:
        print(f"creating {VENV} (ydata-profiling, whylogs; a few minutes, once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "ydata-profiling", "whylogs", "pyarrow"],
                       check=True)
    return python


def measure(tool: str, path: str, python: str) -> dict:
    imports, body = TOOLS[tool]
    code = _MEASURE.format(imports=imports, body=body.replace("PATH", repr(path)))
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    r = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, check=False)
    if r.returncode:
        return {"error": (r.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def warm(path: str) -> None:
    """Read ``path`` once (into the page cache), untimed."""
    with open(path, "rb") as fh:
        while fh.read(1 << 24):
            pass


def median_run(tool: str, path: str, python: str, repeat: int) -> dict:
    """The run of median wall time of ``repeat`` runs (each after :func:`warm`), with every run's seconds."""
    runs = []
    for _ in range(repeat):
        warm(path)
        runs.append(measure(tool, path, python))
        if "error" in runs[-1]:
            return runs[-1]
    runs.sort(key=lambda r: r["seconds"])
    return dict(runs[len(runs) // 2], runs=[round(r["seconds"], 3) for r in runs])


def version(python: str, module: str) -> str:
    r = subprocess.run([python, "-c", f"import {module}; print({module}.__version__)"], capture_output=True,
                       text=True, check=False)
    return r.stdout.strip() or "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--big-rows", type=int, default=10_000_000)
    ap.add_argument("--quick", action="store_true", help="100k and 300k rows")
    ap.add_argument("--skip", default="", help="comma-separated: ydata, whylogs, big")
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool; the median is reported")
    ap.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.big_rows = 100_000, 300_000
    skip = set(filter(None, args.skip.split(",")))
    print(json.dumps(machine()), flush=True)
    print(f"load average before: {os.getloadavg()}", flush=True)
    small = cached_parquet(args.rows)
    results: dict[str, dict] = {}
    others = {"ydata": "ydata-profiling", "whylogs": "whylogs"}
    python = ensure_venv() if set(others) - skip else None
    if python:
        print(f"ydata-profiling {version(python, 'ydata_profiling')}, whylogs {version(python, 'whylogs')}")
    for tool in ("beamlearn", "beamlearn-compact", "ydata-profiling", "whylogs"):
        if tool in (others[k] for k in skip if k in others):
            continue
        t = time.perf_counter()
        results[f"{tool}@{args.rows}"] = r = median_run(tool, small, sys.executable if tool.startswith("beamlearn")
                                                        else python, args.repeat)
        print(f"{tool:18s} {args.rows:>11,} rows: " + (f"{r['seconds']:7.2f} s ({r['cpu']:6.2f} CPU s), peak RSS {r['peak_mib']:7.0f} MiB "
              f"({r['above_mib']:6.0f} MiB above its imports), runs {r['runs']}" if "error" not in r else "")
              + r.get("error", "")
              + f"  [{time.perf_counter() - t:.0f} s with start-up]", flush=True)
    if "big" not in skip:
        big = cached_parquet(args.big_rows)
        results[f"beamlearn@{args.big_rows}"] = r = median_run("beamlearn", big, sys.executable, args.repeat)
        print(f"{'beamlearn':18s} {args.big_rows:>11,} rows: {r['seconds']:7.2f} s ({r['cpu']:6.2f} CPU s), peak RSS {r['peak_mib']:7.0f} "
              f"MiB ({r['above_mib']:6.0f} MiB above its imports), runs {r['runs']}", flush=True)
    base = results.get(f"beamlearn@{args.rows}", {})
    print("\nratios (other / beamlearn, same rows):")
    for tool in ("ydata-profiling", "whylogs"):
        r = results.get(f"{tool}@{args.rows}")
        if r and "seconds" in r and base:
            print(f"  {tool:16s} time x{r['seconds'] / base['seconds']:.1f}, CPU x{r['cpu'] / base['cpu']:.1f}, peak RSS x"
                  f"{r['peak_mib'] / base['peak_mib']:.1f}")
    if f"beamlearn@{args.big_rows}" in results and base:
        b = results[f"beamlearn@{args.big_rows}"]
        print(f"  beamlearn {args.big_rows:,} vs {args.rows:,} rows: time x{b['seconds'] / base['seconds']:.1f}, "
              f"peak RSS {b['peak_mib'] - base['peak_mib']:+.0f} MiB")
    if f"beamlearn-compact@{args.rows}" in results:
        c = results[f"beamlearn-compact@{args.rows}"]
        print(f"  the compact profile every fit records (read included): {c['seconds']:.2f} s, {c['cpu']:.2f} CPU s "
              f"per {args.rows:,} rows")
    print(f"load average after: {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
