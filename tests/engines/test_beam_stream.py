"""Streaming on Beam (TestStream on the DirectRunner in streaming mode): Transform keeps timestamps and windows,
Fit per window equals a batch fit of the window's rows and versions its firings, Transform(model=...) swaps in
the newest model, WatchArtifacts loads artifacts as they are written."""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import time
import uuid

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream as Stream
from apache_beam.transforms import window
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

import beamlearn as bl
from beamlearn import beam as blb
from beamlearn.metrics import evaluate

SPOOL = tempfile.mkdtemp(prefix="beam_stream_")


class _Out(dict):
    """What the pipelines' ``_keep`` steps wrote (DoFns run on copies of this module's globals, so they write
    pickles to a spool folder, read back here)."""

    def __missing__(self, tag):
        path = os.path.join(SPOOL, tag)
        out = []
        for f in sorted(os.listdir(path)) if os.path.isdir(path) else []:
            with open(os.path.join(path, f), "rb") as fh:
                out.append(pickle.load(fh))
        return out

    def clear(self):
        shutil.rmtree(SPOOL, ignore_errors=True)
        os.makedirs(SPOOL)


OUT = _Out()


def _keep(tag):
    path = os.path.join(SPOOL, tag)

    def keep(x, ts=beam.DoFn.TimestampParam, w=beam.DoFn.WindowParam):
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, uuid.uuid4().hex), "wb") as fh:
            pickle.dump((x, ts, w), fh)
    return keep


def _streaming():
    opts = PipelineOptions([])
    opts.view_as(StandardOptions).streaming = True
    return beam.Pipeline(options=opts)


def _rows(lo, hi, seed):
    rng = np.random.default_rng(seed)
    return [{"id": i, "x": float(rng.normal(10, 3)) if i % 7 else None, "c": ["a", "b", "c"][int(rng.integers(3))]}
            for i in range(lo, hi)]


SCHEMA = pa.schema([("id", pa.int64()), ("x", pa.float64()), ("c", pa.string())])
ONE_PASS = bl.Pipeline([bl.StandardScaler(["x"]), bl.OneHotEncoder(["c"])])
MULTI = bl.Pipeline([bl.SimpleImputer(["x"], strategy="median"), bl.StandardScaler(["x"]), bl.OneHotEncoder(["c"])])


@pytest.fixture(scope="module")
def run():
    """One streaming pipeline for the window tests: rows of three 10-second windows arrive with the watermark;
    window [0, 10) gets late rows after the watermark passed it (allowed lateness 60 s, accumulating)."""
    OUT.clear()
    w0, w1, late, w2 = _rows(0, 40, 1), _rows(40, 90, 2), _rows(90, 100, 3), _rows(100, 130, 4)
    bad = {"id": 999, "x": "not a number", "c": "a"}
    stream = (Stream()
              .add_elements([TimestampedValue(r, r["id"] % 10) for r in w0] + [TimestampedValue(bad, 5)])
              .advance_watermark_to(10)
              .add_elements([TimestampedValue(r, 10 + r["id"] % 10) for r in w1])
              .advance_watermark_to(25)
              .add_elements([TimestampedValue(r, 3) for r in late])
              .add_elements([TimestampedValue(r, 20 + r["id"] % 10) for r in w2])
              .advance_watermark_to_infinity())
    with _streaming() as p:
        rows = p | stream
        kw = {"windowing": window.FixedWindows(10), "allowed_lateness": 60}
        one, dead1 = rows | "One" >> blb.Fit(ONE_PASS, schema=SCHEMA, **kw).with_errors()
        multi, dead2 = rows | "Multi" >> blb.Fit(MULTI, schema=SCHEMA, **kw).with_errors()
        one | "K1" >> beam.Map(_keep("one"))
        multi | "K2" >> beam.Map(_keep("multi"))
        dead1 | "KD1" >> beam.Map(_keep("dead_fit"))
        dead2 | "KD2" >> beam.Map(_keep("dead_fit_multi"))
        fitted = ONE_PASS.fit(w0 + w1, schema=SCHEMA)
        windowed = rows | "W" >> beam.WindowInto(window.FixedWindows(10))
        out, dead = windowed | "T" >> blb.Transform(fitted, output="rows").with_errors()
        out | "KT" >> beam.Map(_keep("rows"))
        dead | "KTD" >> beam.Map(_keep("dead"))
        batches, _ = windowed | "TB" >> blb.Transform(fitted).with_errors()
        batches | "KB" >> beam.Map(_keep("batches"))
    return {"w0": w0, "w1": w1, "late": late, "w2": w2, "fitted": fitted}


def _by_window(tag):
    out = {}
    for f, _, w in OUT[tag]:
        out.setdefault((int(w.start), int(w.end)), []).append(f)
    return out


def test_transform_keeps_each_rows_timestamp_and_window(run):
    got = {r["id"]: (r, ts, w) for r, ts, w in OUT["rows"]}
    want = run["fitted"].transform(run["w0"] + run["w1"] + run["late"] + run["w2"], output="arrow").to_pylist()
    assert sorted(got) == sorted(r["id"] for r in want)
    for r in want:
        row, ts, w = got[r["id"]]
        assert row == r
        i = r["id"]
        expect = 3 if 90 <= i < 100 else (i % 10 + 10 * (0 if i < 40 else 1 if i < 90 else 2))
        assert ts == Timestamp(expect) and int(w.start) == expect // 10 * 10
    assert [d[0]["record"] for d in OUT["dead"]] == [{"id": 999, "x": "not a number", "c": "a"}]
    assert OUT["dead"][0][0]["column"] == "x"
    # batches of dict rows keep their window and take the earliest timestamp of their rows
    for b, ts, w in OUT["batches"]:
        assert w.start <= ts < w.end and b.num_rows > 0


@pytest.mark.parametrize("tag,pipe", [("one", ONE_PASS), ("multi", MULTI)])
def test_windowed_fit_equals_a_batch_fit_of_the_windows_rows(run, tag, pipe):
    wins = _by_window(tag)
    assert sorted(wins) == [(0, 10), (10, 20), (20, 30)]
    assert len(wins[(0, 10)]) == 2  # on time, then refired by the late rows
    first, refit = sorted(wins[(0, 10)], key=lambda f: f.lineage["version"]["pane"])
    assert (first.lineage["version"]["pane"], refit.lineage["version"]["pane"]) == (0, 1)
    assert first.lineage["version"]["timing"] == "ON_TIME" and refit.lineage["version"]["timing"] == "LATE"
    assert first.lineage["version"]["id"] == "1970-01-01T00:00:10Z#0"
    cases = [(first, run["w0"]), (refit, run["w0"] + run["late"]), (wins[(10, 20)][0], run["w1"]),
             (wins[(20, 30)][0], run["w2"])]
    for got, rows in cases:
        want = pipe.fit(rows, schema=SCHEMA)
        assert got.lineage["rows"] == len(rows)
        for a, b in zip(got.states, want.states):
            for k in a:
                if isinstance(a[k], dict) and "mean" in a[k]:
                    np.testing.assert_allclose(a[k]["mean"], b[k]["mean"], rtol=1e-12)
        t_got = got.transform(rows).to_pylist()
        t_want = want.transform(rows).to_pylist()
        for x, y in zip(t_got, t_want):
            assert x.keys() == y.keys()
            for k in x:
                assert x[k] is None if y[k] is None else x[k] == pytest.approx(y[k], rel=1e-12, abs=1e-12)
    assert first.lineage["dead_letters"] == 1
    assert [d[0]["record"]["id"] for d in OUT["dead_fit" if tag == "one" else "dead_fit_multi"]] == [999]


def test_transform_with_a_model_stream_swaps_in_the_newest_version():
    OUT.clear()
    old = ONE_PASS.fit(_rows(0, 50, 5), schema=SCHEMA)
    new = bl.Pipeline([bl.StandardScaler(["x"], with_mean=False), bl.OneHotEncoder(["c"])]).fit(
        _rows(0, 50, 6), schema=SCHEMA)
    import beamlearn.engines.beam_stream as bs

    def versioned(f, end, pane=0):
        lin = dict(f.lineage)
        lin["version"] = {"id": f"v{end}", "window_end_us": end * 10**6, "pane": pane}
        return bl.FittedPipeline(f.steps, f.states, f.input_schema, lineage=lin)

    first = [TimestampedValue(r, 11) for r in _rows(0, 5, 7)]
    second = [TimestampedValue(r, 31) for r in _rows(5, 10, 8)]
    early = [TimestampedValue(r, 5) for r in _rows(10, 12, 11)]  # before any model: held, then the first one
    stream = (Stream()
              .add_elements(early, tag="data")
              .advance_processing_time(1)
              .add_elements([versioned(old, 10)], tag="models")
              .advance_watermark_to(10, tag="models")
              .advance_processing_time(1)
              .add_elements(first, tag="data")
              .advance_processing_time(1)
              .add_elements([versioned(new, 30)], tag="models")
              .advance_processing_time(1)
              .add_elements([versioned(old, 20)], tag="models")  # an older version arriving late: ignored
              .advance_processing_time(1)
              .add_elements(second, tag="data")
              .advance_watermark_to_infinity(tag="models").advance_watermark_to_infinity(tag="data"))
    with _streaming() as p:
        s = p | stream
        out = s["data"] | blb.Transform(model=s["models"], version_column="model_version", output="rows", shards=2)
        out | beam.Map(_keep("latest"))
    got = {r["id"]: (r, ts) for r, ts, _ in OUT["latest"]}
    assert sorted(got) == list(range(12))
    for i in range(12):
        row, ts = got[i]
        v, t = ("v10", 11) if i < 5 else ("v30", 31) if i < 10 else ("v10", 5)
        assert row["model_version"] == v and ts == Timestamp(t)
    src = {r["id"]: r for r in _rows(0, 5, 7) + _rows(5, 10, 8) + _rows(10, 12, 11)}
    for i in range(12):
        f = new if 5 <= i < 10 else old
        want = f.transform_one(src[i])
        assert {k: got[i][0][k] for k in want} == pytest.approx(want)
    assert bs.version_key(versioned(new, 30)) > bs.version_key(versioned(old, 20))


def test_watch_artifacts_loads_each_new_artifact_and_skips_a_bad_one(tmp_path):
    OUT.clear()
    a = ONE_PASS.fit(_rows(0, 30, 9), schema=SCHEMA)
    a.save(str(tmp_path / "m1.blm"))
    (tmp_path / "broken.blm").write_bytes(b"PK not an artifact")
    stop = Timestamp.now() + 6
    with _streaming() as p:
        models = p | blb.WatchArtifacts(str(tmp_path / "*.blm"), interval=0.5, stop_timestamp=stop)
        models | beam.Map(_keep("watched"))

        def later(_):
            time.sleep(1.5)
            b = ONE_PASS.fit(_rows(30, 60, 10), schema=SCHEMA)
            tmp = str(tmp_path / ".m2.tmp")
            b.save(tmp)
            os.replace(tmp, str(tmp_path / "m2.blm"))

        p | "Tick" >> beam.Create([0]) | beam.Map(later)
    names = sorted(os.path.basename(f.lineage["version"]["source"]) for f, _, _ in OUT["watched"])
    assert names == ["m1.blm", "m2.blm"]
    assert all(f.lineage["version"]["modified_us"] > 0 for f, _, _ in OUT["watched"])


def test_evaluate_per_window_with_gates_equals_batch_evaluation_of_each_window():
    OUT.clear()
    rng = np.random.default_rng(12)
    rows = [{"y": int(rng.integers(2)), "p": None, "t": t} for t in range(40)]
    for r in rows:  # window [0, 20): 90% right; [20, 40): 50% right
        r["p"] = r["y"] if (r["t"] % 10 != 0 if r["t"] < 20 else r["t"] % 2 == 0) else 1 - r["y"]
    stream = (Stream().add_elements([TimestampedValue(r, r["t"]) for r in rows]).advance_watermark_to_infinity())
    with _streaming() as p:
        out = (p | stream | blb.Evaluate(label="y", prediction="p", windowing=window.FixedWindows(20),
                                         gates=["accuracy >= 0.8"]))
        out | beam.Map(_keep("eval"))
    got = {r["version"]["window_end"]: r for r, _, _ in OUT["eval"]}
    assert sorted(got) == ["1970-01-01T00:00:20Z", "1970-01-01T00:00:40Z"]
    for end, part, passed in (("1970-01-01T00:00:20Z", rows[:20], True), ("1970-01-01T00:00:40Z", rows[20:], False)):
        want = evaluate(pa.Table.from_pylist(part), label="y", prediction="p").metrics
        assert got[end]["metrics"]["overall"]["accuracy"] == want["overall"]["accuracy"]
        assert got[end]["passed"] is passed and got[end]["gates"][0]["gate"] == "accuracy >= 0.8"
