"""beamlearn.beam.ModelHandler under Beam's RunInference (DirectRunner, in memory): dict rows and RecordBatches
give what FittedPipeline.transform gives; batching kwargs reach BatchElements; a model update through the
model_metadata side input swaps the artifact; sharing across processes."""

from __future__ import annotations

import math

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.ml.inference.base import ModelMetadata, PredictionResult, RunInference
from apache_beam.testing.test_pipeline import TestPipeline as BeamPipeline
from apache_beam.testing.util import assert_that, equal_to

import beamlearn as bl
from beamlearn.beam import ModelHandler
from beamlearn.testing import random_table


def canon(row: dict) -> tuple:
    """A row comparable by equality (NaN != NaN)."""
    return tuple(sorted((k, "nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()))


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, pa.Table]:
    t = random_table(300, n_numeric=3, n_string=1, seed=5)
    t = t.append_column("y", pa.array(["a", "b", "c"] * 100))
    num = ["num0", "num1", "num2"]
    steps = [bl.SimpleImputer(num), bl.StandardScaler(num), bl.OneHotEncoder("cat0", handle_unknown="ignore"),
             bl.LogisticRegression(num + ["cat0"], "y")]
    d = tmp_path_factory.mktemp("handler")
    one = bl.Pipeline(steps).fit(t).save(str(d / "v1.blm"))
    two = bl.Pipeline(steps[:3]).fit(t.slice(0, 100)).save(str(d / "v2.blm"))
    return one, two, t.drop_columns(["y"])


def test_run_inference_on_dict_rows_equals_transform(artifacts):
    one, _, t = artifacts
    rows = t.to_pylist()
    want = bl.load(one).transform(t).to_pylist()
    handler = ModelHandler(one, min_batch_size=7, max_batch_size=50)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 7, "max_batch_size": 50}
    with BeamPipeline() as p:
        out = p | beam.Create(rows) | RunInference(handler) | beam.Map(lambda r: (canon(r.example),
                                                                                  canon(r.inference), r.model_id))
        assert_that(out, equal_to([(canon(r), canon(w), one) for r, w in zip(rows, want)]))


def test_run_inference_on_record_batches(artifacts):
    one, _, t = artifacts
    batches = t.to_batches(max_chunksize=64)
    want = [bl.load(one).transform(b).to_pylist() for b in batches]
    with BeamPipeline() as p:
        out = (p | beam.Create(batches) | RunInference(ModelHandler(one))
               | beam.Map(lambda b: [canon(r) for r in b.to_pylist()]))
        assert_that(out, equal_to([[canon(r) for r in w] for w in want]))


def test_model_update_through_the_side_input_swaps_the_artifact(artifacts):
    one, two, t = artifacts
    rows = t.slice(0, 20).to_pylist()
    want = bl.load(two).transform(t.slice(0, 20)).to_pylist()
    with BeamPipeline() as p:
        meta = p | "meta" >> beam.Create([ModelMetadata(model_id=two, model_name="v2")])
        out = (p | beam.Create(rows) | RunInference(ModelHandler(one), model_metadata_pcoll=meta)
               | beam.Map(lambda r: (r.model_id, canon(r.inference))))
        assert_that(out, equal_to([(two, canon(w)) for w in want]))


def test_handler_contract(artifacts):
    one, two, _ = artifacts
    h = ModelHandler(one, share_model_across_processes=True)
    assert h.share_model_across_processes() and not ModelHandler(one).share_model_across_processes()
    assert ModelHandler(one, model_copies=2).share_model_across_processes()
    h.update_model_path(two)
    assert h.model_uri == two and h.load_model().output_schema == bl.load(two).output_schema
    with pytest.raises(ValueError, match="inference_args"):
        h.validate_inference_args({"x": 1})
    result = ModelHandler(one).run_inference([{"num0": 1.0, "num1": None, "num2": 2.0, "cat0": "v1"}],
                                              bl.load(one))
    assert isinstance(result[0], PredictionResult) and result[0].inference["prediction"] in ("a", "b", "c")
    with pytest.raises(bl.errors.ArtifactError, match="nope.blm"):
        ModelHandler("nope.blm").load_model()
