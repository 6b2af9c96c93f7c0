"""Drift on Beam: per window of a stream (TestStream, DirectRunner in streaming mode) the report equals
``beamlearn.profile.drift`` of that window's rows against the model's training profile; batch mode gives one
report; a shifted window is flagged, an unshifted one is not."""

from __future__ import annotations

import os
import pickle
import tempfile
import uuid

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream as Stream
from apache_beam.transforms import window
from apache_beam.transforms.window import TimestampedValue

import beamlearn as bl
from beamlearn import beam as blb
from beamlearn.profile import profile, training_profile
from beamlearn.profile.drift import drift
from beamlearn.profile.stream import WINDOW_PARAMS

FIGS = ("psi", "js", "linf", "ks", "ks_pvalue", "chi2_pvalue", "wasserstein", "wasserstein_normed", "drift", "method")


def _records(n, seed, shift=0.0, t0=0):
    rng = np.random.default_rng(seed)
    cats = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2] if not shift else [0.1, 0.2, 0.7])
    return [{"x": float(v), "c": str(c), "t": t0 + i * 100 // n} for i, (v, c) in
            enumerate(zip(rng.normal(shift, 1, n), cats))]


@pytest.fixture(scope="module")
def fitted():
    return bl.Pipeline([bl.StandardScaler(["x"]), bl.OneHotEncoder(["c"])]).fit(_records(20_000, 0))


def _same(a, b):
    for c, f in b["columns"].items():
        for k in FIGS:
            v = a["columns"][c].get(k)
            assert v == (pytest.approx(f.get(k), rel=1e-9) if isinstance(v, float) else f.get(k)), (c, k)


def _spool():
    path = tempfile.mkdtemp(prefix="beam_drift_")

    def keep(x):
        with open(os.path.join(path, uuid.uuid4().hex), "wb") as fh:
            pickle.dump(x, fh)

    def read():
        out = []
        for f in os.listdir(path):
            with open(os.path.join(path, f), "rb") as fh:
                out.append(pickle.load(fh))
        return out
    return keep, read


def test_drift_per_window_equals_drift_of_each_windows_rows(fitted):
    # 200 rows (KLL's k): exact sketches, so equal figures.  An unshifted sample that small has a normed W1 of
    # about 0.06-0.08 against Evidently's 0.1 threshold (which suits larger windows): seed 3 is one of the usual
    first, second = _records(200, 3), _records(200, 2, shift=1.0, t0=100)
    keep, read = _spool()
    opts = PipelineOptions([])
    opts.view_as(StandardOptions).streaming = True
    stream = Stream().add_elements([TimestampedValue(r, r["t"]) for r in first + second])
    with beam.Pipeline(options=opts) as p:
        (p | stream.advance_watermark_to_infinity()
         | blb.Drift(fitted, windowing=window.FixedWindows(100)) | beam.Map(keep))
    got = {r["version"]["window_end"]: r for r in read()}
    assert sorted(got) == ["1970-01-01T00:01:40Z", "1970-01-01T00:03:20Z"]
    ref = training_profile(fitted)
    for end, rows, drifted in (("1970-01-01T00:01:40Z", first, False), ("1970-01-01T00:03:20Z", second, True)):
        want = drift(ref, profile(rows, **WINDOW_PARAMS), columns=["x", "c"])
        _same(got[end], want)
        assert got[end]["drift"] is drifted and got[end]["current_rows"] == 200


def test_drift_of_a_batch_pcollection_is_one_report(fitted, tmp_path):
    rows = _records(3000, 3, shift=0.5)
    path = str(tmp_path / "m.blm")
    fitted.save(path)
    keep, read = _spool()
    with beam.Pipeline() as p:
        (p | beam.Create([{k: v for k, v in r.items() if k != "c"} for r in rows])  # "c" absent: all missing
         | blb.Drift(path, method="psi") | beam.Map(keep))
    [report] = read()
    assert report["drifted"] == ["x"] and report["columns"]["c"]["method"] is None
    want = drift(training_profile(fitted), profile(rows, **WINDOW_PARAMS), method="psi", columns=["x"])
    assert report["columns"]["x"]["psi"] == pytest.approx(want["columns"]["x"]["psi"], abs=0.05)
    with pytest.raises(bl.errors.SpecError, match="unknown method"):
        blb.Drift(fitted, method="nope")
