"""The command line: fit / transform / inspect round trips, error handling (exit 2, one line), dead letters,
and the Beam pass-through of unknown options."""

from __future__ import annotations

import json
import sys
import types

import pyarrow as pa
import pyarrow.csv  # noqa: F401 - pa.csv
import pyarrow.parquet as pq
import pytest

import beamlearn as bl
from beamlearn.cli import _spread_data, main
from beamlearn.spec import spec_hash

SPEC = """\
name: tiny
steps:
  - step: StandardScaler
    columns: [x, y]
"""


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(SPEC)
    (tmp_path / "good.csv").write_text("x,y,label\n1.0,2,a\n2.0,3,b\n3.5,,a\n4.0,5,c\n")
    (tmp_path / "more.csv").write_text("x,y,label\n5.0,1,a\n6.0,2,b\n")
    (tmp_path / "oops.csv").write_text("x,y,label\n1.0,2,a\n2.0,oops,b\n3.5,,a\n")
    (tmp_path / "bad.csv").write_text("x,y,label\n1.0,2,a\n2.0,oops,b\n3.5,,a\nnan?,4,c\n")
    return tmp_path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("beamlearn: error: ")
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"beamlearn {bl.__version__}"


def test_fit_transform_inspect_round_trip(files, capsys):
    code, out, err = run(capsys, "fit", "spec.yaml", "--data", "good.csv", "more.csv", "--out", "m.blm")
    assert code == 0, err
    assert "6 rows read, 0 dead letters" in out and "-> m.blm" in out and "rows/s" in out
    fitted = bl.load("m.blm")
    assert fitted.lineage["spec_sha256"] == spec_hash("spec.yaml")
    assert fitted.lineage["spec_name"] == fitted.name == "tiny"
    assert fitted.lineage["rows"] == 6

    code, out, err = run(capsys, "transform", "m.blm", "--data", "good.csv", "--out", "t.parquet")
    assert code == 0, err
    assert "4 rows read, 4 written, 0 dead letters" in out
    got = pq.read_table("t.parquet")
    want = fitted.transform("good.csv")
    assert got.equals(want.replace_schema_metadata(None))
    x = [1.0, 2.0, 3.5, 4.0, 5.0, 6.0]
    mean = sum(x) / 6
    std = (sum((v - mean) ** 2 for v in x) / 6) ** 0.5
    assert got.column("x").to_pylist() == pytest.approx([(v - mean) / std for v in x[:4]])

    for ext in ("csv", "jsonl"):
        code, _, err = run(capsys, "transform", "m.blm", "--data", "good.csv", "--out", f"t.{ext}")
        assert code == 0, err
        again = pa.Table.from_batches(list(bl.io.read(f"t.{ext}")))
        assert again.column("x").to_pylist() == pytest.approx(got.column("x").to_pylist())

    code, out, err = run(capsys, "inspect", "m.blm")
    assert code == 0, err
    assert "StandardScaler" in out and "mean" in out and "scale" in out and "tiny" in out
    assert "3.58333" in out  # the fitted mean of x, readable
    assert "good.csv" in out and "6 rows" in out


def test_inspect_json_parses_and_holds_the_statistics(files, capsys):
    assert run(capsys, "fit", "spec.yaml", "--data", "good.csv", "--out", "m.blm")[0] == 0
    code, out, err = run(capsys, "inspect", "m.blm", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["name"] == "tiny"
    assert doc["steps"][0]["step"] == "StandardScaler"
    assert doc["steps"][0]["fitted"]["x"]["mean"] == pytest.approx(2.625)
    assert [f["name"] for f in doc["input_schema"]] == ["x", "y", "label"]
    assert {f["name"]: f["type"] for f in doc["output_schema"]}["y"] == "double"
    assert doc["lineage"]["spec_sha256"] == spec_hash("spec.yaml")
    assert doc["lineage"]["rows"] == 4


def test_missing_files_exit_2_with_one_line(files, capsys):
    assert_one_line_error(*run(capsys, "fit", "spec.yaml", "--data", "nope.csv", "--out", "m.blm")[::2],
                          "no such file", "nope.csv")
    assert_one_line_error(*run(capsys, "fit", "nope.yaml", "--data", "good.csv", "--out", "m.blm")[::2],
                          "no such spec file", "nope.yaml")
    assert_one_line_error(*run(capsys, "transform", "nope.blm", "--data", "good.csv", "--out", "o.csv")[::2],
                          "nope.blm")
    assert_one_line_error(*run(capsys, "inspect", "nope.blm")[::2], "nope.blm")
    assert not (files / "m.blm").exists()


def test_bad_spec_exits_2_with_the_suggestion(files, capsys):
    (files / "typo.yaml").write_text(SPEC.replace("columns", "colums"))
    assert_one_line_error(*run(capsys, "fit", "typo.yaml", "--data", "good.csv", "--out", "m.blm")[::2],
                          "typo.yaml, line 4", "steps[0] (StandardScaler)", "did you mean 'columns'?")
    (files / "broken.yaml").write_text("steps:\n  - step: StandardScaler\n    columns: [x, y\n")
    assert_one_line_error(*run(capsys, "fit", "broken.yaml", "--data", "good.csv", "--out", "m.blm")[::2],
                          "broken.yaml, line 4", "invalid YAML")


def test_bad_value_in_csv_names_file_row_and_column(files, capsys):
    assert run(capsys, "fit", "spec.yaml", "--data", "good.csv", "--out", "m.blm")[0] == 0
    code, _, err = run(capsys, "transform", "m.blm", "--data", "good.csv", "oops.csv", "--out", "o.parquet")
    assert_one_line_error(code, err, "oops.csv", "row 1 (line 3)", "column 'y'", "'oops'")
    assert not (files / "o.parquet").exists()  # nothing half-written
    # at fit, a spec schema fixes the type, so the bad value is found rather than turning y into text
    (files / "typed.yaml").write_text("schema: {y: int64}\n" + SPEC)
    code, _, err = run(capsys, "fit", "typed.yaml", "--data", "oops.csv", "--out", "m2.blm")
    assert_one_line_error(code, err, "oops.csv", "row 1 (line 3)", "column 'y'")


def test_dead_letters_are_written_and_counted(files, capsys):
    assert run(capsys, "fit", "spec.yaml", "--data", "good.csv", "--out", "m.blm")[0] == 0
    code, out, err = run(capsys, "transform", "m.blm", "--data", "good.csv", "bad.csv", "--out", "o.parquet",
                         "--errors", "dead.jsonl")
    assert code == 0, err
    dead = [json.loads(line) for line in (files / "dead.jsonl").read_text().splitlines()]
    written = pq.read_table("o.parquet").num_rows
    assert len(dead) == 2 and written == 6
    assert f"8 rows read, {written} written, {len(dead)} dead letters" in out
    assert {(d["source"], d["row"], d["column"]) for d in dead} == {("bad.csv", 1, "y"), ("bad.csv", 3, "x")}
    assert all("cannot cast" in d["reason"] for d in dead)

    (files / "typed.yaml").write_text("schema: {x: double, y: int64}\n" + SPEC)
    code, out, err = run(capsys, "fit", "typed.yaml", "--data", "good.csv", "bad.csv", "--out", "m2.blm",
                         "--errors", "fit_dead.jsonl")
    assert code == 0, err
    n_dead = len((files / "fit_dead.jsonl").read_text().splitlines())
    assert n_dead == 2 and "8 rows read, 2 dead letters" in out
    assert bl.load("m2.blm").lineage["rows"] == 6


def test_quiet_and_progress(files, capsys, monkeypatch):
    code, out, err = run(capsys, "fit", "spec.yaml", "--data", "good.csv", "--out", "m.blm", "--quiet")
    assert code == 0 and out == "" and err == ""
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich treats stderr as a terminal: the progress bar runs
    code, out, err = run(capsys, "fit", "spec.yaml", "--data", "good.csv", "--out", "m.blm", "--batch-size", "2")
    assert code == 0, err
    assert "4 rows read" in out


def test_unknown_option_is_a_usage_error_with_the_local_engine(files, capsys):
    code, _, err = run(capsys, "fit", "spec.yaml", "--data", "good.csv", "--out", "m.blm", "--runner=Direct")
    assert_one_line_error(code, err, "no such option: --runner", "--engine beam")
    code, _, err = run(capsys, "fit", "spec.yaml", "--data", "good.csv", "--ouy", "m.blm")
    assert code == 2 and "Traceback" not in err


def test_beam_engine_receives_unknown_options(files, capsys, monkeypatch):
    calls = {}
    fake = types.ModuleType("beamlearn.engines.beam")

    def run_fit(pipeline, paths, *, beam_args, batch_size, errors, schema=None, lineage=None):
        calls["fit"] = {"paths": paths, "beam_args": beam_args, "batch_size": batch_size, "errors": errors,
                        "schema": schema, "lineage": lineage}
        return pipeline.fit(paths, lineage=lineage)

    def run_transform(fitted, paths, out, *, beam_args, batch_size, errors):
        calls["transform"] = {"paths": paths, "out": out, "beam_args": beam_args, "batch_size": batch_size}
        return {"rows": 4, "dead_letters": 0}

    fake.run_fit, fake.run_transform = run_fit, run_transform
    monkeypatch.setitem(sys.modules, "beamlearn.beam", fake)
    monkeypatch.setattr(bl, "beam", fake, raising=False)
    code, out, err = run(capsys, "fit", "spec.yaml", "--engine", "beam", "--data", "good.csv", "more.csv",
                         "--out", "m.blm", "--runner=DirectRunner", "--direct_num_workers", "2",
                         "--batch-size", "7", "--errors", "d.jsonl")
    assert code == 0, err
    assert calls["fit"]["beam_args"] == ["--runner=DirectRunner", "--direct_num_workers", "2"]
    assert calls["fit"]["paths"] == ["good.csv", "more.csv"]
    assert calls["fit"]["batch_size"] == 7 and calls["fit"]["errors"] == "d.jsonl"
    assert calls["fit"]["lineage"]["spec_sha256"] == spec_hash("spec.yaml")
    assert "6 rows read" in out
    code, out, err = run(capsys, "transform", "m.blm", "--data", "good.csv", "--out", "o.parquet",
                         "--engine=beam", "--project", "p1")
    assert code == 0, err
    assert calls["transform"]["beam_args"] == ["--project", "p1"]
    assert "4 rows read, 4 written" in out


def test_spread_data():
    assert _spread_data(["fit", "s.yaml", "--data", "a", "b", "--out", "m"]) == [
        "fit", "s.yaml", "--data", "a", "--data", "b", "--out", "m"]
    assert _spread_data(["fit", "s", "--data=a", "b", "--x", "c"]) == ["fit", "s", "--data=a", "--data", "b",
                                                                     "--x", "c"]
    assert _spread_data(["inspect", "m", "--json"]) == ["inspect", "m", "--json"]


def test_console_script_exit_code_and_one_line(files):
    import os
    import subprocess

    script = os.path.join(os.path.dirname(sys.executable), "beamlearn")
    cmd = [script] if os.path.exists(script) else [sys.executable, "-m", "beamlearn.cli"]
    proc = subprocess.run([*cmd, "fit", "spec.yaml", "--data", "nope.csv", "--out", "m.blm"],
                          check=False, capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc.returncode, proc.stderr, "no such file: 'nope.csv'")


def test_import_registers_custom_functions_before_fit_and_load(tmp_path, capsys, monkeypatch):
    (tmp_path / "cli_custom_fn_mod.py").write_text(
        "import beamlearn as bl\n\n@bl.register_function('cli_triple')\ndef cli_triple(x):\n    return x * 3\n")
    (tmp_path / "spec.yaml").write_text("steps:\n  - step: Function\n    columns: [x]\n    func: cli_triple\n")
    (tmp_path / "d.csv").write_text("x,y\n1,a\n2,b\n")
    from beamlearn.steps import expr

    monkeypatch.setattr(expr, "_FUNCTIONS", dict(expr._FUNCTIONS))  # the registration ends with this test
    monkeypatch.syspath_prepend(str(tmp_path))
    spec, data, model, out = (str(tmp_path / n) for n in ("spec.yaml", "d.csv", "m.blm", "o.csv"))
    assert main(["fit", spec, "--data", data, "--out", model, "-q"]) == 2  # not registered yet: a clear error
    assert "cli_triple" in capsys.readouterr().err
    assert main(["--import", "cli_custom_fn_mod", "fit", spec, "--data", data, "--out", model, "-q"]) == 0
    assert main(["--import", "cli_custom_fn_mod", "transform", model, "--data", data, "--out", out, "-q"]) == 0
    assert pa.csv.read_csv(out).column("x").to_pylist() == [3.0, 6.0]
    assert main(["--import", "no_such_module_xyz", "inspect", model]) == 2
    assert "no_such_module_xyz" in capsys.readouterr().err
