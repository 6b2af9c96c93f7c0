"""The Spark engine equals the local engine, on a real standalone Spark cluster started here.

A master and two workers (one core, 1 GiB each) run from the ``pyspark`` wheel's ``spark-class`` on free ports
of 127.0.0.1, for the whole module; ONE SparkSession (two executors) runs every case.  Every registered step and
model (the pipelines of ``tests/dispatch_probe.py``) is fitted on a DataFrame of several partitions spread over
both executors and compared with the local engine on the same table: counts, vocabularies and exact quantiles
identical, moments within rtol 1e-12 (model coefficients, solved from such sums, within 1e-9), transform outputs
equal.  Metrics, dead letters, a bad input and the CLI's ``--engine spark`` path too.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import cloudpickle
import numpy as np
import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq
import pytest

pytest.importorskip("pyspark")
import pyspark.cloudpickle

if shutil.which("java") is None:
    pytest.skip("Spark needs Java (.ci/run installs it)", allow_module_level=True)

from tests import dispatch_probe
from tests.engines.conftest import SPARK_CONF
from tests.engines.test_beam import (
    _CSV_SCHEMA,
    _bad_csv,
    _dead_set,
    _read_jsonl,
    assert_state_equal,
    assert_tables_equal,
)

import beamlearn as bl
from beamlearn import spark as bls
from beamlearn.engines.spark import run_action
from beamlearn.errors import DataError, EngineError, SchemaError
from beamlearn.metrics import evaluate as local_evaluate
from beamlearn.profile.core import comparable
from beamlearn.testing import assert_nested_close

pytestmark = pytest.mark.filterwarnings("ignore::beamlearn.errors.DataWarning")

cloudpickle.register_pickle_by_value(dispatch_probe)  # its functions reach the workers through the Registry
pyspark.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this module

SPARK_HOME = os.path.dirname(pyspark.__file__)
PARTITIONS = 5


# ---------------------------------------------------------------------------------------------- the cluster
CONF = SPARK_CONF  # the session of the ``spark`` fixture (tests/engines/conftest.py)


def _mark(items):
    from pyspark import TaskContext

    p, i = TaskContext.get().partitionId(), 0
    for b in items:
        yield b.append_column("__p", pa.array([p] * b.num_rows, pa.int64())).append_column(
            "__i", pa.array(np.arange(i, i + b.num_rows), pa.int64()))
        i += b.num_rows


def _as_partitioned(df) -> list[pa.RecordBatch]:
    """The rows of ``df`` as the Spark engine's tasks see them: per partition, tagged ``<spark partition P>``."""
    from pyspark.sql.types import LongType, StructField, StructType

    from beamlearn.batches import tag_batch

    schema = StructType([*df.schema.fields, StructField("__p", LongType()), StructField("__i", LongType())])
    marked = df.mapInArrow(_mark, schema).toArrow()
    out = []
    for p in sorted(set(marked.column("__p").to_pylist())):
        part = marked.filter(pa.compute.equal(marked.column("__p"), p)).sort_by("__i").drop_columns(["__p", "__i"])
        out += [tag_batch(b, f"<spark partition {p}>", 0) for b in part.combine_chunks().to_batches()]
    return out


def _as_spark_holds(table: pa.Table) -> pa.Table:
    """The local engine's output with the types Spark cannot hold widened as the Spark engine does."""
    from beamlearn.engines.spark import spark_arrow_schema

    return table.replace_schema_metadata(None).cast(spark_arrow_schema(table.schema))


def _frame(spark, table: pa.Table):
    return spark.createDataFrame(table).repartition(PARTITIONS).cache()  # computed once, reused by each job


# ---------------------------------------------------------------------------------------------- equivalence
_MODELS = ("logistic", "linear", "bayes", "bernoulli", "kmeans", "sklearn")


def _cases() -> dict[str, bl.Pipeline]:
    """The probe's pipelines (every registered step and model), its KMeans on raw columns: a KMeans after a
    fitted scaler hashes scaled values for its seeding sample, and those differ in the last bit under any
    re-batching (on the local engine too), so its sample, hence its clusters, are not comparable."""
    cases = dispatch_probe.cases()
    num = dispatch_probe.NUM
    cases["kmeans"] = bl.Pipeline([bl.KMeans(num[:3], n_clusters=3, distances=True, random_state=3, max_iter=6),
                                   bl.SimpleImputer(num, strategy="median"), bl.StandardScaler(num)])
    assert {type(s).__name__ for s in cases["kmeans"].steps} <= {type(s).__name__ for p in dispatch_probe.cases()
                                                                 .values() for s in p.steps}
    return cases


@pytest.mark.filterwarnings("ignore::beamlearn.errors.BeamlearnWarning")
def test_every_step_and_model_equals_the_local_engine(spark):
    table = dispatch_probe.table(1500, seed=5)
    table = table.append_column("id", pa.array(np.arange(table.num_rows)))
    df = _frame(spark, table).cache()
    same = _as_partitioned(df)  # KMeans' seeding hashes each row's (source, row): give the same rows the same
    for name, pipe in _cases().items():
        local = pipe.fit(same, batch_size=256)
        got = bls.fit(pipe, df, sql=None)  # SQL aggregations wherever a pass can (tests/engines/test_spark_agg.py)
        assert got.lineage["engine"] == "spark" and got.lineage["master"].startswith("spark://")
        assert got.lineage["rows"] == local.lineage["rows"] == table.num_rows
        assert got.lineage["passes"] == local.lineage["passes"], name
        assert got.input_schema == local.input_schema, name
        model = name.startswith(_MODELS)
        assert_state_equal(comparable(got.lineage["profile"]), comparable(local.lineage["profile"]),  # a KLL
                           f"{name}:profile")  # sketch past k values depends on the order of rows: n, min, max
        for i, (g, w) in enumerate(zip(_no_blobs(got.states), _no_blobs(local.states))):
            where = f"{name}:step{i}:{type(local.steps[i]).__name__}"
            if model and i == len(got.states) - 1 or name == "linear" and i >= 1 or name == "kmeans" and i == 0:
                assert_nested_close(g, w, rtol=1e-9, atol=1e-12, path=where)  # solved from merged sums
            elif type(local.steps[i]).__name__ == "Profiler":  # KLL bytes depend on the order of updates
                assert_nested_close(comparable(g), comparable(w), rtol=1e-9, atol=1e-12, path=where)
            elif type(local.steps[i]).__name__ == "Validator":  # counts and example rows: identical
                assert g == w, where
            else:
                assert_state_equal(g, w, where)
        out = bls.transform(got, df).toArrow().sort_by("id")
        want = _as_spark_holds(local.transform(table))
        assert out.num_rows == table.num_rows
        assert_tables_equal(out, want)
    executors = set(spark.sparkContext.parallelize(range(8), 8).mapPartitions(_executor).collect())
    assert len(executors) == 2, executors  # two executors, each with its own Python worker daemon


def _no_blobs(obj):
    """States without their serialized estimators (skops bytes hold object ids; the outputs compare them)."""
    if isinstance(obj, dict):
        return {k: _no_blobs(v) for k, v in obj.items() if not isinstance(v, bytes)}
    return [_no_blobs(v) for v in obj] if isinstance(obj, (list, tuple)) else obj


def _executor(rows):
    yield os.getppid()


def test_metrics_equal_the_local_engine(spark):
    table = dispatch_probe.table(1200, seed=9)
    df = _frame(spark, table)
    logistic = dispatch_probe.cases()["logistic_binary"].fit(table)
    linear = dispatch_probe.cases()["linear"].fit(table)
    checks = [(logistic, {"label": "late", "prediction": "prediction", "score": "proba_yes", "pos_label": "yes",
                          "slices": [["kind"], ["cat1", "kind"]], "min_slice_count": 5}),
              (linear, {"label": "target", "prediction": "lin", "slices": ["kind"]})]
    for model, options in checks:
        want = local_evaluate(table, model=model, batch_size=200, require=["count >= 1"], **options)
        got = bls.evaluate(df, model=model, require=["count >= 1"], **options)
        assert got.passed and [g.to_dict() for g in got.gates] == [g.to_dict() for g in want.gates]
        assert got.metrics["rows"] == want.metrics["rows"] == table.num_rows
        # the residual histogram reads a KLL sketch, whose summary depends on the merge order (approximate by
        # design): same totals, bins within the sketch's rank error
        hist = [m["overall"].pop("residual_histogram", None) for m in (got.metrics, want.metrics)]
        if hist[1] is not None:
            assert sum(hist[0]["counts"]) == pytest.approx(sum(hist[1]["counts"]), rel=1e-12)
        assert_nested_close(got.metrics, want.metrics, rtol=1e-9, atol=1e-12)
    # data that already holds the prediction: no model
    predicted = logistic.transform(table).append_column("kind2", table.column("kind"))
    want = local_evaluate(predicted, label="late", prediction="prediction", slices=["kind2"])
    got = bls.evaluate(spark.createDataFrame(_as_spark_holds(predicted)).repartition(3), label="late",
                       prediction="prediction",
                       slices=["kind2"])
    assert got.metrics["overall"]["confusion_matrix"] == want.metrics["overall"]["confusion_matrix"]
    assert_nested_close(got.metrics, want.metrics, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------------- files, errors
def test_files_and_dead_letters_equal_the_local_engine(spark, tmp_path):
    parts = []
    for k in range(2):  # two CSV files: one task each, read by beamlearn's readers
        path = str(tmp_path / f"bad{k}.csv")
        parts.append((path, _bad_csv(path, 240 + 60 * k)))
    files = [p for p, _ in parts]
    pipe = bl.Pipeline([bl.StandardScaler(["a"]), bl.RobustScaler(["b"]), bl.OneHotEncoder(["c"])])
    local_dead = bl.DeadLetters()
    local = pipe.fit(files, batch_size=50, errors=local_dead, schema=_CSV_SCHEMA)
    errs = str(tmp_path / "fit_errors.jsonl")
    fitted = bls.fit(pipe, files, spark=spark, batch_size=50, errors=errs, schema=_CSV_SCHEMA)
    dead = _read_jsonl(errs)
    assert len(dead) == fitted.lineage["dead_letters"] == local_dead.count > 0
    assert _dead_set(dead) == _dead_set(local_dead.records)
    assert fitted.lineage["rows"] + fitted.lineage["dead_letters"] == sum(p["rows"] for _, p in parts)
    assert [f["name"] for f in fitted.lineage["data"]["files"]] == ["bad0.csv", "bad1.csv"]
    for g, w in zip(fitted.states, local.states):
        assert_state_equal(g, w)

    out, tdead = bls.transform(fitted, files, spark=spark, with_errors=True, batch_size=50)
    local_tdead = bl.DeadLetters()
    want = local.transform(files, errors=local_tdead, batch_size=50)
    assert_tables_equal(out.toArrow().sort_by("id"), _as_spark_holds(want).sort_by("id"))
    records = [{**r.asDict(), "record": json.loads(r.record)} for r in tdead.collect()]
    assert _dead_set(records) == _dead_set(local_tdead.records)

    # Parquet goes through Spark's reader; the CLI entry writes one file
    src = str(tmp_path / "good.parquet")
    table = dispatch_probe.table(300, seed=2)
    pq.write_table(table, src)
    f = bl.Pipeline([bl.StandardScaler(["num0"]), bl.OneHotEncoder(["cat0"])]).fit(table)
    target = str(tmp_path / "out.parquet")
    result = bls.run_transform(f, [src], target, spark_args=[], batch_size=64)
    assert result == {"rows": 300, "dead_letters": 0}
    assert_tables_equal(pq.read_table(target), _as_spark_holds(f.transform(table)))


def test_bad_input_errors_name_the_row(spark, tmp_path):
    csv = str(tmp_path / "bad.csv")
    _bad_csv(csv, 40)
    with pytest.raises(DataError, match=r"bad\.csv.*row 5.*expected 4 fields"):
        bls.fit(bl.Pipeline([bl.StandardScaler(["a"])]), [csv], spark=spark, batch_size=16, schema=_CSV_SCHEMA)
    df = spark.createDataFrame(pa.table({"x": ["1.5", "oops", "2"]})).repartition(1)
    fitted = bl.Pipeline([bl.StandardScaler(["x"])]).fit({"x": [1.0, 2.0]})
    with pytest.raises(DataError, match=r"<spark partition \d+>, row \d+, column 'x': cannot cast 'oops'"):
        run_action(bls.transform(fitted, df).collect)  # what a user's action raises holds the same error
    with pytest.raises(SchemaError, match="'nope'"):
        bls.fit(bl.Pipeline([bl.StandardScaler(["nope"])]), df)
    with pytest.raises(EngineError, match="--master"):
        bls.parse_spark_args(["--runner=DirectRunner"])


def test_vector_output_holds_the_columns_output(spark):
    """``output="vector"``: the numeric outputs as one Spark ML vector (MLlib's shape), slot i = output column i
    of the columns output, the columns the pipeline does not read (and non-numeric outputs) kept as columns."""
    from pyspark.ml.linalg import SparseVector

    table = dispatch_probe.table(600, seed=4).append_column("id", pa.array(np.arange(600)))
    df = _frame(spark, table)
    pipe = bl.Pipeline([bl.SimpleImputer(dispatch_probe.NUM[:3]), bl.StandardScaler(dispatch_probe.NUM[:3]),
                        bl.OneHotEncoder(["cat0", "cat1"], handle_unknown="ignore")])
    fitted = bls.fit(pipe, df)
    want = _as_spark_holds(fitted.transform(table)).sort_by("id")
    out = bls.transform(fitted, df, output="vector", features="x")
    attrs = out.schema["x"].metadata["ml_attr"]["attrs"]["numeric"]
    slots = [a["name"] for a in attrs]
    assert slots == [c for c in want.column_names if c.startswith(("num0", "num1", "num2", "cat0_", "cat1_"))]
    kept = [f.name for f in out.schema.fields if f.name != "x"]
    assert kept == [c for c in want.column_names if c not in slots]  # pass-through, strings included
    rows = sorted(out.collect(), key=lambda r: r.id)
    assert sum(isinstance(r.x, SparseVector) for r in rows) == len(rows)  # mostly zeros: sparse
    got = np.array([r.x.toArray() for r in rows])
    ref = np.column_stack([want.column(c).to_numpy(zero_copy_only=False).astype(float) for c in slots])
    np.testing.assert_array_equal(got, ref)
    assert [r.cat2 for r in rows] == want.column("cat2").to_pylist()
    with pytest.raises(bl.errors.SpecError, match="output="):
        bls.transform(fitted, df, output="sparse")


def test_profile_and_validate_on_spark_equal_local(spark, tmp_path):
    from beamlearn.profile.core import profile
    from beamlearn.profile.validate import infer_schema, validate

    table = _as_spark_holds(dispatch_probe.table(900, seed=6))
    df = _frame(spark, table)
    local = profile(table, batch_size=128)
    got = profile(df, engine="spark")
    assert got["engine"] == "spark" and got["rows"] == local["rows"] == 900
    assert_nested_close({**comparable(got), "created": 0}, {**comparable(local), "engine": "spark", "created": 0},
                        rtol=1e-9, atol=1e-12)
    schema = infer_schema(local)
    schema["columns"]["num0"]["max"] = 0.0  # some rows out of range
    want = validate(table, schema)
    result = validate(df, schema, engine="spark")
    assert not result["passed"] and result["rows"] == want["rows"]
    assert [(a["column"], a["kind"], a["count"]) for a in result["anomalies"]] == \
        [(a["column"], a["kind"], a["count"]) for a in want["anomalies"]]
    src = str(tmp_path / "p.parquet")  # files: the engine's own session (the active one here)
    pq.write_table(table, src)
    files = profile([src], engine="spark", beam_args=[])
    assert_nested_close(comparable(files)["columns"], comparable(got)["columns"], rtol=1e-9, atol=1e-12)


def test_partitioned_sql_reads_one_key_range_per_task(spark, tmp_path):
    from beamlearn import io
    from beamlearn.engines.spark import spark_data

    table = dispatch_probe.table(1000, seed=8).append_column("id", pa.array(np.arange(1000, dtype=np.int64)))
    db = f"sqlite:///{tmp_path}/t.db"
    io.write_batches(table.to_batches(), db + "?table=t")
    uri = db + "?table=t&partition_column=id&partitions=4"
    assert len(spark_data(uri, spark).files) == 4
    pipe = bl.Pipeline([bl.StandardScaler(dispatch_probe.NUM[:2]), bl.OneHotEncoder(["cat0"])])
    local = pipe.fit(uri)
    got = bls.fit(pipe, uri, spark=spark)
    assert got.lineage["rows"] == local.lineage["rows"] == 1000
    assert got.lineage["data"] == local.lineage["data"]
    for g, w in zip(got.states, local.states):
        assert_state_equal(g, w)
    out = bls.transform(got, uri, spark=spark).toArrow().sort_by("id")
    assert_tables_equal(out, _as_spark_holds(local.transform(uri)).sort_by("id"))


def test_cli_engine_spark_runs_on_the_cluster(cluster, spark, tmp_path, monkeypatch):
    from tests.test_run import _same, make_data, write_spec
    from typer.testing import CliRunner

    from beamlearn.cli import app
    from beamlearn.run import run

    make_data(tmp_path)
    spec = write_spec(tmp_path)
    local = run(spec, output=str(tmp_path / "l"))
    out = tmp_path / "s"
    monkeypatch.chdir(tmp_path)  # in this process: the CLI's session is the module's (same master, no new app)
    proc = CliRunner().invoke(app, ["run", spec, "--output", str(out), "--engine", "spark", "--master", cluster,
                                    *[a for k, v in CONF.items() for a in ("--conf", f"{k}={v}")]])
    assert proc.exit_code == 0, proc.output[-3000:]
    assert "engine spark" in proc.output
    got = json.loads((out / "metrics.json").read_text())
    model = bl.load(str(out / "model.blm"))
    assert model.lineage["engine"] == "spark" and model.lineage["master"] == cluster
    assert model.lineage["rows"] == local.fitted.lineage["rows"]
    for g, w in zip(model.states, local.fitted.states):
        assert_nested_close(g, w, rtol=1e-9, atol=1e-12)
    _same(got["overall"]["confusion_matrix"], local.evaluation.metrics["overall"]["confusion_matrix"], "cm")
    assert got["overall"]["roc_auc"] == pytest.approx(local.evaluation.metrics["overall"]["roc_auc"], abs=1e-9)


def test_session_lets_the_jvms_compile_huge_generated_methods(spark):
    """A wide compiled transform is one huge generated method, which HotSpot would otherwise interpret (2.2-2.9x
    slower: ``bls.session``'s docstring): the driver runs with the flag, executors are launched with it."""
    conf = spark.sparkContext.getConf()
    assert "-XX:-DontCompileHugeMethods" in conf.get("spark.executor.extraJavaOptions")
    args = spark._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments()
    assert "-XX:-DontCompileHugeMethods" in list(args)
