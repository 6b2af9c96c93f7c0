"""The transform compiled to Spark SQL (:mod:`beamlearn.engines.spark_sql`) gives the local engine's output bit for
bit, on the standalone cluster of ``tests/engines/conftest.py``.

Each hypothesis example is ONE wide table (one Spark job): several groups of columns (float, integer, boolean,
string), each with its own chain of compilable steps and options, fitted by the local engine on some rows and
transformed on all of them (so unseen categories, out-of-range values, NaN, nulls, +-inf and -0.0 reach every
step), over more partitions than some tables have rows (empty partitions).  Floats compare as bit patterns (NaN
positions apart: a NaN's payload is the CPU's), nulls by position.  Then the fallback to Python tasks and its
reasons, ``compiled=True``, the output schema, the vector output (not compiled) and the bad-value policy.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("pyspark")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import beamlearn as bl
from beamlearn import spark as bls
from beamlearn.engines.spark import run_action, spark_arrow_schema
from beamlearn.errors import EngineError, UnknownCategoryError

pytestmark = pytest.mark.filterwarnings("ignore::beamlearn.errors.BeamlearnWarning")

FLOATS = st.one_of(st.none(), st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, 1.0, -2.5, 1e-300]),
                   st.floats(-1e6, 1e6))
INTS = st.one_of(st.none(), st.integers(-3, 3))
BOOLS = st.one_of(st.none(), st.booleans())
STRINGS = st.one_of(st.none(), st.sampled_from(["a", "b", "c'd", 'q"t', "x'\"y", "back\\slash", "new\nline", "é",
                                                ""]))
KINDS = {"f": (FLOATS, pa.float64()), "i": (INTS, pa.int64()), "b": (BOOLS, pa.bool_()), "s": (STRINGS, pa.string())}


def _steps(draw, g: str) -> list[bl.steps.Step]:
    """A chain of compilable steps over group ``g``'s columns ``{g}f``, ``{g}i``, ``{g}b``, ``{g}s``."""
    f, i, b, s = (f"{g}{k}" for k in "fibs")
    nums = draw(st.sampled_from([[f], [i], [b], [f, i]]))
    kind = draw(st.sampled_from(["impute", "scale", "encode", "bins", "clip", "drop"]))
    if kind == "impute":
        strategy = draw(st.sampled_from(["mean", "median", "most_frequent", "constant"]))
        keep_empty = draw(st.booleans())
        steps = [bl.SimpleImputer(nums, strategy=strategy, add_indicator=draw(st.booleans()),
                                  keep_empty_features=keep_empty,
                                  fill_value=draw(st.sampled_from([None, -0.0, 7.5])) if strategy == "constant"
                                  else None)]
        if strategy in ("most_frequent", "constant"):
            steps.append(bl.SimpleImputer([s], strategy=strategy, add_indicator=draw(st.booleans())))
        if keep_empty and draw(st.booleans()):  # (an all-null column is dropped unless kept)
            steps.append(bl.StandardScaler(nums))
        return steps
    if kind == "scale":
        return [draw(st.sampled_from([
            bl.StandardScaler(nums), bl.StandardScaler(nums, with_mean=False), bl.MaxAbsScaler(nums),
            bl.StandardScaler(nums, with_std=False), bl.MinMaxScaler(nums), bl.MinMaxScaler(nums, clip=True),
            bl.MinMaxScaler(nums, feature_range=(-1.5, 0.0), clip=True), bl.RobustScaler(nums),
            bl.RobustScaler(nums, with_centering=False, quantile_range=(10.0, 90.0)),
            bl.RobustScaler(nums, unit_variance=True), bl.RobustScaler(nums, with_scaling=False)]))]
    if kind == "encode":
        cols = draw(st.sampled_from([[s], [i], [b], [s, i]]))
        return [draw(st.sampled_from([
            bl.OneHotEncoder(cols, handle_unknown="ignore"), bl.OneHotEncoder(cols, handle_unknown="warn",
                                                                              min_frequency=2),
            bl.OneHotEncoder(cols, handle_unknown="infrequent_if_exist", max_categories=2),
            bl.OneHotEncoder(cols, handle_unknown="ignore", drop="first"),
            bl.OneHotEncoder(cols, handle_unknown="ignore", drop="if_binary"),
            bl.OrdinalEncoder(cols, handle_unknown="use_encoded_value", unknown_value=-1),
            bl.OrdinalEncoder(cols, handle_unknown="use_encoded_value", unknown_value=np.nan,
                              encoded_missing_value=-2),
            bl.OrdinalEncoder(cols, handle_unknown="use_encoded_value", unknown_value=-1, min_frequency=2)]))]
    if kind == "bins":
        return [bl.KBinsDiscretizer(nums, n_bins=draw(st.integers(2, 4)),
                                    encode=draw(st.sampled_from(["ordinal", "onehot"])),
                                    strategy=draw(st.sampled_from(["uniform", "quantile"])))]
    if kind == "clip":
        lower = draw(st.sampled_from([None, 0.0, -0.0, -1.0, 2.0, -math.inf]))
        uppers = [u for u in (None, 0.0, -0.0, 3.0, math.inf) if u is None or lower is None or u >= lower]
        return [bl.Clip(nums, lower=lower, upper=draw(st.sampled_from(uppers)))]
    return [bl.Drop([f, s])]


@st.composite
def cases(draw):
    """``(table, pipeline, fit rows)``: one wide table of ``groups`` column groups and an ``id``."""
    n = draw(st.integers(1, 40))
    groups = [f"g{k}_" for k in range(draw(st.integers(3, 6)))]
    data, fields = {"id": list(range(n))}, [pa.field("id", pa.int64())]
    for g in groups:
        for k, (strategy, typ) in KINDS.items():
            data[f"{g}{k}"] = draw(st.lists(strategy, min_size=n, max_size=n))
            fields.append(pa.field(f"{g}{k}", typ))
    steps = []
    for g in groups:
        steps += _steps(draw, g)
    fit_rows = draw(st.integers(1, n))
    return pa.table(data, schema=pa.schema(fields)), bl.Pipeline(steps), fit_rows


def _plan_text(df) -> str:
    return df._jdf.queryExecution().executedPlan().toString()


def assert_bits_equal(got: pa.Table, want: pa.Table) -> None:
    """Same columns in the same order; nulls and NaN at the same rows; every other float the same bits."""
    assert got.column_names == want.column_names
    for name in want.column_names:
        g, w = got.column(name).combine_chunks(), want.column(name).combine_chunks()
        assert g.type == w.type, (name, g.type, w.type)
        assert g.is_null().to_pylist() == w.is_null().to_pylist(), name
        if pa.types.is_floating(w.type):
            gv, wv = (a.fill_null(0.0).to_numpy(zero_copy_only=False) for a in (g, w))
            assert np.array_equal(np.isnan(gv), np.isnan(wv)), name
            ok = ~np.isnan(wv)
            assert np.array_equal(gv[ok].view(np.int64), wv[ok].view(np.int64)), (name, gv[ok], wv[ok])
        else:
            assert g.equals(w), name


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=cases(), partitions=st.integers(1, 6))
def test_compiled_transform_equals_the_local_engine_bit_for_bit(spark, case, partitions):
    table, pipe, fit_rows = case
    fitted = pipe.fit(table.slice(0, fit_rows))
    df = spark.createDataFrame(table).repartition(partitions)
    assert bls.compile_reasons(fitted, df) == []
    out = bls.transform(fitted, df, compiled=True)
    assert "MapInArrow" not in _plan_text(out)  # no Python worker
    want = table.cast(spark_arrow_schema(table.schema))  # the types Spark holds (uint8 one-hot -> int16)
    want = fitted.transform(want)
    want = want.replace_schema_metadata(None).cast(spark_arrow_schema(want.schema))
    assert [f.name for f in out.schema.fields] == fitted.output_schema.names
    python = bls.transform(fitted, df, compiled=False)
    assert [(f.name, f.dataType) for f in out.schema.fields] == [(f.name, f.dataType) for f in python.schema.fields]
    assert_bits_equal(out.toArrow().sort_by("id"), want)


def _table(n: int = 400, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    x[rng.random(n) < 0.1] = np.nan
    return pa.table({"id": np.arange(n), "x": pa.array(x, mask=rng.random(n) < 0.1),
                     "k": pa.array(rng.integers(0, 4, n)), "c": pa.array(rng.choice(["a", "b", "c"], n))})


def test_vector_output_stays_in_python_tasks(spark):
    """``output="vector"`` keeps the Python path (its sparse vectors cost less there than any JVM build measured);
    ``compiled=True`` says so."""
    table = _table()
    fitted = bl.Pipeline([bl.StandardScaler(["x"]), bl.OneHotEncoder(["c"], handle_unknown="ignore")]).fit(table)
    df = spark.createDataFrame(table).repartition(2)
    assert bls.compile_reasons(fitted, df) == []
    assert "output='vector'" in bls.compile_reasons(fitted, df, output="vector")[0]
    assert "MapInArrow" in _plan_text(bls.transform(fitted, df, output="vector"))
    with pytest.raises(EngineError, match="output='vector'"):
        bls.transform(fitted, df, output="vector", compiled=True)


def test_fallback_is_named_and_compiled_true_raises(spark, caplog):
    table = _table(200)
    fitted = bl.Pipeline([bl.StandardScaler(["x"]), bl.Log1p(["k"]), bl.OneHotEncoder(["c"])]).fit(table)
    df = spark.createDataFrame(table).repartition(2)
    assert bls.compile_reasons(fitted, df) == ["step 1 (Log1p) has no Spark SQL converter"]
    with caplog.at_level(logging.INFO, logger="beamlearn.spark"):
        out = bls.transform(fitted, df)
    assert "MapInArrow" in _plan_text(out)
    assert "step 1 (Log1p) has no Spark SQL converter" in caplog.text
    want = fitted.transform(table)
    assert_bits_equal(out.toArrow().sort_by("id"), want.cast(spark_arrow_schema(want.schema)))
    with pytest.raises(EngineError, match=r"cannot be compiled.*\n- step 1 \(Log1p\)"):
        bls.transform(fitted, df, compiled=True)
    # a column whose type differs from the fitted one: conforming it may find bad values, in Python
    ints = spark.createDataFrame(table.set_column(2, "k", table.column("k").cast(pa.int32())))
    scaled = bl.Pipeline([bl.StandardScaler(["k"])]).fit(table)
    assert bls.compile_reasons(scaled, ints) == [("column 'k' is int32 in the data, int64 at fit (casting it may "
                                                 "find bad values)")]
    # a float column's categories stay in Python
    floats = bl.Pipeline([bl.OneHotEncoder(["x"], handle_unknown="ignore")]).fit(table)
    assert "not string, integer or boolean" in bls.compile_reasons(floats, df)[0]


def _one_partition(spark, table: pa.Table, path: str):
    """``table`` as ONE partition in its row order (a small Parquet file: a repartition or coalesce reorders)."""
    import pyarrow.parquet as pq

    pq.write_table(table, path)
    return spark.read.parquet(path)


def test_unknown_category_errors_and_dead_letters(spark, tmp_path):
    train = pa.table({"c": ["a", "b", "a"], "k": [1, 2, 1], "id": [0, 1, 2]})
    fitted = bl.Pipeline([bl.OneHotEncoder(["c"], handle_unknown="error"),
                          bl.OrdinalEncoder(["k"])]).fit(train)
    for k, bad in enumerate((pa.table({"c": ["a", "b", "z'q", "a"], "k": [1, 1, 2, 1], "id": [0, 1, 2, 3]}),
                pa.table({"c": ["a", "b", "b", None], "k": [1, 1, 2, 1], "id": [0, 1, 2, 3]}),
                pa.table({"c": ["a", "b", "a", "a"], "k": [1, 1, 5, 1], "id": [0, 1, 2, 3]}))):
        df = _one_partition(spark, bad, str(tmp_path / f"bad{k}.parquet"))
        messages = []
        for compiled in (True, False):
            with pytest.raises(UnknownCategoryError, match=r"<spark partition 0>, row [23], column") as err:
                run_action(bls.transform(fitted, df, compiled=compiled).select("id").collect)
            messages.append(str(err.value))
        assert messages[0] == messages[1]
    good = spark.createDataFrame(train).repartition(2)
    out = bls.transform(fitted, good, compiled=True)
    assert sorted(r.id for r in out.collect()) == [0, 1, 2]
    # dead letters: none can happen in a compiled pipeline without an erroring step; with one, Python collects them
    scaled = bl.Pipeline([bl.StandardScaler(["k"])]).fit(train)
    main, dead = bls.transform(scaled, good, with_errors=True, compiled=True)
    assert main.count() == 3 and dead.count() == 0
    assert [f.name for f in dead.schema.fields] == ["source", "row", "line", "column", "reason", "record"]
    df = _one_partition(spark, pa.table({"c": ["a", "zz", "b"], "k": [1, 2, 1], "id": [0, 1, 2]}),
                        str(tmp_path / "dead.parquet"))
    assert "handle_unknown='error'" in bls.compile_reasons(fitted, df, with_errors=True)[0]
    main, dead = bls.transform(fitted, df, with_errors=True)
    assert sorted(r.id for r in main.collect()) == [0, 2]
    assert [(r.row, r.column) for r in dead.collect()] == [(1, "c")]
