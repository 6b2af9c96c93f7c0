"""The estimator contract: feature resolution and serving requirements."""

import numpy as np
import pyarrow as pa
import pytest

import beamlearn as bl
from beamlearn.errors import SchemaError


def _table(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return pa.table({"num0": rng.normal(size=n), "num1": rng.normal(size=n),
                     "y": (rng.random(n) > 0.5).astype(np.int64)})


def test_glob_features_are_required_when_serving():
    f = bl.Pipeline([bl.LinearRegression("num*", "y")]).fit(_table())
    assert f.states[0]["features"] == ["num0", "num1"]
    assert f.required_columns == ["num0", "num1"]
    with pytest.raises(SchemaError, match="num1"):
        f.transform_one({"num0": 1.0})


def test_overlapping_patterns_resolve_each_column_once():
    f = bl.Pipeline([bl.LinearRegression(["num*", "num0"], "y")]).fit(_table())
    assert f.states[0]["features"] == ["num0", "num1"]


def test_no_matching_feature_names_the_pattern():
    with pytest.raises(SchemaError, match="nope"):
        bl.Pipeline([bl.LinearRegression(["nope*"], "y")]).fit(_table())


def test_an_input_name_selects_only_its_own_derived_columns():
    t = pa.table({"carrier": ["AA", "UA", "AA", "DL"] * 25, "origin": ["JFK", "LGA", "EWR", "JFK"] * 25,
                  "y": [1.0, 2.0, 3.0, 4.0] * 25})
    f = bl.Pipeline([bl.OneHotEncoder(["carrier", "origin"]), bl.LinearRegression(["carrier"], "y")]).fit(t)
    assert f.states[1]["features"] == ["carrier_AA", "carrier_DL", "carrier_UA"]
