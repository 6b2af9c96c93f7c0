"""OneHotEncoder and OrdinalEncoder: parity with scikit-learn (values, output names, fit and transform errors,
warnings) on random columns with nulls and unknown values, every parameter and their interplay; tie-breaks;
batching invariance; serving consistency; artifacts; dead letters; parameter validation; the one-hot kernels."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.preprocessing import OneHotEncoder as SkOneHot
from sklearn.preprocessing import OrdinalEncoder as SkOrdinal

import beamlearn as bl
from beamlearn.errors import BeamlearnError, DataWarning, SchemaError, SpecError, UnknownCategoryError
from beamlearn.steps.encode import Vocabulary, one_hot_columns, one_hot_row
from beamlearn.testing import assert_serving_consistent

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TYPES = {"str": pa.string(), "int": pa.int64(), "bool": pa.bool_()}
POOLS = {"str": ["a", "b", "c", "d", "B", "é"], "int": [-2, 0, 1, 3, 10], "bool": [False, True]}
UNSEEN = {"str": ["zz", "A"], "int": [99, -7], "bool": []}


# ---------------------------------------------------------------------------------------------- helpers
def sk_matrix(columns: dict[str, list]) -> np.ndarray:
    """scikit-learn's view of our columns: an object array, missing as NaN (ints stay ints, names `c_1`)."""
    return np.array([[np.nan if v is None else v for v in col] for col in columns.values()], dtype=object).T \
        .reshape(len(next(iter(columns.values()))), len(columns))


def table(columns: dict[str, list], kinds: dict[str, str]) -> pa.Table:
    return pa.table({c: pa.array(v, type=TYPES[kinds[c]]) for c, v in columns.items()})


def values(t: pa.Table, rows: int | None = None) -> np.ndarray:
    """The output table as a float matrix (``rows`` for a table left without columns, e.g. all dropped)."""
    rows = t.num_rows if t.num_columns else rows
    return np.array([[np.nan if x is None else x for x in t.column(c).to_pylist()] for c in t.column_names],
                    dtype=np.float64).T.reshape(rows, t.num_columns)


def run_sklearn(fn):
    """(result, error, unknown-category warning seen) of a scikit-learn call."""
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        try:
            out, err = fn(), None
        except (ValueError, AttributeError) as exc:  # sklearn 1.9 formats one drop error with .item() on a str
            out, err = None, exc
    return out, err, any("unknown categories" in str(w.message) for w in rec)


def run_ours(fn):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        try:
            out, err = fn(), None
        except BeamlearnError as exc:
            out, err = None, exc
    return out, err, any(issubclass(w.category, DataWarning) for w in rec)


def assert_parity(sk, ours, train: dict[str, list], test: dict[str, list], kinds: dict[str, str]) -> None:
    """Fit both on ``train``, transform ``train`` and ``test``: same fit errors, names, values, transform errors
    and unknown-category warnings."""
    names = list(train)
    _, sk_err, _ = run_sklearn(lambda: sk.fit(sk_matrix(train)))
    fitted, err, _ = run_ours(lambda: bl.Pipeline([ours]).fit(table(train, kinds)))
    assert (sk_err is None) == (err is None), f"fit: sklearn {sk_err!r}, beamlearn {err!r}"
    if err is not None:
        assert isinstance(err, (SpecError, UnknownCategoryError)), err
        return
    sk_names = list(sk.get_feature_names_out(names))
    assert fitted.output_schema.names == sk_names
    for data in (train, test):
        want, sk_err, sk_warned = run_sklearn(lambda data=data: sk.transform(sk_matrix(data)))
        got, err, warned = run_ours(lambda data=data: fitted.transform(table(data, kinds)))
        assert (sk_err is None) == (err is None), f"transform: sklearn {sk_err!r}, beamlearn {err!r}"
        if err is not None:
            assert isinstance(err, UnknownCategoryError) and err.column in names and err.row is not None
            continue
        assert warned == sk_warned
        np.testing.assert_array_equal(values(got, len(want)), want)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            assert_serving_consistent(fitted, table(data, kinds))


@st.composite
def columns_case(draw, max_columns: int = 2):
    """Training and test columns (with nulls; the test ones with unseen values) and their kinds."""
    n_cols = draw(st.integers(1, max_columns))
    kinds = {f"c{i}": draw(st.sampled_from(sorted(POOLS))) for i in range(n_cols)}
    n = draw(st.integers(1, 30))
    train, test = {}, {}
    for c, kind in kinds.items():
        pool = draw(st.lists(st.sampled_from(POOLS[kind]), min_size=1, unique=True))
        train[c] = draw(st.lists(st.one_of(st.none(), st.sampled_from(pool)), min_size=n, max_size=n))
        test_pool = POOLS[kind] + UNSEEN[kind]
        test[c] = draw(st.lists(st.one_of(st.none(), st.sampled_from(test_pool)), min_size=6, max_size=6))
    return train, test, kinds


def explicit_categories(draw, train: dict[str, list], kinds: dict[str, str]) -> list[list]:
    cats = []
    for c, kind in kinds.items():
        chosen = draw(st.lists(st.sampled_from(POOLS[kind] + UNSEEN[kind]), min_size=0, unique=True))
        chosen = sorted(set(chosen) | {v for v in train[c] if v is not None and draw(st.booleans())})
        if draw(st.booleans()) or not chosen:
            chosen.append(np.nan)
        cats.append(chosen)
    return cats


INFREQUENT = {"min_frequency": st.sampled_from([None, None, 1, 2, 3, 0.1, 0.2, 0.25, 0.5]),
              "max_categories": st.sampled_from([None, None, 1, 2, 3, 4])}


# ---------------------------------------------------------------------------------------------- parity
@SETTINGS
@given(case=columns_case(), data=st.data())
def test_one_hot_matches_sklearn(case, data):
    train, test, kinds = case
    params = {k: data.draw(s) for k, s in INFREQUENT.items()}
    params["handle_unknown"] = data.draw(st.sampled_from(["error", "ignore", "infrequent_if_exist", "warn"]))
    params["drop"] = data.draw(st.sampled_from([None, "first", "if_binary", "explicit"]))
    if params["drop"] == "explicit":  # a seen category (possibly infrequent, possibly missing) per column
        params["drop"] = [data.draw(st.sampled_from(col)) for col in train.values()]
        params["drop"] = [np.nan if d is None else d for d in params["drop"]]
    if data.draw(st.booleans()):
        params["categories"] = explicit_categories(data.draw, train, kinds)
    assert_parity(SkOneHot(sparse_output=False, **params), bl.OneHotEncoder(list(train), **params),
                  train, test, kinds)


@SETTINGS
@given(case=columns_case(), data=st.data())
def test_ordinal_matches_sklearn(case, data):
    train, test, kinds = case
    params = {k: data.draw(s) for k, s in INFREQUENT.items()}
    if data.draw(st.booleans()):
        params.update(handle_unknown="use_encoded_value", unknown_value=data.draw(st.sampled_from([-1, np.nan, 2])))
    params["encoded_missing_value"] = data.draw(st.sampled_from([np.nan, -2, 1]))
    if data.draw(st.booleans()):
        params["categories"] = explicit_categories(data.draw, train, kinds)
    sk = SkOrdinal(**params)
    assert_parity(sk, bl.OrdinalEncoder(list(train), **params), train, test, kinds)


@pytest.mark.parametrize("counts, max_categories, min_frequency", [
    ({"a": 2, "b": 2, "c": 2, "d": 1}, 3, None),        # three-way tie for two frequent places
    ({"a": 3, "b": 1, "c": 3, "d": 1, None: 3}, 3, None),  # ties including the missing category
    ({"a": 2, "b": 3, "c": 2}, 2, None),
    ({"a": 2, "b": 2, "c": 1}, None, 2),                # count == min_frequency is frequent
    ({"a": 2, "b": 2, "c": 1, "d": 5}, None, 0.2),      # 2 == 0.2 * 10 rows: frequent
    ({"a": 2, "b": 2, "c": 1, "d": 5}, 2, 0.2),
    ({"x": 4, "y": 4}, 1, None),                        # everything infrequent
])
@pytest.mark.parametrize("encoder", ["onehot", "ordinal"])
def test_infrequent_ties_match_sklearn(counts, max_categories, min_frequency, encoder):
    col = [v for v, k in counts.items() for _ in range(k)]
    params = {"max_categories": max_categories, "min_frequency": min_frequency}
    if encoder == "onehot":
        sk, ours = SkOneHot(sparse_output=False, **params), bl.OneHotEncoder("c", **params)
    else:
        sk, ours = SkOrdinal(**params), bl.OrdinalEncoder("c", **params)
    assert_parity(sk, ours, {"c": col}, {"c": ["a", "b", "c", "d", None]}, {"c": "str"})
    got = bl.Pipeline([ours]).fit({"c": col}).describe()[0]["fitted"]["c"]["infrequent"]
    assert got == [("nan" if isinstance(v, float) and np.isnan(v) else v) for v in sk.infrequent_categories_[0]]


def test_max_categories_tie_breaks_toward_earlier_categories():
    # a, b, c all seen twice: one frequent place left -> the stable argsort keeps the last of the tie ("c")
    f = bl.Pipeline([bl.OneHotEncoder("c", max_categories=2)]).fit({"c": ["c", "b", "a", "a", "b", "c"]})
    assert f.output_schema.names == ["c_c", "c_infrequent_sklearn"]


@pytest.mark.parametrize("drop, error", [
    ("first", None), ("if_binary", None), (["a"], None), (["d"], "infrequent"), ([None], None),
    (["zz"], "not found"),
])
def test_drop_and_infrequent_interplay_matches_sklearn(drop, error):
    train = {"c": ["a"] * 5 + ["b"] * 4 + ["c", "d"] + [None] * 3}
    params = {"drop": [np.nan if d is None else d for d in drop] if isinstance(drop, list) else drop,
              "max_categories": 3, "handle_unknown": "infrequent_if_exist"}
    sk, ours = SkOneHot(sparse_output=False, **params), bl.OneHotEncoder("c", **params)
    assert_parity(sk, ours, train, {"c": ["a", "b", "c", "zz", None]}, {"c": "str"})
    if error:
        with pytest.raises(SpecError, match=error):
            bl.Pipeline([ours]).fit(train)


def test_first_category_infrequent_drop_first_drops_first_frequent():
    f = bl.Pipeline([bl.OneHotEncoder("c", drop="first", min_frequency=2)]).fit({"c": ["a", "b", "b", "c", "c"]})
    assert f.output_schema.names == ["c_c", "c_infrequent_sklearn"]
    assert f.describe()[0]["fitted"]["c"]["dropped"] == "b"


@pytest.mark.parametrize("kind, col", [
    ("bool", [True, False, None, True]),
    ("float", [1.5, 0.25, None, float("nan"), 1.5]),
])
def test_boolean_and_float_columns_match_sklearn(kind, col):
    t = pa.table({"c": pa.array(col, type=pa.bool_() if kind == "bool" else pa.float64(), from_pandas=True)})
    X = np.array([[np.nan if v is None else v] for v in col], dtype=object)
    for sk, ours in ((SkOneHot(sparse_output=False), bl.OneHotEncoder("c")), (SkOrdinal(), bl.OrdinalEncoder("c"))):
        f = bl.Pipeline([ours]).fit(t)
        want = sk.fit(X).transform(X)
        assert f.output_schema.names == list(sk.get_feature_names_out(["c"]))
        np.testing.assert_array_equal(values(f.transform(t)), want)
        assert_serving_consistent(f, t)


# ---------------------------------------------------------------------------------------------- unknowns
TRAIN = {"c": ["a", "b", "b", "c", "a", "b"], "k": [1, 2, 3, 4, 5, 6]}


def test_unknown_error_names_column_value_and_row():
    f = bl.Pipeline([bl.OneHotEncoder("c")]).fit(TRAIN)
    with pytest.raises(UnknownCategoryError) as e:
        f.transform({"c": ["a", "b", "zz", "a"], "k": [1, 2, 3, 4]})
    assert (e.value.column, e.value.value, e.value.row) == ("c", "zz", 2)
    assert "'zz'" in str(e.value) and "'c'" in str(e.value)
    with pytest.raises(UnknownCategoryError) as e:
        f.transform_one({"c": "zz", "k": 1})
    assert (e.value.column, e.value.value) == ("c", "zz")
    with pytest.raises(UnknownCategoryError) as e:  # missing was not seen at fit: an unknown category
        f.transform({"c": ["a", None], "k": [1, 2]})
    assert (e.value.column, e.value.value, e.value.row) == ("c", None, 1)


@pytest.mark.parametrize("encoder", [bl.OneHotEncoder("c"), bl.OrdinalEncoder("c")])
def test_unknown_rows_go_to_dead_letters_and_good_rows_come_out(encoder):
    f = bl.Pipeline([encoder]).fit(TRAIN)
    data = {"c": ["a", "zz", "b", None, "c", "yy"] * 3, "k": list(range(18))}
    dead = bl.DeadLetters()
    out = f.transform(data, errors=dead, batch_size=4)
    assert out.column("k").to_pylist() == [k for k in range(18) if k % 6 in (0, 2, 4)]
    rows = sorted(r["row"] for r in dead.records)  # batches are transformed on several threads
    assert dead.count == 9 and rows == [k for k in range(18) if k % 6 in (1, 3, 5)]
    assert all(r["column"] == "c" and "unknown category" in r["reason"] for r in dead.records)
    first = min(dead.records, key=lambda r: r["row"])
    assert first["record"] == {"c": "zz", "k": 1} and "'zz'" in first["reason"]


def test_handle_unknown_policies():
    train = {"c": ["a"] * 3 + ["b"] * 3 + ["c"]}
    test = {"c": ["a", "zz", "c"]}
    ign = bl.Pipeline([bl.OneHotEncoder("c", handle_unknown="ignore", min_frequency=2)]).fit(train)
    assert values(ign.transform(test)).tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]
    inf = bl.Pipeline([bl.OneHotEncoder("c", handle_unknown="infrequent_if_exist", min_frequency=2)]).fit(train)
    assert values(inf.transform(test)).tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 1]]
    warn = bl.Pipeline([bl.OneHotEncoder("c", handle_unknown="warn", min_frequency=2)]).fit(train)
    with pytest.warns(DataWarning, match=r"column 'c'.*'zz'.*'c_infrequent_sklearn'"):
        assert values(warn.transform(test)).tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 1]]
    with pytest.warns(DataWarning, match="'zz'"):
        assert warn.transform_one({"c": "zz"}) == {"c_a": 0, "c_b": 0, "c_infrequent_sklearn": 1}
    no_inf = bl.Pipeline([bl.OneHotEncoder("c", handle_unknown="warn")]).fit(train)
    with pytest.warns(DataWarning, match="all zeros"):
        assert values(no_inf.transform(test)).tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ign.transform(test)  # "ignore" without drop is silent


def test_ordinal_unknown_and_missing_codes():
    f = bl.Pipeline([bl.OrdinalEncoder("c", handle_unknown="use_encoded_value", unknown_value=-1,
                                       encoded_missing_value=-2)]).fit({"c": ["b", "a", None]})
    out = f.transform({"c": ["a", "b", None, "zz"]})
    assert out.column("c").to_pylist() == [0.0, 1.0, -2.0, -1.0] and out.schema.field("c").type == pa.float64()
    f = bl.Pipeline([bl.OrdinalEncoder("c", handle_unknown="use_encoded_value", unknown_value=np.nan)]).fit(
        {"c": ["b", "a"]})
    assert f.transform({"c": ["a", None, "zz"]}).column("c").to_pylist() == [0.0, None, None]
    assert f.transform_one({"c": None}) == {"c": None}
    f = bl.Pipeline([bl.OrdinalEncoder("x", handle_unknown="use_encoded_value", unknown_value=-1,
                                       encoded_missing_value=-2)]).fit({"x": [0.5, 1.5, float("nan")]})
    for x, want in ((float("nan"), -2.0), (None, -2.0), (7.0, -1.0), (1.5, 1.0)):
        got = f.transform_one({"x": x})["x"]
        assert got == want and type(got) is float  # Python floats, like transform(...).to_pylist()
    assert_serving_consistent(f, pa.table({"x": pa.array([0.5, None, float("nan"), 3.0], from_pandas=False)}))


# ---------------------------------------------------------------------------------------------- engine paths
@SETTINGS
@given(case=columns_case(max_columns=2), batch_size=st.integers(1, 7),
       handle_unknown=st.sampled_from(["ignore", "infrequent_if_exist"]),
       max_categories=st.sampled_from([None, 2, 3]))
def test_batching_invariance_and_serving(case, batch_size, handle_unknown, max_categories):
    train, test, kinds = case
    steps = [bl.OneHotEncoder([c for c in train if c != "c1"], handle_unknown=handle_unknown,
                              max_categories=max_categories)]
    if "c1" in train:
        steps.append(bl.OrdinalEncoder(["c1"], handle_unknown="use_encoded_value", unknown_value=-1,
                                       max_categories=max_categories))
    whole = bl.Pipeline(steps).fit(table(train, kinds))
    split = bl.Pipeline(steps).fit(table(train, kinds), batch_size=batch_size)
    for a, b in zip(whole.states, split.states):
        for va, vb in zip(a["vocabulary"], b["vocabulary"]):
            assert va.keys() == vb.keys() and all(np.array_equal(va[k], vb[k]) for k in va if k != "categories")
            assert va["categories"] == vb["categories"]
    t = table(test, kinds)
    assert whole.transform(t).equals(split.transform(t, batch_size=batch_size))
    assert_serving_consistent(split, t)


def test_artifact_round_trip(tmp_path):
    train = {"c": ["a", "b", None, "b", "c", "é"], "n": [1, 2, 3, 1, 1, None], "k": [1.0] * 6}
    f = bl.Pipeline([bl.OneHotEncoder("c", drop="if_binary", max_categories=3, handle_unknown="warn"),
                     bl.OrdinalEncoder("n", handle_unknown="use_encoded_value", unknown_value=-1,
                                       encoded_missing_value=-5, min_frequency=2)]).fit(train)
    g = bl.load(f.save(str(tmp_path / "m.zip")))
    test = {"c": ["a", "é", None, "b"], "n": [1, 2, None, 7], "k": [0.0] * 4}
    assert g.transform(test).equals(f.transform(test))
    assert g.output_schema == f.output_schema and g.describe() == f.describe()
    assert g.transform_one({"c": "é", "n": 7, "k": 0.0}) == f.transform_one({"c": "é", "n": 7, "k": 0.0})
    step = pickle.loads(pickle.dumps(f.steps[0]))  # as Beam ships it; the per-step layout cache is not pickled
    assert "_cache" in vars(f.steps[0]) and "_cache" not in vars(step) and step == f.steps[0]


def test_outputs_replace_input_in_place_as_uint8():
    t = pa.table({"x": [1.0, 2.0], "c": ["b", "a"], "d": [True, False], "y": ["p", "q"]})
    f = bl.Pipeline([bl.OneHotEncoder(["c", "d"])]).fit(t)
    assert f.output_schema.names == ["x", "c_a", "c_b", "d_False", "d_True", "y"]
    assert all(f.output_schema.field(n).type == pa.uint8() for n in ["c_a", "c_b", "d_False", "d_True"])
    out = f.transform(t)
    assert out.column("x").equals(t.column("x")) and out.column("y").equals(t.column("y"))
    assert f.transform_one({"x": 1.0, "c": "a", "d": True, "y": "p"}) == {
        "x": 1.0, "c_a": 1, "c_b": 0, "d_False": 0, "d_True": 1, "y": "p"}
    row = f.steps[0].row_function(f.states[0], t.schema)({"x": 1.0, "c": "a", "d": True, "y": "p"})
    assert list(row) == f.output_schema.names  # the row path emits the step's output order too


def test_output_name_collision_is_an_error():
    with pytest.raises(SchemaError, match="collides"):
        bl.Pipeline([bl.OneHotEncoder("c")]).fit({"c": ["a", "b"], "c_a": [1, 2]})


def test_describe():
    f = bl.Pipeline([bl.OneHotEncoder("c", drop="first", max_categories=3),
                     bl.OrdinalEncoder("o", min_frequency=2)]).fit(
        {"c": ["a", "b", "b", "c", None, None, None], "o": ["x", "x", "y", "z", "z", None, "x"]})
    one_hot, ordinal = (d["fitted"] for d in f.describe())
    assert one_hot == {"c": {"categories": {"a": 1, "b": 2, "c": 1, "nan": 3}, "missing": 3,
                             "infrequent": ["a", "c"], "dropped": "b",
                             "outputs": ["c_nan", "c_infrequent_sklearn"]}}
    assert ordinal["o"]["infrequent"] == ["y"]
    assert ordinal["o"]["categories"]["z"] == {"count": 2, "code": 1.0}


# ---------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("step, match", [
    (bl.OneHotEncoder("c", handle_unknown="use_encoded_value"), "handle_unknown"),
    (bl.OneHotEncoder("c", min_frequency=0), "min_frequency"),
    (bl.OneHotEncoder("c", min_frequency=1.0), "min_frequency"),
    (bl.OneHotEncoder("c", max_categories=0), "max_categories"),
    (bl.OneHotEncoder("c", drop="last"), "drop"),
    (bl.OneHotEncoder("c", drop=["a", "b"]), "drop"),
    (bl.OneHotEncoder("c", categories=[["a"], ["b"]]), "one list"),
    (bl.OneHotEncoder("c", categories=[["a", "a"]]), "duplicates"),
    (bl.OneHotEncoder("c", categories=[[None, "a"]]), "last"),
    (bl.OneHotEncoder("c", categories=[[1, 2]]), "type"),
    (bl.OneHotEncoder("n", categories=[[3, 1]]), "sorted"),
    (bl.OneHotEncoder("c", categories=[["a"]]), "unknown categories"),  # 'b' seen at fit, handle_unknown=error
    (bl.OrdinalEncoder("c", handle_unknown="use_encoded_value"), "unknown_value"),
    (bl.OrdinalEncoder("c", unknown_value=-1), "unknown_value"),
    (bl.OrdinalEncoder("c", handle_unknown="use_encoded_value", unknown_value=1), "already"),
    (bl.OrdinalEncoder("c", handle_unknown="use_encoded_value", unknown_value=1.5), "unknown_value"),
    (bl.OrdinalEncoder("c", encoded_missing_value=0), "already"),
    (bl.OrdinalEncoder("c", encoded_missing_value="x"), "encoded_missing_value"),
    (bl.OneHotEncoder("l"), "column"),
])
def test_invalid_parameters_are_clear_errors(step, match):
    data = pa.table({"c": ["a", "b", None], "n": [1, 2, 3], "l": [[1], [2], [3]]})
    with pytest.raises((SpecError, SchemaError, UnknownCategoryError), match=match):
        bl.Pipeline([step]).fit(data)


def test_explicit_categories_unknown_at_fit_allowed_unless_error():
    f = bl.Pipeline([bl.OneHotEncoder("c", categories=[["b", "a"]], handle_unknown="ignore")]).fit(
        {"c": ["a", "zz", "b"]})
    assert f.output_schema.names == ["c_b", "c_a"]  # string categories keep the given order
    assert values(f.transform({"c": ["a", "zz", None]})).tolist() == [[0, 1], [0, 0], [0, 0]]


# ---------------------------------------------------------------------------------------------- kernels
def test_one_hot_kernels():
    cols = one_hot_columns(np.array([2, 0, -1, 2]), 3, ["a", "b", "c"])
    assert [(n, a.type, a.to_pylist()) for n, a in cols] == [
        ("a", pa.uint8(), [0, 1, 0, 0]), ("b", pa.uint8(), [0, 0, 0, 0]), ("c", pa.uint8(), [1, 0, 0, 1])]
    assert one_hot_columns(np.zeros(0, dtype=np.int64), 2, ["a", "b"])[1][1].to_pylist() == []
    setter = one_hot_row(["a", "b", "c"])
    assert setter({}, 2) == {"a": 0, "b": 0, "c": 1} and setter({}, -1) == {"a": 0, "b": 0, "c": 0}


def test_vocabulary_analyzer_counts_are_mergeable():
    from beamlearn.analyzers import run_analyzer

    vocab = Vocabulary(["c"], max_categories=2)
    t = pa.table({"c": ["b", "a", None, "b", "c", "c", "c"]})
    whole = run_analyzer(vocab, t.to_batches())
    parts = vocab.merge([vocab.add(vocab.create(), b) for b in t.to_batches(max_chunksize=2)])
    split = vocab.extract(parts)
    assert whole[0]["categories"] == split[0]["categories"] == ["a", "b", "c"]
    assert whole[0]["counts"].tolist() == [1, 2, 3] and whole[0]["missing"] == 1
    assert whole[0]["infrequent"].tolist() == split[0]["infrequent"].tolist() == [0, 1, 3]


def test_nan_is_missing_on_both_paths():
    f = bl.Pipeline([bl.OneHotEncoder(["c", "b"])]).fit({"c": ["a", None], "b": [True, None]})
    record = {"c": float("nan"), "b": float("nan")}
    want = f.transform([record]).to_pylist()[0]
    assert want == {"c_a": 0, "c_nan": 1, "b_True": 0, "b_nan": 1} and f.transform_one(record) == want
