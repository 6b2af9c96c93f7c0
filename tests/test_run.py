"""`beamlearn run`: the whole flow end to end on a small CSV spec - artifact with the stored threshold,
metrics.json / report.html, exit codes (1 on a failing gate, 2 on a bad spec), hash and time splits."""

from __future__ import annotations

import base64
import datetime as dt
import html.parser
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

import beamlearn as bl
from beamlearn.cli import main
from beamlearn.errors import SpecError
from beamlearn.run import read_run_spec, run, with_decision_threshold
from beamlearn.split import HashSplit
from beamlearn.testing import assert_nested_close

N = 800

SPEC = """\
name: tiny-run
data: [data.csv]
split: {split}
steps:
  - step: Derive
    columns: [delay]
    output: late
    func: greater_than
    kw_args: {{value: 0}}
    dtype: int64
    training_only: true
  - step: OneHotEncoder
    columns: [cat]
    handle_unknown: ignore
  - step: StandardScaler
    columns: [x1, x2]
model: {{step: LogisticRegression, features: [x1, x2, "cat_*"], label: late, missing_label: drop}}
evaluate:
  slices: [[cat]]
  min_slice_count: 20
  threshold: {{criterion: f1}}
  require: {require}
output: out
"""


def make_data(tmp_path) -> pa.Table:
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=N), rng.normal(size=N)
    cat = rng.choice(["a", "b", "c"], N)
    z = 1.5 * x1 - x2 + (cat == "a") * 0.8 - 1.2
    delay = np.where(rng.random(N) < 1 / (1 + np.exp(-z)), 10.0, -5.0) + rng.normal(size=N)
    delay[rng.random(N) < 0.03] = np.nan  # cancelled: no label
    day = [dt.date(2013, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 365, N)]
    table = pa.table({"id": np.arange(N), "day": pa.array([d.isoformat() for d in day]), "x1": x1, "x2": x2,
                      "cat": cat, "delay": pa.array(delay, from_pandas=True)})
    pacsv.write_csv(table, tmp_path / "data.csv")
    return table


def write_spec(tmp_path, *, split="{by: hash, key: id, test_fraction: 0.25, seed: 1}",
               require='["roc_auc>=0.7", "f1>=0.4"]') -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(split=split, require=require))
    return str(path)


class _Html(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag not in ("meta", "br", "hr", "link", "input"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>"
        self.stack.pop()


def test_run_end_to_end(tmp_path, capsys) -> None:
    table = make_data(tmp_path)
    code = main(["run", write_spec(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert re.search(r"run: [\d,]+ train rows, [\d,]+ test rows, \d+ passes", out)
    assert "PASS roc_auc>=0.7" in out and "decision threshold" in out

    fitted = bl.load(str(tmp_path / "out" / "model.blm"))
    dthr = fitted.states[-1]["decision_threshold"]
    assert dthr["pos_label"] == 1 and dthr["labels"] == [0, 1] and 0 < dthr["threshold"] < 1
    assert fitted.lineage["run"]["decision_threshold"]["threshold"] == dthr["threshold"]
    # predictions use the stored threshold, in batch and single-record paths, without the label's input
    serving = table.drop_columns(["delay"])
    pred = fitted.transform(serving)
    p1 = np.array(pred.column("proba_1").to_pylist())
    assert pred.column("prediction").to_pylist() == (p1 >= dthr["threshold"]).astype(int).tolist()
    assert "delay" not in fitted.required_columns
    for row, want in zip(serving.slice(0, 50).to_pylist(), pred.slice(0, 50).to_pylist()):
        got = fitted.transform_one(row)
        assert got["prediction"] == want["prediction"]
        assert got["proba_1"] == pytest.approx(want["proba_1"], rel=1e-12)
    # and the threshold changes predictions (it is not 0.5 by accident)
    assert dthr["threshold"] != 0.5

    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["schema_version"] == 1 and metrics["task"] == "classification"
    assert metrics["score"] == "proba_1" and metrics["label"] == "late"
    assert {g["gate"] for g in metrics["gates"]} == {"roc_auc>=0.7", "f1>=0.4"}
    assert set(metrics["slices"]) == {"cat=a", "cat=b", "cat=c"}
    test_rows = int(HashSplit("id", test_fraction=0.25, seed=1).test_mask(table).sum())
    assert metrics["rows"] == test_rows
    assert metrics["run"]["decision_threshold"]["threshold"] == dthr["threshold"]
    assert metrics["run"]["decision_threshold"]["chosen_on"] == "train"
    assert metrics["run"]["rows_train"] == N - test_rows
    assert fitted.lineage["rows"] == N - test_rows
    page = (tmp_path / "out" / "report.html").read_text()
    parser = _Html()
    parser.feed(page)
    assert parser.images, "the report has plots"
    for src in parser.images:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_failing_gate_exits_1(tmp_path, capsys) -> None:
    make_data(tmp_path)
    code = main(["run", write_spec(tmp_path, require='["roc_auc>=0.99", "f1>=0.1"]'), "--quiet"])
    _, err = capsys.readouterr()
    assert code == 1
    assert "gate failed: FAIL roc_auc>=0.99: value 0.8" in err and "f1>=0.1" not in err
    assert (tmp_path / "out" / "metrics.json").exists()  # the report is written either way


@pytest.mark.parametrize("change, message", [
    (("split: {by: hash, key: id, test_fraction: 0.25, seed: 1}", "split: {by: hash, test_fraction: 2}"),
     "test_fraction"),
    (("slices: [[cat]]", "slice: [[cat]]"), "unknown key 'slice'; did you mean 'slices'"),
    (("threshold: {criterion: f1}", "threshold: {criterion: best}"), "threshold"),
    (("data: [data.csv]", "data: [nope.csv]"), "no such file"),
    (('require: ["roc_auc>=0.7", "f1>=0.4"]', 'require: ["roc_auc>>0.7"]'), "require"),
    (("output: out\n", "output: out\nsplitt: 1\n"), "did you mean 'split'"),
])
def test_bad_spec_exits_2(tmp_path, capsys, change, message) -> None:
    make_data(tmp_path)
    path = write_spec(tmp_path)
    with open(path) as fh:
        text = fh.read()
    assert change[0] in text
    with open(path, "w") as fh:
        fh.write(text.replace(change[0], change[1]))
    code = main(["run", path])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("beamlearn: error:") and message in err and err.count("\n") == 1


def test_run_needs_model_and_split(tmp_path) -> None:
    make_data(tmp_path)
    path = tmp_path / "s.yaml"
    path.write_text("data: data.csv\nsteps: [{step: StandardScaler, columns: [x1]}]\nsplit: {by: hash}\n")
    with pytest.raises(SpecError, match="model"):
        read_run_spec(str(path))
    path.write_text("data: data.csv\nmodel: {step: LogisticRegression, features: [x1], label: cat}\n")
    with pytest.raises(SpecError, match="split"):
        read_run_spec(str(path))


def test_time_split_run(tmp_path) -> None:
    table = make_data(tmp_path)
    r = run(write_spec(tmp_path, split='{by: time, column: day, test_from: "2013-11-01"}', require="[]"),
            output=str(tmp_path / "o2"))
    days = table.column("day").to_pylist()
    labelled = ~np.isnan(table.column("delay").to_numpy(zero_copy_only=False))
    test = np.array([d >= "2013-11-01" for d in days])
    assert r.rows["test"] == int(test.sum())
    assert r.evaluation.metrics["rows"] - r.evaluation.metrics["skipped"] == int((test & labelled).sum())
    assert r.rows["train"] == int((~test).sum())
    assert r.passed and r.evaluation.gates == []


def test_run_identical_across_batch_sizes(tmp_path) -> None:
    make_data(tmp_path)
    spec = write_spec(tmp_path)
    a = run(spec, output=str(tmp_path / "a"), batch_size=64)
    b = run(spec, output=str(tmp_path / "b"), batch_size=100_000)
    assert a.rows == b.rows
    assert a.evaluation.metrics["overall"]["confusion_matrix"] == b.evaluation.metrics["overall"]["confusion_matrix"]
    assert a.threshold["threshold"] == b.threshold["threshold"]


def test_threshold_needs_binary_classifier() -> None:
    f = bl.Pipeline([bl.LinearRegression(["x"], "y")]).fit({"x": [1.0, 2.0, 3.0], "y": [1.0, 2.0, 3.5]})
    with pytest.raises(SpecError, match="binary classifier"):
        with_decision_threshold(f, 0.5, 1)
    g = bl.Pipeline([bl.LogisticRegression(["x"], "y")]).fit({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]})
    with pytest.raises(SpecError, match="pos_label"):
        with_decision_threshold(g, 0.5, 7)


def test_beam_engine_fits_the_same_model(tmp_path, monkeypatch) -> None:
    pytest.importorskip("apache_beam")
    from beamlearn.engines import beam_eval

    make_data(tmp_path)
    spec = write_spec(tmp_path)
    with open(spec) as fh:  # bootstrap intervals too: the same per-row weights on both engines
        text = fh.read().replace("min_slice_count: 20", "min_slice_count: 20\n  bootstrap: 5")
    with open(spec, "w") as fh:
        fh.write(text)
    local = run(spec, output=str(tmp_path / "l"))
    calls = []
    real = beam_eval.run_evaluate
    monkeypatch.setattr(beam_eval, "run_evaluate", lambda *a, **k: calls.append(k) or real(*a, **k))
    beam = run(spec, engine="beam", beam_args=["--runner=DirectRunner"], output=str(tmp_path / "b"))
    assert [c["part"][1] for c in calls] == ["train", "test"]  # the threshold pass and the test part on Beam
    assert beam.engine == "beam" and beam.rows == local.rows
    assert beam.fitted.lineage["engine"] != "local"
    # the workers read the data files and keep the train part themselves: no copy of it is written
    assert [f["path"] for f in beam.fitted.lineage["data"]["files"]] == [str(tmp_path / "data.csv")]
    ol, ob = local.evaluation.metrics["overall"], beam.evaluation.metrics["overall"]
    assert ob["confusion_matrix"] == ol["confusion_matrix"]
    assert ob["roc_auc"] == pytest.approx(ol["roc_auc"], abs=1e-9)
    _same(beam.threshold, local.threshold, "threshold")
    assert set(local.evaluation.metrics["slices"]) == {"cat=a", "cat=b", "cat=c"} and "ci" in ol
    for block in ("overall", "slices"):
        _same(beam.evaluation.metrics[block], local.evaluation.metrics[block], block)
    assert [g.to_dict() for g in beam.evaluation.gates] == [g.to_dict() for g in local.evaluation.gates]



def _same(a, b, path=""):
    assert_nested_close(a, b, rtol=1e-9, atol=1e-12, path=path)


def test_threshold_works_for_other_classifiers() -> None:
    from beamlearn.testing import assert_serving_consistent

    rng = np.random.default_rng(1)
    data = pa.table({"x": rng.normal(size=200), "y": pa.array(np.where(rng.random(200) < 0.3, "yes", "no"))})
    for model in (bl.GaussianNB(["x"], "y"),
                  bl.SklearnModel({"class": "sklearn.linear_model.LogisticRegression", "params": {}}, features=["x"],
                                  label="y")):
        f = with_decision_threshold(bl.Pipeline([model]).fit(data), 0.3, "yes")
        out = f.transform(data)
        p = np.array(out.column("proba_yes").to_pylist())
        assert out.column("prediction").to_pylist() == np.where(p >= 0.3, "yes", "no").tolist()
        assert_serving_consistent(f, data)
