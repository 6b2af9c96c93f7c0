"""Serving equals batch bit for bit under every SIMD level numpy dispatches to on this host, and an artifact
fitted here transforms under another level within the documented rounding (README, "Determinism").

numpy picks its float kernels (``log1p``, ``exp``, ``power``, ...) by CPU: AVX-512 hosts run SVML / AVX-512 loops
whose last bits differ from the baseline's.  ``NPY_DISABLE_CPU_FEATURES`` turns the upper levels off at numpy's
start, so one host exercises its own kernels and those of the hosts below it: ``tests/dispatch_probe.py`` runs
in a fresh interpreter per level.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from pyarrow import feather

PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dispatch_probe.py")
KERNEL_ULPS = 4   # one numpy kernel call: numpy's SVML / AVX-512 loops against the baseline's (measured <= 3)
OUTPUT_ULPS = 16  # any float output, the kernels' difference carried through later steps (measured <= 8)
KERNEL_CASES = ("kernels", "kernels2")


def _found() -> list[str]:
    code = f"import json, runpy; print(json.dumps(runpy.run_path({PROBE!r})['enabled_features']()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={k: v for k, v in os.environ.items() if k != "NPY_DISABLE_CPU_FEATURES"})
    return json.loads(out.stdout.splitlines()[-1])


def levels(found: list[str]) -> list[str]:
    """``NPY_DISABLE_CPU_FEATURES`` values, from the host's own level down to numpy's baseline: each turns off
    one more of the dispatch targets the host has, from the top.

    >>> levels(["X86_V3", "X86_V4", "AVX512_ICL"])
    ['', 'AVX512_ICL', 'X86_V4 AVX512_ICL', 'X86_V3 X86_V4 AVX512_ICL']
    >>> levels([])
    ['']
    """
    return [" ".join(found[i:]) for i in range(len(found), -1, -1)]


def ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many units in the last place ``a`` and ``b`` differ, counted at a magnitude of at least 1 (so a
    difference near zero, left by a subtraction, counts as an absolute one: 1 ulp = 2.2e-16 there).

    >>> ulps(np.array([1.0, 0.0, 1e-30]), np.array([np.nextafter(1.0, 2.0), 0.0, 2e-30])).tolist()
    [1.0, 0.0, 0.0]
    """
    scale = np.spacing(np.maximum(np.maximum(np.abs(a), np.abs(b)), 1.0))
    return np.abs(a - b) / scale


def run(args: list[str], disable: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NPY_DISABLE_CPU_FEATURES"}
    if disable:
        env["NPY_DISABLE_CPU_FEATURES"] = disable
    proc = subprocess.run([sys.executable, PROBE, *args], capture_output=True, text=True, env=env, timeout=600,
                          check=False)
    assert proc.returncode == 0, f"NPY_DISABLE_CPU_FEATURES={disable!r}: {proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """Fit the probe's artifacts at the host's level, then serve them under every level; the reports by level."""
    root = tmp_path_factory.mktemp("dispatch")
    run(["fit", str(root)], "")
    reports = {}
    for disable in levels(_found()):
        out = root / f"out-{len(reports)}"
        out.mkdir()
        report = json.loads(run(["serve", str(root), str(out)], disable).stdout.splitlines()[-1])
        reports[disable] = (report, out)
    return root, reports


def test_serving_is_bit_for_bit_at_every_level_and_states_load_exactly(probed):
    root, reports = probed  # each serve run asserted transform_one == transform's row, bit for bit
    fitted = json.loads((root / "states.json").read_text())
    for disable, (report, _) in reports.items():
        assert {n: c["states"] for n, c in report["cases"].items()} == fitted, disable
        assert all(c["rows"] == 400 for c in report["cases"].values())
    found = [r["simd"] for r, _ in reports.values()]
    assert len({tuple(f) for f in found}) == len(found)  # each level really dispatched differently


def test_every_step_and_model_is_probed(probed):
    from beamlearn.steps.base import registered_steps

    _, reports = probed
    report, _ = next(iter(reports.values()))
    used = {s for c in report["cases"].values() for s in c["steps"]}
    ours = {n for n, cls in registered_steps().items() if cls.__module__.startswith("beamlearn.")}
    assert ours - used == set()  # (tests elsewhere register steps of their own in this process)


def _floats(col: pa.ChunkedArray) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in col.to_pylist()], dtype=np.float64)


def test_outputs_across_levels_differ_only_by_kernel_rounding(probed):
    _, reports = probed
    (_, base), *others = reports.values()
    for _, out in others:
        for path in sorted(base.iterdir()):
            name = path.stem
            want, got = feather.read_table(path), feather.read_table(out / path.name)
            assert got.schema == want.schema, name
            for c in want.column_names:
                a, b = want.column(c), got.column(c)
                assert a.null_count == b.null_count, (name, c)
                if not pa.types.is_floating(a.type):
                    assert a.equals(b), f"{name}.{c}: a discrete output differs between levels"
                    continue
                x, y = _floats(a), _floats(b)
                assert np.array_equal(np.isnan(x), np.isnan(y)) and np.array_equal(np.isinf(x), np.isinf(y))
                ok = np.isfinite(x)
                d = ulps(x[ok], y[ok]).max(initial=0.0)
                bound = KERNEL_ULPS if name in KERNEL_CASES else OUTPUT_ULPS
                assert d <= bound, f"{name}.{c}: {d} ulps between levels (bound {bound})"
