"""Derive: appended derived columns (weekday, HHMM hour, greater_than), missing values, training-only inputs,
serving consistency, artifact round trip and errors."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import beamlearn as bl
from beamlearn.errors import SchemaError, SpecError
from beamlearn.testing import assert_serving_consistent


@settings(max_examples=40, deadline=None)
@given(st.lists(st.dates(dt.date(1900, 1, 1), dt.date(2100, 12, 31)), min_size=1, max_size=30))
def test_weekday_matches_datetime(dates) -> None:
    t = pa.table({"y": [d.year for d in dates], "m": [d.month for d in dates], "d": [d.day for d in dates]})
    f = bl.Pipeline([bl.Derive(["y", "m", "d"], output="wd", func="weekday", dtype="int64")]).fit(t)
    out = f.transform(t)
    assert out.column_names == ["y", "m", "d", "wd"]  # appended, inputs kept
    assert out.column("wd").to_pylist() == [d.weekday() for d in dates]


def test_invalid_and_missing_dates_are_missing() -> None:
    t = pa.table({"y": [2013, 2013, None, 2013, 2024], "m": [2, 13, 1, 4, 2], "d": [29, 1, 1, 31, 29]})
    f = bl.Pipeline([bl.Derive(["y", "m", "d"], output="wd", func="weekday", dtype="int64")]).fit(t)
    assert f.transform(t).column("wd").to_pylist() == [None, None, None, None, 3]
    assert_serving_consistent(f, t)


def test_hhmm_hour_and_greater_than() -> None:
    t = pa.table({"hhmm": [0, 59, 515, 1545, 2359, None], "delay": [15.0, 15.5, None, -3.0, float("nan"), 100.0]})
    f = bl.Pipeline([bl.Derive("hhmm", output="hour", func="hhmm_hour", dtype="int64"),
                     bl.Derive("delay", output="late", func="greater_than", kw_args={"value": 15}, dtype="bool",
                               training_only=True)]).fit(t)
    out = f.transform(t)
    assert out.column("hour").to_pylist() == [0, 0, 5, 15, 23, None]
    assert out.column("late").to_pylist() == [False, True, None, False, None, True]
    assert out.schema.field("late").type == pa.bool_()
    assert_serving_consistent(f, t)
    assert f.required_columns == ["hhmm"]  # the label's input is optional when serving
    assert f.transform_one({"hhmm": 1200})["late"] is None


def test_artifact_round_trip(tmp_path) -> None:
    t = pa.table({"a": np.arange(5.0)})
    f = bl.Pipeline([bl.Derive("a", output="b", func="greater_than", kw_args={"value": 2})]).fit(t)
    f.save(str(tmp_path / "m.blm"))
    g = bl.load(str(tmp_path / "m.blm"))
    assert g.transform(t).equals(f.transform(t))
    assert g.transform(t).column("b").to_pylist() == [0.0, 0.0, 0.0, 1.0, 1.0]


def test_errors() -> None:
    t = {"a": [1.0], "s": ["x"]}
    with pytest.raises(SchemaError, match="already exists"):
        bl.Pipeline([bl.Derive("a", output="s", func="hhmm_hour")]).fit(t)
    with pytest.raises(SchemaError, match="numeric"):
        bl.Pipeline([bl.Derive("s", output="z", func="hhmm_hour")]).fit(t)
    with pytest.raises(SpecError, match="dtype"):
        bl.Pipeline([bl.Derive("a", output="z", func="hhmm_hour", dtype="int8")]).fit(t)
    with pytest.raises(SpecError, match="nope"):
        bl.Pipeline([bl.Derive("a", output="z", func="nope")]).fit(t)
    with pytest.raises(SpecError, match="'weekday' cannot take the columns"):  # three parameters, one column
        bl.Pipeline([bl.Derive("a", output="z", func="weekday")]).fit(t)
    with pytest.raises(SpecError, match="cannot take"):  # an unknown keyword argument
        bl.Pipeline([bl.Derive("a", output="z", func="greater_than", kw_args={"threshold": 1})]).fit(t)
