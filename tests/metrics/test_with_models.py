"""A fitted model's prediction columns plug into evaluate (Python ``model=`` and ``beamlearn evaluate --model``)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn import datasets
from sklearn import metrics as skm

import beamlearn as bl
from beamlearn.cli import main
from beamlearn.metrics import evaluate

pytestmark = pytest.mark.skipif(not hasattr(bl, "LogisticRegression"), reason="models not available")


@pytest.fixture(scope="module")
def fitted_and_test():
    X, y = datasets.load_breast_cancer(return_X_y=True)
    cols = [f"f{i}" for i in range(X.shape[1])]
    table = pa.table({**{c: X[:, i] for i, c in enumerate(cols)}, "target": y})
    idx = np.random.default_rng(0).permutation(len(y))
    train, test = table.take(idx[:400]), table.take(idx[400:])
    fitted = bl.Pipeline([bl.StandardScaler(cols), bl.LogisticRegression(cols, "target")]).fit(train)
    return fitted, test


def test_model_predictions_evaluated_like_sklearn(fitted_and_test):
    fitted, test = fitted_and_test
    out = fitted.transform(test)
    y, pred, proba = (out.column(c).to_numpy() for c in ("target", "prediction", "proba_1"))
    r = evaluate(test, model=fitted, label="target", prediction="prediction", score="proba_1", batch_size=50,
                 require=["roc_auc>=0.95", "recall[class=1]>=0.9"])
    o = r.metrics["overall"]
    assert r.passed, [str(g) for g in r.failures]
    assert o["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba), abs=1e-12)
    assert o["log_loss"] == pytest.approx(skm.log_loss(y, proba), rel=1e-9)
    assert o["f1"] == pytest.approx(skm.f1_score(y, pred), abs=1e-12)
    multi = evaluate(test, model=fitted, label="target", prediction="prediction", score="proba_*").metrics
    assert multi["overall"]["roc_auc"] == pytest.approx(o["roc_auc"], abs=1e-12)  # OvR macro of 2 = binary


def test_cli_evaluate_with_a_saved_model(fitted_and_test, tmp_path, capsys):
    fitted, test = fitted_and_test
    model = str(tmp_path / "model.bl")
    fitted.save(model)
    pq.write_table(test, tmp_path / "test.parquet")
    code = main(["evaluate", str(tmp_path / "test.parquet"), "--model", model, "--label", "target",
                 "--prediction", "prediction", "--score", "proba_1", "--require", "roc_auc>=0.95",
                 "--require", "accuracy>=0.999"])
    out, err = capsys.readouterr()
    assert code == 1 and "PASS roc_auc>=0.95" in out and "FAIL accuracy>=0.999" in err


def test_cli_model_then_data_form(fitted_and_test, tmp_path, capsys):
    """The issue's form: ``beamlearn evaluate MODEL --data PATH...``."""
    fitted, test = fitted_and_test
    model = str(tmp_path / "model.bl")
    fitted.save(model)
    pq.write_table(test.slice(0, 80), tmp_path / "a.parquet")
    pq.write_table(test.slice(80), tmp_path / "b.parquet")
    code = main(["evaluate", model, "--data", str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"),
                 "--label", "target", "--prediction", "prediction", "--json"])
    out, _ = capsys.readouterr()
    assert code == 0 and f'"rows": {test.num_rows}' in out
    code = main(["evaluate", "--label", "target", "--prediction", "prediction"])
    assert code == 2 and "no data to evaluate" in capsys.readouterr().err
