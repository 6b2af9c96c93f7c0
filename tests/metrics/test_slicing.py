"""Slices (same pass, counts, flags) and the hashed Poisson bootstrap (stable across engines and splits)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sklearn import metrics as skm

from beamlearn.batches import tag_batch
from beamlearn.metrics import ClassificationMetrics, evaluate
from beamlearn.metrics._core import poisson_weights, row_hash


def flights(n=600, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return pa.table({"y": y, "p": np.where(rng.random(n) < 0.8, y, 1 - y),
                     "origin": rng.choice(["JFK", "LGA", "EWR"], n, p=[0.5, 0.45, 0.05]),
                     "carrier": rng.choice(["AA", "UA"], n), "hour": rng.integers(5, 8, n).astype(float)})


def test_slices_equal_sklearn_on_each_subset_and_small_ones_flagged():
    t = flights()
    r = evaluate(t, label="y", prediction="p", slices=["origin", "carrier,origin", ("hour",)], min_slice_count=40)
    m = r.metrics
    df = t.to_pandas()
    assert m["slicing"] == [["origin"], ["carrier", "origin"], ["hour"]]
    for (carrier, origin), sub in df.groupby(["carrier", "origin"]):
        block = m["slices"][f"carrier={carrier},origin={origin}"]
        assert block["count"] == len(sub) and block["columns"] == {"carrier": carrier, "origin": origin}
        assert block["f1_macro"] == pytest.approx(skm.f1_score(sub.y, sub.p, average="macro"), abs=1e-12)
        assert block["insufficient"] == (len(sub) < 40)
    assert m["slices"]["origin=EWR"]["insufficient"] and not m["slices"]["origin=JFK"]["insufficient"]
    assert "hour=5" in m["slices"]  # 5.0 is written as 5
    assert sum(m["slices"][f"origin={o}"]["count"] for o in ("JFK", "LGA", "EWR")) == m["overall"]["count"]


def test_missing_slice_values_are_a_slice_named_null():
    r = evaluate({"y": [0, 1, 1], "p": [0, 1, 0], "o": ["a", None, None]}, label="y", prediction="p", slices="o")
    assert r.metrics["slices"]["o=null"]["count"] == 2


def test_row_hash_golden_vector():
    """Frozen values: any change breaks agreement between engines and runs, so it must be deliberate."""
    b = pa.record_batch({"i": pa.array([1, None, -3], pa.int64()), "f": [1.0, -0.0, float("nan")],
                         "s": ["JFK", "", None]})
    assert row_hash(b, ["i", "f", "s"]).tolist() == GOLDEN
    # the same values in other types hash alike (1 == 1.0, -0.0 == 0.0, NaN == null)
    b2 = pa.record_batch({"i": pa.array([1.0, None, -3.0]), "f": pa.array([1, 0, None], pa.int32()),
                          "s": pa.array(["JFK", "", None], pa.large_string())})
    assert row_hash(b2, ["i", "f", "s"]).tolist() == GOLDEN


GOLDEN = [416441873274365853, 15708007399621345009, 16291743550317719907]


def _reference_hash(row: list) -> int:
    """The documented hash, written out in plain Python: SplitMix64 over canonical 64-bit value codes."""
    import hashlib
    import math
    import struct

    mask = 2**64 - 1

    def mix(x):
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
        return x ^ (x >> 31)

    h = 0x9E3779B97F4A7C15
    for v in row:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            code = 0x6A09E667F3BCC909
        elif isinstance(v, str):
            code = int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "little")
        else:
            code = struct.unpack("<Q", struct.pack("<d", float(v) + 0.0))[0]
        h = mix(h ^ code)
    return h


def test_row_hash_equals_the_plain_python_reference():
    rows = [[1, 1.0, "JFK"], [None, -0.0, ""], [-3, float("nan"), None]]
    assert [_reference_hash(r) for r in rows] == GOLDEN


def test_poisson_weights_have_poisson_moments_and_depend_only_on_the_row():
    h = row_hash(pa.record_batch({"x": np.arange(200_000)}), ["x"])
    w = poisson_weights(h, 2)
    assert abs(w.mean() - 1) < 0.01 and abs(w.var() - 1) < 0.02
    assert np.array_equal(poisson_weights(h[::-1], 2), w[:, ::-1])


def test_bootstrap_identical_under_any_batching_and_merge_order():
    t = flights(2000)  # only 72 distinct rows: the row position must take part in the hash
    a = ClassificationMetrics("y", "p", slices=["origin"], n_bootstrap=50)
    one = a.extract(a.add(a.create(), tag_batch(t.combine_chunks().to_batches()[0], "mem", 0)))
    parts, offset = [], 0
    for b in t.to_batches(max_chunksize=123):
        parts.append(a.add(a.create(), tag_batch(b, "mem", offset)))
        offset += b.num_rows
    other = a.extract(a.merge(parts[::-1]))
    for block in ("overall", "origin=JFK"):
        got = one["overall"] if block == "overall" else one["slices"][block]
        want = other["overall"] if block == "overall" else other["slices"][block]
        for k, v in got["ci"].items():
            assert v == pytest.approx(want["ci"][k], abs=1e-12), k
    lo, hi = one["overall"]["ci"]["accuracy"]
    assert lo < one["overall"]["accuracy"] < hi and hi - lo < 0.06  # binomial: 4 * sqrt(.16 / 2000) = 0.036


def test_regression_bootstrap_interval_covers_the_value():
    rng = np.random.default_rng(1)
    y = rng.normal(size=3000)
    r = evaluate({"y": y, "p": y + rng.normal(size=3000)}, label="y", prediction="p", n_bootstrap=100)
    o = r.metrics["overall"]
    for k in ("mae", "mse", "rmse", "r2"):
        lo, hi = o["ci"][k]
        assert lo <= o[k] <= hi, k


def test_bootstrap_same_through_evaluate_for_any_batch_size_and_file_format(tmp_path):
    import pyarrow.parquet as pq

    t = flights(1500, seed=3)
    pq.write_table(t, tmp_path / "f.parquet", row_group_size=200)
    (tmp_path / "copy").mkdir()
    pq.write_table(t, tmp_path / "copy" / "f.parquet", row_group_size=333)
    runs = [evaluate(src, label="y", prediction="p", slices="origin", n_bootstrap=30, batch_size=bs).metrics
            for src, bs in ((t, 64), (t, 5000), (str(tmp_path / "f.parquet"), 100),
                            (str(tmp_path / "copy" / "f.parquet"), 999))]
    want = runs[0]["overall"]["ci"]
    assert want["accuracy"][0] < runs[0]["overall"]["accuracy"] < want["accuracy"][1]
    for m in runs[1:2]:  # in-memory data at another batching: identical
        for k, v in m["overall"]["ci"].items():
            assert v == pytest.approx(want[k], abs=1e-12), k
    one, other = runs[2]["overall"]["ci"], runs[3]["overall"]["ci"]
    for k, v in one.items():  # the same file (by name) read in other batches: same rows, same positions
        assert v == pytest.approx(other[k], abs=1e-12), k
    assert runs[2]["overall"]["ci"] != runs[0]["overall"]["ci"]  # the source name takes part in the hash


def test_accumulators_pickle_midway_for_both_tasks():
    import pickle

    from beamlearn.metrics import RegressionMetrics

    t = flights(900)
    t = t.append_column("s", pa.array(np.linspace(0, 1, 900))).append_column("v", pa.array(np.arange(900.0)))
    for a in (ClassificationMetrics("y", "p", score="s", slices=["origin"], n_bootstrap=3),
              RegressionMetrics("v", "hour", slices=["carrier"], n_bootstrap=3)):
        b1, b2 = t.slice(0, 400).to_batches()[0], t.slice(400).to_batches()[0]
        acc = pickle.loads(pickle.dumps(a.add(a.create(), tag_batch(b1, "m", 0))))
        acc = a.add(acc, tag_batch(b2, "m", 400))
        whole = a.extract(a.add(a.create(), tag_batch(t.combine_chunks().to_batches()[0], "m", 0)))
        got = a.extract(acc)
        assert got["overall"]["count"] == whole["overall"]["count"] == 900
        assert got["slices"].keys() == whole["slices"].keys()
        assert got["overall"]["ci"] == whole["overall"]["ci"]
