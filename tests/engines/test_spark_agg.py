"""Spark fit passes as Spark SQL aggregations (:mod:`beamlearn.engines.spark_agg`) equal the local engine.

On the shared standalone cluster of ``tests/engines/conftest.py`` (a master and two one-core workers):
random tables (hypothesis) with nulls, NaN, -0.0, +-inf, an all-null column, a constant column, an
ill-conditioned column (mean 1e6, std 1), float32, integers, booleans and strings (empty and non-ASCII ones),
over more partitions than rows in some cases (empty partitions), fitted three ways: ``sql=True`` (every pass a
Spark SQL aggregation), ``sql=False`` (every pass ``mapInArrow``) and the local engine: counts, vocabularies,
min/max and exact quantiles identical, moments within rtol 1e-12, KLL sketches by their count, min and max
(``comparable``).  ``tests/engines/test_spark.py``'s every-step-and-model test runs ``sql=None`` (SQL where a
pass has a SQL form).  The fallback is taken, and recorded, when it must be.
"""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("pyspark")
import pyspark.cloudpickle

if shutil.which("java") is None:
    pytest.skip("Spark needs Java (.ci/run installs it)", allow_module_level=True)

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.engines.test_beam import assert_state_equal

import beamlearn as bl
from beamlearn import spark as bls
from beamlearn.analyzers import Quantiles
from beamlearn.analyzers.profile import SAMPLE_FLOOR
from beamlearn.errors import DataError, SpecError
from beamlearn.profile.core import comparable

pytestmark = pytest.mark.filterwarnings("ignore::beamlearn.errors.DataWarning",
                                        "ignore::beamlearn.errors.BeamlearnWarning")
pyspark.cloudpickle.register_pickle_by_value(sys.modules[__name__])


SPECIAL = [0.0, -0.0, np.inf, -np.inf, np.nan, None, 1e300, -1e-300, 5.0, 5.0, -2.5]
WORDS = ["", "a", "b", "é", "日本", "a b", "Z"]


def random_table(n: int, seed: int, missing: float) -> pa.Table:
    """Every kind of column the SQL path converts, with every kind of missing and special value."""
    rng = np.random.default_rng(seed)

    def holes(x: np.ndarray) -> np.ndarray:
        return rng.random(n) < missing

    def floats(x: np.ndarray, typ: pa.DataType = pa.float64()) -> pa.Array:  # noqa: B008
        x = x.copy()
        x[rng.random(n) < missing / 2] = np.nan
        return pa.array(x, mask=holes(x), type=typ)

    special = [SPECIAL[i] for i in rng.integers(0, len(SPECIAL), n)]
    return pa.table({
        "f_normal": floats(rng.normal(rng.uniform(-5, 5), 2.0, n)),
        "f_median": floats(rng.standard_t(3, n)),
        "f_special": pa.array(special, type=pa.float64()),
        "f_shift": floats(1e6 + rng.normal(0, 1, n)),
        "f_null": pa.nulls(n, pa.float64()),
        "f_const": pa.array(np.full(n, 3.25)),
        "f32": floats(rng.normal(0, 1e3, n).astype(np.float32), pa.float32()),
        "i64": pa.array(rng.integers(-50, 50, n), mask=holes(np.zeros(n)), type=pa.int64()),
        "i8": pa.array(rng.integers(-9, 9, n).astype(np.int8)),
        "s": pa.array([WORDS[i] for i in rng.integers(0, len(WORDS), n)], mask=holes(np.zeros(n))),
        "s2": pa.array([f"v{i}" for i in rng.zipf(1.6, n) % 40], mask=holes(np.zeros(n))),
        "b": pa.array(rng.random(n) < 0.3, mask=holes(np.zeros(n))),
    })


def pipeline(plain: bool = False) -> bl.Pipeline:
    """Steps whose analyzers all read raw columns: one SQL pass, plus the exact quantiles' selection pass."""
    return bl.Pipeline([
        bl.StandardScaler(["f_normal"] + ["f_special", "f_shift"] * (not plain) + ["f_null", "f_const"]),
        bl.MinMaxScaler(["f32", "i64"]), bl.MaxAbsScaler("i8"),
        bl.RobustScaler("f_median"), bl.RobustScaler("f32_copy", approx=True),
        bl.OneHotEncoder(["s"], handle_unknown="ignore"), bl.SimpleImputer("s2", strategy="most_frequent"),
        bl.SimpleImputer("i64_copy", strategy="median"), bl.OrdinalEncoder("b2")])


def with_copies(t: pa.Table) -> pa.Table:
    """Copies of columns for a second step to read raw (a step replaces its inputs in place)."""
    return (t.append_column("f32_copy", t.column("f32")).append_column("i64_copy", t.column("i64"))
            .append_column("b2", t.column("b").cast(pa.string())))


def assert_fits_equal(got: bl.FittedPipeline, want: bl.FittedPipeline, where: str) -> None:
    assert got.lineage["rows"] == want.lineage["rows"], where
    assert got.input_schema == want.input_schema, where
    assert_state_equal(comparable(got.lineage["profile"]), comparable(want.lineage["profile"]), f"{where}:profile")
    for i, (g, w) in enumerate(zip(got.states, want.states)):
        step = type(want.steps[i]).__name__
        if getattr(want.steps[i], "approx", False):  # KLL quantiles: within the sketch's rank error
            g, w = g["quantiles"], w["quantiles"]
            assert g["count"].tolist() == w["count"].tolist(), where
            continue
        assert_state_equal(g, w, f"{where}:step{i}:{step}")


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.sampled_from([7, 300, 1200]), seed=st.integers(0, 2**16), missing=st.sampled_from([0.0, 0.1, 0.5]),
       partitions=st.sampled_from([1, 3, 9]))
def test_sql_passes_equal_map_in_arrow_and_local(spark, n, seed, missing, partitions):
    table = with_copies(random_table(n, seed, missing))
    df = spark.createDataFrame(table).repartition(partitions).cache()  # 9 partitions of 7 rows: empty ones
    local = pipeline().fit(table)  # one batch: two-pass sums (batches merged by Chan lose kappa * 1e-16)
    sql = bls.fit(pipeline(), df, sql=True)
    assert [w["sql"] for w in sql.lineage["sql_passes"]] == [True] * sql.lineage["passes"]
    assert sql.lineage["passes"] == local.lineage["passes"] == 2  # the exact quantiles' selection
    assert_fits_equal(sql, local, f"sql n={n} seed={seed}")
    # mapInArrow's Chan merges of partitions lose kappa * 1e-16 on the ill-conditioned column (as the local
    # engine's merges of batches do), and merge +-inf means of partitions into NaN where one batch's sum is
    # -inf (or the reverse): that comparison leaves those two columns out
    well = table.drop_columns(["f_shift", "f_special"])
    arrow = bls.fit(pipeline(plain=True), df.drop("f_shift", "f_special"), sql=False)
    assert [w["sql"] for w in arrow.lineage["sql_passes"]] == [False] * arrow.lineage["passes"]
    assert_fits_equal(arrow, pipeline(plain=True).fit(well, batch_size=64), f"mapInArrow n={n} seed={seed}")
    from datasketches import kll_doubles_sketch

    approx = [i for i, s in enumerate(local.steps) if getattr(s, "approx", False)]
    for i in approx:  # KLL quantiles of Spark's sketch within its rank error of the exact ones
        x = np.sort(table.column("f32_copy").to_numpy(zero_copy_only=False))
        x = x[~np.isnan(x)]
        eps = 2 * kll_doubles_sketch.get_normalized_rank_error(Quantiles((), ()).k, False)
        qs = local.steps[i].analyzers()["quantiles"].quantiles
        for q, v in zip(qs, sql.states[i]["quantiles"]["quantiles"][0]):
            rank = np.searchsorted(x, v, side="right") / len(x)
            assert abs(rank - q) <= eps + 1 / len(x), (q, v, rank)
    df.unpersist()


def test_fallback_is_taken_and_recorded(spark, tmp_path):
    table = with_copies(random_table(400, 3, 0.1)).drop_columns(["f_shift", "f_special"])  # see above
    df = spark.createDataFrame(table).repartition(3).cache()
    stepped = bl.Pipeline([bl.MinMaxScaler("i8"), bl.StandardScaler(["f_normal", "i8"])])  # reads scaled i8
    fitted = bls.fit(stepped, df, sql=None)  # None: SQL where every analyzer has a form
    ways = fitted.lineage["sql_passes"]
    assert [w["sql"] for w in ways] == [True, False]
    assert ways[1]["reasons"] == ["MinMaxScaler(i8) is applied before an analyzer that reads its output (it runs "
                                  "in Python)"]
    assert_fits_equal(fitted, stepped.fit(table), "stepped")
    with pytest.raises(SpecError, match=r"sql=True.*pass 2.*MinMaxScaler\(i8\)"):
        bls.fit(stepped, df, sql=True)
    logged = bl.Pipeline([bl.Log1p("i8"), bl.StandardScaler(["f_normal", "i8"])])  # a stateless step: pass 1
    assert [w["sql"] for w in bls.fit(logged, df, sql=None).lineage["sql_passes"]] == [False]
    untouched = bl.Pipeline([bl.Log1p("i8"), bl.StandardScaler(["f_normal"])])  # it does not touch f_normal
    assert [w["sql"] for w in bls.fit(untouched, df, sql=None).lineage["sql_passes"]] == [True]
    kmeans = bl.Pipeline([bl.KMeans(["f_const", "i8"], n_clusters=2, random_state=0, max_iter=2)])
    with pytest.raises(SpecError, match=r"KMeansStart\(f_const, i8\) \(for KMeans\(f_const, i8\)\) has no SQL form"):
        bls.fit(kmeans, df, sql=True)
    assert not bls.fit(kmeans, df, sql=None).lineage["sql_passes"][0]["sql"]
    # the data's own conditions: a fit schema to conform to, a dead-letter sink
    wider = pa.schema([pa.field("i8", pa.float64()) if f.name == "i8" else f for f in table.schema])
    scaler = bl.Pipeline([bl.StandardScaler(["f_normal", "i8"])])
    cast = bls.fit(scaler, df, schema=wider, sql=None)
    assert "schema is not the fit schema" in cast.lineage["sql_passes"][0]["reasons"][0]
    assert_fits_equal(cast, scaler.fit(table.cast(wider)), "cast")
    dead = bls.fit(scaler, df, errors=str(tmp_path / "dead.jsonl"), sql=None)
    assert "dead letters" in dead.lineage["sql_passes"][0]["reasons"][0]
    with pytest.raises(SpecError, match="dead letters"):
        bls.fit(scaler, df, errors=str(tmp_path / "dead2.jsonl"), sql=True)
    with pytest.raises(DataError, match="no data to fit on"):
        bls.fit(scaler, df.limit(0), sql=True)
    df.unpersist()


def test_sampled_profile_sketches_the_first_rows_then_every_stride(spark):
    """Batches of 8,192 rows give the compact profile a stride of 2: every row of a partition's first
    SAMPLE_FLOOR, then every 2nd; the KLL bytes are Spark's (DataSketches Java) and merge with Python's."""
    from datasketches import kll_doubles_sketch

    from beamlearn.analyzers.profile import unb64

    n = 3 * SAMPLE_FLOOR + 1
    x = np.random.default_rng(1).normal(size=n)
    df = spark.createDataFrame(pa.table({"x": x})).coalesce(1)
    fitted = bls.fit(bl.Pipeline([bl.StandardScaler("x")]), df, batch_size=8192, sql=True)
    col = fitted.lineage["profile"]["columns"]["columns"]["x"]
    sk = kll_doubles_sketch.deserialize(unb64(col["kll"]))
    assert sk.n == SAMPLE_FLOOR + len(range(SAMPLE_FLOOR, n, 2))
    sampled = np.concatenate([x[:SAMPLE_FLOOR], x[SAMPLE_FLOOR::2]])
    assert (sk.get_min_value(), sk.get_max_value()) == (sampled.min(), sampled.max())
    assert fitted.lineage["profile"]["moments"]["count"].tolist() == [n]  # moments and counts stay exact
    py = kll_doubles_sketch(200)
    py.update(x[:100])
    py.merge(sk)
    assert py.n == sk.n + 100
    assert abs(py.get_quantile(0.5) - np.median(x)) < 0.1
