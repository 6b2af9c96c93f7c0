"""FittedPipeline.update and ``beamlearn update``: an update on new data equals a fit on all of it (counts,
extrema and vocabularies identical, moments within rtol 1e-12), round trips through artifacts, and the errors for
what cannot be merged."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import beamlearn as bl
from beamlearn.artifact import from_bytes, to_bytes
from beamlearn.cli import main
from beamlearn.errors import DataError, SchemaError, UpdateError

SCHEMA = pa.schema([("x", pa.float64()), ("y", pa.float64()), ("c", pa.string())])
EXACT = [  # pipelines whose update is exact
    lambda: [bl.StandardScaler(["x"]), bl.OneHotEncoder(["c"])],
    lambda: [bl.SimpleImputer(["x"]), bl.StandardScaler(["x"]), bl.MinMaxScaler(["y"])],
    lambda: [bl.SimpleImputer(["x", "y"]), bl.OrdinalEncoder(["c"])],
    lambda: [bl.SimpleImputer(["x", "y"], strategy="most_frequent")],
    lambda: [bl.LinearRegression(["x"], "y")],
]

rows = st.lists(st.tuples(st.one_of(st.none(), st.just(float("nan")), st.floats(-1e6, 1e6)),
                          st.floats(-1e3, 1e3), st.one_of(st.none(), st.sampled_from("abcde"))),
                min_size=3, max_size=40)


def table(rs: list[tuple]) -> pa.Table:
    return pa.table([pa.array([r[k] for r in rs], t.type) for k, t in enumerate(SCHEMA)], schema=SCHEMA)


def same(a: object, b: object) -> None:
    if isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            same(x, y)
    elif isinstance(a, np.ndarray) and a.dtype.kind == "f" or isinstance(a, float):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-9)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows, st.lists(st.integers(1, 39), min_size=1, max_size=2, unique=True), st.integers(0, len(EXACT) - 1))
def test_update_equals_fit_on_the_union(rs, cuts, which):
    cuts = sorted(c for c in cuts if c < len(rs))
    parts = [rs[a:b] for a, b in zip([0, *cuts], [*cuts, len(rs)]) if b > a]
    if any(all(r[0] is None or r[0] != r[0] for r in p) or all(r[2] is None for r in p) for p in parts):
        return  # an all-missing column: an imputer drops it (as scikit-learn does), a part then fits differently
    steps = EXACT[which]
    whole = bl.Pipeline(steps()).fit(table(rs))
    try:
        fitted = bl.Pipeline(steps()).fit(table(parts[0]))
    except DataError:
        return  # e.g. no label anywhere in the first part
    for p in parts[1:]:
        fitted = fitted.update(table(p))
    same(fitted.states, whole.states)
    assert fitted.lineage["rows"] == len(rs) and len(fitted.lineage.get("updates", [])) == len(parts) - 1
    got, want = fitted.transform(table(rs)), whole.transform(table(rs))
    assert got.schema == want.schema
    for name in got.column_names:
        a, b = got.column(name).to_numpy(zero_copy_only=False), want.column(name).to_numpy(zero_copy_only=False)
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
        else:
            np.testing.assert_array_equal(a, b)


def data(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return table([(float(x), float(y), c) for x, y, c in
                  zip(rng.normal(size=n), rng.normal(size=n), rng.choice(list("abc"), n))])


def test_artifact_round_trip_then_update_again(tmp_path):
    a, b, c = data(50, 1), data(30, 2), data(20, 3)
    steps = EXACT[0]
    path = bl.Pipeline(steps()).fit(a).update(b).save(str(tmp_path / "m.blp"))
    again = bl.load(path).update(c)
    same(again.states, bl.Pipeline(steps()).fit(pa.concat_tables([a, b, c])).states)
    assert [u["rows"] for u in again.lineage["updates"]] == [30, 20]


def test_artifact_without_accumulators_says_refit():
    blob = to_bytes(bl.Pipeline(EXACT[0]()).fit(data(10, 1)))
    old = from_bytes(blob)
    old.accumulators = None  # what an artifact of an older beamlearn loads as
    with pytest.raises(UpdateError, match="refit it once with this version"):
        old.update(data(5, 2))


@pytest.mark.parametrize("steps, name", [
    (lambda: [bl.RobustScaler(["x"])], "RobustScaler"),
    (lambda: [bl.KMeans(["x", "y"], n_clusters=2)], "KMeans"),
    (lambda: [bl.LogisticRegression(["x", "y"], "c")], "LogisticRegression"),
])
def test_not_mergeable_steps_say_so(steps, name):
    fitted = bl.Pipeline(steps()).fit(data(40, 1))
    for approx in (False, True):
        with pytest.raises(UpdateError, match=f"step 0 \\({name}\\) cannot be updated"):
            fitted.update(data(10, 2), approx=approx)


def test_later_pass_needs_approx():
    steps = lambda: [bl.SimpleImputer(["x"]), bl.LinearRegression(["x"], "y")]
    a, b = data(40, 1), data(20, 2)
    fitted = bl.Pipeline(steps()).fit(a)
    with pytest.raises(UpdateError, match="step 1 \\(LinearRegression\\).*approx=True"):
        fitted.update(b)
    approx = fitted.update(b, approx=True)
    assert approx.lineage["updates"][-1]["approx"] is True
    exact = bl.Pipeline(steps()).fit(pa.concat_tables([a, b]))
    assert approx.states[1]["model"]["count"] == exact.states[1]["model"]["count"]
    np.testing.assert_allclose(approx.states[1]["model"]["coef"], exact.states[1]["model"]["coef"], rtol=0.2)


def test_new_data_must_match_the_input_schema():
    fitted = bl.Pipeline(EXACT[0]()).fit(data(10, 1))
    with pytest.raises(SchemaError, match="'c'"):
        fitted.update(pa.table({"x": [1.0], "y": [2.0]}))


def fit_cli(tmp_path, monkeypatch, a: str, b: str) -> None:
    """In ``tmp_path``: a StandardScaler spec fitted by the CLI on ``a.csv`` into ``m.blp``; ``b.csv`` beside."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text("steps:\n  - step: StandardScaler\n    columns: [x]\n")
    (tmp_path / "a.csv").write_text(a)
    (tmp_path / "b.csv").write_text(b)
    assert main(["fit", "spec.yaml", "--data", "a.csv", "--out", "m.blp", "-q"]) == 0


def test_cli_update_round_trip(tmp_path, capsys, monkeypatch):
    fit_cli(tmp_path, monkeypatch, "x,y\n1.0,2\n2.0,3\n", "x,y\n4.0,1\noops,2\n")
    assert main(["update", "m.blp", "--data", "b.csv", "--out", "m2.blp", "--errors", "dead.jsonl"]) == 0
    assert "1 rows added (3 in all), 1 dead letters" in capsys.readouterr().out
    np.testing.assert_allclose(bl.load("m2.blp").states[0]["moments"]["mean"], [7.0 / 3], rtol=1e-12)
    assert main(["update", "m.blp", "--data", "b.csv", "--out", "m3.blp"]) == 2
    assert main(["update", "m.blp", "--data", "missing.csv", "--out", "m3.blp"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") <= 3 and "missing.csv" in err


def test_sketch_quantiles_update_and_round_trip(tmp_path):
    a, b = data(60, 1), data(40, 2)  # fewer rows than the sketch's k: the KLL sketch holds every value exactly
    def steps():
        return [bl.RobustScaler(["x"], approx=True),
                bl.KBinsDiscretizer(["y"], n_bins=3, strategy="quantile", approx=True)]

    path = bl.Pipeline(steps()).fit(a).save(str(tmp_path / "q.blp"))
    same(bl.load(path).update(b).states, bl.Pipeline(steps()).fit(pa.concat_tables([a, b])).states)


def test_sklearn_model_keeps_no_training_rows():
    from sklearn.linear_model import LinearRegression

    fitted = bl.Pipeline([bl.SklearnModel(LinearRegression(), features=["x"], label="y")]).fit(data(30, 1))
    assert fitted.accumulators == (None,)
    with pytest.raises(UpdateError, match="step 0 \\(SklearnModel\\) cannot be updated"):
        fitted.update(data(5, 2))


def test_half_life_in_rows_weights_old_statistics_down():
    a, b = data(80, 1), data(40, 2)
    fitted = bl.Pipeline([bl.StandardScaler(["x"]), bl.MinMaxScaler(["y"]), bl.OneHotEncoder(["c"])]).fit(a)
    new = fitted.update(b, half_life=40)  # 40 new rows: the old weigh 0.5
    xa, xb = a.column("x").to_numpy(), b.column("x").to_numpy()
    w = np.r_[np.full(len(xa), 0.5), np.ones(len(xb))]
    x = np.r_[xa, xb]
    mean = np.average(x, weights=w)
    m = new.states[0]["moments"]
    np.testing.assert_allclose(m["mean"], [mean], rtol=1e-12)
    np.testing.assert_allclose(m["var"], [np.average((x - mean) ** 2, weights=w)], rtol=1e-12)
    np.testing.assert_allclose(m["count"], [0.5 * len(xa) + len(xb)], rtol=1e-12)
    ys = np.r_[a.column("y").to_numpy(), b.column("y").to_numpy()]  # extrema do not fade
    np.testing.assert_array_equal(new.states[1]["range"]["min"], [ys.min()])
    assert new.lineage["updates"][-1]["half_life"] == "40" and new.lineage["rows"] == 120
    again = new.update(b, half_life=40)  # and it keeps decaying
    np.testing.assert_allclose(again.states[0]["moments"]["count"], [0.5 * (0.5 * 80 + 40) + 40], rtol=1e-12)


def test_half_life_in_time_uses_the_last_fit_or_update():
    import datetime as dt

    fitted = bl.Pipeline([bl.StandardScaler(["x"])]).fit(data(50, 1))
    assert dt.datetime.fromisoformat(fitted.lineage["fitted_at"]).tzinfo is not None
    two_days = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)).isoformat(timespec="seconds")
    fitted.lineage["fitted_at"] = two_days
    new = fitted.update(data(10, 2), half_life="1d")  # two half-lives: the old 50 rows weigh 12.5
    np.testing.assert_allclose(new.states[0]["moments"]["count"], [12.5 + 10], rtol=1e-3)
    later = new.update(data(10, 3), half_life=dt.timedelta(days=1))  # just updated: almost no decay
    np.testing.assert_allclose(later.states[0]["moments"]["count"], [32.5], rtol=1e-3)


@pytest.mark.parametrize("bad", [0, -5, "soon", "7w", float("inf"), True])
def test_bad_half_life_is_refused_before_reading(bad):
    fitted = bl.Pipeline([bl.StandardScaler(["x"])]).fit(data(10, 1))
    with pytest.raises(UpdateError, match="half_life must be"):
        fitted.update("no/such/file.csv", half_life=bad)


def test_half_life_on_a_sketch_says_it_cannot_decay():
    fitted = bl.Pipeline([bl.RobustScaler(["x"], approx=True)]).fit(data(30, 1))
    with pytest.raises(UpdateError, match="cannot be down-weighted"):
        fitted.update(data(10, 2), half_life=10)


def test_cli_update_half_life(tmp_path, monkeypatch, capsys):
    fit_cli(tmp_path, monkeypatch, "x\n1.0\n3.0\n", "x\n6.0\n6.0\n")
    assert main(["update", "m.blp", "--data", "b.csv", "--out", "m2.blp", "--half-life", "2", "-q"]) == 0
    np.testing.assert_allclose(bl.load("m2.blp").states[0]["moments"]["mean"], [(0.5 * 4 + 12) / 3], rtol=1e-12)
    assert main(["update", "m.blp", "--data", "b.csv", "--out", "m3.blp", "--half-life", "soon"]) == 2
    assert "half_life must be" in capsys.readouterr().err
