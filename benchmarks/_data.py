"""Benchmark data shared by the local and the Beam benchmarks: one deterministic synthetic table.

The table has 8 numeric float64 columns ``num0..num7`` (normal, each with its own location and scale, 5% Arrow
nulls) and 4 string columns ``cat0..cat3`` of 50 distinct values ``v00..v49`` each (skewed frequencies, never
null, every value present from a few thousand rows on).  Rows are generated in fixed chunks of ``CHUNK`` rows,
chunk ``k`` from ``numpy.random.default_rng([seed, k])``, so a table of ``n`` rows is the first ``n`` rows of
any larger table with the same seed (the 1M-row file is the head of the 10M-row file) and generation of big
files streams in constant memory.

Files are written once into a cache directory and reused: ``cached_ipc`` (an uncompressed Arrow IPC file, the
in-memory table of a benchmark worker) and ``cached_parquet`` (the input of the from-files memory test).
Writes are atomic (temp file + rename), so an interrupted run never leaves a truncated cache file.

Measurement helpers shared by the benchmarks live here too: :class:`Peak` (seconds, resident high-water mark
and Arrow's peak allocation of a block) and :func:`machine` (cores, CPU, memory, versions).

Examples
--------
>>> t = make_table(1_000, seed=0)
>>> t.num_rows, t.schema.names[:3], t.schema.names[-1]
(1000, ['num0', 'num1', 'num2'], 'cat3')
>>> make_table(10, seed=0).equals(make_table(1_000, seed=0).slice(0, 10))
True
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import re
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["NUMERIC", "STRINGS", "SCHEMA", "CHUNK", "iter_chunks", "make_table", "cached_ipc",
           "cached_parquet", "read_ipc", "default_cache_dir", "MiB", "Peak", "machine"]

N_NUMERIC, N_STRING, N_CATEGORIES, NULL_FRACTION = 8, 4, 50, 0.05
NUMERIC = [f"num{i}" for i in range(N_NUMERIC)]
STRINGS = [f"cat{i}" for i in range(N_STRING)]
SCHEMA = pa.schema([pa.field(c, pa.float64()) for c in NUMERIC] + [pa.field(c, pa.string()) for c in STRINGS])
CHUNK = 100_000

_VALUES = pa.array([f"v{k:02d}" for k in range(N_CATEGORIES)], type=pa.string())
_WEIGHTS = 1.0 / (np.arange(N_CATEGORIES) + 5.0)  # skewed: the most frequent value ~11x the rarest
_PROBS = _WEIGHTS / _WEIGHTS.sum()


def _column_params(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-column location and scale, fixed by the seed (the same in every chunk)."""
    rng = np.random.default_rng([seed, 2**31])
    return rng.uniform(-100.0, 100.0, N_NUMERIC), rng.uniform(0.1, 50.0, N_NUMERIC)


def _chunk(seed: int, k: int, rows: int) -> pa.RecordBatch:
    rng = np.random.default_rng([seed, k])
    loc, scale = _column_params(seed)
    arrays: list[pa.Array] = []
    for i in range(N_NUMERIC):
        x = rng.normal(loc[i], scale[i], rows)
        arrays.append(pa.array(x, type=pa.float64(), mask=rng.random(rows) < NULL_FRACTION))
    for _ in range(N_STRING):
        idx = rng.choice(N_CATEGORIES, size=rows, p=_PROBS).astype(np.int32)
        arrays.append(_VALUES.take(pa.array(idx)))
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)


def iter_chunks(n_rows: int, *, seed: int = 0) -> Iterator[pa.RecordBatch]:
    """The first ``n_rows`` rows of the stream for ``seed``, as batches of at most ``CHUNK`` rows.

    Examples
    --------
    >>> [b.num_rows for b in iter_chunks(250_000)]
    [100000, 100000, 50000]
    """
    for k, start in enumerate(range(0, n_rows, CHUNK)):
        full = _chunk(seed, k, CHUNK)
        yield full if start + CHUNK <= n_rows else full.slice(0, n_rows - start)


def make_table(n_rows: int, *, seed: int = 0) -> pa.Table:
    """The benchmark table of ``n_rows`` rows, contiguous in memory (one chunk per column).

    Examples
    --------
    >>> t = make_table(20_000)
    >>> round(t.column("num0").null_count / t.num_rows, 2), len(t.column("cat0").unique())
    (0.05, 50)
    """
    return pa.Table.from_batches(list(iter_chunks(n_rows, seed=seed)), schema=SCHEMA).combine_chunks()


def default_cache_dir() -> str:
    """``out/bench`` at the repository root (git-ignored)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "out", "bench")


def _atomic_path(path: str) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return f"{path}.tmp-{os.getpid()}"


def cached_ipc(n_rows: int, *, seed: int = 0, cache_dir: str | None = None) -> str:
    """Path of an uncompressed Arrow IPC file holding :func:`make_table` ``(n_rows, seed)``, written if absent."""
    path = os.path.join(cache_dir or default_cache_dir(), f"bench_{n_rows}_s{seed}.arrow")
    if not os.path.exists(path):
        tmp = _atomic_path(path)
        with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, SCHEMA) as writer:
            for b in iter_chunks(n_rows, seed=seed):
                writer.write_batch(b)
        os.replace(tmp, path)
    return path


def read_ipc(path: str) -> pa.Table:
    """Read an IPC file fully into Arrow memory (not memory-mapped), as one chunk per column."""
    with pa.OSFile(path, "rb") as source:
        return pa.ipc.open_file(source).read_all().combine_chunks()


def cached_parquet(n_rows: int, *, seed: int = 0, cache_dir: str | None = None,
                   row_group_size: int | None = None) -> str:
    """Path of a Parquet file (snappy, ``row_group_size`` rows per group, pyarrow's default 1Mi when None)
    holding :func:`make_table` ``(n_rows, seed)``; streamed chunk by chunk and written only if absent."""
    rg = "" if row_group_size is None else f"_rg{row_group_size}"
    path = os.path.join(cache_dir or default_cache_dir(), f"bench_{n_rows}_s{seed}{rg}.parquet")
    if not os.path.exists(path):
        tmp = _atomic_path(path)
        with pq.ParquetWriter(tmp, SCHEMA) as writer:
            group = row_group_size or 1024 * 1024
            pending = SCHEMA.empty_table()
            for b in iter_chunks(n_rows, seed=seed):  # exact row groups, at most one group + one chunk held
                pending = pa.concat_tables([pending, pa.Table.from_batches([b])])
                while pending.num_rows >= group:
                    writer.write_table(pending.slice(0, group), row_group_size=group)
                    pending = pending.slice(group)
            if pending.num_rows:
                writer.write_table(pending, row_group_size=group)
        os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------- measurement
MiB = 1024 * 1024
_POOLS: list[Any] = []  # proxy pools are never freed: Arrow buffers hold a raw pointer to the pool they came from


def _proc_status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            m = re.search(rf"^{key}:\s+(\d+) kB", fh.read(), re.M)
        return int(m.group(1)) * 1024 if m else None
    except OSError:
        return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak RSS of this process to its current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


class Peak:
    """Context manager measuring a block: wall seconds, the RSS high-water mark above the RSS at entry, and the
    peak of Arrow's allocator inside the block.

    The high-water mark (``VmHWM``) is reset through ``/proc/self/clear_refs`` at entry, so what the process did
    before does not count (``ru_maxrss`` is the fallback where that is unavailable, and then includes it).  Arrow
    allocations are counted by a proxy pool installed as the default pool for the block (``tracemalloc`` does
    not see Arrow's allocator), and by the base pool's lifetime peak above its level at entry (some Arrow code,
    e.g. the Parquet reader's pre-buffering, holds on to the pool it saw first), when that peak rose in the
    block.

    Examples
    --------
    >>> import numpy as np, pyarrow.compute as pc
    >>> with Peak() as p:
    ...     x = np.ones(4 * MiB)                           # 32 MiB of numpy memory
    ...     y = pc.add(pa.array(np.zeros(2 * MiB)), 1.0)   # 16 MiB allocated by Arrow
    >>> r = p.result()
    >>> r["rss_peak_mib"] >= 47 or not r["hwm_reset"], r["arrow_peak_mib"] >= 16
    (True, True)
    """

    def __enter__(self) -> Peak:
        import pyarrow as pa

        gc.collect()
        self.base_pool = pa.default_memory_pool()
        self.base_bytes, self.base_max = self.base_pool.bytes_allocated(), self.base_pool.max_memory() or 0
        self.pool = pa.proxy_memory_pool(self.base_pool)
        # A buffer outliving its pool crashes the process when released, even at interpreter exit: make the pool
        # immortal (a list alone is not enough, module teardown clears it before other objects die)
        _POOLS.append(self.pool)
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(self.pool))
        pa.set_memory_pool(self.pool)
        self.reset = _reset_hwm()
        self.rss0 = _proc_status("VmRSS") or 0
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        import resource

        import pyarrow as pa

        self.seconds = time.perf_counter() - self.t0
        hwm = _proc_status("VmHWM") if self.reset else None
        self.hwm = hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        # Arrow code that captured the pool before the block (e.g. the Parquet reader's pre-buffer, through the
        # static IO context) allocates from the base pool: when its lifetime peak rose in the block, the block's
        # peak is the new one minus the bytes held at entry
        base_max = self.base_pool.max_memory() or 0
        base_peak = base_max - self.base_bytes if base_max > self.base_max else 0
        self.arrow_peak = max(self.pool.max_memory(), base_peak)
        pa.set_memory_pool(self.base_pool)

    def result(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "rss_peak_mib": (self.hwm - self.rss0) / MiB, "rss_hwm_mib": self.hwm / MiB,
                "arrow_peak_mib": self.arrow_peak / MiB, "hwm_reset": self.reset}


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory, OS, and the versions of everything measured.

    Examples
    --------
    >>> m = machine()
    >>> m["cores"] >= 1, "pyarrow" in m["versions"]
    (True, True)
    """
    from importlib.metadata import PackageNotFoundError, version

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    mem = _proc_meminfo("MemTotal")
    versions = {}
    for pkg in ("beamlearn", "numpy", "pyarrow", "pandas", "scikit-learn", "datasketches"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    return {"cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(), "cpu": cpu, "mem_gib": mem / 1024**3 if mem else None,
            "platform": platform.platform(), "python": platform.python_version(), "versions": versions}


def _proc_meminfo(key: str) -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            m = re.search(rf"^{key}:\s+(\d+) kB", fh.read(), re.M)
        return int(m.group(1)) * 1024 if m else None
    except OSError:
        return None
