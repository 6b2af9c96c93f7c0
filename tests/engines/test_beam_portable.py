"""End to end through Beam's portable path: a job service and an external SDK worker pool, both started here.

This is the path Flink, Spark and Dataflow use: the pipeline is submitted to a job service and user code runs in
separate SDK worker processes, so any state that does not survive serialization fails here.  The fit and the
transform (with dead letters) must equal the local engine's.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import beamlearn as bl
from beamlearn.beam import run_fit, run_transform
from beamlearn.engines.beam_jobs import portable_services
from beamlearn.errors import EngineError
from beamlearn.testing import random_table

pytestmark = pytest.mark.filterwarnings("ignore::beamlearn.errors.DataWarning")


@pytest.fixture(scope="module")
def portable_args(tmp_path_factory):
    """Beam options for PortableRunner against a local job service and an external worker pool."""
    try:
        services = portable_services(str(tmp_path_factory.mktemp("portable")))
        args = services.__enter__()
    except EngineError as exc:
        pytest.skip(f"Beam's portable services could not start on this machine: {exc}")
    try:
        yield args
    finally:
        services.__exit__(None, None, None)


def _jsonl(path: str) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh]


def test_fit_and_transform_with_dead_letters_through_the_portable_runner(portable_args, tmp_path):
    table = random_table(600, n_numeric=3, n_string=2, seed=11)
    table = table.append_column("id", pa.array(np.arange(table.num_rows)))
    table = table.append_column("y", pa.array((np.arange(table.num_rows) * 7919) % 3))  # a label for the model
    data = str(tmp_path / "data.jsonl")
    with open(data, "w") as fh:  # JSON lines with planted bad rows: invalid JSON, and text in a number column
        for i, rec in enumerate(table.to_pylist()):
            rec = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in rec.items()}
            if i % 97 == 13:
                fh.write("{not json\n")
            elif i % 89 == 21:
                fh.write(json.dumps({**rec, "num1": "n/a"}) + "\n")
            else:
                fh.write(json.dumps(rec) + "\n")
    schema = pa.schema([(f.name, f.type) for f in table.schema])
    pipe = bl.Pipeline([bl.SimpleImputer(["num0", "num1"], strategy="median"), bl.StandardScaler(["num0", "num1"]),
                        bl.RobustScaler(["num2"]), bl.OneHotEncoder(["cat0"], handle_unknown="ignore"),
                        bl.OrdinalEncoder(["cat1"]), bl.GaussianNB(["num*", "cat0"], "y")])
    local_dead = bl.DeadLetters()
    local = pipe.fit(data, batch_size=128, errors=local_dead, schema=schema)

    errs = str(tmp_path / "fit_errors.jsonl")
    fitted = run_fit(pipe, [data], beam_args=portable_args, batch_size=128, errors=errs, schema=schema)
    assert fitted.lineage["dead_letters"] == local_dead.count == len(_jsonl(errs)) > 0
    assert fitted.lineage["rows"] + fitted.lineage["dead_letters"] == table.num_rows
    assert fitted.lineage["passes"] == local.lineage["passes"] == 4  # the model waits for every earlier step
    key = lambda r: (r["row"], r["column"], r["reason"])
    assert sorted(map(key, _jsonl(errs))) == sorted(map(key, local_dead.records))
    for g, w in zip(fitted.states, local.states):
        for name in w:
            _assert_close(g[name], w[name])

    out, terrs = str(tmp_path / "out.parquet"), str(tmp_path / "transform_errors.jsonl")
    result = run_transform(fitted, [data], out, beam_args=portable_args, batch_size=128, errors=terrs)
    local_tdead = bl.DeadLetters()
    want = local.transform(data, errors=local_tdead, batch_size=128).sort_by("id")
    assert result == {"rows": want.num_rows, "dead_letters": local_tdead.count}
    got = pq.read_table(out).sort_by("id")
    assert got.schema.names == want.schema.names
    for name in want.schema.names:
        g, w = got.column(name).to_pylist(), want.column(name).to_pylist()
        if pa.types.is_floating(want.schema.field(name).type):
            np.testing.assert_allclose(np.array(g, dtype=float), np.array(w, dtype=float), rtol=1e-9, atol=1e-12)
        else:
            assert g == w, name


def _assert_close(got, want) -> None:
    if isinstance(want, dict):
        assert set(got) == set(want)
        for k in want:
            _assert_close(got[k], want[k])
    elif isinstance(want, (list, tuple)) and want and isinstance(want[0], (dict, list, tuple, str)):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            _assert_close(g, w)
    elif isinstance(want, np.ndarray) and want.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=1e-12)
    elif isinstance(want, np.ndarray):
        np.testing.assert_array_equal(got, want)
    else:
        assert got == want or (want != want and got != got)  # noqa: PLR0124 - NaN
