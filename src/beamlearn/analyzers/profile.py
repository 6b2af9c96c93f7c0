"""The column profile: one mergeable analyzer composed of the others, whose state is a JSON-ready profile.

:class:`ColumnProfile` runs, in one pass, per column: rows, nulls and NaN; for numeric columns
:class:`~beamlearn.analyzers.Moments`, :class:`~beamlearn.analyzers.MinMax` and a KLL sketch; for strings and
booleans a :class:`~beamlearn.analyzers.sketches.FrequentItems` sketch; for strings the moments and range of their
lengths; a :class:`~beamlearn.analyzers.sketches.DistinctCount` for every column but nested ones; and
:class:`~beamlearn.analyzers.CoMoments` of the first ``correlations`` numeric columns (Pearson correlations).

Its extracted state is the ``columns`` / ``correlations`` part of a ``profile.json`` (documented in
:mod:`beamlearn.profile`): every figure plus the accumulators themselves (moments as ``[n, mean, M2]``, sketches
as base64 of their serialized bytes), so :meth:`ColumnProfile.load` turns a profile back into an accumulator
and two profiles merge into the profile of the union.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beamlearn.analyzers.base import Analyzer
from beamlearn.analyzers.counts import counted, distinct_counts
from beamlearn.analyzers.moments import CoMoments, MinMax, Moments
from beamlearn.analyzers.quantiles import Quantiles
from beamlearn.analyzers.sketches import DistinctCount, FrequentItems
from beamlearn.batches import present_values, raw_values

__all__ = ["COMPACT_PROFILE", "HISTOGRAM_BINS", "PROFILE_QUANTILES", "SAMPLE_FLOOR", "ColumnProfile", "b64",
           "finite", "length_stats", "sample_stride", "strided", "unb64"]

PROFILE_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
HISTOGRAM_BINS = 20
COMPACT_PROFILE = {"k": 200, "lg_max_map_size": 7, "correlations": 0, "distinct": False, "lengths": False,
                   "moments": False, "sample": 64}
"""The parameters of the compact profile every fit records in its artifact (``lineage["profile"]["columns"]``):
KLL sketches of numeric columns and frequent items of categorical ones over a systematic sample (every 64th row
of a batch, but at least :data:`SAMPLE_FLOOR` values of each batch: every 16th of a batch of 65,536 rows), exact missing counts; the fit's own
profile adds exact moments and ranges (:func:`beamlearn.profile.read_profile` joins them).

Why the floor: the sketched normed Wasserstein distance of *unshifted* data is noise, and it grows fast as the
sample shrinks (its tails weigh most).  Measured over 30 seeds (normal data, fit vs a full profile of 20,000 new
rows): a fit on 20,000 rows in one batch gave a mean of 0.040 and a maximum of 0.074 with a floor of 1,024
values (stride 19), right under the 0.1 threshold; with the floor of 4,096 (stride 4) 0.022 and 0.039; sketching
every row 0.013 and 0.026.  A fit on 1M rows in batches of 65,536 (stride 16, 62,500 values a column) stays near
the unsampled figure.  The floor costs a fit on 1M rows about 10 ms of sketch updates (8 numeric columns)."""
SAMPLE_FLOOR = 4096
"""The fewest values a sampling :class:`ColumnProfile` feeds its sketches from one batch (every value of a
smaller batch)."""


def sample_stride(rows: int, sample: int) -> int:
    """The stride a :class:`ColumnProfile` with ``sample`` samples a batch of ``rows`` rows with: at most
    ``sample``, at least 1, leaving at least :data:`SAMPLE_FLOOR` values.

    >>> sample_stride(65536, 64), sample_stride(20000, 64), sample_stride(500, 64), sample_stride(65536, 1)
    (16, 4, 1, 1)
    """
    return max(1, min(sample, rows // SAMPLE_FLOOR))


def b64(data: bytes) -> str:
    """Bytes as base64 text (for JSON)."""
    return base64.b64encode(bytes(data)).decode("ascii")


def unb64(text: str) -> bytes:
    """The inverse of :func:`b64`."""
    return base64.b64decode(text.encode("ascii"), validate=True)


def finite(v: Any) -> float | None:
    """``v`` as a float, or None when it is NaN or missing (JSON has no NaN)."""
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) else f


def _nan(v: Any) -> float:
    return np.nan if v is None else float(v)


class ColumnProfile(Analyzer):
    """Per-column statistics and sketches of ``fields`` (``(name, kind, arrow type)`` triples, ``kind`` as
    :func:`beamlearn.batches.column_kind` says) in one pass; see the module docstring.

    Parameters
    ----------
    fields:
        The columns, each ``(name, kind, type string)``.
    k:
        The KLL sketches' size (normalized rank error about 1.65% at 200, 0.33% at 1000... see DataSketches).
    lg_max_map_size:
        log2 of the frequent-items sketch's slots (values are counted exactly below 0.75 of them).
    correlations:
        How many numeric columns (the first ones) get Pearson correlations; 0 for none.
    distinct:
        Whether to estimate distinct values (HyperLogLog).
    lengths:
        Whether to profile the lengths of strings.
    moments:
        Whether to compute moments and ranges of numeric columns.
    sample:
        Feed the KLL and frequent-items sketches every ``sample``-th row of each batch only (1: every row), but
        at least :data:`SAMPLE_FLOOR` values of each batch (:func:`sample_stride`); counts of missing values
        stay exact.
    """

    reads_dictionary = True

    def __init__(self, fields: Sequence[Sequence[str]], *, k: int = 200, lg_max_map_size: int = 8,
                 correlations: int = 50, distinct: bool = True, lengths: bool = True, moments: bool = True,
                 sample: int = 1) -> None:
        self.fields = tuple(tuple(f) for f in fields)
        self.k, self.lg_max_map_size, self.correlations, self.distinct = k, lg_max_map_size, correlations, distinct
        self.lengths, self.moments, self.sample = lengths, moments, sample
        self.columns = tuple(f[0] for f in self.fields)

    def _parts(self) -> dict[str, Analyzer]:
        parts = self.__dict__.get("_cache")
        if parts is None:
            kinds = {n: kd for n, kd, _ in self.fields}
            num = [n for n in self.columns if kinds[n] == "numeric"]
            strs = [n for n in self.columns if kinds[n] == "string"] if self.lengths else []
            cat = [n for n in self.columns if kinds[n] in ("string", "boolean")]
            dis = [n for n in self.columns if kinds[n] != "other"] if self.distinct else []
            mom = num if self.moments else []
            parts = {"moments": Moments(mom), "range": MinMax(mom),
                     "kll": Quantiles(num, (), approx=True, k=self.k), "frequent": FrequentItems(
                         cat, lg_max_map_size=self.lg_max_map_size), "distinct": DistinctCount(dis),
                     "length_moments": Moments(strs), "length_range": MinMax(strs),
                     "corr": CoMoments(num[:self.correlations] if len(num[:self.correlations]) > 1 else [])}
            self.__dict__["_cache"] = parts
        return parts

    def key(self) -> tuple:
        return (type(self).__name__, self.fields, self.k, self.lg_max_map_size, self.correlations, self.distinct,
                self.lengths, self.moments, self.sample)

    def __repr__(self) -> str:
        return f"ColumnProfile({len(self.fields)} columns, k={self.k})"

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_cache"}

    def reads(self) -> tuple[str, ...]:
        return self.columns

    # -------------------------------------------------------------------- the reduction
    def create(self) -> dict[str, Any]:
        acc = {name: a.create() for name, a in self._parts().items()}
        acc["counts"] = np.zeros((len(self.columns), 2), dtype=np.int64)  # nulls, NaN
        acc["rows"] = 0
        return acc

    def add(self, acc: dict[str, Any], batch: pa.RecordBatch) -> dict[str, Any]:
        acc["rows"] += batch.num_rows
        counts = acc["counts"]
        for i, c in enumerate(self.columns):
            arr = batch.column(c)
            counts[i, 0] += arr.null_count
            if pa.types.is_floating(arr.type):  # raw_values is memoized: the pass's other analyzers reuse it
                _, ok = raw_values(arr)
                counts[i, 1] += 0 if ok is None else len(arr) - int(np.count_nonzero(ok)) - arr.null_count
        parts = self._parts()
        step = sample_stride(batch.num_rows, self.sample)
        for j, c in enumerate(parts["kll"].columns):  # KLL of every step-th value
            if step == 1:
                xs = present_values(batch.column(c))  # memoized: the moments of the pass compressed it already
            else:
                x, ok = raw_values(batch.column(c))
                xs = x[::step] if ok is None else x[::step][ok[::step]]
            acc["kll"][j].update(xs)
        for name, a in parts.items():
            if not a.columns or name in ("kll", "length_moments", "length_range"):
                continue
            if name == "frequent" and step > 1:
                for sk, c in zip(acc[name], a.columns):
                    arr = batch.column(c)
                    full = counted(arr)  # counted already by another analyzer of the pass (a vocabulary): exact
                    if full is not None:
                        sk.add_counts(*full)
                    else:  # a sample, each value standing for the `step` rows it was sampled from
                        sk.add_counts(*distinct_counts(strided(arr, step), c), weight=step)
            else:
                acc[name] = a.add(acc[name], batch)
        if parts["length_moments"].columns:
            mom, rng = length_stats(batch, parts["length_moments"].columns)
            acc["length_moments"] = parts["length_moments"].merge([acc["length_moments"], mom])
            acc["length_range"] = parts["length_range"].merge([acc["length_range"], rng])
        return acc

    def merge(self, accs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        out = {name: a.merge([x[name] for x in accs]) for name, a in self._parts().items()}
        out["counts"] = np.sum([x["counts"] for x in accs], axis=0).astype(np.int64)
        out["rows"] = int(sum(x["rows"] for x in accs))
        return out

    def dump(self, acc: dict[str, Any]) -> dict[str, Any]:
        """The profile (:meth:`extract`): it holds the accumulators as plain data."""
        return self.extract(acc)

    # -------------------------------------------------------------------- profile <-> accumulator
    def extract(self, acc: dict[str, Any]) -> dict[str, Any]:
        parts = self._parts()
        pos = {name: {c: j for j, c in enumerate(a.columns)} for name, a in parts.items()}
        distinct = parts["distinct"].extract(acc["distinct"]) if parts["distinct"].columns else []
        frequent = parts["frequent"].extract(acc["frequent"]) if parts["frequent"].columns else []
        hll = parts["distinct"].dump(acc["distinct"])
        columns: dict[str, Any] = {}
        for i, (name, kind, typ) in enumerate(self.fields):
            nulls, nan = (int(v) for v in acc["counts"][i])
            col: dict[str, Any] = {"type": typ, "kind": kind, "count": acc["rows"] - nulls - nan, "nulls": nulls,
                                   "nan": nan}
            if name in pos["distinct"]:
                j = pos["distinct"][name]
                col["distinct"] = {k: float(v) for k, v in distinct[j].items()}
                col["hll"] = b64(hll[j])
            if name in pos["kll"]:
                col.update(self._numeric(acc, pos, name))
            if name in pos["frequent"]:
                j = pos["frequent"][name]
                col["top"] = [[v, e] for v, e, _, _ in frequent[j]["items"][:10]]
                col["frequent"] = {"max_error": frequent[j]["max_error"], "total": frequent[j]["total"],
                                   "sketch": b64(acc["frequent"][j].sketch.serialize())}
            if name in pos["length_moments"]:
                j = pos["length_moments"][name]
                n, mean, m2 = (float(v) for v in acc["length_moments"][:, j])
                lo, hi = acc["length_range"][:, j]
                col["length"] = {"min": finite(lo), "max": finite(hi), "mean": finite(mean) if n else None,
                                 "moments": [n, mean, m2]}
            columns[name] = col
        return {"rows": int(acc["rows"]), "columns": columns, "correlations": self._correlations(acc)}

    def _numeric(self, acc: dict[str, Any], pos: dict[str, dict[str, int]], name: str) -> dict[str, Any]:
        sk = acc["kll"][pos["kll"][name]].sketch
        out: dict[str, Any] = {"kll": b64(sk.serialize())}
        if name in pos["moments"]:
            j = pos["moments"][name]
            n, mean, m2 = (float(v) for v in acc["moments"][:, j])
            out.update({"min": finite(acc["range"][0, j]), "max": finite(acc["range"][1, j]),
                        "mean": mean if n else None, "std": math.sqrt(m2 / (n - 1)) if n > 1 else None,
                        "moments": [n, mean, m2]})
        lo, hi = (sk.get_min_value(), sk.get_max_value()) if sk.n else (None, None)
        if sk.n and lo is not None and hi is not None:
            out["quantiles"] = {f"{q:g}": float(v) for q, v in zip(PROFILE_QUANTILES,
                                                                   sk.get_quantiles(list(PROFILE_QUANTILES)))}
            if math.isfinite(lo) and math.isfinite(hi):  # +-inf values: quantiles, but no equal-width bins
                out["histogram"] = kll_histogram(sk, lo, hi)
        return out

    def _correlations(self, acc: dict[str, Any]) -> dict[str, Any] | None:
        corr = self._parts()["corr"]
        if not corr.columns:
            return None
        s = corr.extract(acc["corr"])
        C = s["comoment"]
        d = np.sqrt(np.diag(C))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = C / np.outer(d, d)
        return {"columns": list(corr.columns), "rows": s["rows"], "skipped": s["skipped"],
                "pearson": [[finite(v) for v in row] for row in r],
                "state": {"count": s["count"], "mean": [float(v) for v in s["mean"]] if s["count"] else None,
                          "comoment": C.tolist()}}

    def load(self, plain: dict[str, Any]) -> dict[str, Any]:
        """The accumulator a profile (:meth:`extract`'s state) was extracted from."""
        from datasketches import frequent_strings_sketch, kll_doubles_sketch

        acc = self.create()
        parts = self._parts()
        cols = plain["columns"]
        acc["rows"] = int(plain["rows"])
        for i, name in enumerate(self.columns):
            acc["counts"][i] = cols[name]["nulls"], cols[name]["nan"]
        for j, name in enumerate(parts["moments"].columns):
            c = cols[name]
            acc["moments"][:, j] = c["moments"]
            acc["range"][:, j] = _nan(c["min"]), _nan(c["max"])
        for j, name in enumerate(parts["kll"].columns):
            acc["kll"][j].sketch = kll_doubles_sketch.deserialize(unb64(cols[name]["kll"]))
        for j, name in enumerate(parts["frequent"].columns):
            acc["frequent"][j].sketch = frequent_strings_sketch.deserialize(unb64(cols[name]["frequent"]["sketch"]))
        if parts["distinct"].columns:
            acc["distinct"] = parts["distinct"].load([unb64(cols[n]["hll"]) for n in parts["distinct"].columns])
        for j, name in enumerate(parts["length_moments"].columns):
            c = cols[name]["length"]
            acc["length_moments"][:, j] = c["moments"]
            acc["length_range"][:, j] = _nan(c["min"]), _nan(c["max"])
        corr = plain.get("correlations")
        if parts["corr"].columns and corr:
            st = corr["state"]
            d = len(parts["corr"].columns)
            acc["corr"] = [float(st["count"]), np.array(st["mean"] or np.zeros(d), dtype=np.float64),
                           np.array(st["comoment"], dtype=np.float64), int(corr["rows"]), int(corr["skipped"])]
        return acc


def kll_histogram(sk: Any, lo: float, hi: float, bins: int = HISTOGRAM_BINS) -> dict[str, list[float]]:
    """An equal-width histogram of ``bins`` bins over ``[lo, hi]`` from a KLL sketch's PMF (counts estimated
    within the sketch's rank error)."""
    if hi <= lo:
        return {"edges": [lo, hi], "counts": [float(sk.n)]}
    edges = np.linspace(lo, hi, bins + 1)
    pmf = np.asarray(sk.get_pmf(list(edges[1:-1]), True), dtype=np.float64)  # inclusive: (a, b] bins
    return {"edges": edges.tolist(), "counts": (pmf * sk.n).round(3).tolist()}


def length_stats(batch: pa.RecordBatch, columns: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The :class:`~beamlearn.analyzers.Moments` and :class:`~beamlearn.analyzers.MinMax` accumulators of the
    UTF-8 lengths (in characters) of string ``columns`` in ``batch``: for a dictionary array, from the lengths
    of its dictionary weighted by how often each code occurs (no per-row length is built).

    >>> d = pa.array(["ab", None, "abcd", "ab"]).dictionary_encode()
    >>> mom, rng = length_stats(pa.record_batch({"s": d}), ["s"])
    >>> mom[:, 0].tolist(), rng[:, 0].tolist()
    ([3.0, 2.6666666666666665, 2.6666666666666665], [2.0, 4.0])
    """
    mom, rng = np.zeros((3, len(columns))), np.full((2, len(columns)), np.nan)
    for j, c in enumerate(columns):
        arr = batch.column(c)
        if pa.types.is_dictionary(arr.type):
            lens = pc.utf8_length(arr.dictionary)
            k = len(lens)
            idx = arr.indices.fill_null(k) if arr.indices.null_count else arr.indices
            w = np.bincount(idx.to_numpy(zero_copy_only=False), minlength=k + 1)[:k].astype(np.float64)
            if lens.null_count:
                w[lens.is_null().to_numpy(zero_copy_only=False)] = 0.0
            x = lens.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64)
        else:
            x = pc.utf8_length(arr).drop_null().to_numpy(zero_copy_only=False).astype(np.float64)
            w = None
        n = float(len(x) if w is None else w.sum())
        if not n:
            continue
        mean = float((x.sum() if w is None else w @ x) / n)
        d = x - mean
        mom[:, j] = n, mean, float(d @ d if w is None else w @ (d * d))
        seen = x if w is None else x[w > 0]
        rng[:, j] = seen.min(), seen.max()
    return mom, rng


def strided(arr: pa.Array, step: int) -> pa.Array:
    """Every ``step``-th value of ``arr`` (a dictionary array takes its indices only)."""
    idx = pa.array(np.arange(0, len(arr), step, dtype=np.int32))
    if pa.types.is_dictionary(arr.type):
        return pa.DictionaryArray.from_arrays(arr.indices.take(idx), arr.dictionary)
    return arr.take(idx)
