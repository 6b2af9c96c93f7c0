"""FittedPipeline.to_onnx: outputs under onnxruntime equal transform's on random tables with nulls, NaN and
unknown categories (exactly for preprocessing, within 1e-12 relative for linear models and 1e-14 absolute for
probabilities); an error naming every step that cannot be exported."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import beamlearn as bl
from beamlearn.errors import ConversionError
from beamlearn.interop.onnx import OUTPUT_PREFIX, onnx_feeds
from beamlearn.testing import random_table

NUM = ["num0", "num1", "num2"]


def run(model: onnx.ModelProto, data: pa.Table) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name.removeprefix(OUTPUT_PREFIX) for o in sess.get_outputs()]
    return dict(zip(names, (v.ravel() for v in sess.run(None, onnx_feeds(model, data)))))


def assert_parity(fitted: bl.FittedPipeline, data: pa.Table, *, rtol: float = 0.0, atol: float = 0.0) -> None:
    got = run(fitted.to_onnx(), data)
    want = fitted.transform(data)
    computed = [c for c in want.column_names if c not in fitted.required_columns or c in got]
    assert sorted(got) == sorted(c for c in computed if c in got) and set(got) >= set(computed) - set(
        data.column_names)
    for name, values in got.items():
        w = want.column(name)
        if values.dtype == object:  # strings: null is ""
            assert values.tolist() == ["" if v is None else v for v in w.to_pylist()], name
            continue
        expected = np.asarray(w.to_numpy(zero_copy_only=False), dtype=np.float64)
        np.testing.assert_allclose(values.astype(np.float64), expected, rtol=rtol, atol=atol, err_msg=name)


@pytest.fixture(scope="module")
def tables() -> tuple[pa.Table, pa.Table]:
    t = random_table(600, n_numeric=4, n_string=2, seed=21)
    t = t.append_column("empty", pa.array([None] * 600, type=pa.float64()))
    t = t.append_column("const", pa.array([2.5] * 600))
    y = np.asarray(t.column("num3").fill_null(0).to_numpy(zero_copy_only=False)) * 2 + 1
    t = t.append_column("y", pa.array(np.nan_to_num(y)))
    t = t.append_column("label", pa.array(np.where(np.arange(600) % 3 == 0, "yes", "no").tolist()))
    t = t.append_column("k", pa.array(np.arange(600) % 3))
    test = random_table(300, n_numeric=4, n_string=2, n_categories=8, seed=22)  # unseen categories
    test = test.append_column("empty", pa.array(np.linspace(-1, 1, 300)))
    test = test.append_column("const", pa.array(np.linspace(0, 5, 300)))
    return t, test


PREPROCESSING = {
    "scalers": [bl.StandardScaler(["num0"]), bl.StandardScaler(["num1"], with_mean=False),
                bl.MinMaxScaler(["num2"], feature_range=(-2, 3), clip=True), bl.MaxAbsScaler(["num3"]),
                bl.RobustScaler(["const"], quantile_range=(10.0, 90.0), unit_variance=True)],
    "imputers": [bl.SimpleImputer(["num0", "empty"], add_indicator=True),
                 bl.SimpleImputer(["num1"], strategy="median"),
                 bl.SimpleImputer(["num2"], strategy="constant", fill_value=-9.5,
                                  keep_empty_features=True),
                 bl.SimpleImputer(["cat0"], strategy="most_frequent", add_indicator=True),
                 bl.SimpleImputer(["cat1"], strategy="constant")],
    "encoders": [bl.OneHotEncoder(["cat0"], handle_unknown="ignore", drop="first"),
                 bl.OneHotEncoder(["cat1"], handle_unknown="infrequent_if_exist", min_frequency=60),
                 bl.OrdinalEncoder(["num3"], categories=[[-1.0, 0.5]], handle_unknown="use_encoded_value",
                                   unknown_value=-1)],
    "ordinal": [bl.OrdinalEncoder(["cat0", "cat1"], handle_unknown="use_encoded_value", unknown_value=-7,
                                  encoded_missing_value=-3, max_categories=4)],
    "bins": [bl.KBinsDiscretizer(["num0"], n_bins=4, encode="ordinal"),
             bl.KBinsDiscretizer(["num1", "num2"], n_bins=[3, 6], strategy="uniform"),
             bl.KBinsDiscretizer(["const"], n_bins=3, encode="ordinal"), bl.Drop(["num3"])],
}


@pytest.mark.parametrize("case", sorted(PREPROCESSING))
def test_preprocessing_exports_exactly(case, tables):
    t, test = tables
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant / empty columns warn at fit, as in sklearn
        fitted = bl.Pipeline(PREPROCESSING[case]).fit(t)
    assert_parity(fitted, test)
    assert_parity(fitted, t)


@pytest.mark.parametrize("model", ["linear", "ridge", "binary", "multinomial"])
def test_models_export_within_rounding(model, tables):
    t, test = tables
    prep = [bl.SimpleImputer(NUM), bl.StandardScaler(NUM), bl.OneHotEncoder(["cat0"], handle_unknown="ignore")]
    est = {"linear": bl.LinearRegression(NUM + ["cat0"], "y"), "ridge": bl.Ridge(NUM + ["cat0"], "y", alpha=3.0),
           "binary": bl.LogisticRegression(NUM + ["cat0"], "label"),
           "multinomial": bl.LogisticRegression(["num0", "num1", "cat0"], "k", C=0.3)}[model]
    fitted = bl.Pipeline(prep + [est]).fit(t)
    assert_parity(fitted, test, rtol=1e-12, atol=1e-14)


def test_matrix_layout_is_the_numeric_output_in_order(tables):
    t, test = tables
    fitted = bl.Pipeline([bl.SimpleImputer(NUM, add_indicator=True), bl.StandardScaler(NUM),
                          bl.OneHotEncoder(["cat0", "cat1"], handle_unknown="ignore"),
                          bl.KBinsDiscretizer(["num3"], n_bins=3),
                          bl.LogisticRegression(NUM + ["cat0"], "k")]).fit(t.drop_columns(["label"]))
    model = fitted.to_onnx(layout="matrix")
    assert [o.name for o in model.graph.output] == ["out.matrix"]
    got = run(model, test)["matrix"].reshape(test.num_rows, -1)
    want = fitted.transform(test)
    names = [f.name for f in want.schema if f.type != pa.string()  # inputs the pipeline does not read are no input
             and (f.name not in test.column_names or f.name in fitted.required_columns)]
    expected = np.column_stack([np.asarray(want.column(n).to_numpy(zero_copy_only=False), dtype=np.float64)
                                for n in names])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
    assert len(model.graph.node) < 60  # one-hot and probabilities as blocks, not a node per column


def test_model_saved_and_loaded(tmp_path, tables):
    t, test = tables
    fitted = bl.Pipeline([bl.SimpleImputer(NUM), bl.LogisticRegression(NUM, "label")]).fit(t)
    path = str(tmp_path / "m.onnx")
    onnx.save(fitted.to_onnx(name="churn"), path)
    model = onnx.load(path)
    assert model.graph.name == "churn" and [i.name for i in model.graph.input] == NUM
    out = run(model, test)
    assert set(out["prediction"].tolist()) <= {"yes", "no"}


def test_error_names_every_step_it_cannot_export(tables):
    t, _ = tables
    fitted = bl.Pipeline([bl.Log1p("num0"), bl.StandardScaler(["num1"]), bl.FeatureHasher("cat0", n_features=8),
                          bl.LogisticRegression(["num0", "num1"], "label")]).fit(t)
    with pytest.raises(ConversionError) as err:
        fitted.to_onnx()
    msg = str(err.value)
    assert "step 0 (Log1p)" in msg and "step 2 (FeatureHasher)" in msg and "step 3 (LogisticRegression)" in msg
    assert "StandardScaler" not in msg


@given(seed=st.integers(0, 10_000), rows=st.integers(1, 60), null=st.floats(0.0, 0.6))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_tables_property(seed, rows, null):
    """Any table (few rows, many nulls, categories unseen at fit) exports to the same numbers."""
    t = random_table(rows, n_numeric=3, n_string=1, n_categories=4, null_fraction=null, seed=seed)
    test = random_table(40, n_numeric=3, n_string=1, n_categories=6, null_fraction=null, seed=seed + 1)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = bl.Pipeline([bl.SimpleImputer(NUM, strategy="median", add_indicator=True, keep_empty_features=True),
                              bl.RobustScaler(NUM), bl.OneHotEncoder("cat0", handle_unknown="ignore"),
                              bl.KBinsDiscretizer(["num1"], n_bins=3, strategy="uniform")]).fit(t)
    assert_parity(fitted, test)
