"""Files: CSV, Parquet and JSON lines give the same table as memory; globs, directories, bounded batches, one
schema fixed by the first file; bad files and values are named by file, row, line and column; dead letters lose
nothing; writers round-trip and are atomic."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beamlearn import io
from beamlearn.batches import batch_origin
from beamlearn.errors import DataError, SchemaError

SCHEMA = pa.schema([("x", pa.float64()), ("n", pa.int64()), ("s", pa.string()), ("b", pa.bool_())])


def ref_table(n=23):
    rng = np.random.default_rng(0)
    x = rng.normal(size=n) * 1e3
    return pa.table({
        "x": pa.array(x, mask=np.arange(n) % 5 == 1),
        "n": pa.array(np.arange(n) - 7, pa.int64()),
        "s": pa.array([f"v{i % 3}" for i in range(n)], mask=np.arange(n) % 4 == 2),
        "b": pa.array([i % 2 == 0 for i in range(n)]),
    })


def read_all(data, **kw):
    bs = list(io.read(data, **kw))
    return bs, pa.Table.from_batches(bs).replace_schema_metadata(None)


@pytest.fixture
def files(tmp_path):
    t = ref_table()
    out = {}
    for ext in ("csv", "parquet", "jsonl"):
        p = str(tmp_path / f"data.{ext}")
        io.write_batches(t.to_batches(), p)
        out[ext] = p
    return t, out


# ---------------------------------------------------------------------------------------------- readers
@pytest.mark.parametrize("ext", ["csv", "parquet", "jsonl"])
@pytest.mark.parametrize("batch_size", [1, 5, 1000])
def test_each_format_round_trips_to_the_same_table(files, ext, batch_size):
    t, paths = files
    bs, got = read_all(paths[ext], batch_size=batch_size)
    assert got.schema == SCHEMA
    assert got.equals(t), ext
    assert all(b.num_rows <= batch_size for b in bs)
    assert all(batch_origin(b)[0] == paths[ext] for b in bs)


def test_globs_directories_and_lists(tmp_path):
    t = ref_table(30)
    d = tmp_path / "parts"
    for k, (lo, ext) in enumerate([(0, "csv"), (10, "parquet"), (20, "jsonl")]):
        io.write_batches(t.slice(lo, 10).to_batches(), str(d / f"part-{k}.{ext}"))
    (d / "_SUCCESS").write_text("")
    (d / ".hidden.csv").write_text("x\n1\n")
    for data in (str(d / "part-*"), str(d), [str(d / "part-0.csv"), str(d / "part-1.parquet"),
                                             str(d / "part-2.jsonl")], d):
        _, got = read_all(data, batch_size=4)
        assert got.equals(t), data


def test_later_files_are_cast_to_the_first_files_schema(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.parquet"
    a.write_text("x,k\n1.5,a\n2.5,b\n")
    pq.write_table(pa.table({"x": pa.array([3, 4], pa.int32()), "k": ["c", "d"]}), str(b))
    _, got = read_all([str(a), str(b)])
    assert got.schema.field("x").type == pa.float64()
    assert got.column("x").to_pylist() == [1.5, 2.5, 3.0, 4.0]


def test_a_later_file_that_cannot_be_cast_names_file_row_and_column(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.jsonl"
    a.write_text("x,k\n1,a\n2,b\n")
    b.write_text('{"x": 3, "k": "c"}\n{"x": 4.5, "k": "d"}\n')
    with pytest.raises(DataError) as ei:
        list(io.read([str(a), str(b)]))
    e = ei.value
    assert (e.source, e.column, e.row) == (str(b), "x", 1)


def test_explicit_schema_wins(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("x,k\n1,a\n2,b\n")
    _, got = read_all(str(p), schema=pa.schema([("x", pa.float64()), ("k", pa.string())]))
    assert got.schema.field("x").type == pa.float64()


@pytest.mark.parametrize("batch_size", [2, 1000])
def test_csv_bad_value_names_file_row_line_and_column(tmp_path, batch_size):
    p = tmp_path / "d.csv"
    p.write_text("x,k\n" + "".join(f"{i},a\n" for i in range(7)) + "abc,b\n8,c\n")
    schema = pa.schema([("x", pa.int64()), ("k", pa.string())])  # as fixed by a fit or an earlier file
    with pytest.raises(DataError) as ei:
        list(io.read(str(p), batch_size=batch_size, schema=schema))
    e = ei.value
    assert (e.source, e.column, e.row, e.line, e.value) == (str(p), "x", 7, 9, "abc")
    assert "d.csv" in str(e) and "row 7 (line 9)" in str(e) and "'x'" in str(e)


def test_csv_column_empty_at_first_takes_the_type_of_its_later_values(tmp_path):
    """Arrow infers types from the first block (1 MiB): a column empty there is typed from its later values, so
    no row is lost; a column empty throughout is null-typed and every row (all empty) is kept."""
    path = tmp_path / "late.csv"
    n, first = 200_000, 150_000  # the first 150k rows (well over 1 MiB) leave b, c and d empty
    with open(path, "w") as fh:
        fh.write("a,b,c,d,e\n")
        for i in range(n):
            late = i >= first
            text = f'"k, {i % 3}"' if late else ""
            fh.write(f"{i},{i * 0.5 if late else ''},{text},{i if late else ''},\n")
    assert os.path.getsize(path) > 2 << 20
    schema = io.csv_schema(str(path))
    assert [str(f.type) for f in schema] == ["int64", "double", "string", "int64", "null"]
    dead = io.DeadLetters()
    table = pa.Table.from_batches(list(io.read_batches(str(path), dead=dead)))
    assert dead.count == 0 and table.num_rows == n
    assert table.column("b")[n - 1].as_py() == (n - 1) * 0.5 and table.column("c")[n - 1].as_py() == "k, 1"
    assert table.column("e").null_count == n


def test_a_csv_column_empty_in_the_first_file_is_typed_from_the_later_files(tmp_path):
    (tmp_path / "1.csv").write_text("x,z\n1.0,\n2.0,\n")
    (tmp_path / "2.csv").write_text("x,z\n3.0,5\n4.0,\n")
    files = [str(tmp_path / "1.csv"), str(tmp_path / "2.csv")]
    dead = io.DeadLetters()
    got = pa.Table.from_batches(list(io.read_batches(files, dead=dead)))
    assert dead.count == 0 and got.schema.field("z").type == pa.int64() and got.column("z").to_pylist() == [
        None, None, 5, None]
    from beamlearn.engines.beam_io import file_schema

    assert file_schema(files).field("z").type == pa.int64()  # the Beam engine's schema too


def test_a_value_in_a_column_that_was_empty_at_fit_is_a_bad_value(tmp_path):
    (tmp_path / "fit.csv").write_text("a,b\n1,\n2,\n")
    (tmp_path / "new.csv").write_text("a,b\n3,\n4,x\n")
    schema = io.csv_schema(str(tmp_path / "fit.csv"))
    assert schema.field("b").type == pa.null()
    dead = io.DeadLetters()
    got = pa.Table.from_batches(list(io.read_batches(str(tmp_path / "new.csv"), schema=schema, dead=dead)))
    assert got.column("a").to_pylist() == [3] and dead.count == 1
    assert dead.records[0]["column"] == "b" and dead.records[0]["row"] == 1


def test_csv_malformed_line_names_file_and_line(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("x,k\n1,a\n2,b,extra\n3,c\n")
    with pytest.raises(DataError) as ei:
        list(io.read(str(p)))
    assert ei.value.source == str(p) and ei.value.line == 3 and "expected 2 fields, got 3" in str(ei.value)


def test_jsonl_invalid_line_names_file_and_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"x": 1}\n{"x": 2\n{"x": 3}\n')
    with pytest.raises(DataError) as ei:
        list(io.read(str(p)))
    assert (ei.value.source, ei.value.row, ei.value.line) == (str(p), 1, 2)
    assert "invalid JSON" in str(ei.value)


def test_jsonl_mixed_types_name_file_row_and_column(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"x": 1.5}\n{"x": 2.5}\n{"x": "abc"}\n')
    with pytest.raises(DataError) as ei:
        list(io.read(str(p)))
    assert (ei.value.source, ei.value.column, ei.value.row) == (str(p), "x", 2)


def test_unknown_extension_and_missing_files(tmp_path):
    (tmp_path / "a.xlsx").write_text("")
    with pytest.raises(DataError, match="cannot tell the format"):
        list(io.read(str(tmp_path / "a.xlsx")))
    with pytest.raises(DataError, match="no file matches"):
        list(io.read(str(tmp_path / "nothing-*.csv")))
    with pytest.raises(DataError, match="no such file"):
        list(io.read(str(tmp_path / "absent.csv")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no data files"):
        list(io.read(str(tmp_path / "empty")))


def test_a_file_missing_a_required_column(tmp_path):
    for ext, text in (("csv", "y\n1\n"), ("jsonl", '{"y": 1}\n')):
        p = tmp_path / f"m.{ext}"
        p.write_text(text)
        with pytest.raises(SchemaError) as ei:
            list(io.read(str(p), schema=pa.schema([("x", pa.float64()), ("y", pa.float64())]), required=["x"]))
        assert ei.value.column == "x" and ei.value.source == str(p)
        _, got = read_all(str(p), schema=pa.schema([("x", pa.float64()), ("y", pa.float64())]))
        assert got.column("x").null_count == 1  # optional columns a file lacks become nulls


def test_not_a_parquet_file(tmp_path):
    p = tmp_path / "bad.parquet"
    p.write_bytes(b"not parquet at all")
    with pytest.raises(DataError) as ei:
        list(io.read(str(p)))
    assert ei.value.source == str(p)


# ---------------------------------------------------------------------------------------------- dead letters
XK = pa.schema([("x", pa.float64()), ("k", pa.string())])


def _bad_csv(tmp_path):
    p = tmp_path / "bad.csv"
    lines = ["x,k"]
    for i in range(12):
        if i == 3:
            lines.append("oops,c")           # bad cast, row 3
        elif i == 5:
            lines.append("5,c,extra")        # malformed, row 5
        elif i == 9:
            lines.append("nine,c")           # bad cast after the malformed line: row 9, line 11
        else:
            lines.append(f"{i}.5,c")
    p.write_text("\n".join(lines) + "\n")
    return str(p)


@pytest.mark.parametrize("batch_size", [2, 1000])
def test_csv_dead_letters_lose_nothing_and_name_rows(tmp_path, batch_size):
    path = _bad_csv(tmp_path)
    dead = io.DeadLetters()
    _bs, got = read_all(path, batch_size=batch_size, dead=dead, schema=XK)
    assert got.num_rows + dead.count == 12
    assert got.column("x").to_pylist() == [i + 0.5 for i in range(12) if i not in (3, 5, 9)]
    by_row = {r["row"]: r for r in dead.records}
    assert sorted(by_row) == [3, 5, 9]
    assert by_row[3]["line"] == 5 and by_row[3]["column"] == "x" and "oops" in by_row[3]["reason"]
    assert by_row[5]["line"] == 7 and "expected 2 fields" in by_row[5]["reason"]
    assert by_row[9]["line"] == 11 and by_row[9]["record"]["x"] == "nine"
    assert all(r["source"] == path for r in dead.records)


def test_jsonl_dead_letters_lose_nothing(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"x": 0.5}\n{"x": 1.5}\nnot json\n{"x": "three"}\n[1, 2]\n{"x": 5.5}\n')
    dead = io.DeadLetters()
    _, got = read_all(str(p), dead=dead)
    assert got.column("x").to_pylist() == [0.5, 1.5, 5.5]
    assert got.num_rows + dead.count == 6
    assert sorted(r["row"] for r in dead.records) == [2, 3, 4]
    assert sorted(r["line"] for r in dead.records) == [3, 4, 5]  # a row is its line (1-based)


def test_jsonl_bad_values_name_their_line_on_fit_and_transform(tmp_path):
    import beamlearn as bl

    p = tmp_path / "bad.jsonl"
    p.write_text('{"x": 1.0}\n\n{"x": 2.0}\n{"x": "oops"}\n')  # a blank line counts
    fitted = bl.Pipeline([bl.StandardScaler(["x"])]).fit({"x": [1.0, 2.0, 3.0]})
    for run in (lambda errors: bl.Pipeline([bl.StandardScaler(["x"])]).fit(str(p), errors=errors),
                lambda errors: fitted.transform(str(p), errors=errors)):
        dead = io.DeadLetters()
        run(dead)
        assert [(r["row"], r["line"], r["column"]) for r in dead.records] == [(3, 4, "x")]
        with pytest.raises(bl.errors.DataError, match=r"row 3 \(line 4\), column 'x'"):
            run("raise")


def test_jsonl_larger_than_an_arrow_block_loses_no_row(tmp_path):
    # Arrow parses JSON in 1 MiB blocks: a chunk of lines spans several, each must be read (rows, offsets)
    p = tmp_path / "big.jsonl"
    p.write_text("".join(json.dumps({"i": i, "s": "x" * 40}) + "\n" for i in range(60_000)))
    batches = list(io.read(str(p), batch_size=25_000))
    assert sum(b.num_rows for b in batches) == 60_000
    assert [batch_origin(b)[1] for b in batches] == [0, 25_000, 50_000]
    assert pa.Table.from_batches(batches).column("i").to_pylist() == list(range(60_000))


def test_dead_letters_to_a_file(tmp_path):
    path = _bad_csv(tmp_path)
    out = tmp_path / "dead.jsonl"
    sink = io.dead_letter_sink(str(out))
    list(io.read(path, dead=sink, schema=XK))
    sink.close()
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 3 and {r["row"] for r in recs} == {3, 5, 9}
    assert set(recs[0]) == {"source", "row", "line", "column", "reason", "record"}


def test_dead_letter_sink_policy():
    assert io.dead_letter_sink("raise") is None
    d = io.DeadLetters()
    assert io.dead_letter_sink(d) is d
    with pytest.raises(Exception, match="errors="):
        io.dead_letter_sink(42)


# ---------------------------------------------------------------------------------------------- writers
@pytest.mark.parametrize("ext", ["csv", "parquet", "jsonl"])
def test_writers_round_trip_exactly(tmp_path, ext):
    t = pa.table({"x": pa.array([0.1, 1 / 3, None, 1e-300, -2.5e17, 123456789.123456789]),
                  "n": pa.array([1, None, 3, -4, 2**40, 6], pa.int64()),
                  "s": pa.array(["a", "b,c", None, 'q"uote', "é", "x"]),
                  "u": pa.array([0, 1, 1, 0, 1, 0], pa.uint8())})
    p = str(tmp_path / f"out.{ext}")
    assert io.write_batches(t.to_batches(max_chunksize=4), p) == 6
    _, got = read_all(p)
    for c in t.column_names:
        want = t.column(c).to_pylist()
        assert got.column(c).to_pylist() == want, (ext, c, got.column(c).to_pylist())


def test_writer_is_atomic_on_error(tmp_path):
    p = tmp_path / "out.parquet"
    p.write_bytes(b"previous content")

    def boom():
        yield pa.record_batch({"x": [1.0]})
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        io.write_batches(boom(), str(p))
    assert p.read_bytes() == b"previous content"
    assert sorted(os.listdir(tmp_path)) == ["out.parquet"]  # no temp file left behind
    q = tmp_path / "new.csv"
    with pytest.raises(RuntimeError):
        io.write_batches(boom(), str(q))
    assert not q.exists()


def test_csv_writer_refuses_list_columns(tmp_path):
    b = pa.record_batch({"h": pa.array([[1, 2]])})
    with pytest.raises(SchemaError) as ei:
        io.write_batches([b], str(tmp_path / "x.csv"))
    assert ei.value.column == "h"
    assert not (tmp_path / "x.csv").exists()


def test_empty_output_still_writes_a_readable_file(tmp_path):
    schema = pa.schema([("x", pa.float64())])
    for ext in ("parquet", "csv"):
        p = str(tmp_path / f"e.{ext}")
        assert io.write_batches([], p, schema=schema) == 0
        assert os.path.exists(p)
    assert pq.read_table(str(tmp_path / "e.parquet")).schema.names == ["x"]


def test_table_to_numpy():
    t = pa.table({"a": pa.array([1, None], pa.int64()), "b": pa.array([0.5, 1.5]), "c": [True, False]})
    x = io.table_to_numpy(t)
    assert x.shape == (2, 3) and np.isnan(x[1, 0]) and x[0].tolist() == [1.0, 0.5, 1.0]
    with pytest.raises(SchemaError):
        io.table_to_numpy(pa.table({"s": ["a"]}))
