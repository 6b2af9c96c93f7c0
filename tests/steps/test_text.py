"""FeatureHasher: row-by-row parity with sklearn's CSR output, nulls, batching, serving and artifacts."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction import FeatureHasher as SkHasher

import beamlearn as bl
from beamlearn.errors import SchemaError, SpecError
from beamlearn.steps.text import SPARSE_TYPE, _index_sign
from beamlearn.testing import assert_serving_consistent


def sk_rows(table: pa.Table, cols: list[str], n_features: int, alternate_sign: bool) -> list[list[dict]]:
    """sklearn's FeatureHasher(input_type="dict") on each row's dict of non-missing values, as sparse rows."""
    dicts = [{c: r[c] for c in cols if r[c] is not None and not (isinstance(r[c], float) and math.isnan(r[c]))}
             for r in table.to_pylist()]
    x = SkHasher(n_features=n_features, input_type="dict", alternate_sign=alternate_sign).transform(dicts)
    x = x.tocsr()
    return [[{"index": int(i), "value": float(v)} for i, v in
             zip(x.indices[x.indptr[r]:x.indptr[r + 1]], x.data[x.indptr[r]:x.indptr[r + 1]])]
            for r in range(x.shape[0])]


def assert_same_rows(got: list[list[dict]], want: list[list[dict]]) -> None:
    assert len(got) == len(want)
    for r, (g, w) in enumerate(zip(got, want)):
        assert [e["index"] for e in g] == [e["index"] for e in w], f"row {r}"
        np.testing.assert_allclose([e["value"] for e in g], [e["value"] for e in w], rtol=1e-12, atol=0,
                                   err_msg=f"row {r}")


def mixed_table(n: int, seed: int, n_values: int = 30) -> pa.Table:
    rng = np.random.default_rng(seed)
    words = np.array([f"w{k}" for k in range(n_values)] + ["", "é ü", "a=b"])
    city = words[rng.integers(0, len(words), n)].tolist()
    num = np.round(rng.normal(size=n) * 10, 1)
    num[rng.random(n) < 0.1] = np.nan
    num[rng.random(n) < 0.1] = 0.0
    return pa.table({
        "city": pa.array(city, mask=rng.random(n) < 0.15),
        "num": pa.array(num, mask=rng.random(n) < 0.1),
        "count": pa.array(rng.integers(-3, 4, n), mask=rng.random(n) < 0.1),
        "flag": pa.array(rng.random(n) < 0.5, mask=rng.random(n) < 0.1),
        "tag": pa.array(words[rng.integers(0, min(5, len(words)), n)].tolist()),
        "keep": pa.array(np.arange(n)),
    })


COLS = ["city", "num", "count", "flag", "tag"]


# ---------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("n_features", [1, 7, 64, 2**20])
@pytest.mark.parametrize("alternate_sign", [True, False])
def test_rows_match_sklearn(n_features, alternate_sign):
    t = mixed_table(400, seed=n_features)
    f = bl.Pipeline([bl.FeatureHasher(COLS, n_features=n_features, alternate_sign=alternate_sign)]).fit(
        t, batch_size=64)
    out = f.transform(t, batch_size=37)
    assert out.column_names == ["hashed", "keep"]
    assert out.schema.field("hashed").type == SPARSE_TYPE == f.output_schema.field("hashed").type
    assert_same_rows(out.column("hashed").to_pylist(), sk_rows(t, COLS, n_features, alternate_sign))
    assert_serving_consistent(f, t.slice(0, 150))


def test_collisions_are_summed_and_cancelled_sums_kept_like_sklearn():
    t = pa.table({"a": ["x", "y"], "b": ["x", "x"], "n": [2.0, -1.0]})
    f = bl.Pipeline([bl.FeatureHasher(["a", "b", "n"], n_features=1, output="h")]).fit(t)
    got = f.transform(t).column("h").to_pylist()
    assert_same_rows(got, sk_rows(t, ["a", "b", "n"], 1, True))
    assert all(len(row) == 1 for row in got)


def test_the_int32_min_hash_follows_sklearns_rule():
    idx, sign = _index_sign(np.array([-(2**31), 5, -5]), 10, True)
    assert idx.tolist() == [(2**31 - 1 - 9) % 10, 5, 5] and sign.tolist() == [-1.0, 1.0, -1.0]


def test_missing_values_contribute_nothing_and_rows_may_be_empty():
    t = pa.table({"s": pa.array([None, "a"], pa.string()), "x": [float("nan"), None]})
    f = bl.Pipeline([bl.FeatureHasher(["s", "x"], n_features=16)]).fit(t)
    assert f.transform(t).column("hashed").to_pylist()[0] == []
    assert f.transform_one({"s": None, "x": None}) == {"hashed": []}
    assert f.transform_one({"s": "a", "x": 0.0}) == {"hashed": f.transform(t).column("hashed").to_pylist()[1]}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(1, 80), n_features=st.sampled_from([1, 2, 5, 33, 2**18]),
       alternate_sign=st.booleans(), batch=st.integers(1, 40), n_values=st.integers(1, 40))
def test_random_tables_match_sklearn_and_serve(seed, n, n_features, alternate_sign, batch, n_values):
    t = mixed_table(n, seed, n_values)
    f = bl.Pipeline([bl.FeatureHasher(COLS, n_features=n_features, alternate_sign=alternate_sign)]).fit(t)
    out = f.transform(t, batch_size=batch)
    assert_same_rows(out.column("hashed").to_pylist(), sk_rows(t, COLS, n_features, alternate_sign))
    assert out.column("keep").to_pylist() == t.column("keep").to_pylist()
    assert_serving_consistent(f, t)


def test_batching_gives_identical_output():
    t = mixed_table(500, seed=3)
    f = bl.Pipeline([bl.FeatureHasher(COLS, n_features=50)]).fit(t)
    ref = f.transform(t, batch_size=1000)
    for bs in (1, 7, 128):
        assert f.transform(t, batch_size=bs).equals(ref)


def test_dictionary_and_large_string_inputs():
    t = pa.table({"s": pa.array(["a", "b", None, "a"]).dictionary_encode(),
                  "l": pa.array(["x", None, "y", "y"], pa.large_string())})
    f = bl.Pipeline([bl.FeatureHasher(["s", "l"], n_features=32)]).fit(t)
    plain = t.cast(pa.schema([("s", pa.string()), ("l", pa.string())]))
    assert_same_rows(f.transform(t).column("hashed").to_pylist(), sk_rows(plain, ["s", "l"], 32, True))


# ---------------------------------------------------------------------------------------------- artifacts, errors
def test_artifact_round_trip(tmp_path):
    t = mixed_table(100, seed=9)
    f = bl.Pipeline([bl.FeatureHasher(COLS, n_features=1000, output="feats")]).fit(t)
    g = bl.load(f.save(str(tmp_path / "fh.zip")))
    assert g.transform(t).equals(f.transform(t))
    assert g.describe()[0]["fitted"]["n_features"] == 1000
    assert g.transform_one(t.to_pylist()[3]) == f.transform_one(t.to_pylist()[3])


@pytest.mark.parametrize("kw,match", [({"n_features": 0}, "n_features=0"), ({"n_features": 2**31}, "n_features"),
                                      ({"n_features": 3.5}, "n_features"), ({"alternate_sign": "yes"}, "alternate"),
                                      ({"output": ""}, "output")])
def test_bad_parameters(kw, match):
    with pytest.raises(SpecError, match=match):
        bl.Pipeline([bl.FeatureHasher(["s"], **kw)]).fit({"s": ["a"]})


def test_bad_columns_and_collisions_name_the_column():
    with pytest.raises(SchemaError, match="'d'"):
        bl.Pipeline([bl.FeatureHasher(["s", "d"])]).fit(pa.table({"s": ["a"], "d": pa.array([[1]])}))
    with pytest.raises(SchemaError, match="'nope'"):
        bl.Pipeline([bl.FeatureHasher(["nope"])]).fit({"s": ["a"]})
    with pytest.raises(SchemaError, match="'other'"):
        bl.Pipeline([bl.FeatureHasher(["s"], output="other")]).fit({"s": ["a"], "other": [1]})
