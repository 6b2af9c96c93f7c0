"""Analyzers: merge invariance under any split and order, parity with numpy / collections, exact quantiles,
the bracket-miss retry, approximate quantiles in rank space, and pickling of every accumulator."""

from __future__ import annotations

import itertools
import pickle
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beamlearn import analyzers as A
from beamlearn.analyzers import MinMax, Moments, Quantiles, RowCount, ValueCounts, quantile_plan, run_analyzer

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
QS = (0.0, 0.001, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999, 1.0)


# ---------------------------------------------------------------------------------------------- helpers
def _pickled(obj):
    return pickle.loads(pickle.dumps(obj))


def run_split(analyzer, batches, groups, order, *, pickle_every_stage=True):
    """Run every pass of ``analyzer`` with batch ``k`` added to accumulator ``groups[k]`` and the accumulators
    merged in ``order`` (a permutation of the groups), pickling accumulators between stages like Beam does."""
    n_groups = len(order)
    current, state = analyzer, None
    while current is not None:
        if pickle_every_stage:
            current = _pickled(current)
        accs = [current.create() for _ in range(n_groups)]
        for b, g in zip(batches, groups):
            acc = _pickled(accs[g]) if pickle_every_stage else accs[g]
            accs[g] = current.add(acc, b)
        if pickle_every_stage:
            accs = [_pickled(a) for a in accs]
        merged = current.merge([accs[i] for i in order])
        if pickle_every_stage:
            merged = _pickled(merged)
        state = current.extract(merged)
        current = current.then(state)
    return state


@st.composite
def tables(draw, max_rows=60):
    n = draw(st.integers(0, max_rows))
    fl = st.one_of(st.none(), st.just(float("nan")), st.floats(-1e6, 1e6, allow_nan=False))
    f = draw(st.lists(fl, min_size=n, max_size=n))
    i = draw(st.lists(st.one_of(st.none(), st.integers(-50, 50)), min_size=n, max_size=n))
    s = draw(st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", "c", "é", ""])), min_size=n, max_size=n))
    w = draw(st.lists(st.one_of(st.none(), st.floats(0, 10, allow_nan=False)), min_size=n, max_size=n))
    return pa.table({
        "f": pa.array(f, type=pa.float64(), from_pandas=False),
        "i": pa.array(i, type=pa.int64()),
        "s": pa.array(s, type=pa.string()),
        "dup": pa.array([None if v is None else float(v % 4) for v in i], type=pa.float64()),
        "allnull": pa.nulls(n, pa.float64()),
        "w": pa.array(w, type=pa.float64()),
    })


@st.composite
def splits(draw, max_rows=60):
    """A table, its batches (random split points, empty batches included), a group per batch, a merge order."""
    t = draw(tables(max_rows))
    n = t.num_rows
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=6)))  # repeated cuts make empty batches
    bounds = [0, *cuts, n]
    batches = [b for lo, hi in itertools.pairwise(bounds) for b in t.slice(lo, hi - lo).combine_chunks().to_batches()
               or [pa.RecordBatch.from_pylist([], schema=t.schema)]]
    n_groups = draw(st.integers(1, 4))
    groups = [draw(st.integers(0, n_groups - 1)) for _ in batches]
    order = draw(st.permutations(range(n_groups)))
    return t, batches, groups, list(order)


def whole(t):
    return t.combine_chunks().to_batches() or [pa.RecordBatch.from_pylist([], schema=t.schema)]


def values(t, col):
    """The non-missing values of ``col`` as float64 numpy."""
    x = np.array([np.nan if v is None else v for v in t.column(col).to_pylist()], dtype=np.float64)
    return x[~np.isnan(x)]


def assert_close(got, want, scale):
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * scale, equal_nan=True)


# ---------------------------------------------------------------------------------------------- merge invariance
@SETTINGS
@given(splits())
def test_counts_extrema_vocabularies_identical_under_any_split(case):
    t, batches, groups, order = case
    ref = whole(t)
    for an in (RowCount(["f", "i", "s", "allnull"]), MinMax(["f", "i", "dup", "allnull"]),
               ValueCounts(["f", "i", "s", "dup", "allnull"])):
        got = run_split(an, batches, groups, order)
        want = run_analyzer(an, ref)
        if isinstance(an, ValueCounts):
            for g, w in zip(got, want):
                assert g["values"] == w["values"]
                np.testing.assert_array_equal(g["counts"], w["counts"])
                assert g["missing"] == w["missing"]
        else:
            assert got.keys() == want.keys()
            for k in want:
                np.testing.assert_array_equal(got[k], want[k])


@SETTINGS
@given(splits())
def test_moments_within_rtol_under_any_split(case):
    t, batches, groups, order = case
    scale = 1e6
    for an in (Moments(["f", "i", "dup", "allnull"]), Moments(["f", "i", "dup"], weight="w")):
        got = run_split(an, batches, groups, order)
        want = run_analyzer(an, whole(t))
        assert_close(got["count"], want["count"], 1.0)
        assert_close(got["mean"], want["mean"], scale)
        assert_close(got["var"], want["var"], scale * scale)


@SETTINGS
@given(splits())
def test_weighted_value_counts_under_any_split(case):
    t, batches, groups, order = case
    an = ValueCounts(["s", "i"], weight="w")
    got, want = run_split(an, batches, groups, order), run_analyzer(an, whole(t))
    for g, w in zip(got, want):
        assert g["values"] == w["values"]
        assert_close(g["counts"], w["counts"], 10.0)
        assert_close(g["missing"], w["missing"], 10.0)


@SETTINGS
@given(splits(max_rows=40))
def test_exact_quantiles_identical_under_any_split(case):
    t, batches, groups, order = case
    an = Quantiles(["f", "dup", "allnull"], QS, method="linear")
    got, want = run_split(an, batches, groups, order), run_analyzer(an, whole(t))
    np.testing.assert_array_equal(got["quantiles"], want["quantiles"])
    np.testing.assert_array_equal(got["count"], want["count"])


# ---------------------------------------------------------------------------------------------- parity
@SETTINGS
@given(tables())
def test_moments_match_numpy(t):
    st_ = run_analyzer(Moments(["f", "i"]), whole(t))
    for k, col in enumerate(["f", "i"]):
        x = values(t, col)
        assert st_["count"][k] == len(x)
        if len(x) == 0:
            assert np.isnan(st_["mean"][k]) and np.isnan(st_["var"][k])
        else:
            assert_close(st_["mean"][k], x.mean(), 1e6)
            assert_close(st_["var"][k], x.var(), 1e12)


@SETTINGS
@given(tables())
def test_weighted_moments_match_numpy_average(t):
    st_ = run_analyzer(Moments(["f"], weight="w"), whole(t))
    f = np.array([np.nan if v is None else v for v in t.column("f").to_pylist()], dtype=np.float64)
    w = np.array([0.0 if v is None else v for v in t.column("w").to_pylist()], dtype=np.float64)
    ok = ~np.isnan(f) & (w > 0)
    if not ok.any():
        assert np.isnan(st_["mean"][0])
        return
    mean = np.average(f[ok], weights=w[ok])
    var = np.average((f[ok] - mean) ** 2, weights=w[ok])
    assert_close(st_["count"][0], w[ok].sum(), 10.0)
    assert_close(st_["mean"][0], mean, 1e6)
    assert_close(st_["var"][0], var, 1e12)


def test_moments_small_known_values():
    b = pa.record_batch({"x": [1.0, 2.0, 3.0, 4.0, None, float("nan")], "w": [1.0, 1.0, 1.0, 5.0, 1.0, 1.0]})
    s = run_analyzer(Moments(["x"]), [b])
    assert s["count"].tolist() == [4.0] and s["mean"].tolist() == [2.5] and s["var"].tolist() == [1.25]
    sw = run_analyzer(Moments(["x"], weight="w"), [b])
    assert sw["count"].tolist() == [8.0]
    assert sw["mean"][0] == pytest.approx(np.average([1, 2, 3, 4], weights=[1, 1, 1, 5]), rel=1e-15)


@SETTINGS
@given(tables())
def test_value_counts_match_counter(t):
    st_ = run_analyzer(ValueCounts(["s", "i", "f"]), whole(t))
    for state, col in zip(st_, ["s", "i", "f"]):
        vals = t.column(col).to_pylist()
        miss = [v for v in vals if v is None or v != v]  # noqa: PLR0124
        c = Counter(v for v in vals if v is not None and v == v)  # noqa: PLR0124
        assert state["values"] == sorted(c)
        assert state["counts"].tolist() == [c[v] for v in sorted(c)]
        assert state["counts"].dtype == np.int64
        assert state["missing"] == len(miss)


@SETTINGS
@given(st.lists(st.lists(st.sampled_from(["a", "b", "c", "d", None, "é"]), min_size=0, max_size=60), max_size=6))
def test_string_counts_reuse_the_last_vocabulary_and_notice_new_values(parts):
    """A batch of a column is looked up among the values its previous batch had (when it is long enough); a new
    value, a null or another column of the same name elsewhere must not fool the lookup."""
    batches = [pa.record_batch({"s": pa.array(p, pa.string())}) for p in parts]
    other = [pa.record_batch({"s": pa.array(["zz"] * 40 + ["a"], pa.string())})]  # same name, other vocabulary
    for run in (batches, other + batches, batches + other):
        (got,) = run_analyzer(ValueCounts(["s"]), run)
        values = [v for b in run for v in b.column("s").to_pylist()]
        want = Counter(v for v in values if v is not None)
        assert got["values"] == sorted(want) and got["counts"].tolist() == [want[v] for v in sorted(want)]
        assert got["missing"] == values.count(None)


@SETTINGS
@given(tables())
def test_weighted_value_counts_match_counter(t):
    (state,) = run_analyzer(ValueCounts(["s"], weight="w"), whole(t))
    c: Counter = Counter()
    missing = 0.0
    for v, w in zip(t.column("s").to_pylist(), t.column("w").to_pylist()):
        w = 0.0 if w is None else w
        if v is None:
            missing += w
        else:
            c[v] += w
    assert state["values"] == sorted(c)
    assert_close(state["counts"], [c[v] for v in sorted(c)], 10.0)
    assert_close(state["missing"], missing, 10.0)


def test_row_count_counts_nulls_and_nan():
    b = pa.record_batch({"x": [1.0, None, float("nan")], "s": ["a", None, None], "i": pa.array([1, 2, 3])})
    s = run_analyzer(RowCount(["x", "s", "i"]), [b, b.slice(0, 0)])
    assert s["rows"] == 3 and s["missing"].tolist() == [2, 2, 0]


def test_minmax_skips_nan_and_nulls_and_all_missing_is_nan():
    b = pa.record_batch({"x": [float("nan"), 3.0, None, -2.0], "n": pa.nulls(4, pa.float64()),
                         "i": pa.array([5, None, -7, 1])})
    s = run_analyzer(MinMax(["x", "n", "i"]), [b])
    assert s["min"][0] == -2.0 and s["max"][0] == 3.0
    assert np.isnan(s["min"][1]) and np.isnan(s["max"][1])
    assert s["min"][2] == -7 and s["max"][2] == 5


def test_analyzer_keys_identify_equal_statistics():
    assert Moments(["a", "b"]).key() == Moments(("a", "b")).key()
    assert Moments(["a"]).key() != Moments(["a"], weight="w").key()
    assert Moments(["a"]).key() != MinMax(["a"]).key()
    assert Quantiles(["a"], [0.5]).key() == Quantiles(["a"], (0.5,)).key()


# ---------------------------------------------------------------------------------------------- exact quantiles
def _check_exact(x, methods=A.QUANTILE_METHODS, qs=QS, batch=None):
    arr = pa.array(x, type=pa.float64())
    tbl = pa.table({"x": arr})
    batches = tbl.to_batches(max_chunksize=batch) if batch else tbl.to_batches()
    for m in methods:
        got = run_analyzer(Quantiles(["x"], qs, method=m), batches)["quantiles"][0]
        want = np.quantile(np.asarray(x, dtype=np.float64), qs, method=m)
        assert got.tolist() == want.tolist(), f"method={m} n={len(x)}"


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 10, 33, 100, 1001])
def test_exact_quantiles_equal_numpy_every_method(n):
    rng = np.random.default_rng(n)
    _check_exact(rng.normal(size=n), batch=max(1, n // 3))


@pytest.mark.parametrize("n", [2, 9, 50, 2000])
def test_exact_quantiles_duplicates_heavy(n):
    rng = np.random.default_rng(n)
    _check_exact(rng.integers(0, 3, size=n).astype(float), batch=max(1, n // 4))


def test_exact_quantiles_large_n_every_method():
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.lognormal(size=60_000), rng.integers(0, 5, size=40_000).astype(float)])
    rng.shuffle(x)
    _check_exact(x, batch=16_384)


def test_exact_quantiles_ignore_missing_and_empty_columns():
    b = pa.record_batch({"x": [3.0, None, float("nan"), 1.0, 2.0], "e": pa.nulls(5, pa.float64())})
    s = run_analyzer(Quantiles(["x", "e"], [0.5, 1.0]), [b])
    assert s["quantiles"][0].tolist() == [2.0, 3.0]
    assert np.isnan(s["quantiles"][1]).all()
    assert s["count"].tolist() == [3, 0]


@pytest.mark.parametrize("method", A.QUANTILE_METHODS)
def test_quantile_plan_reproduces_numpy(method):
    for n in [1, 2, 3, 10, 11, 1000]:
        x = np.arange(n, dtype=float) ** 2  # distinct values: the index plan determines the result
        for q in np.linspace(0, 1, 41):
            i, j, g = quantile_plan(n, float(q), method)
            assert 0 <= i <= j < n
            got = A.lerp(x[i], x[j], g)
            assert got == np.quantile(x, q, method=method), (n, q)


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="unknown quantile method"):
        Quantiles(["x"], [0.5], method="bogus")


def _pass2_state(x, bracket_fn, qs=(0.1, 0.5, 0.9), method="linear"):
    """Run the selection pass with brackets chosen by ``bracket_fn(i, j, sorted_x)`` (to force misses)."""
    xs = np.sort(x)
    n = len(x)
    col = []
    for q in qs:
        i, j, g = quantile_plan(n, q, method)
        lo, hi = bracket_fn(i, j, xs)
        col.append((i, j, g, lo, hi))
    sel = A.QuantileSelect(["x"], [n], [col])
    batches = pa.table({"x": x}).to_batches(max_chunksize=17)
    return sel, batches


@pytest.mark.parametrize("miss", ["below", "above", "both", "empty"])
def test_bracket_miss_retry_ends_exact(miss):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 30, size=301).astype(float)  # duplicates make the edges tricky
    qs = (0.1, 0.5, 0.9)

    def bracket(i, j, xs):
        if miss == "below":   # lower edge too high: the wanted rank is below the bracket
            return xs[min(i + 40, len(xs) - 1)], np.inf
        if miss == "above":   # upper edge too low
            return -np.inf, xs[max(j - 40, 0)]
        if miss == "both":
            return xs[i] + 0.5, xs[i] + 0.5
        return 1e9, 1e9 + 1  # nothing inside at all

    sel, batches = _pass2_state(x, bracket, qs)
    first = sel.extract(sel.merge([sel.add(sel.create(), b) for b in batches]))
    assert "retry" in first, "the forced miss must trigger a retry pass"
    got = run_analyzer(sel, batches)
    assert got["quantiles"][0].tolist() == np.quantile(x, qs).tolist()
    assert "retry" not in got


def test_bracket_retry_through_quantiles_with_failing_sketch(monkeypatch):
    """A sketch whose brackets are wrong (simulating the probabilistic bound failing) still ends exact."""
    real_extract = Quantiles.extract

    def narrow(self, acc):
        state = real_extract(self, acc)
        state["brackets"] = [[(i, j, g, 0.0, 0.0) for (i, j, g, lo, hi) in col] for col in state["brackets"]]
        return state

    monkeypatch.setattr(Quantiles, "extract", narrow)
    rng = np.random.default_rng(5)
    x = rng.normal(size=500)
    got = run_analyzer(Quantiles(["x"], QS), pa.table({"x": x}).to_batches(max_chunksize=64))
    assert got["quantiles"][0].tolist() == np.quantile(x, QS).tolist()


def test_tiny_k_still_exact():
    rng = np.random.default_rng(11)
    x = rng.normal(size=5000)
    for seed_batch in (7, 100, 5000):
        got = run_analyzer(Quantiles(["x"], QS, k=8), pa.table({"x": x}).to_batches(max_chunksize=seed_batch))
        assert got["quantiles"][0].tolist() == np.quantile(x, QS).tolist()


# ---------------------------------------------------------------------------------------------- approx
@pytest.mark.parametrize("n", [1, 10, 20_000])
def test_approx_quantiles_within_rank_bound(n):
    from datasketches import kll_doubles_sketch

    rng = np.random.default_rng(n)
    x = np.round(rng.normal(size=n), 2)  # some ties
    k = 200
    an = Quantiles(["x"], QS, approx=True, k=k)
    state = run_analyzer(an, pa.table({"x": x}).to_batches(max_chunksize=997))
    assert an.then(state) is None  # one pass only
    eps = kll_doubles_sketch.get_normalized_rank_error(k, False)
    xs = np.sort(x)
    for q, qh in zip(QS, state["quantiles"][0]):
        assert qh in set(x.tolist())  # KLL answers with data items
        lo = np.searchsorted(xs, qh, side="left") / n    # rank interval of qh (ties)
        hi = np.searchsorted(xs, qh, side="right") / n
        dist = 0.0 if lo <= q <= hi else min(abs(q - lo), abs(q - hi))
        assert dist <= 2 * eps, (q, qh, lo, hi)


# ---------------------------------------------------------------------------------------------- pickling
def test_every_accumulator_pickles_at_every_stage():
    rng = np.random.default_rng(0)
    t = pa.table({"x": rng.normal(size=300), "s": rng.choice(["a", "b"], 300), "w": rng.random(300)})
    bs = t.to_batches(max_chunksize=50)
    for an in (RowCount(["x", "s"]), Moments(["x"]), Moments(["x"], weight="w"), MinMax(["x"]),
               ValueCounts(["s"]), ValueCounts(["s"], weight="w"), Quantiles(["x"], QS),
               Quantiles(["x"], QS, approx=True)):
        want = run_analyzer(an, bs)
        got = run_split(an, bs, [k % 3 for k in range(len(bs))], [2, 0, 1], pickle_every_stage=True)
        if isinstance(want, list):
            assert [g["values"] for g in got] == [w["values"] for w in want]
            continue
        for key in want:
            if key == "brackets":
                continue
            if an.__class__ is Quantiles and an.approx:
                continue  # KLL is randomized
            np.testing.assert_allclose(np.asarray(got[key], float), np.asarray(want[key], float), rtol=1e-12)


def test_kll_wrapper_and_second_pass_pickle():
    an = Quantiles(["x"], [0.5])
    b = pa.record_batch({"x": np.arange(1000.0)})
    acc = _pickled(an.add(an.create(), b))
    assert acc[0].sketch.n == 1000
    empty = _pickled(an.create())  # an empty sketch pickles too
    merged = _pickled(an.merge([empty, acc]))
    state = an.extract(merged)
    sel = _pickled(an.then(state))
    acc2 = _pickled(sel.add(sel.create(), b))
    acc2 = _pickled(sel.merge([acc2, _pickled(sel.create())]))
    assert sel.extract(acc2)["quantiles"].tolist() == [[499.5]]
