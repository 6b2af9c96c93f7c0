"""The Beam engine equals the local engine: fitted states and transform outputs, for every step type.

Starting a Beam pipeline costs about a second, so each property test runs many random cases (tables, batchings,
step parameters) inside ONE Beam pipeline: data is generated inside the pipeline by a DoFn (``beam.Create`` of big
batches is slow), every case gets its own Fit and Transform (the fitted pipeline as a side input), and results are
written to a temporary directory, then compared with the local engine on the same table.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import uuid

import apache_beam as beam
import cloudpickle
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import beamlearn as bl
from beamlearn import artifact
from beamlearn.beam import ReadFiles
from beamlearn.beam import Fit, Transform, check_runner, pass_bound, run_fit, run_transform, unbatch
from beamlearn.errors import DataError, EngineError, SchemaError
from beamlearn.testing import random_table

pytestmark = pytest.mark.filterwarnings("ignore::beamlearn.errors.DataWarning")

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # SDK worker processes cannot import this module


@bl.register_function("beam_test_cube")
def _cube(x):
    return x * x * x


N_NUMERIC, N_STRING = 8, 3


@st.composite
def pipelines(draw) -> list:
    """A pipeline using every registered step type, with drawn parameters; multi-pass chains included."""
    num = [f"num{i}" for i in range(N_NUMERIC)]
    steps = {
        "SimpleImputer": bl.SimpleImputer(num[:2], strategy=draw(st.sampled_from(
            ["mean", "median", "most_frequent"])), add_indicator=draw(st.booleans()), keep_empty_features=True),
        "StandardScaler": bl.StandardScaler(num[:2]),  # after the imputer on the same columns: a second pass
        "RobustScaler": bl.RobustScaler([num[2]], quantile_range=(10.0, 90.0)),  # exact quantiles: two passes
        "MinMaxScaler": bl.MinMaxScaler([num[3]]),
        "MaxAbsScaler": bl.MaxAbsScaler([num[4]]),
        "KBinsDiscretizer": bl.KBinsDiscretizer([num[5]], n_bins=draw(st.integers(2, 6)), encode=draw(
            st.sampled_from(["ordinal", "onehot"])), strategy=draw(st.sampled_from(["uniform", "quantile"]))),
        "Clip": bl.Clip([num[6]], lower=-1.0, upper=1.0),
        "Function": bl.Function([num[7]], func="beam_test_cube"),
        "Log1p": bl.Log1p([num[6]]),
        "OneHotEncoder": bl.OneHotEncoder(["cat0"], handle_unknown="ignore", min_frequency=draw(
            st.sampled_from([None, 3, 0.1])), max_categories=draw(st.sampled_from([None, 3]))),
        "OrdinalEncoder": bl.OrdinalEncoder(["cat1"]),
        "FeatureHasher": bl.FeatureHasher(["cat2"], n_features=16),
        "Derive": bl.Derive(["num4"], output="num4_pos", func="greater_than", kw_args={"value": 0.0},
                            dtype="int64"),
        "Drop": bl.Drop(["num6"]),
    }
    foundation = {n for n, c in bl.steps.registered_steps().items() if c.__module__.startswith("beamlearn.steps.")}
    missing = foundation - set(steps)
    assert not missing, f"add the new step types to this test: {sorted(missing)}"
    return list(steps.values())


@st.composite
def cases(draw) -> dict:
    return {"seed": draw(st.integers(0, 10_000)), "rows": draw(st.integers(1, 900)),
            "batch": draw(st.sampled_from([1, 7, 64, 1000])), "steps": draw(pipelines())}


def _table(case: dict) -> pa.Table:
    t = random_table(case["rows"], n_numeric=N_NUMERIC, n_string=N_STRING, seed=case["seed"])
    return t.append_column("id", pa.array(np.arange(t.num_rows)))


class _Generate(beam.DoFn):
    """The case's table as batches of the case's size, generated inside the pipeline."""

    def process(self, case):
        yield from _table(case).to_batches(max_chunksize=case["batch"])


class _Save(beam.DoFn):
    """Fitted pipelines as artifacts, batches as Arrow files, dead letters as JSON, in ``directory``."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def process(self, item):
        name = os.path.join(self.directory, uuid.uuid4().hex)
        if isinstance(item, bl.FittedPipeline):
            with open(name + ".bl", "wb") as fh:
                fh.write(artifact.to_bytes(item))
        elif isinstance(item, pa.RecordBatch):
            with pa.OSFile(name + ".arrow", "wb") as sink, pa.ipc.new_file(sink, item.schema) as w:
                w.write_batch(item)
        else:
            with open(name + ".json", "w") as fh:
                json.dump(item, fh)


def _run_cases(case_list: list[dict], args: list[str], tmp: str) -> None:
    with beam.Pipeline(options=PipelineOptions(args)) as p:
        for k, case in enumerate(case_list):
            d = os.path.join(tmp, str(k))
            os.makedirs(d)
            data = p | f"Case{k}" >> beam.Create([case]) | f"Gen{k}" >> beam.ParDo(_Generate())
            fitted = data | f"Fit{k}" >> Fit(bl.Pipeline(case["steps"]))
            fitted | f"SaveFit{k}" >> beam.ParDo(_Save(d))
            data | f"Transform{k}" >> Transform(fitted) | f"SaveOut{k}" >> beam.ParDo(_Save(d))


# ---------------------------------------------------------------------------------------------- comparison
_FLOAT_SUMS = ("mean", "var", "moments", "scale", "sum", "std")  # floating sums: within rtol 1e-12 (merge order)


def assert_state_equal(got, want, path: str = "") -> None:
    """Counts, extrema, vocabularies and quantiles identical; floating sums and moments within rtol 1e-12."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), f"{path}: keys {sorted(got)} != {sorted(want)}"
        for k in want:
            assert_state_equal(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, (list, tuple)) and not (want and isinstance(want[0], (int, float, np.number))):
        assert len(got) == len(want), f"{path}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_state_equal(g, w, f"{path}[{i}]")
    elif isinstance(want, (np.ndarray, list, tuple, float, np.floating)) and np.asarray(want).dtype.kind == "f":
        g, w = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
        if any(s in path for s in _FLOAT_SUMS):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=0, err_msg=path)
        else:
            np.testing.assert_array_equal(g, w, err_msg=path)
    elif isinstance(want, np.ndarray):
        np.testing.assert_array_equal(np.asarray(got), want, err_msg=path)
    else:
        both_nan = isinstance(got, float) and isinstance(want, float) and np.isnan(got) and np.isnan(want)
        assert got == want or both_nan, f"{path}: {got!r} != {want!r}"


def assert_tables_equal(got: pa.Table, want: pa.Table) -> None:
    assert got.schema.names == want.schema.names
    assert got.num_rows == want.num_rows
    for name in want.schema.names:
        g, w = got.column(name), want.column(name)
        assert g.type == w.type, name
        if pa.types.is_floating(w.type):
            gm, wm = g.is_null(nan_is_null=True), w.is_null(nan_is_null=True)  # null and NaN: both missing
            assert gm.equals(wm), name
            np.testing.assert_allclose(g.filter(pc.invert(gm)).to_numpy(), w.filter(pc.invert(wm)).to_numpy(),
                                       rtol=1e-9, atol=1e-12, err_msg=name)
        else:
            assert g.equals(w), name


def _check_case(case: dict, d: str) -> None:
    table = _table(case)
    local = bl.Pipeline(case["steps"]).fit(table, batch_size=case["batch"])
    (fit_file,) = glob.glob(os.path.join(d, "*.bl"))
    fitted = bl.load(fit_file)
    assert fitted.lineage["engine"] == "beam"
    for key in ("rows", "passes"):
        assert fitted.lineage[key] == local.lineage[key], key
    assert_state_equal(fitted.lineage["profile"], local.lineage["profile"], "profile")
    assert fitted.input_schema == local.input_schema
    for i, (g, w) in enumerate(zip(fitted.states, local.states)):
        assert_state_equal(g, w, f"step{i}:{type(local.steps[i]).__name__}")
    parts = [pa.ipc.open_file(f).read_all() for f in glob.glob(os.path.join(d, "*.arrow"))]
    got = pa.concat_tables(parts).sort_by("id") if parts else None
    want = local.transform(table)
    assert got is not None and got.num_rows == table.num_rows
    assert_tables_equal(got.replace_schema_metadata(None), want.replace_schema_metadata(None))


# one example = one Beam pipeline of many cases; no shrinking (each attempt would start a pipeline)
_SETTINGS = settings(max_examples=1, deadline=None, database=None, phases=[Phase.generate],
                     suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("mode,n_cases", [("in_memory", 4), ("multi_processing", 3)])
@_SETTINGS
@given(data=st.data())
def test_fit_and_transform_equal_the_local_engine(tmp_path_factory, mode, n_cases, data):
    case_list = data.draw(st.lists(cases(), min_size=n_cases, max_size=n_cases))
    tmp = str(tmp_path_factory.mktemp("beam"))
    args = [f"--direct_running_mode={mode}"] + (["--direct_num_workers=2"] if mode != "in_memory" else [])
    _run_cases(case_list, args, tmp)
    for k, case in enumerate(case_list):
        _check_case(case, os.path.join(tmp, str(k)))


# ---------------------------------------------------------------------------------------------- files, dead letters
def _bad_csv(path: str, n: int = 300) -> dict:
    """A CSV with malformed lines (wrong field count) and values of the wrong type; returns what was planted."""
    rng = np.random.default_rng(3)
    lines, bad_lines = ["a,b,c,id"], 0
    for i in range(n):
        a, b, c = rng.normal(), rng.integers(0, 100), f"k{rng.integers(0, 4)}"
        if i % 37 == 5:
            lines.append(f"{a},{b},{c},{i},extra")  # wrong number of fields
            bad_lines += 1
        elif i % 41 == 7:
            lines.append(f"oops,{b},{c},{i}")  # not a number
        elif i % 43 == 9:
            lines.append(f"{a},{b}.5,{c},{i}")  # not an integer
        else:
            lines.append(f"{a},{b},{c},{i}")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return {"rows": n, "malformed": bad_lines}


_CSV_SCHEMA = pa.schema([("a", pa.float64()), ("b", pa.int64()), ("c", pa.string()), ("id", pa.int64())])


def _read_jsonl(path: str) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh]


def _dead_set(records: list[dict]) -> set:
    return {(r["row"], r["column"], r["reason"], json.dumps(r["record"], sort_keys=True)) for r in records}


def test_dead_letters_through_files_equal_the_local_engine(tmp_path):
    csv = str(tmp_path / "bad.csv")
    planted = _bad_csv(csv)
    pipe = bl.Pipeline([bl.StandardScaler(["a"]), bl.RobustScaler(["b"]), bl.OneHotEncoder(["c"])])
    local_dead = bl.DeadLetters()
    local = pipe.fit(csv, batch_size=50, errors=local_dead, schema=_CSV_SCHEMA)
    errs = str(tmp_path / "fit_errors.jsonl")
    fitted = run_fit(pipe, [csv], beam_args=[], batch_size=50, errors=errs, schema=_CSV_SCHEMA)
    beam_dead = _read_jsonl(errs)
    assert len(beam_dead) == fitted.lineage["dead_letters"] == local_dead.count > planted["malformed"]
    assert _dead_set(beam_dead) == _dead_set(local_dead.records)
    assert fitted.lineage["rows"] + fitted.lineage["dead_letters"] == planted["rows"]  # nothing is lost
    assert fitted.lineage["rows"] == local.lineage["rows"]
    assert {r["reason"].split(" ")[0] for r in beam_dead} >= {"expected", "cannot"}
    for g, w in zip(fitted.states, local.states):
        assert_state_equal(g, w)

    out, terrs = str(tmp_path / "out.parquet"), str(tmp_path / "tr_errors.jsonl")
    result = run_transform(fitted, [csv], out, beam_args=[], batch_size=50, errors=terrs)
    local_tdead = bl.DeadLetters()
    want = local.transform(csv, errors=local_tdead, batch_size=50)
    got = pq.read_table(out).sort_by("id")
    assert result == {"rows": want.num_rows, "dead_letters": local_tdead.count}
    assert _dead_set(_read_jsonl(terrs)) == _dead_set(local_tdead.records)
    assert_tables_equal(got, want.sort_by("id").replace_schema_metadata(None))


def test_raise_mode_names_the_bad_row(tmp_path):
    csv = str(tmp_path / "bad.csv")
    _bad_csv(csv, 40)
    with pytest.raises(DataError, match=r"bad\.csv.*row 5.*expected 4 fields"):
        run_fit(bl.Pipeline([bl.StandardScaler(["a"])]), [csv], beam_args=[], batch_size=16, errors=None,
                schema=_CSV_SCHEMA)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_write_formats_and_artifact_path(tmp_path, fmt):
    table = _table({"rows": 120, "seed": 4})
    src = str(tmp_path / "in.parquet")
    pq.write_table(table, src)
    fitted = bl.Pipeline([bl.StandardScaler(["num0"]), bl.OneHotEncoder(["cat0"])]).fit(table)
    model = fitted.save(str(tmp_path / "model.bl"))
    out = str(tmp_path / f"out.{fmt}")
    result = run_transform(model, [src], out, beam_args=[], batch_size=32, errors=None)
    assert result["rows"] == 120
    back = bl.io.read(out, schema=fitted.transform(table).schema)
    got = pa.Table.from_batches(list(back)).sort_by("id")
    assert_tables_equal(got, fitted.transform(table).replace_schema_metadata(None))


def _write_count(n: int, d: str) -> None:
    with open(os.path.join(d, "count.txt"), "w") as fh:
        fh.write(str(n))


def test_dict_rows_and_schema_from_provenance(tmp_path):
    """Dict rows are batched for you; the in-graph schema of tagged batches is the first batch's."""
    table = _table({"rows": 200, "seed": 5})
    rows = table.to_pylist()
    pipe = bl.Pipeline([bl.SimpleImputer(["num0"]), bl.StandardScaler(["num0"]), bl.OrdinalEncoder(["cat0"])])
    d = str(tmp_path)
    with beam.Pipeline(options=PipelineOptions(["--direct_running_mode=in_memory"])) as p:
        data = p | beam.Create(rows)
        fitted = data | Fit(pipe)
        fitted | "SaveFit" >> beam.ParDo(_Save(d))
        data | Transform(fitted) | unbatch() | beam.combiners.Count.Globally() | beam.Map(_write_count, d)
    local = pipe.fit(table)
    (fit_file,) = glob.glob(os.path.join(d, "*.bl"))
    got = bl.load(fit_file)
    assert got.input_schema == local.input_schema
    for g, w in zip(got.states, local.states):
        assert_state_equal(g, w)
    with open(os.path.join(d, "count.txt")) as fh:
        assert fh.read() == "200"


def test_dask_runner_is_refused():
    for name in ["DaskRunner", "dask", "apache_beam.runners.dask.dask_runner.DaskRunner"]:
        with pytest.raises(EngineError, match="silently wrong"):
            check_runner(name)
    with pytest.raises(EngineError, match="DaskRunner is not supported"):
        run_fit(bl.Pipeline([bl.StandardScaler(["a"])]), ["nothing.csv"], beam_args=["--runner=DaskRunner"],
                batch_size=10, errors=None)


def test_pass_bound_covers_the_plan():
    imp, sc = bl.SimpleImputer(["a"], strategy="median"), bl.StandardScaler(["a"])
    assert pass_bound([imp, sc]) == 4  # two passes of exact median, then the scaler, plus one of slack
    assert pass_bound([bl.StandardScaler(["a"]), bl.MinMaxScaler(["b"])]) == 1  # one fused pass, no slack
    assert pass_bound([bl.OneHotEncoder(["c"]), bl.StandardScaler(["c_x"])]) == 2  # reads an output
    schema = pa.schema([("c", pa.string()), ("c_x", pa.float64())])
    assert pass_bound([bl.OneHotEncoder(["c"]), bl.StandardScaler(["c_x"])], schema) == 1


def test_too_few_passes_fail_clearly(tmp_path):
    csv = str(tmp_path / "bad.csv")
    _bad_csv(csv, 30)
    pipe = bl.Pipeline([bl.StandardScaler(["a"]), bl.MinMaxScaler(["a"])])
    with pytest.raises(EngineError, match="not done after 1 passes"), beam.Pipeline() as p:
        batches, _ = p | ReadFiles(csv, schema=_CSV_SCHEMA).with_errors()
        batches | Fit(pipe, max_passes=1)


def test_missing_column_is_a_schema_error(tmp_path):
    csv = str(tmp_path / "bad.csv")
    _bad_csv(csv, 30)
    with pytest.raises(SchemaError, match="'nope'"):
        run_fit(bl.Pipeline([bl.StandardScaler(["nope"])]), [csv], beam_args=[], batch_size=10, errors=None)


def test_one_job_per_pass_equals_the_local_engine(tmp_path):
    csv = str(tmp_path / "bad.csv")
    planted = _bad_csv(csv, 200)
    pipe = bl.Pipeline([bl.SimpleImputer(["a"], strategy="median"), bl.StandardScaler(["a"]),
                        bl.KBinsDiscretizer(["b"], n_bins=3, encode="ordinal")])
    local_dead = bl.DeadLetters()
    local = pipe.fit(csv, batch_size=32, errors=local_dead, schema=_CSV_SCHEMA)
    errs = str(tmp_path / "errors.jsonl")
    fitted = run_fit(pipe, [csv], beam_args=[], batch_size=32, errors=errs, schema=_CSV_SCHEMA, jobs="per_pass")
    assert fitted.lineage["beam_jobs"] == "per_pass"
    assert fitted.lineage["passes"] == local.lineage["passes"] == 3
    assert fitted.lineage["rows"] + fitted.lineage["dead_letters"] == planted["rows"]
    assert _dead_set(_read_jsonl(errs)) == _dead_set(local_dead.records)
    for g, w in zip(fitted.states, local.states):
        assert_state_equal(g, w)


def test_states_between_per_pass_jobs_are_signed(tmp_path):
    import pickle

    from beamlearn.engines.beam_jobs import Save as _Save
    from beamlearn.engines.beam_jobs import load_saved as _load
    from beamlearn.errors import EngineError

    good, bad = str(tmp_path / "good.bin"), str(tmp_path / "bad.bin")
    list(_Save(good).process({"states": [1, 2.5]}) or [])
    assert _load(good) == {"states": [1, 2.5]}
    list(_Save(bad).process({"states": [1]}) or [])
    with open(bad, "rb") as fh:
        mac = fh.read(32)
    with open(bad, "wb") as fh:  # someone swaps the pickle on the temp location, keeping the old signature
        fh.write(mac + pickle.dumps({"states": ["evil"]}))
    with pytest.raises(EngineError, match="signature"):
        _load(bad)


def test_registry_ships_only_what_the_steps_use_and_tolerates_unimportable_items(monkeypatch):
    import beamlearn as bl
    from beamlearn.engines.passes import Registry as _Registry
    from beamlearn.steps import expr

    monkeypatch.setattr(expr, "_FUNCTIONS", dict(expr._FUNCTIONS))
    bl.register_function("reg_used")(lambda x: x + 1)
    bl.register_function("reg_unused")(lambda x: x - 1)
    reg = _Registry([bl.Function(["x"], func="reg_used"), bl.StandardScaler(["x"])])
    assert set(reg.functions) == {"reg_used"} and reg.steps == {}
    reg.functions["reg_broken"] = b"not a pickle"  # e.g. a function from a module only the driver can import
    del expr._FUNCTIONS["reg_used"]
    reg.restore()  # skips what it cannot load, registers the rest
    assert "reg_used" in expr._FUNCTIONS and "reg_broken" not in expr._FUNCTIONS
