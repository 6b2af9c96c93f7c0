"""The spec's ``model:`` section and the CLI with models: fit trains preprocessing and model together, transform
appends prediction columns, inspect shows what the model learned; mistakes are one clear line (exit 2)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from sklearn.ensemble import RandomForestClassifier

import beamlearn as bl
from beamlearn.cli import main
from beamlearn.errors import SpecError
from beamlearn.models.sklearn import SklearnModel, canonical_order
from beamlearn.spec import read_spec

PREP = """\
name: late-flights
steps:
  - step: SimpleImputer
    columns: [dep_delay]
    strategy: median
  - step: OneHotEncoder
    columns: [carrier]
"""

SKLEARN_MODEL = PREP + """\
model:
  sklearn: sklearn.ensemble.RandomForestClassifier
  params: {n_estimators: 4, max_depth: 3, random_state: 0, class_weight: {late: 2.0, ok: 1.0}}
  features: [dep_delay, carrier, distance]
  label: status
"""


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(7)
    n = 240
    dep = rng.normal(10, 20, n)
    dep[rng.random(n) < 0.05] = np.nan
    carrier = rng.choice(["AA", "UA", "DL"], n)
    distance = rng.uniform(100, 2500, n).round(0)
    status = np.where(np.nan_to_num(dep, nan=10) + rng.normal(0, 10, n) > 15, "late", "ok")
    with open("flights.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["dep_delay", "carrier", "distance", "status"])
        for row in zip(dep, carrier, distance, status):
            w.writerow(["" if np.isnan(row[0]) else row[0], *row[1:]])
    (tmp_path / "sk.yaml").write_text(SKLEARN_MODEL)
    return tmp_path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_sklearn_model_through_fit_transform_inspect(data, capsys):
    code, out, err = run(capsys, "fit", "sk.yaml", "--data", "flights.csv", "--out", "m.blm", "--batch-size", "50",
                         "--quiet")
    assert code == 0, err
    code, _, err = run(capsys, "transform", "m.blm", "--data", "flights.csv", "--out", "pred.csv", "--quiet")
    assert code == 0, err
    got = pacsv.read_csv("pred.csv")
    assert got.schema.names[-3:] == ["prediction", "proba_late", "proba_ok"]
    # the same pipeline in Python, and scikit-learn on the prepared features (in the canonical row order)
    fitted = bl.load("m.blm")
    table = pacsv.read_csv("flights.csv")
    want = fitted.transform(table)
    assert got.column("prediction").to_pylist() == want.column("prediction").to_pylist()
    feats = fitted.states[-1]["features"]
    assert feats == ["dep_delay", "carrier_AA", "carrier_DL", "carrier_UA", "distance"]
    X = np.column_stack([want.column(c).to_numpy(zero_copy_only=False).astype(float) for c in feats])
    y = want.column("status").to_numpy(zero_copy_only=False).astype(str)
    o = canonical_order(X, y)
    sk = RandomForestClassifier(n_estimators=4, max_depth=3, random_state=0,
                                class_weight={"late": 2.0, "ok": 1.0}).fit(X[o], y[o])
    assert want.column("prediction").to_pylist() == sk.predict(X).tolist()
    np.testing.assert_allclose(got.column("proba_late").to_numpy(), sk.predict_proba(X)[:, 0], rtol=1e-12)

    code, out, err = run(capsys, "inspect", "m.blm")
    assert code == 0, err
    assert "SklearnModel" in out and "sklearn.ensemble.RandomForestClassifier" in out and "late" in out
    code, out, _ = run(capsys, "inspect", "m.blm", "--json")
    model = json.loads(out)["steps"][-1]
    assert model["fitted"]["classes"] == ["late", "ok"] and len(model["fitted"]["feature_importances"]) == 5
    assert model["params"]["estimator"]["class"] == "sklearn.ensemble.RandomForestClassifier"


@pytest.mark.skipif(not hasattr(bl, "LogisticRegression"), reason="beamlearn's LogisticRegression not built yet")
def test_beamlearn_model_step_through_the_cli(data, capsys):
    (data / "lr.yaml").write_text(PREP + """\
model:
  step: LogisticRegression
  features: [dep_delay, carrier, distance]
  label: status
""")
    code, _, err = run(capsys, "fit", "lr.yaml", "--data", "flights.csv", "--out", "lr.blm", "--quiet")
    assert code == 0, err
    code, _, err = run(capsys, "transform", "lr.blm", "--data", "flights.csv", "--out", "lr.parquet", "--quiet")
    assert code == 0, err
    assert "prediction" in pa.parquet.read_table("lr.parquet").schema.names
    code, out, err = run(capsys, "inspect", "lr.blm")
    assert code == 0 and "LogisticRegression" in out


def test_model_section_builds_the_pipeline():
    spec = read_spec(SKLEARN_MODEL)
    model = spec.pipeline.steps[-1]
    assert isinstance(model, SklearnModel) and len(spec.pipeline.steps) == 3
    assert model.estimator == {"class": "sklearn.ensemble.RandomForestClassifier",
                               "params": {"n_estimators": 4, "max_depth": 3, "random_state": 0,
                                          "class_weight": {"late": 2.0, "ok": 1.0}}}
    only = read_spec("model: {sklearn: sklearn.linear_model.Ridge, features: [x], label: y}")
    assert [type(s).__name__ for s in only.pipeline.steps] == ["SklearnModel"]
    assert read_spec(SKLEARN_MODEL).sha256 != read_spec(PREP).sha256


@pytest.mark.parametrize("model,match", [
    ("sklearn: sklearn.ensemble.RandomForestClasifier\n  features: [x]\n  label: y",
     r"line \d+: model: .*did you mean 'sklearn.ensemble.RandomForestClassifier'"),
    ("sklearn: os.system\n  features: [x]", "not a scikit-learn estimator path"),
    ("sklearn: sklearn.linear_model.Ridge\n  params: {alpah: 1.0}\n  features: [x]\n  label: y",
     "unknown parameter 'alpah'; did you mean 'alpha'"),
    ("sklearn: sklearn.linear_model.Ridge\n  params: {alpha: -1.0}\n  features: [x]\n  label: y",
     "model: params: .*alpha"),
    ("sklearn: sklearn.linear_model.Ridge\n  feature: [x]\n  label: y", "unknown key 'feature'; did you mean"),
    ("sklearn: sklearn.linear_model.Ridge\n  label: y", "missing required key 'features'"),
    ("step: StandardScaler\n  columns: [x]", "'StandardScaler' is not a model step"),
    ("step: Sklearnmodel\n  features: [x]", "unknown step type"),
    ("{}", "either 'step'"),
    ("sklearn: sklearn.linear_model.Ridge\n  step: Ridge\n  features: [x]", "either 'step'"),
])
def test_model_section_mistakes(model, match):
    with pytest.raises(SpecError, match=match):
        read_spec(PREP + "model:\n  " + model + "\n")


def test_cli_reports_a_bad_model_section_in_one_line(data, capsys):
    (data / "bad.yaml").write_text(PREP + "modle:\n  step: LogisticRegression\n")
    code, _, err = run(capsys, "fit", "bad.yaml", "--data", "flights.csv", "--out", "x.blm")
    assert code == 2 and err.count("\n") == 1 and "did you mean 'model'" in err
