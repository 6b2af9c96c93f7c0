"""Spark fit passes as Spark SQL aggregations: the JVM folds the rows, the driver gets the accumulators.

A fit pass of :func:`beamlearn.engines.spark.fit` normally ships every row to Python (``mapInArrow``).  When
every analyzer of the pass has a SQL form, the pass runs instead as at most two Spark jobs over the DataFrame:
one ``df.agg`` of every scalar aggregate (counts, moments, ranges, KLL sketches, exact-quantile brackets) and one
grouped count of every column whose distinct values are counted (vocabularies, frequent items), all columns
stacked into ``(column, value)`` rows.  Each analyzer's converter turns the collected results into that
analyzer's *accumulator*, so :func:`~beamlearn.engines.passes.extract_states` and the plan run unchanged.

Missing values follow the local engine: a missing number is null or NaN (Spark's aggregates take NaN as a
value, the largest: every numeric input is ``when(!isnan(x), x)``), ``+-inf`` are values.  Moments come from
Spark's ``avg`` (sum / count) and ``var_pop`` (Welford's updates, Chan's merges), the accumulator's ``M2`` as
``var_pop * n``.  KLL sketches are Spark's ``kll_sketch_agg_double`` (Apache DataSketches' Java KLL; its bytes
are the format ``datasketches.kll_doubles_sketch`` reads).  The compact profile's sample: every row of a
partition's first :data:`~beamlearn.analyzers.profile.SAMPLE_FLOOR` rows, then every ``stride``-th
(:func:`~beamlearn.analyzers.profile.sample_stride` of the fit's batch size), where the local engine samples
each batch; its frequent items are exact counts.

A pass runs as SQL only when that is exactly right (:func:`beamlearn.engines.spark_aggpass.refusals`): the DataFrame already has the fit
schema (no value to cast, so none for the conform step to reject), no dead-letter sink, no split part, and
every analyzer reads raw input columns (no step applied on the way) and has a converter (:data:`CONVERTERS`).

Examples
--------
>>> from beamlearn.analyzers import Moments, RowCount
>>> sorted(c.__name__ for c in CONVERTERS)[:3]
['ColumnProfile', 'Constant', 'MinMax']
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn.analyzers import Constant, MinMax, Moments, Quantiles, RowCount, ValueCounts
from beamlearn.analyzers.profile import SAMPLE_FLOOR, ColumnProfile, sample_stride
from beamlearn.analyzers.quantiles import KllSketch, QuantileSelect

__all__ = ["CONVERTERS", "ILL_CONDITIONED", "Aggregations", "Finish", "converter"]

_INDEX = "__beamlearn_i"  # the row's position in its partition (monotonically_increasing_id's low 33 bits)
Finish = Callable[[dict[str, Any], dict[str, tuple[list[Any], list[int], int]]], Any]


def _col(name: str) -> Any:
    from pyspark.sql import functions as F

    return F.col("`" + name.replace("`", "``") + "`")


class Aggregations:
    """The Spark aggregations of one pass: scalar aggregate expressions (deduplicated, one ``df.agg``) and the
    columns whose distinct values are counted (one grouped job).  Converters register what they need and
    return a function of the results giving their accumulator.

    ``schema``: the fit schema (Arrow); ``stride``: the compact profile's sample stride after
    :data:`SAMPLE_FLOOR` rows of each partition.
    """

    def __init__(self, schema: pa.Schema, batch_size: int) -> None:
        self.schema, self.batch_size = schema, batch_size
        self.exprs: dict[str, tuple[str, Any]] = {}  # key -> (alias, Spark column)
        self.counted: list[str] = []  # columns whose distinct values are counted
        self.indexed = False  # a sampled expression reads the row's position in its partition
        self.finishers: list[Finish] = []  # per analyzer of the pass, in order (set by sql_plan)
        self.refiners: list[Callable[[dict[str, Any], Aggregations], None]] = []  # register second-job aggregates

    def type_of(self, column: str) -> pa.DataType | None:
        """The column's fit type (None when the fit schema lacks it)."""
        return self.schema.field(column).type if column in self.schema.names else None

    def numeric(self, column: str) -> Any | None:
        """The column as a Spark double with NaN made null (the local engine's missing); None when it is not
        an integer or floating column of the fit schema."""
        from pyspark.sql import functions as F

        t = self.type_of(column)
        if t is None or not (pa.types.is_integer(t) or pa.types.is_floating(t)):
            return None
        c = _col(column).cast("double")
        return F.when(~F.isnan(c), c) if pa.types.is_floating(t) else c

    def scalar(self, key: tuple, make: Callable[[], Any]) -> str:
        """The alias of the aggregate ``make()`` (built once per ``key``)."""
        if key not in self.exprs:
            alias = f"a{len(self.exprs)}"
            self.exprs[key] = (alias, make().alias(alias))
        return self.exprs[key][0]

    def sampled(self, stride: int) -> Any:
        """True on the rows a sampling profile sketches: the first :data:`SAMPLE_FLOOR` of each partition,
        then every ``stride``-th."""
        from pyspark.sql import functions as F

        self.indexed = True
        i = F.col(_INDEX)
        return (i < SAMPLE_FLOOR) | (i % stride == 0) if stride > 1 else F.lit(True)

    def counts(self, column: str) -> bool:
        """Count ``column``'s distinct values in the grouped job; False when its type has no SQL form."""
        t = self.type_of(column)
        if t is None or not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t)
                             or pa.types.is_integer(t) or pa.types.is_floating(t)):
            return False
        if column not in self.counted:
            self.counted.append(column)
        return True

    # ------------------------------------------------------------------------------ running
    def run(self, frame: Any) -> tuple[dict[str, Any], dict[str, tuple[list[Any], list[int], int]], int]:
        """Run the jobs on ``frame``: ``(scalar results by alias, {column: (values, counts, missing)}, rows)``.
        The sketches and the grouped count run as jobs of their own, concurrently with the plain aggregates."""
        from pyspark.sql import functions as F

        rows_alias = self.scalar(("rows",), lambda: F.count(F.lit(1)))
        src = frame
        if self.indexed:
            src = frame.withColumn(_INDEX, F.monotonically_increasing_id().bitwiseAND((1 << 33) - 1))
        # sketches (object aggregates: no code generation for the job holding them), the grouped count and
        # the plain aggregates run as concurrent jobs: their fixed costs overlap
        sketches = [e for k, (_, e) in self.exprs.items() if k[0] == "kll"]
        plain = [e for k, (_, e) in self.exprs.items() if k[0] != "kll"]
        with ThreadPoolExecutor(2) as pool:
            grouped = pool.submit(self._grouped, frame) if self.counted else None
            sketched = pool.submit(lambda: src.agg(*sketches).collect()[0].asDict()) if sketches else None
            got = frame.agg(*plain).collect()[0].asDict()
            first = set(self.exprs)
            for refine in self.refiners:  # aggregates that depend on this job's results: one more job
                refine(got, self)
            more = [e for k, (_, e) in self.exprs.items() if k not in first]
            if more and got[rows_alias]:
                got.update(frame.agg(*more).collect()[0].asDict())
            counted = grouped.result() if grouped is not None else {}
            got.update(sketched.result() if sketched is not None else {})
        return got, counted, int(got[rows_alias])

    def alias(self, key: tuple) -> str | None:
        """The alias of the aggregate registered under ``key``, or None."""
        return self.exprs[key][0] if key in self.exprs else None

    def _grouped(self, frame: Any) -> dict[str, tuple[list[Any], list[int], int]]:
        from pyspark.sql import functions as F

        slots = ("s", "d", "l", "b")
        args: list[Any] = [F.lit(len(self.counted))]
        for i, c in enumerate(self.counted):
            t = self.type_of(c)
            kind = ("s" if pa.types.is_string(t) or pa.types.is_large_string(t) else "b" if pa.types.is_boolean(t)
                    else "d" if pa.types.is_floating(t) else "l")
            typed = {"s": "string", "d": "double", "l": "long", "b": "boolean"}
            args.append(F.lit(i))
            for s in slots:
                value = (self.numeric(c) if s == "d" else _col(c).cast(typed[s])) if s == kind else None
                args.append(value if value is not None else F.lit(None).cast(typed[s]))
        stacked = frame.select(F.stack(*args).alias("i", *slots))
        table = stacked.groupBy("i", *slots).count().toArrow()
        out: dict[str, tuple[list[Any], list[int], int]] = {c: ([], [], 0) for c in self.counted}
        ids = table.column("i").to_pylist()
        counts = table.column("count").to_pylist()
        values = [table.column(s).to_pylist() for s in slots]
        found: dict[int, dict[Any, int]] = {}
        missing: dict[int, int] = {}
        for r, i in enumerate(ids):
            v = next((col[r] for col in values if col[r] is not None), None)
            if v is None:
                missing[i] = missing.get(i, 0) + counts[r]
            else:
                found.setdefault(i, {})[v] = counts[r]
        for i, c in enumerate(self.counted):
            seen = found.get(i, {})
            keys = sorted(seen)
            out[c] = (keys, [seen[k] for k in keys], missing.get(i, 0))
        return out


# ---------------------------------------------------------------------------------------------- converters
def _rows(aggs: Aggregations) -> str:
    from pyspark.sql import functions as F

    return aggs.scalar(("rows",), lambda: F.count(F.lit(1)))


def _missing(aggs: Aggregations, column: str, nan: bool = True) -> str | None:
    """Alias of the count of nulls (and, with ``nan``, NaN of a floating column) of ``column``."""
    from pyspark.sql import functions as F

    t = aggs.type_of(column)
    if t is None:
        return None
    floating = pa.types.is_floating(t)
    if not nan:
        return aggs.scalar(("nulls", column), lambda: F.count_if(_col(column).isNull()))
    if floating:
        return aggs.scalar(("missing", column), lambda: F.count_if(_col(column).isNull() | F.isnan(_col(column))))
    return aggs.scalar(("nulls", column), lambda: F.count_if(_col(column).isNull()))


def _row_count(a: RowCount, aggs: Aggregations) -> Finish | None:
    names = [_missing(aggs, c) for c in a.columns]
    if any(n is None for n in names):
        return None
    rows = _rows(aggs)
    return lambda got, _: [int(got[rows])] + [int(got[n]) for n in names]  # type: ignore[index]


def _constant(a: Constant, aggs: Aggregations) -> Finish:
    return lambda got, _: None


ILL_CONDITIONED = 1e6
"""A column whose ``mean**2 > ILL_CONDITIONED * var`` (a coefficient of variation under 1e-3) gets its moments
again from sums of deviations from the first job's mean (:func:`_refine`): Spark's ``var_pop`` (Welford's
running mean) loses about ``kappa * 1e-17 * sqrt(rows a partition)`` relative, 9e-12 at a mean of 1e6 and a
standard deviation of 1 over 250,000 rows a partition, where the local engine's per-batch two-pass sums lose
5e-14."""


def _moments(a: Moments, aggs: Aggregations) -> Finish | None:
    from pyspark.sql import functions as F

    if a.weight is not None:
        return None
    cols = [aggs.numeric(c) for c in a.columns]
    if any(c is None for c in cols):
        return None
    names = [(aggs.scalar(("count", c), lambda x=x: F.count(x)), aggs.scalar(("avg", c), lambda x=x: F.avg(x)),
              aggs.scalar(("var_pop", c), lambda x=x: F.var_pop(x))) for c, x in zip(a.columns, cols)]
    aggs.refiners.append(lambda got, aggs: _refine(got, aggs, a.columns, cols, names))

    def finish(got: dict[str, Any], _: Any) -> np.ndarray:
        acc = np.zeros((3, len(a.columns)))
        for j, (c, (n, mean, var)) in enumerate(zip(a.columns, names)):
            if not got[n]:
                continue
            k, s1, s2 = float(got[mean]), aggs.alias(("dev1", c)), aggs.alias(("dev2", c))
            if s1 is not None and s2 is not None:  # refined: sums of deviations from the first mean
                count = float(got[n])
                acc[:, j] = count, k + float(got[s1]) / count, float(got[s2]) - float(got[s1]) ** 2 / count
            else:
                acc[:, j] = float(got[n]), k, float(got[var]) * float(got[n])
        return acc

    return finish


def _refine(got: dict[str, Any], aggs: Aggregations, columns: tuple[str, ...], cols: list[Any],
            names: list[tuple[str, str, str]]) -> None:
    """Register ``sum(x - mean)`` and ``sum((x - mean)**2)`` of the ill-conditioned columns (see
    :data:`ILL_CONDITIONED`), the mean from the first job."""
    from pyspark.sql import functions as F

    for c, x, (n, mean, var) in zip(columns, cols, names):
        m, v = got[n] and got[mean], got[var]
        if m is None or v is None or not (np.isfinite(m) and np.isfinite(v)) or not 0 < v * ILL_CONDITIONED < m * m:
            continue
        d = x - F.lit(float(m))
        aggs.scalar(("dev1", c), lambda d=d: F.sum(d))
        aggs.scalar(("dev2", c), lambda d=d: F.sum(d * d))


def _min_max(a: MinMax, aggs: Aggregations) -> Finish | None:
    from pyspark.sql import functions as F

    cols = [aggs.numeric(c) for c in a.columns]
    if any(c is None for c in cols):
        return None
    names = [(aggs.scalar(("min", c), lambda x=x: F.min(x)), aggs.scalar(("max", c), lambda x=x: F.max(x)))
             for c, x in zip(a.columns, cols)]

    def finish(got: dict[str, Any], _: Any) -> np.ndarray:
        return np.array([[np.nan if got[lo] is None else float(got[lo]) for lo, _ in names],
                         [np.nan if got[hi] is None else float(got[hi]) for _, hi in names]], dtype=np.float64)

    return finish


def _kll(aggs: Aggregations, column: str, k: int, keep: Any = None) -> str | None:
    from pyspark.sql import functions as F

    x = aggs.numeric(column)
    if x is None:
        return None
    if keep is not None:
        x = F.when(keep, x)
    return aggs.scalar(("kll", column, k, keep is not None), lambda: F.kll_sketch_agg_double(x, F.lit(k)))


def _sketch(data: Any, k: int) -> KllSketch:
    sk = KllSketch(k)
    if data is not None:
        sk.__setstate__(bytes(data))
    return sk


def _quantiles(a: Quantiles, aggs: Aggregations) -> Finish | None:
    names = [_kll(aggs, c, a.k) for c in a.columns]
    if any(n is None for n in names):
        return None
    return lambda got, _: [_sketch(got[n], a.k) for n in names]


def _select(a: QuantileSelect, aggs: Aggregations) -> Finish | None:
    from pyspark.sql import functions as F

    cols = [aggs.numeric(c) for c in a.columns]
    if any(c is None for c in cols):
        return None
    names = []
    for c, x, col in zip(a.columns, cols, a.brackets):
        names.append([(aggs.scalar(("below", c, lo), lambda x=x, lo=lo: F.count_if(x < F.lit(float(lo)))),
                       aggs.scalar(("inside", c, lo, hi), lambda x=x, lo=lo, hi=hi: F.collect_list(
                           F.when((x >= F.lit(float(lo))) & (x <= F.lit(float(hi))), x)))) for *_, lo, hi in col])

    def finish(got: dict[str, Any], _: Any) -> list:
        return [[[int(got[below]), [np.asarray(got[inside], dtype=np.float64)] if got[inside] else []]
                 for below, inside in col] for col in names]

    return finish


def _value_counts(a: ValueCounts, aggs: Aggregations) -> Finish | None:
    if getattr(a, "weight", None) is not None or not all(aggs.counts(c) for c in a.columns):
        return None

    def finish(_: Any, counted: dict[str, tuple[list[Any], list[int], int]]) -> list[list[Any]]:
        out = []
        for c in a.columns:
            values, counts, missing = counted.get(c, ([], [], 0))
            out.append([Counter(dict(zip(values, counts))), missing])
        return out

    return finish


def _profile(a: ColumnProfile, aggs: Aggregations) -> Finish | None:
    kinds = {n: kd for n, kd, _ in a.fields}
    num = [n for n in a.columns if kinds[n] == "numeric"]
    cat = [n for n in a.columns if kinds[n] in ("string", "boolean")]
    if a.distinct or (a.lengths and "string" in kinds.values()) or len(num[:a.correlations]) > 1:
        return None  # HyperLogLog of beamlearn's hashes, string lengths, correlations: no converter yet
    mom = num if a.moments else []
    moments, rng = _moments(Moments(mom), aggs), _min_max(MinMax(mom), aggs)
    keep = aggs.sampled(sample_stride(aggs.batch_size, a.sample)) if a.sample > 1 else None
    kll = [_kll(aggs, c, a.k, keep) for c in num]
    if moments is None or rng is None or any(n is None for n in kll) or not all(aggs.counts(c) for c in cat):
        return None
    rows = _rows(aggs)
    nulls = [_missing(aggs, c, nan=False) for c in a.columns]
    nans = {c: _nan_count(aggs, c) for c in a.columns if pa.types.is_floating(aggs.type_of(c) or pa.null())}
    if any(n is None for n in nulls):
        return None

    def finish(got: dict[str, Any], counted: dict[str, tuple[list[Any], list[int], int]]) -> dict[str, Any]:
        acc = a.create()
        acc["rows"] = int(got[rows])
        acc["counts"] = np.array([[int(got[n]), int(got[nans[c]]) if c in nans else 0]  # type: ignore[index]
                                  for n, c in zip(nulls, a.columns)], dtype=np.int64).reshape(len(a.columns), 2)
        acc["moments"], acc["range"] = moments(got, counted), rng(got, counted)
        acc["kll"] = [_sketch(got[n], a.k) for n in kll]
        for sk, c in zip(acc["frequent"], cat):
            values, counts, _ = counted.get(c, ([], [], 0))
            sk.add_counts(values, counts)
        return acc

    return finish


def _nan_count(aggs: Aggregations, column: str) -> str:
    from pyspark.sql import functions as F

    return aggs.scalar(("nan", column), lambda: F.count_if(F.isnan(_col(column))))


CONVERTERS: dict[type, Callable[[Any, Aggregations], Finish | None]] = {
    RowCount: _row_count, Constant: _constant, Moments: _moments, MinMax: _min_max, Quantiles: _quantiles,
    QuantileSelect: _select, ValueCounts: _value_counts, ColumnProfile: _profile}
"""The analyzers with a SQL form: class -> converter(analyzer, aggregations) giving a function of the results
(or None when this analyzer's parameters or column types have no SQL form)."""


def converter(analyzer: Any) -> Callable[[Any, Aggregations], Finish | None] | None:
    """The converter of ``analyzer``'s class, or of the nearest base class whose accumulator it keeps (it
    overrides none of ``create``, ``add``, ``merge``: a vocabulary is a :class:`ValueCounts` with its own
    ``extract``); None when there is none."""
    kind = type(analyzer)
    for base in kind.__mro__:
        if base in CONVERTERS:
            same = all(getattr(kind, m) is getattr(base, m) for m in ("create", "add", "merge"))
            return CONVERTERS[base] if same else None
    return None
