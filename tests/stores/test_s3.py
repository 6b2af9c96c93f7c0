"""Files on an object store: a real S3 API (moto's server on 127.0.0.1), read and written through the same paths
the local tests use: globs, directories, text and Parquet, artifacts, the CLI and the Beam engine."""

from __future__ import annotations

import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import beamlearn as bl
from beamlearn import io, stores
from beamlearn.cli import main
from beamlearn.errors import ArtifactError, DataError
from beamlearn.spec import read_spec

SPEC = """\
name: s3
steps:
  - step: SimpleImputer
    columns: [y]
  - step: StandardScaler
    columns: [x, y]
  - step: OneHotEncoder
    columns: [k]
"""


def _table(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    return pa.table({"x": rng.normal(3, 2, n), "y": pa.array(y, mask=rng.random(n) < 0.1),
                     "k": pa.array(rng.choice(["a", "b", "c"], n))})


@pytest.fixture(scope="module")
def bucket(s3, tmp_path_factory):
    """A bucket holding three Parquet parts, two CSV files (one with a bad value) and the same parts locally."""
    fs = pafs.S3FileSystem(endpoint_override=s3.removeprefix("http://"), scheme="http",
                           allow_bucket_creation=True)
    fs.create_dir("bkt")
    local = tmp_path_factory.mktemp("local")
    for i in range(3):
        t = _table(2000 + 500 * i, i)
        pq.write_table(t, local / f"part-{i}.parquet", row_group_size=700)
        with fs.open_output_stream(f"bkt/parts/part-{i}.parquet") as fh:
            pq.write_table(t, fh, row_group_size=700)
    with fs.open_output_stream("bkt/parts/_SUCCESS") as fh:  # skipped in a directory listing
        fh.write(b"")
    with fs.open_output_stream("bkt/text/a.csv") as fh:
        fh.write(b"x,y,k\n1.0,2.0,a\n2.0,oops,b\n3.0,,c\n")
    with fs.open_output_stream("bkt/text/b.jsonl") as fh:
        fh.write(b'{"x": 4.0, "y": 1.5, "k": "a"}\n')
    return local


def _rows(batches) -> pa.Table:
    return pa.Table.from_batches([b.replace_schema_metadata(None) for b in batches])


def test_glob_and_directory_read_like_local_files(bucket):
    local = _rows(io.read(str(bucket / "part-*.parquet"), batch_size=512))
    for uri in ["s3://bkt/parts/part-*.parquet", "s3://bkt/parts/", "s3://bkt/**/part-?.parquet"]:
        assert io.expand_paths(uri) == [f"s3://bkt/parts/part-{i}.parquet" for i in range(3)], uri
        batches = list(io.read(uri, batch_size=512))
        assert max(b.num_rows for b in batches) <= 512
        assert _rows(batches).equals(local), uri
    assert io.file_format("s3://bkt/parts/part-0.parquet") == "parquet"


def test_text_on_s3_names_the_object_in_dead_letters(bucket):
    dead = io.DeadLetters()
    schema = pa.schema({"x": pa.float64(), "y": pa.float64(), "k": pa.string()})
    got = _rows(io.read(["s3://bkt/text/a.csv", "s3://bkt/text/b.jsonl"], schema=schema, dead=dead))
    assert got.column("x").to_pylist() == [1.0, 3.0, 4.0]
    assert [(r["source"], r["row"], r["column"]) for r in dead.records] == [("s3://bkt/text/a.csv", 1, "y")]
    with pytest.raises(DataError, match=r"s3://bkt/text/a\.csv.*row 1"):
        list(io.read("s3://bkt/text/a.csv", schema=schema))


def test_million_row_parquet_read(s3, bucket):
    n = 1_000_000
    rng = np.random.default_rng(7)
    table = pa.table({"id": np.arange(n), "v": rng.normal(size=n)})
    stores.write_bytes("s3://bkt/big/one.parquet", b"")  # overwritten below: an object is replaced whole
    io.write_batches(table.to_batches(max_chunksize=100_000), "s3://bkt/big/one.parquet")
    t0 = time.perf_counter()
    rows = total = 0
    ids = 0
    for b in io.read("s3://bkt/big/one.parquet", batch_size=65_536):
        rows += b.num_rows
        total += float(np.sum(b.column("v").to_numpy()))
        ids += int(np.sum(b.column("id").to_numpy()))
    seconds = time.perf_counter() - t0
    assert rows == n and ids == n * (n - 1) // 2
    assert total == pytest.approx(float(np.sum(table.column("v").to_numpy())), rel=1e-9)
    assert seconds < 120, seconds  # a hang guard, not a benchmark (benchmarks/bench_io.py measures)


def test_fit_from_s3_equals_fit_from_local_and_artifacts_live_there(bucket):
    spec = read_spec(SPEC)
    local = spec.fit(str(bucket / "part-*.parquet"))
    remote = spec.fit("s3://bkt/parts/*.parquet")
    expect = local.transform(str(bucket / "part-*.parquet"))
    assert remote.transform("s3://bkt/parts/").equals(expect)
    assert remote.lineage["data"]["files"][0]["path"] == "s3://bkt/parts/part-0.parquet"
    assert remote.lineage["data"]["files"][0]["bytes"] > 0
    remote.save("s3://bkt/models/m.bl")
    assert stores.exists("s3://bkt/models/m.bl")
    assert bl.load("s3://bkt/models/m.bl").transform(str(bucket / "part-0.parquet")).equals(
        local.transform(str(bucket / "part-0.parquet")))
    with pytest.raises(ArtifactError, match=r"s3://bkt/models/missing\.bl: no such object"):
        bl.load("s3://bkt/models/missing.bl")
    with pytest.raises(ArtifactError, match=r"s3://no-such-bucket/m\.bl: no such bucket"):
        remote.save("s3://no-such-bucket/m.bl")


def test_missing_bucket_or_key_is_one_clear_error(bucket):
    with pytest.raises(DataError, match=r"no such file: 's3://bkt/parts/none\.parquet'"):
        io.expand_paths("s3://bkt/parts/none.parquet")
    with pytest.raises(DataError, match=r"no file matches 's3://bkt/nothing/\*\.csv'"):
        io.expand_paths("s3://bkt/nothing/*.csv")
    with pytest.raises(DataError, match=r"no such file: 's3://absent-bucket/x\.csv' \(no such bucket\)"):
        io.expand_paths("s3://absent-bucket/x.csv")
    with pytest.raises(DataError, match=r"no file matches 's3://absent-bucket/\*\.csv' \(no such bucket\)"):
        io.expand_paths("s3://absent-bucket/*.csv")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_fit_and_transform_to_s3_and_errors_never_show_secrets(bucket, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(SPEC)
    stores.write_bytes("s3://bkt/specs/spec.yaml", SPEC.encode())
    code, out, err = run(capsys, "fit", "s3://bkt/specs/spec.yaml", "--data", "s3://bkt/parts/*.parquet",
                         "--out", "s3://bkt/models/cli.bl", "-q")
    assert code == 0, err
    code, out, err = run(capsys, "transform", "s3://bkt/models/cli.bl", "--data", "s3://bkt/parts/",
                         "--out", "s3://bkt/out/pred.parquet", "-q")
    assert code == 0, err
    got = _rows(io.read("s3://bkt/out/pred.parquet"))
    assert got.equals(read_spec(SPEC).fit(str(bucket / "part-*.parquet")).transform(
        str(bucket / "part-*.parquet")))
    code, out, err = run(capsys, "inspect", "s3://bkt/models/cli.bl", "--json")
    assert code == 0 and json.loads(out)["lineage"]["data"]["files"][2]["name"] == "part-2.parquet"
    secret = "testing-secret-key"
    for argv in (["fit", "spec.yaml", "--data", "s3://bkt/none/*.parquet", "--out", "m.bl"],
                 ["fit", "spec.yaml", "--data", "s3://absent-bucket/x.parquet", "--out", "m.bl"],
                 ["fit", "spec.yaml", "--data", "s3://bkt/parts/", "--out", "s3://absent-bucket/m.bl"],
                 ["transform", "s3://bkt/models/cli.bl", "--data", "s3://bkt/parts/", "--out",
                  f"s3://absent-bucket/{secret}/p.parquet"]):
        code, out, err = run(capsys, *argv)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv, err)
        assert "absent-bucket" in err or "s3://bkt/none" in err, err
        assert secret not in err + out, err


def test_beam_reads_s3_like_local_and_writes_there(bucket):
    from beamlearn.beam import run_fit, run_transform

    pipe = read_spec(SPEC).pipeline
    local = pipe.fit(str(bucket / "part-*.parquet"))
    fitted = run_fit(pipe, ["s3://bkt/parts/*.parquet"], beam_args=[], batch_size=1000)
    data = str(bucket / "part-1.parquet")
    a, b = fitted.transform(data), local.transform(data)
    assert a.column_names == b.column_names
    for name in a.column_names:
        np.testing.assert_allclose(a.column(name).to_numpy(), b.column(name).to_numpy(), rtol=1e-9, atol=1e-12)
    # Beam writes through its own FileSystems (boto3 for s3://, which reads AWS_ENDPOINT_URL too)
    assert run_transform(local, ["s3://bkt/parts/"], "s3://bkt/beam/pred.parquet", beam_args=[])["rows"] == 7500
    got = _rows(io.read("s3://bkt/beam/pred.parquet"))
    assert got.sort_by("x").equals(local.transform(str(bucket / "part-*.parquet")).sort_by("x"))


def test_redact_masks_passwords_and_secret_parameters(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI")
    assert stores.redact("s3://bkt/wJalrXUtnFEMI/x") == "s3://bkt/***/x"
    assert stores.redact("az://acct/c/x.parquet?sig=abc&sv=1") == "az://acct/c/x.parquet?sig=***&sv=1"
    assert stores.redact("postgresql://u:p%40ss@h/db?table=t") == "postgresql://u:***@h/db?table=t"
    assert stores.redact("postgresql://u@h/db?password=x&table=t") == "postgresql://u@h/db?password=***&table=t"


def test_other_schemes_go_through_fsspec_and_unknown_ones_fail_clearly(tmp_path):
    pytest.importorskip("fsspec")
    io.write_batches([pa.record_batch({"a": [1, 2, 3]})], "memory://bk/d/x.parquet")
    io.write_batches([pa.record_batch({"a": [4]})], "memory://bk/d/y.csv")
    assert io.expand_paths("memory://bk/d/*") == io.expand_paths("memory://bk/d/") == [
        "memory://bk/d/x.parquet", "memory://bk/d/y.csv"]
    assert _rows(io.read("memory://bk/d/")).column("a").to_pylist() == [1, 2, 3, 4]
    with pytest.raises(DataError, match=r"no filesystem for nosuch://"):
        io.expand_paths("nosuch://host/x.csv")


def test_a_write_that_fails_midway_leaves_no_object(bucket):
    io.write_batches([pa.record_batch({"a": [1]})], "s3://bkt/atomic/out.parquet")

    def failing():
        yield pa.record_batch({"a": [1, 2]})
        raise DataError("the source broke midway")

    for target in ["s3://bkt/atomic/out.parquet", "s3://bkt/atomic/new.csv"]:
        with pytest.raises(DataError, match="broke midway"):
            io.write_batches(failing(), target)
    assert io.expand_paths("s3://bkt/atomic/") == ["s3://bkt/atomic/out.parquet"]
    assert _rows(io.read("s3://bkt/atomic/out.parquet")).column("a").to_pylist() == [1]  # the old one, whole


RUN_SPEC = """\
name: s3-run
data: s3://bkt/parts/*.parquet
split: {by: hash, test_fraction: 0.25, seed: 1}
steps:
  - step: SimpleImputer
    columns: [y]
model: {step: LinearRegression, features: [x], label: y}
evaluate: {require: ["r2>=-10"]}
output: s3://bkt/runs/r1/
"""


def test_reports_and_run_outputs_go_to_the_store(bucket, tmp_path, monkeypatch, capsys):
    """Every folder of reports takes a store URI: its files become objects there (no local folder named
    ``s3:``); outputs written in place as they grow (a checkpoint, a dead-letter file) say they must be local."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "profile", "s3://bkt/parts/", "--report", "s3://bkt/rep/")
    assert code == 0, err
    assert "s3://bkt/rep/profile.json" in out and "s3://bkt/rep/report.html" in out
    assert json.loads(stores.read_bytes("s3://bkt/rep/profile.json"))["rows"] == 2000 + 2500 + 3000
    assert b"<html" in stores.read_bytes("s3://bkt/rep/report.html")[:200].lower()
    code, out, err = run(capsys, "drift", "s3://bkt/rep/profile.json", "--data", "s3://bkt/parts/part-0.parquet",
                         "--report", "s3://bkt/drift/")
    assert code in (0, 1), err
    assert json.loads(stores.read_bytes("s3://bkt/drift/drift.json"))["compared"] == 3
    code, out, err = run(capsys, "schema", "infer", "s3://bkt/parts/")
    assert code == 0, err
    stores.write_bytes("s3://bkt/schema.yaml", out.encode())
    code, out, err = run(capsys, "validate", "s3://bkt/parts/", "--schema", "s3://bkt/schema.yaml", "--report",
                         "s3://bkt/val/")
    assert code == 0, err + out
    assert json.loads(stores.read_bytes("s3://bkt/val/validation.json"))["passed"]
    (tmp_path / "run.yaml").write_text(RUN_SPEC)
    code, out, err = run(capsys, "run", "run.yaml")
    assert code == 0, err
    assert sorted(stores.expand("s3://bkt/runs/r1/*", ())) == [
        "s3://bkt/runs/r1/metrics.json", "s3://bkt/runs/r1/model.blm", "s3://bkt/runs/r1/report.html"]
    model = bl.load("s3://bkt/runs/r1/model.blm")
    assert model.lineage["run"]["rows_train"] + model.lineage["run"]["rows_test"] == 7500
    code, out, err = run(capsys, "drift", "s3://bkt/runs/r1/model.blm", "--data", "s3://bkt/parts/part-1.parquet")
    assert code in (0, 1) and "Traceback" not in err, err
    assert not (tmp_path / "s3:").exists()
    for argv in (["--watch", str(tmp_path), "--out", "s3://bkt/follow/"],
                 ["--out", "s3://bkt/follow/", "--errors", "s3://bkt/dead.jsonl"],
                 ["--out", "s3://bkt/one.jsonl"]):
        code, out, err = run(capsys, "transform", "s3://bkt/runs/r1/model.blm", "--follow", *argv)
        assert code == 2 and "must be a local path" in err and "Traceback" not in err, (argv, err)


def test_follow_rolls_files_into_the_store(bucket):
    from beamlearn.follow_sinks import RolledFiles

    sink = RolledFiles("s3://bkt/rolled/", "parquet", roll_rows=1000, prefix="p")
    staging = sink.folder
    t = _table(2500, 7)
    for b in t.to_batches(max_chunksize=600):
        sink.write(b)
    sink.close()
    names = sorted(stores.expand("s3://bkt/rolled/", (".parquet",)))
    assert names == [f"s3://bkt/rolled/p-0000{i}.parquet" for i in range(3)]
    got = pa.Table.from_batches([b.replace_schema_metadata(None) for b in io.read(names)])
    assert got.equals(t.replace_schema_metadata(None)) and not __import__("os").path.exists(staging)
