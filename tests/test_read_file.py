"""Reading part of a file: ``io.read_file`` column projection (only when it cannot change the rows kept) and
Parquet row groups (provenance and dead letters name file rows); ``Pass.input_columns`` (the columns a pass
needs, and reading only those gives the same statistics); ``file_splits`` (how files are cut for Beam)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import beamlearn as bl
from beamlearn import io
from beamlearn.batches import batch_origin, batch_rows, capture_schema
from beamlearn.engines.beam_io import FileSplit, file_splits, read_split
from beamlearn.errors import DataError, SchemaError
from beamlearn.pipeline import FitPlan
from beamlearn.testing import random_table

pytestmark = pytest.mark.filterwarnings("ignore::beamlearn.errors.DataWarning")

N = 500
BAD_ROWS = (13, 205, 250, 399, 401)  # rows whose "n" is stored as "x" in the string-stored file
SCHEMA = pa.schema([("id", pa.int64()), ("a", pa.float64()), ("b", pa.float64()), ("cat", pa.string()),
                    ("n", pa.int64())])


def _table(n: int = N) -> pa.Table:
    rng = np.random.default_rng(7)
    return pa.table({
        "id": pa.array(np.arange(n), pa.int64()),
        "a": pa.array(rng.normal(size=n), mask=np.arange(n) % 7 == 3),
        "b": rng.normal(5, 2, n),
        "cat": pa.array([f"k{i % 4}" for i in range(n)], mask=np.arange(n) % 9 == 4),
        "n": pa.array(rng.integers(0, 100, n), pa.int64()),
    }, schema=SCHEMA)


@pytest.fixture
def good(tmp_path) -> str:
    path = str(tmp_path / "good.parquet")
    pq.write_table(_table(), path, row_group_size=100)
    return path


@pytest.fixture
def bad(tmp_path) -> str:
    """``n`` stored as strings, with "x" at BAD_ROWS: a cast (that fails on those rows) to SCHEMA's int64."""
    t = _table()
    n = [("x" if i in BAD_ROWS else str(v)) for i, v in enumerate(t.column("n").to_pylist())]
    t = t.set_column(t.schema.get_field_index("n"), "n", pa.array(n, pa.string()))
    path = str(tmp_path / "bad.parquet")
    pq.write_table(t, path, row_group_size=100)
    return path


def _read(path: str, **kw) -> tuple[list[pa.RecordBatch], pa.Table]:
    batches = list(io.read_file(path, **kw))
    return batches, pa.Table.from_batches(batches).replace_schema_metadata(None)


def _dead_rows(dead: io.DeadLetters) -> list[tuple]:
    return sorted((r["source"], r["row"], r["column"], r["reason"]) for r in dead.records)


# ---------------------------------------------------------------------------------------------- projection
def test_projection_reads_only_the_asked_columns_when_types_match(good):
    _, full = _read(good, schema=SCHEMA, batch_size=64)
    batches, got = _read(good, schema=SCHEMA, batch_size=64, columns=["b", "id"])
    assert got.column_names == ["id", "b"]  # only those (in file order), nothing else
    assert got.equals(full.select(["id", "b"]))
    assert all(batch_origin(b)[0] == good for b in batches)
    assert np.concatenate([batch_rows(b) for b in batches]).tolist() == list(range(N))
    # a step's output (in no file, nor in the schema) is ignored
    _, got = _read(good, schema=SCHEMA, columns=["a", "a_scaled"])
    assert got.column_names == ["a"] and got.column("a").equals(full.column("a"))


def test_projection_on_no_column_keeps_the_row_count(good):
    """(A pass may need no column, e.g. only row counts; a batch without columns has no rows.)"""
    batches, _ = _read(good, schema=SCHEMA, batch_size=64, columns=[])
    assert sum(b.num_rows for b in batches) == N
    assert np.concatenate([batch_rows(b) for b in batches]).tolist() == list(range(N))


def test_projection_keeps_a_schema_column_the_file_lacks_as_nulls(good):
    """As in a full read (``read_batches``: "other columns a file lacks become nulls")."""
    wider = SCHEMA.append(pa.field("z", pa.float64()))
    _, full = _read(good, schema=wider)
    assert full.column("z").null_count == N  # the full read's answer
    _, got = _read(good, schema=wider, columns=["a", "z"])
    assert got.column_names == ["a", "z"]
    assert got.equals(full.select(["a", "z"]))


def test_projection_is_refused_when_a_skipped_column_would_be_cast(bad):
    full_dead, proj_dead = io.DeadLetters(), io.DeadLetters()
    _, full = _read(bad, schema=SCHEMA, batch_size=64, dead=full_dead)
    _, got = _read(bad, schema=SCHEMA, batch_size=64, dead=proj_dead, columns=["a"])
    assert full.num_rows == N - len(BAD_ROWS) and full.schema == SCHEMA
    assert got.column_names == SCHEMA.names  # every column read: skipping "n" would keep its bad rows
    assert got.equals(full)
    assert _dead_rows(proj_dead) == _dead_rows(full_dead)
    assert [r["row"] for r in proj_dead.records] == list(BAD_ROWS)
    assert proj_dead.records == full_dead.records  # whole records, as in a full read
    with pytest.raises(DataError, match=r"bad\.parquet.*row 13") as exc:  # raise mode: the same first bad row
        _read(bad, schema=SCHEMA, batch_size=64, columns=["a"])
    assert exc.value.column == "n"


def test_projection_is_refused_for_a_safe_but_different_stored_type(tmp_path):
    path = str(tmp_path / "i32.parquet")
    t = _table(50)
    pq.write_table(t.set_column(4, "n", t.column("n").cast(pa.int32())), path)
    _, got = _read(path, schema=SCHEMA, columns=["a"])
    assert got.column_names == SCHEMA.names and got.schema.field("n").type == pa.int64()


def test_projection_of_a_column_that_is_cast_keeps_its_bad_rows_out(bad):
    """When only the asked columns are cast (the skipped ones match), bad values of an asked column still drop
    their rows, exactly the rows a full read drops."""
    full_dead, proj_dead = io.DeadLetters(), io.DeadLetters()
    _, full = _read(bad, schema=SCHEMA, batch_size=64, dead=full_dead)
    _, got = _read(bad, schema=SCHEMA, batch_size=64, dead=proj_dead, columns=["id", "n"])
    assert got.column_names == ["id", "n"]
    assert got.equals(full.select(["id", "n"]))
    assert _dead_rows(proj_dead) == _dead_rows(full_dead)


def test_a_required_column_absent_from_the_file_is_a_schema_error_under_projection(good):
    wider = SCHEMA.append(pa.field("z", pa.float64()))
    for columns in (["a"], ["a", "z"], None):
        with pytest.raises(SchemaError, match="required column is missing") as exc:
            _read(good, schema=wider, required=["a", "z"], columns=columns)
        assert exc.value.column == "z", columns
    # a required column present but not asked for is fine
    _, got = _read(good, schema=SCHEMA, required=["a", "n"], columns=["a"])
    assert got.column_names == ["a"]


# ---------------------------------------------------------------------------------------------- row groups
def test_row_groups_read_exactly_their_rows_named_as_file_rows(good):
    batches, got = _read(good, schema=SCHEMA, batch_size=64, row_groups=[2, 3], first_row=200)
    assert got.column("id").to_pylist() == list(range(200, 400))
    assert got.equals(_read(good, schema=SCHEMA)[1].slice(200, 200))
    assert batch_origin(batches[0]) == (good, 200)
    assert np.concatenate([batch_rows(b) for b in batches]).tolist() == list(range(200, 400))


def test_row_groups_dead_letters_and_errors_name_file_rows(bad):
    dead = io.DeadLetters()
    batches, got = _read(bad, schema=SCHEMA, batch_size=64, row_groups=[2, 3], first_row=200, dead=dead)
    assert [r["row"] for r in dead.records] == [205, 250, 399]  # file rows, not split rows (5, 50, 199)
    assert all(r["source"] == bad and r["column"] == "n" and r["record"]["n"] == "x" for r in dead.records)
    assert [r["record"]["id"] for r in dead.records] == [205, 250, 399]  # the record is the file's row
    kept = [i for i in range(200, 400) if i not in BAD_ROWS]
    assert got.column("id").to_pylist() == kept
    assert np.concatenate([batch_rows(b) for b in batches]).tolist() == kept  # provenance of kept rows
    with pytest.raises(DataError, match=r"row 205\b"):
        _read(bad, schema=SCHEMA, batch_size=64, row_groups=[2, 3], first_row=200)
    # projected and grouped at once: the same rows
    dead2 = io.DeadLetters()
    _, got2 = _read(bad, schema=SCHEMA, batch_size=64, row_groups=[2, 3], first_row=200, dead=dead2,
                    columns=["id", "n"])
    assert got2.column("id").to_pylist() == kept and [r["row"] for r in dead2.records] == [205, 250, 399]


# ---------------------------------------------------------------------------------------------- file_splits
def _write_groups(path: str, sizes: list[int]) -> pa.Table:
    t = _table(sum(sizes))
    with pq.ParquetWriter(path, t.schema) as w:
        start = 0
        for s in sizes:
            w.write_table(t.slice(start, s))
            start += s
    return t


def test_file_splits_group_row_groups(tmp_path):
    path = str(tmp_path / "g.parquet")
    _write_groups(path, [30, 30, 50, 10, 40, 5])
    assert pq.ParquetFile(path).metadata.num_row_groups == 6
    splits = file_splits([path], SCHEMA, 64, split_rows=60)
    assert [(s.row_groups, s.first_row) for s in splits] == [((0, 1), 0), ((2, 3), 60), ((4, 5), 120)]
    assert all(s.path == path and s.schema == SCHEMA and s.batch_size == 64 for s in splits)
    assert [(s.row_groups, s.first_row) for s in file_splits([path], SCHEMA, split_rows=1)] == [
        ((i,), f) for i, f in enumerate([0, 30, 60, 110, 120, 160])]
    # the last groups, however few rows they hold, close the last split; a split of every group is the file
    assert [(s.row_groups, s.first_row) for s in file_splits([path], SCHEMA, split_rows=150)] == [
        ((0, 1, 2, 3, 4), 0), ((5,), 160)]
    assert [(s.row_groups, s.first_row) for s in file_splits([path], SCHEMA, split_rows=10**6)] == [(None, 0)]


def test_file_splits_of_text_and_empty_files(tmp_path):
    csv, jsonl, empty = (str(tmp_path / n) for n in ("a.csv", "b.jsonl", "e.parquet"))
    pcsv.write_csv(_table(20), csv)
    with open(jsonl, "w") as fh:
        fh.write('{"id": 1}\n')
    pq.ParquetWriter(empty, SCHEMA).close()
    assert pq.ParquetFile(empty).metadata.num_row_groups == 0
    splits = file_splits([csv, jsonl, empty], SCHEMA, 8, split_rows=1)
    assert splits == [FileSplit(csv, None, 0, SCHEMA, 8), FileSplit(jsonl, None, 0, SCHEMA, 8),
                      FileSplit(empty, None, 0, SCHEMA, 8)]
    got = pa.Table.from_batches(list(read_split(splits[2])))
    assert got.num_rows == 0 and got.schema.names == SCHEMA.names


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(0, 40), min_size=1, max_size=7), split_rows=st.integers(1, 120),
       batch_size=st.sampled_from([1, 7, 64]), bad_rows=st.sets(st.integers(0, 279), max_size=6))
def test_splits_read_together_are_the_file(tmp_path_factory, sizes, split_rows, batch_size, bad_rows):
    """Every row once, in order, with the dead letters of a whole-file read (same rows, same records)."""
    path = str(tmp_path_factory.mktemp("s") / "f.parquet")
    t = _table(sum(sizes))
    n = [("x" if i in bad_rows else str(v)) for i, v in enumerate(t.column("n").to_pylist())]
    t = t.set_column(4, "n", pa.array(n, pa.string()))
    with pq.ParquetWriter(path, t.schema) as w:
        start = 0
        for s in sizes:
            w.write_table(t.slice(start, s))
            start += s
    whole_dead, split_dead = io.DeadLetters(), io.DeadLetters()
    _, whole = _read(path, schema=SCHEMA, batch_size=batch_size, dead=whole_dead)
    splits = file_splits([path], SCHEMA, batch_size, split_rows=split_rows)
    assert splits[0].first_row == 0
    assert [s.first_row for s in splits[1:]] == [
        sum(sizes[:s.row_groups[0]]) for s in splits[1:]]  # type: ignore[index]
    groups = [g for s in splits for g in (s.row_groups or range(len(sizes)))]
    assert groups == list(range(len(sizes)))  # every group once, in order
    batches = [b for s in splits for b in read_split(s, dead=split_dead)]
    got = pa.Table.from_batches(batches).replace_schema_metadata(None)
    assert got.equals(whole)
    assert np.concatenate([batch_rows(b) for b in batches] or [np.zeros(0, int)]).tolist() == \
        got.column("id").to_pylist()
    assert split_dead.records == whole_dead.records


# ---------------------------------------------------------------------------------------------- Pass.input_columns
def _passes(steps: list, table: pa.Table) -> list[tuple[list[str] | None, list, list]]:
    """Plan ``steps`` over ``table`` pass by pass (states from the analyzers on the whole table); returns for each
    pass its ``input_columns()``, the states from the whole table and from the table projected on them."""
    plan = FitPlan(steps, capture_schema(table.to_batches()[0]))
    batch = table.combine_chunks().to_batches()[0]
    out = []
    while not plan.done():
        p = plan.next_pass()
        cols = p.input_columns()
        states = [a.extract(a.add(a.create(), v)) for a, v in zip(p.analyzers, p.views(batch))]
        projected = None
        if cols is not None:
            small = batch.select([c for c in cols if c in batch.schema.names])
            projected = [a.extract(a.add(a.create(), v)) for a, v in zip(p.analyzers, p.views(small))]
        out.append((cols, states, projected))
        plan.complete(p, states)
    return out


def _state_equal(got, want) -> None:
    from tests.engines.test_beam import assert_state_equal

    assert_state_equal(got, want)


def _data(n: int = 200) -> pa.Table:
    t = random_table(n, n_numeric=4, n_string=2, seed=3)
    y = np.nan_to_num(t.column("num1").to_numpy(zero_copy_only=False)) * 2 + 1
    return t.append_column("y", pa.array(y))


def test_input_columns_of_a_two_pass_chain():
    num, cat = ["num0", "num1"], ["cat0"]
    # (the mean strategy derives the scaler's moments without a pass: most_frequent needs the second pass)
    steps = [bl.SimpleImputer(num, strategy="most_frequent"), bl.StandardScaler(num), bl.OneHotEncoder(cat)]
    passes = _passes(steps, _data())
    assert len(passes) == 2
    assert passes[0][0] == sorted(_data().column_names)  # pass 0 profiles every column
    assert passes[1][0] == num  # the scaler of the imputed columns: only those
    for cols, full, projected in passes:
        _state_equal(projected, full)


@pytest.mark.parametrize("steps,want", [
    # an analyzer reading a step's output: the step's inputs (its output is in no file)
    ([bl.SimpleImputer(["num0"], add_indicator=True), bl.StandardScaler(["missingindicator_num0", "num0"])],
     [["missingindicator_num0", "num0"]]),
    ([bl.RobustScaler(["num2"])], [["num2"]]),  # exact quantiles: the second pass reads the column only
    ([bl.OneHotEncoder(["cat1"]), bl.MinMaxScaler(["cat1_v0"]), bl.StandardScaler(["num3"], with_std=False)],
     [["cat1", "cat1_v0"]]),  # the analyzer names the output too: absent from a file, harmless
])
def test_input_columns_after_the_first_pass(steps, want):
    passes = _passes(steps, _data())
    assert [p[0] for p in passes[1:]] == want
    for cols, full, projected in passes:
        _state_equal(projected, full)


def test_input_columns_is_none_after_an_estimator_or_an_undeclared_analyzer():
    steps = [bl.StandardScaler(["num0"]), bl.LinearRegression(["num0"], label="y"),
             bl.StandardScaler(["prediction"])]
    passes = _passes(steps, _data().drop_null())
    assert [p[0] for p in passes[1:]] == [["num0", "y"], None]  # the estimator's pass declares its columns
    plan = FitPlan([bl.KMeans(["num0", "num1"], n_clusters=2)], _data().schema, profile=False)
    assert plan.next_pass().input_columns() is None  # KMeansStart does not declare reads()


def test_a_batch_never_spans_two_row_groups(tmp_path):
    """The reader holds one row group at a time: batches are cut at row-group ends (memory stays that of one
    group, also with dictionary-encoded columns), and the rows and provenance are those of the file."""
    from beamlearn.batches import batch_origin

    t = pa.table({"x": np.arange(250, dtype=np.float64), "s": [f"v{i % 4}" for i in range(250)]})
    path = str(tmp_path / "groups.parquet")
    pq.write_table(t, path, row_group_size=100)
    batches = list(io.read_file(path, batch_size=64, encoded=["s"], schema=t.schema))
    assert [b.num_rows for b in batches] == [64, 36, 64, 36, 50]
    assert [batch_origin(b)[1] for b in batches] == [0, 64, 100, 164, 200]
    assert pa.Table.from_batches(batches).column("x").to_pylist() == t.column("x").to_pylist()
