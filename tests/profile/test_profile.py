"""Profiles: every statistic against exact pandas/numpy results (sketched ones within their published error, in
rank space), merge == profile of the union on random splits (hypothesis), local == Beam, and the CLI."""

from __future__ import annotations

import base64
import itertools
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasketches import kll_doubles_sketch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import beamlearn as bl
from beamlearn.analyzers.profile import ColumnProfile
from beamlearn.analyzers.sketches import HLL_PRECISION, DistinctCount
from beamlearn.cli import main
from beamlearn.profile import merge_profiles, profile, read_profile
from beamlearn.profile.drift import frequent_values

EPS = kll_doubles_sketch.get_normalized_rank_error(200, False)  # the KLL's published single-rank error (k=200)
HLL_ERR = 1.04 / np.sqrt(1 << HLL_PRECISION)


def make_table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(3.0, 2.0, n)
    x[rng.random(n) < 0.05] = np.nan
    xnull = rng.random(n) < 0.05
    i = rng.integers(-50, 50, n)
    u = rng.exponential(1.0, n) * 1e6  # mostly distinct values
    s = rng.choice(["alpha", "b", "gamma", "dd", "é"], n, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    snull = rng.random(n) < 0.1
    b = rng.random(n) < 0.3
    return pa.table({"x": pa.array(x, mask=xnull), "i": i, "u": u,
                     "s": pa.array(s.tolist(), mask=snull), "b": b})


def rank_of(values: np.ndarray, v: float) -> tuple[float, float]:
    """The rank interval of ``v`` among ``values`` (fraction strictly below, fraction at or below)."""
    sv = np.sort(values)
    return np.searchsorted(sv, v, "left") / len(sv), np.searchsorted(sv, v, "right") / len(sv)


@pytest.fixture(scope="module")
def big() -> tuple[pa.Table, dict]:
    t = make_table(60_000)
    return t, profile(t, batch_size=7_000)


def test_statistics_equal_pandas(big) -> None:
    t, p = big
    df = t.to_pandas()
    assert p["rows"] == len(df) and p["format"] == "beamlearn.profile" and p["version"] == 1
    for c in ("x", "i", "u"):
        col, s = p["columns"][c], df[c].astype(float)
        xs = t.column(c).to_numpy(zero_copy_only=False).astype(float)
        assert col["nulls"] == t.column(c).null_count
        assert col["nan"] == int(np.isnan(xs).sum()) - t.column(c).null_count
        assert col["count"] == s.count()
        assert col["min"] == s.min() and col["max"] == s.max()
        np.testing.assert_allclose(col["mean"], s.mean(), rtol=1e-12)
        np.testing.assert_allclose(col["std"], s.std(), rtol=1e-11)
        vals = s.dropna().to_numpy()
        for q, v in col["quantiles"].items():  # rank space: the true rank of the answer is within the bound
            lo, hi = rank_of(vals, v)
            assert lo - EPS <= float(q) <= hi + EPS, (c, q, v, lo, hi)
        h = col["histogram"]
        exact, _ = np.histogram(vals, bins=np.asarray(h["edges"]))
        assert abs(sum(h["counts"]) - len(vals)) < 1e-6 * len(vals)
        np.testing.assert_allclose(h["counts"], exact, atol=2 * EPS * len(vals))
        nunique = s.nunique()
        assert abs(col["distinct"]["estimate"] - nunique) <= 4 * HLL_ERR * nunique, (c, col["distinct"], nunique)
        assert col["distinct"]["lower"] <= nunique * 1.01 and col["distinct"]["upper"] >= nunique * 0.99
    s = df["s"]
    col = p["columns"]["s"]
    assert col["nulls"] == s.isna().sum() and col["count"] == s.count()
    vc = s.value_counts()
    assert {v: k for v, k in col["top"]} == vc.to_dict()  # 5 values: exact counts
    lengths = s.dropna().str.len()
    assert (col["length"]["min"], col["length"]["max"]) == (lengths.min(), lengths.max())
    np.testing.assert_allclose(col["length"]["mean"], lengths.mean(), rtol=1e-12)
    assert round(col["distinct"]["estimate"]) == 5
    assert dict(p["columns"]["b"]["top"]) == {"true": int(df["b"].sum()), "false": int((~df["b"]).sum())}
    corr = p["correlations"]
    assert corr["columns"] == ["x", "i", "u"]
    complete = df[["x", "i", "u"]].astype(float).dropna()
    assert corr["rows"] == len(complete)
    np.testing.assert_allclose(np.array(corr["pearson"], dtype=float), complete.corr().to_numpy(), rtol=1e-9,
                               atol=1e-12)
    json.loads(json.dumps(p))  # JSON-ready


def test_distinct_count_within_the_hyperloglog_bound() -> None:
    rng = np.random.default_rng(3)
    for n in (10, 1_000, 50_000, 300_000):
        x = rng.permutation(n).astype(float)
        words = pa.array([f"w{v}" for v in rng.permutation(min(n, 50_000))])
        s = bl.analyzers.run_analyzer(DistinctCount(["x"]), [pa.record_batch({"x": x})])[0]
        w = bl.analyzers.run_analyzer(DistinctCount(["w"]), [pa.record_batch({"w": words})])[0]
        assert abs(s["estimate"] - n) <= max(4 * HLL_ERR * n, 0.5), (n, s)
        assert abs(w["estimate"] - len(words)) <= max(4 * HLL_ERR * len(words), 0.5), (n, w)


def _check_same(a: dict, b: dict) -> None:
    """Profiles equal: counts, extrema, distinct registers, frequent items exactly; moments within rtol 1e-12."""
    assert a["rows"] == b["rows"]
    for name, ca in a["columns"].items():
        cb = b["columns"][name]
        for k in ("count", "nulls", "nan", "min", "max", "hll", "top"):
            assert ca.get(k) == cb.get(k), (name, k)
        if "moments" in ca:
            np.testing.assert_allclose(ca["moments"], cb["moments"], rtol=1e-12, atol=1e-9)
            sa, sb = (kll_doubles_sketch.deserialize(base64.b64decode(c["kll"])) for c in (ca, cb))
            assert sa.n == sb.n and sa.get_min_value() == sb.get_min_value()
        if "length" in ca:
            np.testing.assert_allclose(ca["length"]["moments"], cb["length"]["moments"], rtol=1e-12)
        if "frequent" in ca:
            assert ca["frequent"]["total"] == cb["frequent"]["total"]
    if a["correlations"]:
        np.testing.assert_allclose(np.array(a["correlations"]["state"]["comoment"]),
                                   np.array(b["correlations"]["state"]["comoment"]), rtol=1e-10, atol=1e-6)
        assert a["correlations"]["rows"] == b["correlations"]["rows"]


SMALL = make_table(3_000, seed=7)
WHOLE = profile(SMALL, batch_size=512)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 3_000), min_size=0, max_size=3), st.booleans())
def test_merge_equals_the_profile_of_the_union(cuts, through_json) -> None:
    bounds = [0, *sorted(cuts), 3_000]
    parts = [profile(SMALL.slice(lo, hi - lo), batch_size=300) for lo, hi in itertools.pairwise(bounds) if hi > lo]
    if through_json:
        parts = [json.loads(json.dumps(p)) for p in parts]
    _check_same(merge_profiles(parts[::-1]), WHOLE)


def test_merge_refuses_different_columns() -> None:
    with pytest.raises(bl.errors.DataError, match="columns differ"):
        merge_profiles([profile({"x": [1.0]}), profile({"y": [1.0]})])


def test_analyzer_state_round_trips_through_its_profile() -> None:
    an = ColumnProfile([(f.name, bl.batches.column_kind(f.type), str(f.type)) for f in SMALL.schema])
    acc = an.create()
    for b in SMALL.to_batches(1000):
        acc = an.add(acc, b)
    doc = an.extract(acc)
    again = an.extract(an.load(json.loads(json.dumps(doc))))
    for d in (doc, again):  # the sketch's bytes list its items in hash-table order: compare the items
        d["columns"]["s"]["frequent"]["sketch"] = frequent_values(d["columns"]["s"])
        d["columns"]["b"]["frequent"]["sketch"] = frequent_values(d["columns"]["b"])
    assert again == doc


def test_local_equals_beam(tmp_path) -> None:
    t = make_table(20_000, seed=11)
    path = str(tmp_path / "d.parquet")
    pq.write_table(t, path, row_group_size=4_000)
    local = profile([path], batch_size=3_000)
    beam = profile([path], engine="beam", batch_size=3_000, beam_args=["--direct_num_workers=1"])
    assert beam["engine"] == "beam"
    _check_same(local, beam)
    for c in ("x", "i", "u"):  # KLL is randomized: both answers within the rank bound of the exact data
        vals = t.column(c).to_pandas().astype(float).dropna().to_numpy()
        for q in ("0.25", "0.5", "0.99"):
            for p in (local, beam):
                lo, hi = rank_of(vals, p["columns"][c]["quantiles"][q])
                assert lo - EPS <= float(q) <= hi + EPS


def test_cli_profile_merge_and_read(tmp_path, capsys) -> None:
    t = make_table(4_000, seed=2)
    pq.write_table(t.slice(0, 1_500), tmp_path / "a.parquet")
    pq.write_table(t.slice(1_500), tmp_path / "b.parquet")
    pq.write_table(t, tmp_path / "all.parquet")
    for name in ("a", "b", "all"):
        assert main(["profile", str(tmp_path / f"{name}.parquet"), "--report", str(tmp_path / name)]) == 0
    assert (tmp_path / "all" / "report.html").stat().st_size > 1000
    out = str(tmp_path / "merged.json")
    assert main(["profile", "merge", str(tmp_path / "a" / "profile.json"), str(tmp_path / "b" / "profile.json"),
                 "--out", out]) == 0
    _check_same(read_profile(out), read_profile(str(tmp_path / "all" / "profile.json")))
    capsys.readouterr()
    assert main(["profile", "merge", "--out", out]) == 2
    assert main(["profile", str(tmp_path / "nope.parquet"), "--report", str(tmp_path / "x")]) == 2
    assert main(["profile", "merge", str(tmp_path / "a.parquet"), str(tmp_path / "a.parquet"), "--out", out]) == 2
    assert main(["profile", str(tmp_path / "a.parquet"), "--report", str(tmp_path / "x"), "--runner=X"]) == 2
    err = capsys.readouterr().err
    assert err.count("beamlearn: error:") == 4 and "Traceback" not in err
    assert "--runner; options beamlearn does not know are passed to Beam only with --engine beam" in err


def test_every_fit_keeps_a_compact_profile_and_loads_safely(tmp_path) -> None:
    t = make_table(2_000, seed=4)
    fitted = bl.Pipeline([bl.StandardScaler(["x"])]).fit(t)
    path = str(tmp_path / "m.blm")
    fitted.save(path)
    ref = read_profile(path)  # the artifact's lineage: plain JSON data, read without unpickling
    assert ref["rows"] == 2_000 and set(ref["columns"]) == set(t.column_names)
    assert "kll" in ref["columns"]["u"] and "frequent" in ref["columns"]["s"]
    u = t.column("u").to_numpy()
    np.testing.assert_allclose([ref["columns"]["u"]["mean"], ref["columns"]["u"]["std"]], [u.mean(), u.std(ddof=1)],
                               rtol=1e-12)  # exact moments from the fit's own profile
    assert (ref["columns"]["u"]["min"], ref["columns"]["u"]["max"]) == (u.min(), u.max())
    assert ref["columns"]["x"]["nulls"] == t.column("x").null_count
    manifest = bl.artifact.read_manifest(path)
    assert "kll" in json.dumps(manifest["lineage"]["profile"])
    assert bl.load(path).transform_one({"x": 1.0, "i": 1, "u": 2.0, "s": "b", "b": True})["x"] is not None


def test_the_compact_profile_samples_each_batch_down_to_the_floor_and_tracks_the_distribution() -> None:
    from beamlearn.analyzers.profile import COMPACT_PROFILE, SAMPLE_FLOOR, sample_stride
    from beamlearn.profile.drift import drift

    t = make_table(300_000, seed=7)
    fitted = bl.Pipeline([bl.StandardScaler(["x"])]).fit(t, batch_size=65_536)
    col = fitted.lineage["profile"]["columns"]["columns"]["u"]
    sk = kll_doubles_sketch.deserialize(base64.b64decode(col["kll"]))
    sizes = [65_536] * 4 + [300_000 - 4 * 65_536]
    assert sk.n == sum(-(-n // sample_stride(n, COMPACT_PROFILE["sample"])) for n in sizes)  # 64, 64, 64, 64, 37
    u = np.sort(t.column("u").to_numpy())
    dkw = np.sqrt(np.log(2 / 1e-3) / (2 * sk.n))  # the sample's CDF error, 99.9%
    qs = np.linspace(0.01, 0.99, 99)
    ranks = np.searchsorted(u, np.asarray(sk.get_quantiles(list(qs))), side="right") / len(u)
    assert np.max(np.abs(ranks - qs)) <= EPS + dkw
    assert not drift(read_profile_of(fitted), profile(t))["drift"]  # the same data: no drift on any column
    small = bl.Pipeline([bl.StandardScaler(["x"])]).fit(t.slice(0, SAMPLE_FLOOR + 500))
    sk = kll_doubles_sketch.deserialize(base64.b64decode(small.lineage["profile"]["columns"]["columns"]["u"]["kll"]))
    assert sk.n == SAMPLE_FLOOR + 500  # a batch of fewer than 2 x the floor rows: every value


def read_profile_of(fitted: bl.FittedPipeline) -> dict:
    from beamlearn.analyzers.profile import COMPACT_PROFILE
    from beamlearn.profile.core import as_document, join_moments

    return as_document(join_moments(fitted.lineage["profile"]), params=COMPACT_PROFILE)


def test_the_compact_profile_counts_categories_exactly_when_a_step_counts_them_and_scales_its_sample_else() -> None:
    t = make_table(200_000, seed=8)
    want = {k: v for k, v in zip(*np.unique(t.column("s").drop_null().to_numpy(zero_copy_only=False),
                                            return_counts=True))}
    encoded = bl.Pipeline([bl.OneHotEncoder(["s"])]).fit(t).lineage["profile"]["columns"]["columns"]["s"]
    assert frequent_values(encoded) == {k: float(v) for k, v in want.items()}  # the encoder's exact counts, shared
    alone = bl.Pipeline([bl.StandardScaler(["x"])]).fit(t).lineage["profile"]["columns"]["columns"]["s"]
    got = frequent_values(alone)  # a sample of every 64th row (every 3rd of the last, short batch), weighted
    n = sum(want.values())
    assert set(got) == set(want) and abs(alone["frequent"]["total"] - n) / n < 0.01
    assert max(abs(got[k] / alone["frequent"]["total"] - want[k] / n) for k in want) < 0.02
