"""YAML specs: parsing, validation messages (suggestions, types, line numbers), schema, hash and lineage."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import beamlearn as bl
from beamlearn.errors import SpecError
from beamlearn.spec import load_spec, merge_schema, parse_type, read_spec, spec_hash

GOOD = """\
name: tiny
batch_size: 2
schema:
  x: double
  n: int32
steps:
  - step: StandardScaler
    columns: [x, n]
    with_mean: false
"""


def error(text: str) -> str:
    with pytest.raises(SpecError) as info:
        read_spec(text)
    return str(info.value)


def test_good_spec_builds_the_pipeline_and_settings():
    spec = read_spec(GOOD)
    assert spec.pipeline.steps == [bl.StandardScaler(["x", "n"], with_mean=False)]
    assert spec.pipeline.name == spec.name == "tiny"
    assert spec.batch_size == 2
    assert spec.schema == pa.schema([("x", pa.float64()), ("n", pa.int32())])
    assert spec.lineage() == {"spec_sha256": spec_hash(GOOD), "spec_name": "tiny"}
    assert load_spec(GOOD).steps == spec.pipeline.steps


def test_spec_from_file_and_mapping(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(GOOD)
    assert read_spec(str(path)).source == str(path)
    assert read_spec(path).pipeline.steps == read_spec(GOOD).pipeline.steps
    mapping = {"steps": [{"step": "StandardScaler", "columns": ["x"]}]}
    assert load_spec(mapping).steps == [bl.StandardScaler(["x"])]
    assert "no such spec file: 'missing.yaml'" in str(pytest.raises(SpecError, read_spec, "missing.yaml").value)


def test_unknown_step_type_suggests_the_closest():
    msg = error("steps:\n  - step: StandardScalar\n    columns: [x]\n")
    assert "line 2" in msg and "steps[0]" in msg
    assert "unknown step type 'StandardScalar'; did you mean 'StandardScaler'?" in msg
    assert "did you mean 'StandardScaler'" in error("steps:\n  - step: standardscaler\n    columns: [x]\n")


def test_unknown_parameter_suggests_the_closest_and_names_index_and_line():
    msg = error("steps:\n  - step: StandardScaler\n    columns: [x]\n  - step: StandardScaler\n"
                "    columns: [y]\n    with_meen: false\n")
    assert msg.startswith("<spec>, line 6: steps[1] (StandardScaler): unknown parameter 'with_meen'")
    assert "did you mean 'with_mean'?" in msg


def test_missing_columns_and_missing_step_key():
    assert "steps[0] (StandardScaler): missing required key 'columns'" in error(
        "steps:\n  - step: StandardScaler\n")
    assert "steps[0]: missing the 'step' key" in error("steps:\n  - columns: [x]\n")
    assert "'steps' must be a non-empty list" in error("name: x\n")
    assert "'steps' must be a non-empty list" in error("steps: []\n")


@pytest.mark.parametrize("key, value, expected", [
    ("with_mean", '"no"', "with_mean: expected bool, got str 'no'"),
    ("with_std", "1", "with_std: expected bool, got int 1"),
    ("columns", "3", "columns: expected str | Sequence[str], got int 3"),
    ("columns", "[x, 2]", "columns: expected str | Sequence[str], got list ['x', 2]"),
])
def test_wrong_value_types_are_reported_with_the_hint(key, value, expected):
    base = {"columns": "[x]"}
    base[key] = value
    body = "".join(f"    {k}: {v}\n" for k, v in base.items())
    msg = error("steps:\n  - step: StandardScaler\n" + body)
    assert expected in msg
    assert "steps[0] (StandardScaler)" in msg


def test_yaml_syntax_error_has_line_and_column():
    msg = error("name: x\nsteps:\n  - step: StandardScaler\n    columns: [x, y\n  - step: Foo\n")
    assert "invalid YAML" in msg
    assert "line 5" in msg and "column" in msg
    assert "while parsing a flow sequence at line 4" in msg
    assert "<spec>, line 2, column 9: invalid YAML: mapping values are not allowed here" in error(
        "name: x\nsteps: a: b\n")


def test_top_level_validation():
    assert "unknown top-level key 'step'; did you mean 'steps'?" in error("step: []\n")
    assert "a spec must be a mapping" in error("- a\n- b\n")
    assert "batch_size: expected a positive integer" in error("batch_size: 0\nsteps: [{step: StandardScaler, "
                                                              "columns: x}]\n")
    assert "name: expected a string" in error("name: [1]\nsteps: [{step: StandardScaler, columns: x}]\n")


def test_schema_types():
    assert parse_type("int64") == pa.int64()
    assert parse_type("double") == pa.float64()
    assert parse_type("string") == pa.string()
    assert parse_type("bool") == pa.bool_()
    assert parse_type("timestamp[s]") == pa.timestamp("s")
    assert parse_type("timestamp[us, tz=UTC]") == pa.timestamp("us", tz="UTC")
    assert parse_type("decimal128(10, 2)") == pa.decimal128(10, 2)
    with pytest.raises(SpecError, match="did you mean 'int64'"):
        parse_type("int46")
    msg = error("schema: {x: doubel}\nsteps: [{step: StandardScaler, columns: x}]\n")
    assert "schema: column 'x': unknown Arrow type 'doubel'; did you mean 'double'?" in msg


def test_merge_schema_overrides_only_listed_columns():
    inferred = pa.schema([("a", pa.string()), ("b", pa.int64())])
    assert merge_schema(inferred, pa.schema([("a", pa.float64())])) == pa.schema(
        [("a", pa.float64()), ("b", pa.int64())])
    with pytest.raises(SpecError, match="column 'bb' is not in the data; did you mean 'b'"):
        merge_schema(inferred, pa.schema([("bb", pa.float64())]))


def test_hash_ignores_formatting_but_not_values():
    reformatted = ("# comment\nsteps:\n- with_mean: no\n  columns: ['x', \"n\"]\n  step: StandardScaler\n"
                   "schema: {n: int32, x: double}\nbatch_size: 2\nname: 'tiny'\n")
    assert spec_hash(reformatted) == spec_hash(GOOD)
    assert spec_hash(GOOD.replace("batch_size: 2", "batch_size: 3")) != spec_hash(GOOD)
    assert len(spec_hash(GOOD)) == 64


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=5), st.one_of(st.integers(), st.text(max_size=5),
                                                                  st.booleans()), max_size=4))
def test_hash_is_independent_of_key_order(extra):
    content = {"name": "x", "description": extra, "steps": [{"step": "StandardScaler", "columns": ["x"]}]}
    reordered = {"steps": content["steps"], "description": dict(reversed(list(extra.items()))), "name": "x"}
    assert spec_hash(content) == spec_hash(reordered)


def test_fit_applies_partial_schema_and_records_lineage():
    spec = read_spec(GOOD)
    data = pa.table({"x": ["1.5", "2.5", "4"], "n": [1, 2, 3], "label": ["a", "b", "c"]})
    fitted = spec.fit(data)
    assert fitted.input_schema.field("x").type == pa.float64()
    assert fitted.input_schema.field("n").type == pa.int32()
    assert fitted.input_schema.field("label").type == pa.string()
    assert fitted.lineage["spec_sha256"] == spec.sha256
    assert fitted.lineage["spec_name"] == "tiny"
    assert fitted.transform(data).column("n").to_pylist() == pytest.approx([1 / 0.816496580927726 * v for v in
                                                                            (1, 2, 3)])


def test_every_registered_step_is_reachable_from_a_spec():
    for name, cls in bl.registered_steps().items():
        with pytest.raises(SpecError, match=f"did you mean '{name}'"):
            read_spec({"steps": [{"step": name + "x", "columns": ["c"]}]})
        assert cls.param_names(), name


def test_fit_with_schema_from_a_one_shot_iterator():
    spec = read_spec("schema: {x: double}\nsteps: [{step: StandardScaler, columns: x}]")
    batches = pa.table({"x": [1, 2, 3, 4]}).to_batches(max_chunksize=2)
    fitted = spec.fit(iter(batches))
    assert fitted.input_schema.field("x").type == pa.float64()
    assert fitted.lineage["rows"] == 4
