"""SQL sources and sinks through ADBC against a real PostgreSQL server (and SQLite files): tables and queries
read as bounded batches in flat memory, partitioned reads, staged writes that leave nothing behind on failure,
one-line errors that never show the password, the CLI and the Beam engine."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import beamlearn as bl
from beamlearn import io, sqlio
from beamlearn.cli import main
from beamlearn.errors import DataError
from beamlearn.spec import read_spec

SPEC = """\
name: sql
steps:
  - step: SimpleImputer
    columns: [y]
  - step: StandardScaler
    columns: [x, y]
  - step: OneHotEncoder
    columns: [k]
"""
N = 5000


def _frame(n: int = N) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    y = rng.normal(size=n)
    y[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame({"id": np.arange(n, dtype=np.int64), "x": rng.normal(3, 2, n), "y": y,
                         "k": rng.choice(["a", "b", "c"], n)})


def _psql(uri: str, *statements: str) -> list:
    import psycopg

    with psycopg.connect(uri) as conn:
        out = []
        for sql in statements:
            cur = conn.execute(sql)
            out.append(cur.fetchall() if cur.description else None)
        return out


@pytest.fixture(scope="module")
def db(postgres):
    """Tables ``events`` (N rows, nulls in y and one null id) and ``big`` (2M rows), loaded with psycopg's COPY
    (not by the code under test)."""
    import psycopg

    frame = _frame()
    with psycopg.connect(postgres) as conn:
        conn.execute("CREATE TABLE events (id bigint, x double precision, y double precision, k text)")
        with conn.cursor().copy("COPY events (id, x, y, k) FROM STDIN") as copy:
            for row in frame.itertuples(index=False):
                copy.write_row([None if row.id == 17 else row.id, row.x, None if np.isnan(row.y) else row.y,
                                row.k])
        conn.execute("CREATE TABLE big AS SELECT g::bigint AS id, random() AS a, random() AS b, (g % 7)::int AS c"
                     " FROM generate_series(1, 2000000) AS g")
    return postgres


def _table(batches) -> pa.Table:
    return pa.Table.from_batches([b.replace_schema_metadata(None) for b in batches])


def _expected() -> pd.DataFrame:
    frame = _frame()
    frame["id"] = frame["id"].astype("Int64")
    frame.loc[17, "id"] = pd.NA
    return frame


def test_table_and_query_read_as_bounded_batches(db):
    batches = list(io.read(db + "?table=events", batch_size=1000))
    assert max(b.num_rows for b in batches) <= 1000 and sum(b.num_rows for b in batches) == N
    assert io.batch_origin(batches[0])[0] == db + "?table=events"
    got = _table(batches).to_pandas()
    pd.testing.assert_frame_equal(got.astype({"id": "Int64"}), _expected(), check_dtype=False)
    q = _table(io.read(db + "?query=SELECT id, x FROM events WHERE k = 'a' AND id < 100 ORDER BY id"))
    want = _expected().query("k == 'a' and id < 100").sort_values("id")
    assert q.column("id").to_pylist() == want["id"].tolist()
    plus = _table(io.read(db + "?query=SELECT id+1 AS next, 'a%26b' AS amp FROM events WHERE id < 3 ORDER BY id"))
    assert plus.to_pydict() == {"next": [1, 2, 3], "amp": ["a&b"] * 3}  # '+' is a plus; & is written %26


def test_reading_two_million_rows_keeps_memory_flat(db):
    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    start, peak, rows, total = rss(), 0, 0, 0
    for b in io.read(db + "?table=big", batch_size=65_536):
        rows += b.num_rows
        total += int(np.sum(b.column("id").to_numpy()))
        peak = max(peak, rss())
    assert rows == 2_000_000 and total == 2_000_000 * 2_000_001 // 2
    whole = 2_000_000 * (8 + 8 + 8 + 4)  # the table in Arrow: 56 MB
    assert peak - start < whole / 2, (peak - start) / 1e6  # 20 MB measured; all of it would be 56+


def test_partitioned_read_covers_every_row_once(db, tmp_path):
    for source in [db + "?table=events", f"sqlite:///{tmp_path}/e.db?table=events"]:
        if source.startswith("sqlite"):
            sqlio.write_sql(_table(io.read(db + "?table=events")).to_batches(), source)
        splits = sqlio.sql_splits(source + "&partition_column=id&partitions=4")
        assert len(splits) == 4
        parts = [_table(io.read(s)) for s in splits]
        ids = sorted(i for p in parts for i in p.column("id").to_pylist() if i is not None)
        assert ids == sorted(set(range(N)) - {17})
        assert sum(p.column("id").null_count for p in parts) == 1 and parts[0].column("id").null_count == 1
        assert all(p.num_rows > N / 8 for p in parts)
    assert sqlio.sql_splits(db + "?table=events") == [db + "?table=events"]
    with pytest.raises(DataError, match="must be an integer column"):
        sqlio.sql_splits(db + "?table=events&partition_column=k&partitions=2")


def test_write_replace_append_create_and_a_failed_write_leaves_nothing(db):
    table = _table(io.read(db + "?query=SELECT id, x, k FROM events WHERE id < 100 ORDER BY id"))
    target = db + "?table=scores"
    assert sqlio.write_sql(table.to_batches(max_chunksize=30), target) == 99
    assert sqlio.write_sql(table.to_batches(), target + "&mode=append") == 99
    assert _psql(db, "SELECT count(*), sum(id) FROM scores")[0] == [(198, 2 * sum(range(100)) - 2 * 17)]
    assert sqlio.write_sql(table.slice(0, 5).to_batches(), target + "&mode=replace") == 5
    assert _psql(db, "SELECT count(*) FROM scores")[0] == [(5,)]
    with pytest.raises(DataError, match="table scores exists"):
        sqlio.write_sql(table.to_batches(), target + "&mode=create")

    def failing():
        yield from table.to_batches(max_chunksize=10)
        raise DataError("the source broke midway")

    for mode in ("replace", "append"):
        with pytest.raises(DataError, match="broke midway"):
            sqlio.write_sql(failing(), f"{target}&mode={mode}")
    with pytest.raises(DataError, match="broke midway"):
        sqlio.write_sql(failing(), db + "?table=fresh")
    assert _psql(db, "SELECT count(*) FROM scores")[0] == [(5,)]
    assert _psql(db, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")[0] == [
        ("big",), ("events",), ("scores",)]  # no staging table, no partial 'fresh'


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_fit_from_postgres_and_transform_back_into_a_table(db, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(SPEC)
    src = db + "?query=SELECT x, y, k FROM events"
    code, out, err = run(capsys, "fit", "spec.yaml", "--data", src, "--out", "m.bl", "-q")
    assert code == 0, err
    local = read_spec(SPEC).fit(_expected()[["x", "y", "k"]])
    code, out, err = run(capsys, "transform", "m.bl", "--data", db + "?table=events", "--out",
                         db + "?table=predictions&mode=replace")
    assert code == 0, err
    assert f"{N:,} written" in out and "predictions" in out
    got = _table(io.read(db + "?query=SELECT * FROM predictions ORDER BY id NULLS FIRST")).to_pandas()
    want = local.transform(_expected().sort_values("id", na_position="first")).to_pandas()
    np.testing.assert_allclose(got["x"], want["x"], rtol=1e-12)
    assert got.columns.tolist() == want.columns.tolist()
    sq = f"sqlite:///{tmp_path}/p.db?table=p"
    code, out, err = run(capsys, "transform", "m.bl", "--data", db + "?table=events", "--out", sq, "-q")
    assert code == 0, err
    assert _table(io.read(sq)).num_rows == N
    lineage = bl.load("m.bl").lineage
    assert lineage["data"]["files"][0]["path"] == src and lineage["data"]["files"][0]["bytes"] is None


def test_bad_sources_are_one_line_errors_without_the_password(db, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(SPEC)
    assert run(capsys, "fit", "spec.yaml", "--data", db + "?table=events", "--out", "m.bl", "-q")[0] == 0
    host = db.split("@")[1].split("/")[0]
    secret = "Hunter2-secret"
    cases = {
        f"postgresql://beamlearn:{secret}@{host}/beamlearn?table=events": "password authentication failed",
        f"postgresql://beamlearn:{secret}@127.0.0.1:1/beamlearn?table=events": "Connection refused",
        db + "?table=nope": 'relation "nope" does not exist',
        db + "?query=SELECT 'not a number' AS x, 1.0 AS y, 'a' AS k": "column 'x'",
        f"postgresql://beamlearn:{secret}@{host}/beamlearn": "exactly one of ?table=NAME or ?query=",
        f"sqlite:///{tmp_path}/none.db?table=t": "no such table",
    }
    for source, reason in cases.items():
        code, out, err = run(capsys, "transform", "m.bl", "--data", source, "--out", "out.parquet")
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (source, err)
        assert reason in err and secret not in err + out, err
        assert source.split("?")[0].replace(secret, "***") in err, err
    code, out, err = run(capsys, "transform", "m.bl", "--data", db + "?table=events", "--out",
                         f"postgresql://beamlearn:{secret}@{host}/beamlearn?table=x&mode=sideways")
    assert code == 2 and "mode must be one of" in err and secret not in err
    code, out, err = run(capsys, "transform", "m.bl", "--engine", "beam", "--data", db + "?table=events", "--out",
                         db + "?table=x")
    assert code == 2 and "writing a database table on Beam is not supported" in err, err


def test_beam_partitioned_read_fits_like_local(db):
    from beamlearn.beam import run_fit

    pipe = read_spec(SPEC).pipeline
    source = db + "?table=events&partition_column=id&partitions=3"
    fitted = run_fit(pipe, [source], beam_args=[], batch_size=1000)
    local = pipe.fit(db + "?table=events")
    frame = _expected()
    a, b = fitted.transform(frame), local.transform(frame)
    for name in a.column_names:
        if pa.types.is_floating(a.schema.field(name).type):
            np.testing.assert_allclose(a.column(name).to_numpy(), b.column(name).to_numpy(), rtol=1e-9, atol=1e-12)
        else:
            assert a.column(name).equals(b.column(name))


def test_beam_transform_reads_sql_splits(db, tmp_path):
    from beamlearn.beam import run_transform

    fitted = read_spec(SPEC).fit(db + "?table=events")
    out = str(tmp_path / "pred.parquet")
    result = run_transform(fitted, [db + "?table=events&partition_column=id&partitions=3"], out, beam_args=[],
                           batch_size=1000)
    assert result["rows"] == N
    got = _table(io.read(out)).to_pandas().sort_values("id", na_position="first").reset_index(drop=True)
    want = fitted.transform(db + "?query=SELECT * FROM events ORDER BY id NULLS FIRST").to_pandas()
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12)


def test_a_password_in_the_uri_reaches_neither_provenance_nor_lineage_nor_the_artifact(db, tmp_path, monkeypatch):
    password = os.environ["PGPASSWORD"]
    monkeypatch.delenv("PGPASSWORD")  # the URI's password is the only one
    uri = db.replace("beamlearn@", f"beamlearn:{password}@") + "?table=events&partition_column=id&partitions=3"
    first = next(iter(io.read(uri)))
    assert io.batch_origin(first)[0] == uri.replace(password, "***")
    fitted = read_spec(SPEC).fit(uri)  # locally, a partitioned source is read whole
    assert fitted.lineage["rows"] == N
    fitted.save(str(tmp_path / "m.bl"))
    assert password.encode() not in (tmp_path / "m.bl").read_bytes()
    assert "***" in fitted.lineage["data"]["files"][0]["path"]
    assert all(password in s for s in sqlio.sql_splits(uri))  # the splits keep it: a worker connects with them


def test_postgres_types_arrive_as_plain_arrow_and_show_works(db):
    b = _table(io.read(db + "?query=SELECT 1.25::numeric AS n, 'NaN'::numeric AS nan, '{\"a\": 1}'::jsonb AS j, "
                            "'x'::bytea AS raw, 7::smallint AS small"))
    assert b.schema.types == [pa.float64(), pa.float64(), pa.string(), pa.binary(), pa.int16()]
    assert b.column("n").to_pylist() == [1.25] and np.isnan(b.column("nan").to_pylist()[0])
    assert b.column("j").to_pylist() == ['{"a": 1}']
    shown = _table(io.read(db + "?query=SHOW server_encoding"))  # PostgreSQL cannot COPY this out
    assert shown.column(0).to_pylist() == ["UTF8"]
