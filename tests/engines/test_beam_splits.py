"""Fit and Transform fed with FileSplits (every pass and the transform read their own splits, a pass reading only
the columns it needs when that cannot change the rows kept) equal the local engine on the same files: states,
outputs and dead letters (reported once, not once per pass), on the DirectRunner in both running modes, and
through the CLI's one-job-per-pass path.

Files: several Parquet row groups per file, cut into several splits; one file stores a column no later pass reads
as strings with bad values (so projection is refused there: skipping it would keep its bad rows), one stores a
column later passes do read as strings with bad values (projection allowed, the cast drops the same rows).
"""

from __future__ import annotations

import glob
import json
import os
import sys

import apache_beam as beam
import cloudpickle
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from tests.engines.test_beam import _Save, assert_state_equal, assert_tables_equal

import beamlearn as bl
from beamlearn import artifact, io
from beamlearn.beam import Fit, Transform, run_fit, run_transform
from beamlearn.engines import beam_io, beam_jobs
from beamlearn.engines.beam_io import FileSplit, FileSplits, file_splits
from beamlearn.profile.core import comparable
from beamlearn.split import HashSplit

pytestmark = pytest.mark.filterwarnings("ignore::beamlearn.errors.DataWarning")

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # SDK worker processes cannot import this module

SCHEMA = pa.schema([("id", pa.int64()), ("a", pa.float64()), ("b", pa.float64()), ("r", pa.float64()),
                    ("c", pa.string()), ("w", pa.float64())])
BAD_W = (3, 77, 160, 161, 449)      # rows of file 2 whose "w" (read by pass 0 only) is "x"
BAD_B = (0, 41, 250, 299)           # rows of file 3 whose "b" (read by every pass) is "oops"


def _table(n: int, first_id: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    return pa.table({
        "id": pa.array(first_id + i, pa.int64()),
        "a": pa.array(rng.normal(2, 3, n), mask=i % 7 == 2),
        "b": pa.array(rng.exponential(4, n), mask=i % 11 == 5),
        "r": pa.array(rng.standard_t(3, n), mask=i % 13 == 1),
        "c": pa.array([f"k{v}" for v in rng.integers(0, 5, n)], mask=i % 9 == 0),
        "w": rng.normal(size=n),
    }, schema=SCHEMA)


def _as_strings(t: pa.Table, column: str, bad: tuple[int, ...], word: str) -> pa.Table:
    values = [None if v is None else (word if k in bad else repr(v)) for k, v in enumerate(t.column(column).to_pylist())]
    return t.set_column(t.schema.get_field_index(column), column, pa.array(values, pa.string()))


def write_files(d: str) -> tuple[list[str], int]:
    """Four Parquet files (600, 450, 300, 200 rows; row groups of 100, 70, 64, 50 rows), the last one without
    the optional column "w" (nulls, as in a full read); returns the paths and the rows."""
    f1, f2, f3, f4 = (os.path.join(d, f"part{k}.parquet") for k in (1, 2, 3, 4))
    pq.write_table(_table(600, 0, 1), f1, row_group_size=100)
    pq.write_table(_as_strings(_table(450, 600, 2), "w", BAD_W, "x"), f2, row_group_size=70)
    pq.write_table(_as_strings(_table(300, 1050, 3), "b", BAD_B, "oops"), f3, row_group_size=64)
    pq.write_table(_table(200, 1350, 4).drop(["w"]), f4, row_group_size=50)
    return [f1, f2, f3, f4], 1550


def steps() -> list:
    """Three passes: the exact medians of the imputer and of RobustScaler (two passes), then the scaler of the
    imputed columns; the one-hot vocabulary rides in pass 0."""
    return [bl.SimpleImputer(["a", "b"], strategy="median"), bl.StandardScaler(["a", "b"]),
            bl.RobustScaler(["r"]), bl.OneHotEncoder(["c"], handle_unknown="ignore")]


# ---------------------------------------------------------------------------------------------- in the graph
_READS: list[tuple[str, tuple[str, ...] | None, tuple[str, ...]]] = []  # (path, columns asked, columns read)


def _spy(read_file):
    def spy(path, **kw):
        for b in read_file(path, **kw):
            _READS.append((os.path.basename(path), None if kw.get("columns") is None else tuple(kw["columns"]),
                           tuple(b.schema.names)))
            yield b
    return spy


CASES = [{"batch": 64, "split_rows": 150, "schema": None}, {"batch": 1000, "split_rows": 1, "schema": SCHEMA}]


def _run(files: list[str], args: list[str], tmp: str) -> None:
    with beam.Pipeline(options=PipelineOptions(args)) as p:
        for k, case in enumerate(CASES):
            d = {part: os.path.join(tmp, str(k), part) for part in ("fit", "out", "fit_dead", "out_dead")}
            for path in d.values():
                os.makedirs(path)
            reader = FileSplits(files, schema=SCHEMA, batch_size=case["batch"])
            reader.splits = file_splits(reader.files, SCHEMA, case["batch"], split_rows=case["split_rows"])
            splits = p | f"Splits{k}" >> reader
            fitted, fit_dead = splits | f"Fit{k}" >> Fit(bl.Pipeline(steps()), schema=case["schema"]).with_errors()
            out, out_dead = splits | f"Transform{k}" >> Transform(fitted).with_errors()
            for name, pcoll in (("fit", fitted), ("out", out), ("fit_dead", fit_dead), ("out_dead", out_dead)):
                pcoll | f"Save{name}{k}" >> beam.ParDo(_Save(d[name]))


def _load(path: str):
    if path.endswith(".arrow"):
        return pa.ipc.open_file(path).read_all()
    with open(path, "rb") as fh:
        return fh.read() if path.endswith(".bl") else json.load(fh)


def _loaded(d: str, ext: str) -> list:
    return [_load(f) for f in glob.glob(os.path.join(d, f"*.{ext}"))]


def dead_set(records: list[dict]) -> set:
    return {(r["source"], r["row"], r["column"], r["reason"], json.dumps(r["record"], sort_keys=True))
            for r in records}


def _check(files: list[str], total: int, case: dict, d: str) -> None:
    local_dead, local_tdead = bl.DeadLetters(), bl.DeadLetters()
    local = bl.Pipeline(steps()).fit(files, batch_size=case["batch"], errors=local_dead, schema=SCHEMA)
    assert local.lineage["passes"] == 3 and local_dead.count == len(BAD_W) + len(BAD_B)
    (blob,) = _loaded(os.path.join(d, "fit"), "bl")
    fitted = artifact.from_bytes(blob)
    assert fitted.input_schema == local.input_schema == SCHEMA
    for key in ("rows", "passes", "dead_letters"):
        assert fitted.lineage[key] == local.lineage[key], key
    assert fitted.lineage["rows"] + fitted.lineage["dead_letters"] == total  # nothing lost, nothing twice
    # the compact profile's sketches depend on the order of updates: compared by what every order agrees on
    assert_state_equal(comparable(fitted.lineage["profile"]), comparable(local.lineage["profile"]), "profile")
    for i, (g, w) in enumerate(zip(fitted.states, local.states)):
        assert_state_equal(g, w, f"step{i}:{type(local.steps[i]).__name__}")
    # and not only as the local engine (which projects too): the last pass saw exactly the rows kept
    assert fitted.states[1]["moments"]["count"].tolist() == [fitted.lineage["rows"]] * 2
    assert fitted.lineage["profile"]["count"]["missing"][SCHEMA.names.index("w")] == 200  # part4 lacks "w"

    fit_dead = _loaded(os.path.join(d, "fit_dead"), "json")
    assert len(fit_dead) == local_dead.count  # reported by pass 0 only, not once per pass
    assert dead_set(fit_dead) == dead_set(local_dead.records)
    assert {(os.path.basename(r["source"]), r["row"]) for r in fit_dead} == {
        *(("part2.parquet", k) for k in BAD_W), *(("part3.parquet", k) for k in BAD_B)}  # file rows

    want = local.transform(files, errors=local_tdead, batch_size=case["batch"])
    parts = _loaded(os.path.join(d, "out"), "arrow")
    got = pa.concat_tables(parts).sort_by("id")
    assert got.num_rows + len(_loaded(os.path.join(d, "out_dead"), "json")) == total
    assert_tables_equal(got.replace_schema_metadata(None), want.sort_by("id").replace_schema_metadata(None))
    assert dead_set(_loaded(os.path.join(d, "out_dead"), "json")) == dead_set(local_tdead.records)


@pytest.mark.parametrize("mode", ["in_memory", "multi_processing"])
def test_fit_and_transform_from_file_splits_equal_the_local_engine(tmp_path, monkeypatch, mode):
    files, total = write_files(str(tmp_path))
    assert [len(file_splits([f], SCHEMA, 64, split_rows=150)) for f in files] == [3, 3, 2, 2]
    args = [f"--direct_running_mode={mode}"] + (["--direct_num_workers=2"] if mode != "in_memory" else [])
    if mode == "in_memory":  # the workers are this process: watch what each read asks for and gets
        _READS.clear()
        monkeypatch.setattr(io, "read_file", _spy(io.read_file))
    _run(files, args, str(tmp_path))
    for k, case in enumerate(CASES):
        _check(files, total, case, str(tmp_path / str(k)))
    if mode == "in_memory":
        everything = tuple(SCHEMA.names)
        asked = {cols for _, cols, _ in _READS if cols is not None}
        # pass 0 (the profile reads every column), pass 1 (two medians), pass 2 (the scaler of imputed a, b)
        assert asked == {tuple(sorted(everything)), ("a", "b", "r"), ("a", "b")}, asked
        for path, cols, got in _READS:
            if path == "part2.parquet" or cols is None:  # "w" would be cast: every column; the transform: all
                assert got == everything, (path, cols, got)
            else:  # the others store every skipped column as is: only the asked columns
                assert got == tuple(c for c in everything if c in cols), (path, cols, got)


# ---------------------------------------------------------------------------------------------- the CLI's jobs
class _SmallSplits(FileSplits):
    """FileSplits with splits of at least 100 rows (the default, 2**20, would give one split per small file)."""

    def __init__(self, paths, **kw) -> None:
        super().__init__(paths, split_rows=100, **kw)


def test_one_job_per_pass_over_row_group_splits_equals_the_local_engine(tmp_path, monkeypatch):
    files, _ = write_files(str(tmp_path))
    path = files[1]  # 450 rows in 7 row groups, "w" stored as strings with bad values
    assert [s.row_groups for s in _SmallSplits([path], schema=SCHEMA).splits] == [(0, 1), (2, 3), (4, 5), (6,)]
    monkeypatch.setattr(beam_jobs, "FileSplits", _SmallSplits)
    pipe = bl.Pipeline(steps())
    local_dead, local_tdead = bl.DeadLetters(), bl.DeadLetters()
    local = pipe.fit(path, batch_size=32, errors=local_dead, schema=SCHEMA)
    errs, terrs, out = (str(tmp_path / n) for n in ("fit_errors.jsonl", "tr_errors.jsonl", "out.parquet"))
    fitted = run_fit(pipe, [path], beam_args=[], batch_size=32, errors=errs, schema=SCHEMA, jobs="per_pass")
    assert fitted.lineage["beam_jobs"] == "per_pass" and fitted.lineage["passes"] == local.lineage["passes"] == 3
    with open(errs) as fh:
        fit_dead = [json.loads(line) for line in fh]
    assert sorted(r["row"] for r in fit_dead) == list(BAD_W) and fitted.lineage["dead_letters"] == len(BAD_W)
    assert dead_set(fit_dead) == dead_set(local_dead.records)
    assert fitted.lineage["rows"] == local.lineage["rows"] == 450 - len(BAD_W)
    for i, (g, w) in enumerate(zip(fitted.states, local.states)):
        assert_state_equal(g, w, f"step{i}")

    result = run_transform(fitted, [path], out, beam_args=[], batch_size=32, errors=terrs)
    want = local.transform(path, errors=local_tdead, batch_size=32)
    assert local_tdead.count == len(BAD_W)
    assert result == {"rows": want.num_rows, "dead_letters": local_tdead.count}
    with open(terrs) as fh:
        assert dead_set([json.loads(line) for line in fh]) == dead_set(local_tdead.records)
    assert_tables_equal(pq.read_table(out).sort_by("id"), want.sort_by("id").replace_schema_metadata(None))


def test_a_file_split_is_a_small_picklable_element(tmp_path):
    """Splits are what the graph moves: the path and row groups, never data."""
    files, _ = write_files(str(tmp_path))
    (split, *_) = file_splits(files, SCHEMA, 64, split_rows=150)
    assert split == FileSplit(files[0], (0, 1), 0, SCHEMA, 64)
    blob = cloudpickle.dumps(split)
    assert cloudpickle.loads(blob) == split and len(blob) < 4096
    default = beam_io.FileSplits(files, schema=SCHEMA, batch_size=64)
    assert default.splits == [FileSplit(f, None, 0, SCHEMA, 64) for f in files]  # small files: whole


@pytest.mark.parametrize("split", [HashSplit(test_fraction=0.3, seed=4), HashSplit("id", test_fraction=0.4)],
                         ids=["whole-row", "key"])
def test_a_split_part_is_kept_where_the_files_are_read(tmp_path, monkeypatch, split):
    """``run_fit(part=(split, "train"))`` fits on the train rows the local engine sees (``split.part`` of the read
    files): the split reads its key (every column for a whole-row hash) even in a pass that projects others, and
    dead letters of the kept rows are reported with their file rows."""
    files, _ = write_files(str(tmp_path))
    monkeypatch.setattr(beam_jobs, "FileSplits", _SmallSplits)
    pipe = bl.Pipeline(steps())
    local_dead = bl.DeadLetters()
    local = pipe.fit(lambda: split.part(io.read(files[:3], batch_size=32, dead=local_dead), "train"),
                     batch_size=32)
    errs = str(tmp_path / "errors.jsonl")
    for jobs in ("one", "per_pass"):
        fitted = run_fit(pipe, files[:3], beam_args=[], batch_size=32, errors=errs, part=(split, "train"),
                         jobs=jobs)
        assert fitted.lineage["rows"] == local.lineage["rows"] < 1350 - len(BAD_W) - len(BAD_B)
        for i, (g, w) in enumerate(zip(fitted.states, local.states)):
            assert_state_equal(g, w, f"{jobs} step{i}")
        with open(errs) as fh:  # bad values are found as rows are read, before the split: all of them, once
            got = [json.loads(line) for line in fh]
        assert len(got) == len(BAD_W) + len(BAD_B) and dead_set(got) == dead_set(local_dead.records)


def test_a_split_part_cast_to_another_schema_drops_the_same_rows_in_every_pass(tmp_path):
    """With ``part`` and a fit schema that casts a column the pass does not read ("s": text to float, some bad),
    a later pass must still drop the rows pass 0 rejected: no column is skipped when the cast could fail."""
    p = str(tmp_path / "a.parquet")
    n = 40
    pq.write_table(pa.table({"id": range(n), "x": np.arange(n, dtype=float) ** 2,
                             "s": ["1.5" if i % 4 else "bad" for i in range(n)]}), p)
    target = pa.schema([("id", pa.int64()), ("x", pa.float64()), ("s", pa.float64())])
    split, steps_ = HashSplit("id", test_fraction=0.25), [bl.RobustScaler(["x"])]  # exact quantiles: 2 passes
    errs = str(tmp_path / "dead.jsonl")
    got = run_fit(bl.Pipeline(steps_), [p], beam_args=[], errors=errs, schema=target, part=(split, "train"),
                  jobs="one")
    want = bl.Pipeline(steps_).fit(lambda: split.part(io.read([p]), "train"), schema=target,
                                   errors=bl.DeadLetters())
    assert got.lineage["rows"] == want.lineage["rows"] and got.lineage["dead_letters"] == 7
    assert_state_equal(got.states[0], want.states[0])
