"""`beamlearn evaluate` (exit codes, messages, report, baseline) and `beamlearn.testing.assert_quality`."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beamlearn.cli import main
from beamlearn.testing import assert_quality


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("ev")
    rng = np.random.default_rng(0)
    for part in range(2):
        n = 1500
        y = rng.integers(0, 2, n)
        s = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1)
        origin = rng.choice(["JFK", "LGA", "EWR"], n, p=[0.5, 0.495, 0.005])
        pq.write_table(pa.table({"y": y, "p": (s > 0.5).astype(int), "s": s, "origin": origin}),
                       d / f"part-{part}.parquet")
    return str(d / "part-*.parquet")


def run(capsys, *args):
    code = main(["evaluate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_one_passing_and_one_failing_gate(capsys, data):
    code, out, err = run(capsys, data, "--label", "y", "--prediction", "p", "--score", "s",
                         "--require", "f1>=0.7", "--require", "roc_auc>=0.99")
    assert code == 1
    assert "PASS f1>=0.7" in out and "FAIL roc_auc>=0.99" in out
    (line,) = [ln for ln in err.splitlines() if "gate failed" in ln]
    assert line.startswith("beamlearn: error: gate failed: FAIL roc_auc>=0.99: value 0.9") and "required >= 0.99" in line


def test_passing_gates_report_and_json(capsys, data, tmp_path):
    code, out, _ = run(capsys, data, "--label", "y", "--prediction", "p", "--slice", "origin", "--json",
                       "--require", "accuracy>=0.7", "--report", str(tmp_path / "rep"), "--min-slice-count", "50")
    assert code == 0
    m = json.loads(out)
    assert m["rows"] == 3000 and m["gates"][0]["passed"] and m["slices"]["origin=EWR"]["insufficient"]
    assert (tmp_path / "rep" / "report.html").stat().st_size > 10_000
    assert json.loads((tmp_path / "rep" / "metrics.json").read_text())["overall"] == m["overall"]
    # the saved metrics serve as the baseline of the next run
    code, out, err = run(capsys, data, "--label", "y", "--prediction", "p", "--baseline", str(tmp_path / "rep"),
                         "--require", "accuracy>=baseline-0.01", "--require", "slice[origin=EWR].accuracy>=0.1",
                         "--slice", "origin", "--min-slice-count", "50")
    assert code == 1 and "PASS accuracy>=baseline-0.01" in out and "insufficient data" in err


@pytest.mark.parametrize("args,message", [
    (["--label", "y", "--prediction", "p", "--require", "f1_macor>=0.8"], "did you mean 'f1_macro'"),
    (["--label", "y", "--prediction", "pp"], "no column 'pp'"),
    (["--label", "y", "--prediction", "p", "--require", "accuracy>=baseline"], "no baseline"),
    (["--label", "y", "--prediction", "p", "--baseline", "/nonexistent/metrics.json"], "No such file"),
])
def test_user_mistakes_exit_2_with_one_line(capsys, data, args, message):
    code, _, err = run(capsys, data, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_data_file_exits_2(capsys):
    code, _, err = run(capsys, "/nonexistent/*.parquet", "--label", "y", "--prediction", "p")
    assert code == 2 and "no file matches" in err


def test_assert_quality_from_data_and_from_result():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 500)
    p = np.where(rng.random(500) < 0.9, y, (y + 1) % 3)
    r = assert_quality({"y": y, "p": p}, "accuracy>=0.8", "recall[class=2]>=0.8", label="y", prediction="p")
    with pytest.raises(AssertionError, match=r"2 of 2 quality gates failed:\n  FAIL f1_macro>=0.95: value 0\.9"):
        assert_quality(r, "f1_macro>=0.95", "accuracy>=0.99")
    with pytest.raises(AssertionError, match="FAIL f1_macro>=baseline\\+0.05"):
        assert_quality(r, "f1_macro>=baseline+0.05", baseline=r)
