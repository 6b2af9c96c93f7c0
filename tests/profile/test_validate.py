"""Schema inference and validation: every anomaly kind with its count and example rows, exit codes (0 clean,
1 anomalies, 2 mistakes), local == Beam, and a run spec's validate: section stopping a run before training."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from beamlearn.cli import main
from beamlearn.profile import profile
from beamlearn.profile.validate import infer_schema, validate


def good(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 10, n)
    return pa.table({"id": np.arange(n), "x": pa.array(x, mask=rng.random(n) < 0.1),
                     "c": rng.choice(["a", "b", "c"], n), "flag": rng.random(n) < 0.5})


@pytest.fixture(scope="module")
def schema() -> dict:
    return infer_schema(profile(good(2_000)))


def test_inferred_schema(schema) -> None:
    cols = schema["columns"]
    assert cols["c"]["domain"] == ["a", "b", "c"] and cols["flag"]["domain"] == ["false", "true"]
    assert cols["id"] == {"type": "int64", "max_null_fraction": 0.0, "min": 0.0, "max": 1999.0}
    assert 0.1 < cols["x"]["max_null_fraction"] < 0.13 and cols["x"]["min"] >= 0 and cols["x"]["max"] <= 10
    assert "domain" not in cols["x"]
    big = infer_schema(profile({"s": [f"v{i}" for i in range(300)]}))
    assert "domain" not in big["columns"]["s"]  # more values than max_domain


def test_clean_data_passes(schema) -> None:
    r = validate(good(1_000, seed=1), schema)
    assert r["passed"] and r["anomalies"] == [] and r["rows"] == 1_000


def test_every_anomaly_with_counts_and_example_rows(schema) -> None:
    t = good(1_000, seed=2)
    x = t.column("x").to_numpy(zero_copy_only=False).copy()
    x[[5, 17, 900]] = [-1.0, 11.0, 50.0]
    c = np.array(t.column("c").to_pylist(), dtype=object)
    c[[3, 4, 600]] = ["zzz", "zzz", "q"]
    nulls = np.zeros(1_000, bool)
    nulls[100:400] = True  # 30% + 10% missing > the inferred ~11%
    bad = pa.table({"id": pa.array(np.arange(1_000).astype(float)),  # type change: int64 -> double
                    "x": pa.array(x, mask=nulls | np.isnan(x)), "c": pa.array(c.tolist()),
                    "extra": np.zeros(1_000)})  # flag missing, extra added
    sch = json.loads(json.dumps(schema))
    sch["columns"]["c"]["distinct"] = {"min": 10}
    r = validate(bad, sch)
    got = {(a["column"], a["kind"]): a for a in r["anomalies"]}
    assert set(got) == {("id", "type_change"), ("x", "null_rate"), ("x", "out_of_range"), ("c", "out_of_domain"),
                        ("c", "distinct_count"), ("flag", "missing_column"), ("extra", "extra_column")}
    rng = got[("x", "out_of_range")]
    assert rng["count"] == 3 and [(e["row"], e["value"]) for e in rng["examples"]] == [(5, -1.0), (17, 11.0),
                                                                                      (900, 50.0)]
    dom = got[("c", "out_of_domain")]
    assert dom["count"] == 3 and [e["row"] for e in dom["examples"]] == [3, 4, 600] and "'zzz' (2)" in dom["description"]
    nr = got[("x", "null_rate")]
    assert nr["count"] == int((nulls | np.isnan(x)).sum()) and len(nr["examples"]) == 5
    assert not r["passed"]


def test_examples_are_the_first_rows_whatever_the_batches(schema) -> None:
    t = good(5_000, seed=3)
    c = np.array(t.column("c").to_pylist(), dtype=object)
    c[[4_999, 7, 2_500, 1_000, 3, 4_000, 12]] = "new"
    t = t.set_column(2, "c", pa.array(c.tolist()))
    for size in (100, 777, 5_000):
        r = validate(t, schema, batch_size=size)
        dom = next(a for a in r["anomalies"] if a["kind"] == "out_of_domain")
        assert dom["count"] == 7 and [e["row"] for e in dom["examples"]] == [3, 7, 12, 1_000, 2_500]


def test_cli_exit_codes_and_report(tmp_path, capsys) -> None:
    pq.write_table(good(2_000), tmp_path / "train.parquet")
    assert main(["schema", "infer", str(tmp_path / "train.parquet")]) == 0
    text = capsys.readouterr().out
    (tmp_path / "schema.yaml").write_text(text)
    assert yaml.safe_load(text)["columns"]["c"]["domain"] == ["a", "b", "c"]
    pq.write_table(good(500, seed=9), tmp_path / "ok.parquet")
    assert main(["validate", str(tmp_path / "ok.parquet"), "--schema", str(tmp_path / "schema.yaml")]) == 0
    t = good(500, seed=9)
    t = t.set_column(2, "c", pa.array(["d"] * 500))
    pacsv.write_csv(t, tmp_path / "bad.csv")
    capsys.readouterr()
    code = main(["validate", str(tmp_path / "bad.csv"), "--schema", str(tmp_path / "schema.yaml"),
                 "--report", str(tmp_path / "rep")])
    out = capsys.readouterr().out
    assert code == 1 and "c: out_of_domain: 500 values not in the domain" in out
    saved = json.loads((tmp_path / "rep" / "validation.json").read_text())
    assert saved["anomalies"][0]["examples"][0]["source"].endswith("bad.csv")
    assert "out_of_domain" in (tmp_path / "rep" / "report.html").read_text()
    (tmp_path / "broken.yaml").write_text("columns: {c: {type: string, domian: [a]}}\n")
    assert main(["validate", str(tmp_path / "ok.parquet"), "--schema", str(tmp_path / "broken.yaml")]) == 2
    assert main(["validate", str(tmp_path / "ok.parquet"), "--schema", str(tmp_path / "none.yaml")]) == 2
    assert main(["validate", str(tmp_path / "none.parquet"), "--schema", str(tmp_path / "schema.yaml")]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'domian'" in err and "Traceback" not in err


def test_beam_equals_local(tmp_path, schema) -> None:
    t = good(3_000, seed=5)
    c = np.array(t.column("c").to_pylist(), dtype=object)
    c[[10, 2_000]] = "x"
    pq.write_table(t.set_column(2, "c", pa.array(c.tolist())), tmp_path / "d.parquet", row_group_size=700)
    local = validate([str(tmp_path / "d.parquet")], schema, batch_size=500)
    beam = validate([str(tmp_path / "d.parquet")], schema, batch_size=500, engine="beam",
                    beam_args=["--direct_num_workers=1"])
    assert local == beam and not local["passed"]


SPEC = """\
data: [data.csv]
split: {by: hash, key: id, test_fraction: 0.25, seed: 1}
steps:
  - {step: StandardScaler, columns: [x]}
model: {step: LinearRegression, features: [x], label: y}
validate: {schema: schema.yaml}
output: out
"""


def test_run_spec_validate_section_stops_before_training(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    t = pa.table({"id": np.arange(400), "x": x, "y": 2 * x + rng.normal(size=400)})
    pacsv.write_csv(t, tmp_path / "data.csv")
    (tmp_path / "spec.yaml").write_text(SPEC)
    (tmp_path / "schema.yaml").write_text(yaml.safe_dump(infer_schema(profile(str(tmp_path / "data.csv")))))
    assert main(["run", str(tmp_path / "spec.yaml")]) == 0
    assert (tmp_path / "out" / "model.blm").exists()
    (tmp_path / "out" / "model.blm").unlink()
    bad = t.set_column(1, "x", pa.array(np.where(np.arange(400) == 7, 1e6, x)))
    pacsv.write_csv(bad, tmp_path / "data.csv")
    capsys.readouterr()
    assert main(["run", str(tmp_path / "spec.yaml")]) == 1
    err = capsys.readouterr().err
    assert "x: 1 values outside" in err and "stopped before training" in err
    assert not (tmp_path / "out" / "model.blm").exists()
    assert (tmp_path / "out" / "validation" / "report.html").exists()
    (tmp_path / "spec.yaml").write_text(SPEC.replace("{schema: schema.yaml}", "{schema: missing.yaml}"))
    assert main(["run", str(tmp_path / "spec.yaml")]) == 2
