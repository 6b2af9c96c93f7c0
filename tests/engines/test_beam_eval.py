"""beamlearn.beam.Evaluate / run_evaluate on the DirectRunner give the local evaluate's metrics (slices, a model
applied first with columns it replaces taken back), and ``beamlearn run --engine beam`` evaluates on Beam."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that

beam = pytest.importorskip("apache_beam")

import beamlearn as bl
from beamlearn import beam as blb
from beamlearn import io
from beamlearn.errors import SchemaError, SpecError
from beamlearn.metrics import evaluate
from beamlearn.run import _predicted
from beamlearn.testing import assert_nested_close


def same(a, b, path=""):
    assert_nested_close(a, b, rtol=1e-9, atol=1e-12, path=path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(3)
    n = 1500
    x = rng.normal(size=n)
    carrier = rng.choice(["AA", "B6", "UA"], n)
    y = (x + (carrier == "AA") * 0.7 + rng.normal(scale=0.8, size=n) > 0.3).astype(np.int64)
    table = pa.table({"x": x, "carrier": carrier, "y": y})
    path = str(tmp_path_factory.mktemp("eval") / "data.parquet")
    pq.write_table(table, path, row_group_size=400)
    fitted = bl.Pipeline([bl.OneHotEncoder(["carrier"]),
                          bl.LogisticRegression(["x", "carrier_*"], "y")]).fit(table)
    return path, table, fitted


def test_evaluate_with_model_and_slices_equals_local(data) -> None:
    path, _table, fitted = data
    opts = {"label": "y", "prediction": "prediction", "score": "proba_1", "slices": ["carrier"],
            "min_slice_count": 10, "n_bootstrap": 5}
    # locally: the file through the model with the replaced slice column put back (what `beamlearn run` does);
    # bootstrap weights hash each row's file and position, so both read the same file
    local = evaluate(_predicted(lambda: io.read(path, batch_size=300), fitted, ["carrier"]), batch_size=300,
                     **opts).metrics
    assert local["slices"]["carrier=AA"]["ci"]["accuracy"][0] < local["slices"]["carrier=AA"]["accuracy"]
    got = blb.run_evaluate([path], model=fitted, beam_args=["--runner=DirectRunner"], batch_size=300,
                           require=["accuracy>=0.5", "accuracy>=0.99"], **opts)
    same(got.metrics, local)
    assert set(got.metrics["slices"]) == {"carrier=AA", "carrier=B6", "carrier=UA"}
    assert [g.passed for g in got.gates] == [True, False]


def test_evaluate_transform_without_model_and_errors(data) -> None:
    _, table, fitted = data
    preds = fitted.transform(table)
    want = evaluate(preds, label="y", prediction="prediction", score="proba_*").metrics
    assert set(want["overall"]["per_class"]) == {"0", "1"}

    def check(results):
        assert len(results) == 1
        same(results[0], want)

    with beam.Pipeline() as p:
        metrics = (p | beam.Create(preds.to_batches(max_chunksize=500))
                   | blb.Evaluate(label="y", prediction="prediction", score="proba_*"))
        assert_that(metrics, check)
    with pytest.raises(SpecError, match="unknown option"):
        blb.Evaluate(label="y", prediction="prediction", bogus=1)
    with pytest.raises(SchemaError, match="no column 'nope'"), beam.Pipeline() as p:
        p | beam.Create(preds.to_batches()) | blb.Evaluate(label="nope", prediction="prediction")



def test_evaluate_reads_file_splits(data, tmp_path) -> None:
    """``FileSplits`` feed ``Evaluate`` (read in its one pass) as RecordBatches do, model included."""
    path, table, fitted = data
    opts = {"label": "y", "prediction": "prediction", "score": "proba_1", "slices": ["carrier"]}
    want = evaluate(_predicted(lambda: io.read(path, batch_size=300), fitted, ["carrier"]), batch_size=300,
                    **opts).metrics

    def check(results):
        assert len(results) == 1
        same(results[0], want)

    with beam.Pipeline() as p:
        splits = p | blb.FileSplits(path, batch_size=300)
        assert_that(splits | blb.Evaluate(model=fitted, batch_size=300, **opts), check)
