"""Helpers for testing pipelines and custom steps: random tables and the serving-consistency check.

Examples
--------
>>> import beamlearn as bl
>>> from beamlearn.testing import random_table, assert_serving_consistent
>>> t = random_table(200, n_numeric=2, n_string=1, seed=1)
>>> f = bl.Pipeline([bl.StandardScaler(["num0", "num1"])]).fit(t)
>>> assert_serving_consistent(f, t)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["fit_on_beam", "random_table", "assert_serving_consistent", "assert_rows_equal", "assert_nested_close",
           "assert_quality"]


def random_table(n_rows: int, *, n_numeric: int = 3, n_string: int = 2, n_categories: int = 5,
                 null_fraction: float = 0.1, nan_fraction: float = 0.05, seed: int = 0) -> pa.Table:
    """A table with numeric columns ``num0..`` (float64 with nulls and NaN) and string columns ``cat0..``
    (``n_categories`` values with skewed frequencies, and nulls)."""
    rng = np.random.default_rng(seed)
    cols: dict[str, Any] = {}
    for i in range(n_numeric):
        x = rng.normal(loc=rng.uniform(-5, 5), scale=rng.uniform(0.5, 3), size=n_rows)
        x[rng.random(n_rows) < nan_fraction] = np.nan
        mask = rng.random(n_rows) < null_fraction
        cols[f"num{i}"] = pa.array(x, mask=mask, type=pa.float64())
    for i in range(n_string):
        p = rng.dirichlet(np.ones(n_categories) * 0.7)
        v = rng.choice([f"v{k}" for k in range(n_categories)], size=n_rows, p=p)
        mask = rng.random(n_rows) < null_fraction
        cols[f"cat{i}"] = pa.array(v.tolist(), mask=mask, type=pa.string())
    return pa.table(cols)


def _mismatch(a: Any, b: Any, rtol: float, atol: float, path: str, none_is_nan: bool) -> str | None:
    """Where ``a`` and ``b`` first differ (a path like ``.overall.f1[2]``), or None when they are equal:
    dicts and lists/tuples compared element by element, floats within ``rtol``/``atol`` with NaN equal to NaN
    (and to None when ``none_is_nan``), anything else with ``==``."""
    if none_is_nan and (a is None or b is None):
        na = a is None or (isinstance(a, float) and math.isnan(a))
        nb = b is None or (isinstance(b, float) and math.isnan(b))
        return None if na and nb else f"{path}: {a!r} != {b!r}"
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{path}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"
        return next((m for k in a if (m := _mismatch(a[k], b[k], rtol, atol, f"{path}.{k}", none_is_nan))), None)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        x, y = np.asarray(a), np.asarray(b)
        if x.shape != y.shape:
            return f"{path}: shape {x.shape} != {y.shape}"
        if x.dtype.kind in "fc" or y.dtype.kind in "fc":
            same = np.isclose(x, y, rtol=rtol, atol=atol, equal_nan=True)
        else:
            same = x == y
        bad = np.argwhere(~np.asarray(same, dtype=bool))
        if not len(bad):
            return None
        at = tuple(int(i) for i in bad[0])
        return f"{path}{list(at)}: {x[at].item()!r} != {y[at].item()!r}"
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{path}: length {len(a)} != {len(b)}"
        return next((m for i, (x, y) in enumerate(zip(a, b))
                     if (m := _mismatch(x, y, rtol, atol, f"{path}[{i}]", none_is_nan))), None)
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        if math.isnan(a) or math.isnan(b):
            return None if math.isnan(a) and math.isnan(b) else f"{path}: {a!r} != {b!r}"
        return None if math.isclose(a, b, rel_tol=rtol, abs_tol=atol) else f"{path}: {a!r} != {b!r}"
    return None if a == b else f"{path}: {a!r} != {b!r}"


def _same_value(a: Any, b: Any, rtol: float, atol: float) -> bool:
    return _mismatch(a, b, rtol, atol, "", none_is_nan=True) is None


def assert_nested_close(got: Any, want: Any, *, rtol: float = 1e-9, atol: float = 1e-12, path: str = "") -> None:
    """Assert two nested results (dicts, lists, numbers, numpy arrays; e.g. metrics or fitted states from two
    engines) are equal, floats within ``rtol``/``atol`` and NaN equal to NaN; the message names the first
    differing path.

    >>> assert_nested_close({"f1": [0.5, float("nan")]}, {"f1": [0.5 + 1e-12, float("nan")]})
    >>> assert_nested_close({"mean": np.array([1.0, np.nan])}, {"mean": np.array([1.0, np.nan])})
    >>> assert_nested_close({"n": np.array([1, 2])}, {"n": np.array([1, 3])})
    Traceback (most recent call last):
    AssertionError: .n[1]: 2 != 3
    """
    where = _mismatch(got, want, rtol, atol, path, none_is_nan=False)
    if where is not None:
        raise AssertionError(where)


def assert_rows_equal(got: dict, want: dict, *, rtol: float = 0.0, atol: float = 0.0, where: str = "") -> None:
    """Assert two output records are equal: same keys in the same order, values equal (None == NaN)."""
    assert list(got) == list(want), f"{where}columns differ:\n{list(got)}\n{list(want)}"
    for k in want:
        assert _same_value(got[k], want[k], rtol, atol), f"{where}column {k!r}: {got[k]!r} != {want[k]!r}"


def assert_serving_consistent(fitted: Any, data: Any, *, rtol: float = 0.0, atol: float = 0.0) -> None:
    """Assert ``fitted.transform_one(row)`` equals the matching row of ``fitted.transform(data)`` for every
    row of ``data`` (exactly, by default: both paths must make the same floating-point operations)."""
    table = data if isinstance(data, pa.Table) else pa.Table.from_batches(list(
        __import__("beamlearn").io.read(data)))
    out = fitted.transform(table)
    for i, (rec, want) in enumerate(zip(table.to_pylist(), out.to_pylist())):
        got = fitted.transform_one(rec)
        assert_rows_equal(got, want, rtol=rtol, atol=atol, where=f"row {i}: ")


def assert_quality(data_or_result: Any, *gates: str, baseline: Any = None, **evaluate_kwargs: Any) -> Any:
    """Assert quality gates in a user's own test suite; returns the evaluation.

    ``data_or_result`` is an :class:`~beamlearn.metrics.EvaluationResult`, or data to evaluate with
    ``evaluate_kwargs`` (``label=``, ``prediction=``, ``score=``, ``slices=``, ``model=`` ... as for
    :func:`beamlearn.metrics.evaluate`).  Fails with every failing gate and its value.

    Examples
    --------
    >>> from beamlearn.testing import assert_quality
    >>> r = assert_quality({"y": [0, 1, 1], "p": [0, 1, 1]}, "accuracy>=0.9", "f1>=0.9", label="y", prediction="p")
    >>> assert_quality(r, "accuracy>=1.5")
    Traceback (most recent call last):
    ...
    AssertionError: 1 of 1 quality gates failed:
      FAIL accuracy>=1.5: value 1 (required >= 1.5)
    """
    from beamlearn.metrics import EvaluationResult, evaluate

    if isinstance(data_or_result, EvaluationResult):
        if evaluate_kwargs:
            raise TypeError(f"evaluation options {sorted(evaluate_kwargs)} need data, not an EvaluationResult")
        result = data_or_result
        outcomes = result.check(*gates, baseline=baseline)
    else:
        result = evaluate(data_or_result, require=gates, baseline=baseline, **evaluate_kwargs)
        outcomes = result.gates
    failed = [g for g in outcomes if not g.passed]
    if failed:
        raise AssertionError(f"{len(failed)} of {len(outcomes)} quality gates failed:\n"
                             + "\n".join(f"  {g}" for g in failed))
    return result


def fit_on_beam(pipeline: Any, table: pa.Table, *, batch_size: int = 1024, **fit_options: Any) -> Any:
    """Fit ``pipeline`` on ``table`` with the Beam engine (DirectRunner, in memory) and return the fitted
    pipeline as a worker would hand it over: saved as an artifact, loaded back.  For checking that a pipeline
    (custom steps included) fits on Beam as it fits in process.  ``fit_options`` go to
    :class:`~beamlearn.engines.beam.Fit` (``max_passes=``, ...).

    >>> import beamlearn as bl
    >>> t = pa.table({"x": [1.0, 2.0, 4.0]})
    >>> fit_on_beam(bl.Pipeline([bl.StandardScaler(["x"])]), t).states[0]["moments"]["mean"].tolist()
    [2.3333333333333335]
    """
    import os
    import tempfile

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from beamlearn import artifact
    from beamlearn.engines.beam import Fit

    with tempfile.TemporaryDirectory(prefix="beamlearn-fit-on-beam-") as tmp:
        path = os.path.join(tmp, "fitted.bl")

        def save(fitted: Any) -> None:
            with open(path, "wb") as fh:
                fh.write(artifact.to_bytes(fitted))

        with beam.Pipeline(options=PipelineOptions(["--direct_running_mode=in_memory"])) as p:
            (p | beam.Create(table.to_batches(max_chunksize=batch_size))
             | Fit(pipeline, schema=table.schema, **fit_options) | beam.Map(save))
        return artifact.load(path)
