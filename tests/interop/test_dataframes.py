"""DataFrames people already use, wherever data is accepted: Polars DataFrames (zero-copy) and LazyFrames, DuckDB
relations and query results (streamed), pandas with Arrow dtypes; output="polars"."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import beamlearn as bl
from beamlearn.batches import to_batches
from beamlearn.testing import random_table


@pytest.fixture(scope="module")
def table() -> pa.Table:
    t = random_table(500, n_numeric=2, n_string=1, seed=11)
    return t.append_column("y", pa.array(np.arange(500) % 2))


def pipeline() -> bl.Pipeline:
    return bl.Pipeline([bl.SimpleImputer(["num0", "num1"]), bl.StandardScaler(["num0", "num1"]),
                        bl.OneHotEncoder("cat0", handle_unknown="ignore"),
                        bl.LogisticRegression(["num0", "num1", "cat0"], "y")])


@pytest.fixture(scope="module")
def reference(table: pa.Table) -> tuple[bl.FittedPipeline, pa.Table]:
    fitted = pipeline().fit(table)
    return fitted, fitted.transform(table)


def frames(table: pa.Table) -> dict[str, object]:
    con = duckdb.connect()
    con.from_arrow(table).create("t")
    arrow_pd = table.to_pandas(types_mapper=pd.ArrowDtype)
    return {"polars": pl.from_arrow(table), "lazy": pl.from_arrow(table).lazy(),
            "duckdb_relation": con.sql("select * from t"),
            "duckdb_result": con.cursor().execute("select * from t"), "pandas_arrow": arrow_pd}


@pytest.mark.parametrize("kind", ["polars", "lazy", "duckdb_relation", "duckdb_result", "pandas_arrow"])
def test_fit_and_transform_accept_the_frame(kind, table, reference):
    fitted, want = reference
    if kind == "duckdb_result":  # read once: a fit (several passes) says to pass the relation instead
        with pytest.raises(bl.errors.DataError, match="con.sql"):
            pipeline().fit(frames(table)[kind])
        assert fitted.transform(frames(table)[kind]).equals(want)
        return
    got_fit = pipeline().fit(frames(table)[kind])
    assert [s for s in got_fit.states[1]["moments"]["mean"]] == [s for s in fitted.states[1]["moments"]["mean"]]
    got = fitted.transform(frames(table)[kind])
    assert got.equals(want)


def test_duckdb_streams_in_batches(table):
    con = duckdb.connect()
    con.register("t", table)
    sizes = [b.num_rows for b in to_batches(con.sql("select * from t"), batch_size=128)]
    assert sum(sizes) == table.num_rows and max(sizes) <= 128 and len(sizes) >= 4


def test_polars_is_read_without_a_copy():
    df = pl.DataFrame({"x": np.arange(1000, dtype=np.float64)})
    batch = next(iter(to_batches(df)))
    assert batch.column("x").buffers()[1].address == df.to_arrow().column("x").chunks[0].buffers()[1].address


def test_empty_frames_give_the_schema(table, reference):
    fitted, _ = reference
    empty = pl.DataFrame(schema={"num0": pl.Float64, "num1": pl.Float64, "cat0": pl.String})
    out = fitted.transform(empty)
    assert out.num_rows == 0 and out.schema == fitted.transform(table.slice(0, 0).drop_columns(["y"])).schema


def test_output_polars(table, reference):
    fitted, want = reference
    out = fitted.transform(pl.from_arrow(table).lazy(), output="polars")
    assert isinstance(out, pl.DataFrame) and out.to_arrow().equals(want)
    with pytest.raises(bl.errors.SpecError, match="'polars'"):
        fitted.transform(table, output="excel")


def test_pandas_arrow_dtypes_are_read_without_a_copy():
    df = pd.DataFrame({"x": pd.array(np.arange(1000, dtype=np.float64), dtype="float64[pyarrow]")})
    batch = next(iter(to_batches(df)))
    assert batch.column("x").buffers()[1].address == df["x"].array._pa_array.chunks[0].buffers()[1].address


@pytest.mark.parametrize("kind", ["polars", "duckdb_relation"])
def test_evaluate_reads_the_frame(kind, table, reference):
    from beamlearn.metrics.evaluate import evaluate

    fitted, want = reference
    scored = pl.from_arrow(want) if kind == "polars" else duckdb.from_arrow(want)
    got = evaluate(scored, label="y", prediction="prediction")
    expected = evaluate(want, label="y", prediction="prediction")
    assert got.to_dict()["overall"] == expected.to_dict()["overall"]
