"""The local engine: a step raising DataError on some rows is bisected; errors='raise' names the right row (and
file and line), dead letters get exactly the guilty rows, the rest is transformed, and fits exclude them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import beamlearn as bl
from beamlearn.engines.local import LocalEngine, ordered_map
from beamlearn.engines.passes import find_bad_rows, guard
from beamlearn.errors import DataError
from beamlearn.steps.base import Step, register_step

BAD = (13.0, 37.0, 38.0, 99.0)


@register_step
class H7Refuse(Step):
    """Test step: a DataError when any value of its column is one of ``bad``; otherwise the identity."""

    def __init__(self, columns, *, bad=BAD):
        self.columns, self.bad = columns, bad

    def apply(self, batch, state):
        (c,) = self.input_columns()
        hit = pc.is_in(batch.column(c), pa.array(list(self.bad), pa.float64())).fill_null(False)
        if pc.any(hit).as_py():
            first = pc.index(hit, True).as_py()
            v = batch.column(c)[first].as_py()
            raise DataError(f"value {v!r} is refused", column=c, value=v)
        return batch


def table(n=120):
    return pa.table({"x": pa.array(np.arange(n, dtype=float)), "y": pa.array(np.arange(n) % 7, pa.float64())})


@pytest.mark.parametrize("batch_size", [7, 50, 1000])
def test_raise_names_the_first_guilty_row(batch_size):
    f = bl.Pipeline([H7Refuse(["x"])]).fit(table())
    with pytest.raises(DataError) as ei:
        f.transform(table(), batch_size=batch_size)
    assert (ei.value.row, ei.value.column, ei.value.value) == (13, "x", 13.0)


@pytest.mark.parametrize("batch_size", [7, 1000])
def test_dead_letters_get_exactly_the_guilty_rows(batch_size):
    f = bl.Pipeline([H7Refuse(["x"])]).fit(table())
    dead = bl.DeadLetters()
    out = f.transform(table(), batch_size=batch_size, errors=dead)
    assert sorted(r["row"] for r in dead.records) == [13, 37, 38, 99]
    assert all(r["column"] == "x" and "refused" in r["reason"] for r in dead.records)
    assert out.num_rows + dead.count == 120
    assert out.column("x").to_pylist() == [float(i) for i in range(120) if i not in (13, 37, 38, 99)]


def test_fit_excludes_dead_rows_from_statistics():
    t = table()
    dead = bl.DeadLetters()
    f = bl.Pipeline([H7Refuse(["x"]), bl.StandardScaler(["x"])]).fit(t, batch_size=16, errors=dead)
    good = np.array([i for i in range(120) if i not in (13, 37, 38, 99)], dtype=float)
    assert f.states[1]["moments"]["mean"][0] == pytest.approx(good.mean(), rel=1e-12)
    assert f.lineage["rows"] + f.lineage["dead_letters"] == 120
    assert sorted(r["row"] for r in dead.records) == [13, 37, 38, 99]


def _csv(tmp_path):
    p = tmp_path / "d.csv"
    lines = ["x,y"]
    for i in range(60):
        lines.append("oops,1" if i == 5 else "1,2,3" if i == 20 else f"{float(i)},{i % 7}")
    p.write_text("\n".join(lines) + "\n")
    return str(p)


def test_file_rows_stay_right_after_dropped_rows(tmp_path):
    """Bad casts and malformed lines dropped before a refused row must not shift its row or line number."""
    path = _csv(tmp_path)
    f = bl.Pipeline([H7Refuse(["x"])]).fit(table())
    dead = bl.DeadLetters()
    out = f.transform(path, batch_size=25, errors=dead)
    got = {r["row"]: r for r in dead.records}
    assert sorted(got) == [5, 13, 20, 37, 38]
    assert got[37]["line"] == 39 and got[37]["source"] == path and got[5]["column"] == "x"
    assert out.num_rows + dead.count == 60
    with pytest.raises(DataError) as ei:
        f.transform(path, batch_size=25)
    assert (ei.value.row, ei.value.line, ei.value.source) == (5, 7, path)


def test_raise_on_a_file_names_file_row_and_line(tmp_path):
    p = tmp_path / "ok.csv"
    p.write_text("x,y\n" + "".join(f"{float(i)},1\n" for i in range(50)))
    f = bl.Pipeline([H7Refuse(["x"])]).fit(table())
    with pytest.raises(DataError) as ei:
        f.transform(str(p), batch_size=8)
    assert (ei.value.source, ei.value.row, ei.value.line) == (str(p), 13, 15)


def test_dead_letter_file_policy(tmp_path):
    out = tmp_path / "dead.jsonl"
    f = bl.Pipeline([H7Refuse(["x"])]).fit(table())
    f.transform(table(), errors=str(out))
    assert len(out.read_text().splitlines()) == 4


def test_find_bad_rows_bisects():
    b = table().to_batches()[0]
    step = H7Refuse(["x"])
    bad = find_bad_rows(lambda batch: step.apply(batch, {}), b)
    assert [i for i, _ in bad] == [13, 37, 38, 99]


def test_whole_batch_failure_is_reraised():
    calls = []

    def fn(batch):
        calls.append(batch.num_rows)
        if batch.num_rows > 3:
            raise DataError("needs few rows")
        return batch

    with pytest.raises(DataError, match="needs few rows"):
        guard(fn, table(8).to_batches()[0], None)


def test_ordered_map_keeps_order():
    assert list(ordered_map(lambda x: x * 2, range(20), workers=2)) == [x * 2 for x in range(20)]
    assert list(ordered_map(lambda x: x * 2, range(5), workers=1)) == [0, 2, 4, 6, 8]


def test_worker_lanes_are_deterministic_and_agree_with_one_worker():
    import beamlearn as bl
    from beamlearn.engines.local import LocalEngine
    from beamlearn.testing import random_table

    t = random_table(5000, n_numeric=3, n_string=2, seed=11)
    p = bl.Pipeline([bl.SimpleImputer(["num0", "num1"]), bl.StandardScaler(["num0", "num1", "num2"]),
                     bl.OneHotEncoder(["cat0", "cat1"]), bl.RobustScaler(["num2"])])
    one = LocalEngine(workers=1, batch_size=97).fit(p, t)
    two_a = LocalEngine(workers=2, batch_size=97).fit(p, t)
    two_b = LocalEngine(workers=2, batch_size=97).fit(p, t)
    assert two_a.lineage["rows"] == one.lineage["rows"] == 5000  # counted once, not once per pass
    assert two_a.lineage["passes"] == one.lineage["passes"] == 4  # impute, scale, robust sketch + select
    for sa, sb, s1 in zip(two_a.states, two_b.states, one.states):
        m_a, m_b, m_1 = sa.get("moments"), sb.get("moments"), s1.get("moments")
        if m_a is not None:
            for k in ("count", "mean", "var"):
                np.testing.assert_array_equal(m_a[k], m_b[k])  # same lanes, same merge order: identical
                np.testing.assert_allclose(m_a[k], m_1[k], rtol=1e-12)
    assert two_a.transform(t).to_pandas().equals(two_b.transform(t).to_pandas())  # NaN-aware, bit-exact
    a, b = two_a.transform(t).to_pandas(), one.transform(t).to_pandas()
    np.testing.assert_allclose(a.select_dtypes("number").to_numpy(float), b.select_dtypes("number").to_numpy(float),
                               rtol=1e-9, atol=1e-12)


def test_a_later_pass_reads_only_the_columns_it_needs(tmp_path, monkeypatch):
    """Pass 0 reads every column (the profile counts them all); the passes of a median imputer and of the scaler
    after it read only the numeric columns, and the fit equals the in-memory one."""
    import pyarrow.parquet as pq

    from beamlearn import io
    from beamlearn.testing import assert_nested_close, random_table

    table = random_table(700, n_numeric=3, n_string=2, seed=1)
    path = str(tmp_path / "d.parquet")
    pq.write_table(table, path, row_group_size=200)
    seen: list = []
    real = io._read_parquet

    def spy(pf, batch_size, row_groups, columns):
        seen.append(columns)
        return real(pf, batch_size, row_groups, columns)

    monkeypatch.setattr(io, "_read_parquet", spy)
    num = ["num0", "num1", "num2"]
    pipe = bl.Pipeline([bl.SimpleImputer(num, strategy="median"), bl.StandardScaler(num),
                        bl.OneHotEncoder(["cat0"])])
    fitted = pipe.fit(path, batch_size=100)
    assert fitted.lineage["passes"] == 3 and len(seen) == 4  # the schema's first batch, then the three passes
    assert set(seen[1]) == set(table.column_names)  # the sketch pass, with the profile
    assert [set(c) for c in seen[2:]] == [set(num), set(num)]  # exact median selection, the scaler's moments
    want = pipe.fit(table, batch_size=100)
    for got_state, want_state in zip(fitted.states, want.states):
        assert_nested_close(got_state, want_state, rtol=1e-12)


def test_in_memory_batches_missing_a_required_column_name_it():
    first = pa.record_batch({"x": [1.0, 2.0], "y": [1.0, 2.0]})
    later = pa.record_batch({"y": [3.0, 4.0]})
    for errors in ("raise", bl.DeadLetters()):
        with pytest.raises(bl.errors.SchemaError, match="required column is missing") as info:
            bl.Pipeline([bl.StandardScaler(["x"])]).fit(lambda: [first, later], errors=errors)
        assert info.value.column == "x"
