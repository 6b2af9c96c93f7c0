"""The metric reductions on Apache Beam (DirectRunner) give the local engine's metrics, bootstrap included."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

beam = pytest.importorskip("apache_beam")

from beamlearn import beam as blb
from beamlearn.beam import AnalyzerCombineFn
from beamlearn.metrics import ClassificationMetrics, RegressionMetrics, evaluate
from beamlearn.testing import assert_nested_close


def same(a, b, path=""):
    assert_nested_close(a, b, rtol=1e-12, atol=1e-12, path=path)


def _dump(metrics, path):
    import pickle

    with open(path, "wb") as fh:
        pickle.dump(metrics, fh)


def on_beam(path, analyzer, runner_options=()):
    import pickle

    from apache_beam.options.pipeline_options import PipelineOptions

    out = path + ".metrics.pkl"
    with beam.Pipeline(options=PipelineOptions(list(runner_options))) as p:
        (p | blb.ReadParquet(path, batch_size=500) | beam.Reshuffle()
         | beam.CombineGlobally(AnalyzerCombineFn(analyzer)) | beam.Map(_dump, out))
    with open(out, "rb") as fh:
        return pickle.load(fh)


@pytest.fixture(scope="module")
def parquet(tmp_path_factory):
    rng = np.random.default_rng(7)
    n = 4000
    y = rng.integers(0, 2, n)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    path = str(tmp_path_factory.mktemp("beam") / "preds.parquet")
    pq.write_table(pa.table({"y": y, "p": (s > 0.5).astype(int), "s": s, "origin": rng.choice(["A", "B", "C"], n),
                             "v": rng.normal(size=n), "vhat": rng.normal(size=n)}), path, row_group_size=700)
    return path


def test_classification_on_beam_equals_local(parquet):
    a = ClassificationMetrics("y", "p", score="s", slices=["origin"], n_bootstrap=20)
    local = evaluate(parquet, label="y", prediction="p", score="s", slices=["origin"], n_bootstrap=20,
                     batch_size=1000).metrics
    got = on_beam(parquet, a)
    same({k: got[k] for k in ("overall", "slices", "classes", "rows")},
         {k: local[k] for k in ("overall", "slices", "classes", "rows")})


def test_regression_on_beam_equals_local(parquet):
    a = RegressionMetrics("v", "vhat", slices=["origin"])
    local = evaluate(parquet, label="v", prediction="vhat", slices=["origin"], batch_size=333).metrics
    got = on_beam(parquet, a)
    for block in ("overall", "slices"):
        if block == "overall":
            got[block].pop("residual_histogram"), local[block].pop("residual_histogram")  # KLL: randomized
        same(got[block], local[block])
