"""The serving-consistency probe that ``tests/test_dispatch.py`` runs once per numpy SIMD dispatch level.

``python tests/dispatch_probe.py fit DIR`` fits one pipeline per case (together they use every registered step
and model) on a random table and saves each artifact and the table under DIR.  ``python tests/dispatch_probe.py
serve DIR OUT`` loads them in a process whose numpy may have been started with ``NPY_DISABLE_CPU_FEATURES``,
checks that ``transform_one`` equals the matching row of ``transform`` bit for bit (same value, same type) for
every row, and writes each case's ``transform`` output to OUT (Arrow IPC) with a digest of the loaded states,
so the parent can compare hosts' kernels.  Importing this module does nothing but define the cases.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np
import pyarrow as pa
from pyarrow import feather

import beamlearn as bl
from beamlearn.profile import Profiler
from beamlearn.profile.validate import Validator
from beamlearn.testing import assert_rows_equal, random_table

# numpy kernels whose float64 loops differ between SIMD levels (SVML / AVX-512 against libm)
KERNELS = {"exp": np.exp, "log": np.log, "log10": np.log10, "expm1": np.expm1, "power": np.power,
           "tanh": np.tanh, "cbrt": np.cbrt, "arctan": np.arctan, "sin": np.sin, "sqrt": np.sqrt}


def _kernel(name):
    ufunc = KERNELS[name]

    def fn(x, p=1.7):
        return ufunc(np.abs(x) + 1e-3, p) if name == "power" else ufunc(np.abs(x) + 1e-3 if name in (
            "log", "log10") else x)

    return fn


for _name in KERNELS:
    bl.register_function(f"probe_{_name}")(_kernel(_name))


@bl.register_function("probe_arctan2")
def _arctan2(y, x):
    return np.arctan2(y, x)


def table(n: int = 400, seed: int = 11) -> pa.Table:
    """Six float columns with nulls and NaN, three string columns, counts, and three labels."""
    t = random_table(n, n_numeric=6, n_string=3, n_categories=6, seed=seed)
    rng = np.random.default_rng(seed)
    z = np.nan_to_num(t.column("num0").to_numpy(zero_copy_only=False)) - 0.3 * np.nan_to_num(
        t.column("num1").to_numpy(zero_copy_only=False))
    return (t.append_column("count0", pa.array(rng.poisson(2.0, n).astype(np.float64)))
            .append_column("count1", pa.array(rng.poisson(5.0, n).astype(np.float64)))
            .append_column("late", pa.array(np.where(z + rng.normal(0, 2, n) > np.median(z), "yes", "no")))
            .append_column("kind", pa.array(rng.choice(["a", "b", "c"], n)))
            .append_column("target", pa.array(z * 2.5 + rng.normal(0, 1, n))))


NUM = [f"num{i}" for i in range(6)]
FILLED = [bl.SimpleImputer(NUM, strategy="median")]


def cases() -> dict[str, bl.Pipeline]:
    """Pipelines that together use every registered step and model, kernels first where they feed others."""
    from sklearn.tree import DecisionTreeClassifier

    return {
        "kernels": bl.Pipeline([bl.Log1p("num0")] + [
            bl.Function(c, func=f"probe_{k}") for c, k in zip(NUM[1:], ["exp", "log", "expm1", "power", "tanh"])]),
        "kernels2": bl.Pipeline([bl.Function(c, func=f"probe_{k}")
                                 for c, k in zip(NUM, ["cbrt", "arctan", "sin", "sqrt", "log10", "exp"])]),
        "scalers": bl.Pipeline([bl.StandardScaler(NUM[:2]), bl.MinMaxScaler(NUM[2:4], clip=True),
                                bl.MaxAbsScaler(NUM[4]), bl.RobustScaler(NUM[5])]),
        "impute_encode": bl.Pipeline([
            bl.SimpleImputer(NUM[:2], strategy="mean", add_indicator=True),
            bl.SimpleImputer(["cat0"], strategy="most_frequent"),
            bl.SimpleImputer(NUM[2], strategy="constant", fill_value=-1.0),
            bl.OneHotEncoder(["cat0", "cat1"], handle_unknown="ignore", min_frequency=10),
            bl.OrdinalEncoder("cat2", handle_unknown="use_encoded_value", unknown_value=-1),
            bl.Clip(NUM[3], lower=-1.0, upper=2.0), bl.Drop("kind")]),
        "log_then_scale_bin_hash": bl.Pipeline([
            bl.Log1p(["count0", "count1"]), bl.StandardScaler(["count0"]),
            bl.KBinsDiscretizer(NUM[4], n_bins=4, strategy="uniform", encode="ordinal"),
            bl.KBinsDiscretizer("count1", n_bins=3, strategy="quantile"),
            bl.FeatureHasher(["cat0", "num5"], n_features=32),
            bl.Derive(["num0", "num1"], output="angle", func="probe_arctan2")]),
        "logistic_binary": bl.Pipeline(FILLED + [
            bl.Function("num2", func="probe_exp"), bl.OneHotEncoder("cat0", handle_unknown="ignore"),
            bl.LogisticRegression(NUM + ["cat0_*"], "late")]),
        "logistic_multi": bl.Pipeline(FILLED + [bl.StandardScaler(NUM), bl.LogisticRegression(NUM, "kind")]),
        "linear": bl.Pipeline(FILLED + [bl.Log1p("count0"), bl.LinearRegression(NUM + ["count0"], "target",
                                                                                 output="lin"),
                                        bl.Ridge(NUM, "target", alpha=3.0, output="ridge")]),
        "bayes": bl.Pipeline(FILLED + [bl.GaussianNB(NUM, "kind", output="g"),
                                       bl.MultinomialNB(["count0", "count1"], "late", output="m")]),
        "bernoulli": bl.Pipeline(FILLED + [bl.BernoulliNB(NUM[:3], "kind")]),
        "kmeans": bl.Pipeline(FILLED + [bl.StandardScaler(NUM),
                                        bl.KMeans(NUM, n_clusters=4, distances=True, random_state=3)]),
        "sklearn_tree": bl.Pipeline(FILLED + [bl.SklearnModel(DecisionTreeClassifier(max_depth=4, random_state=0),
                                                              NUM, "late")]),
        "profile_validate": bl.Pipeline([Profiler(correlations=3), Validator([("num0", -1.0, 1.0, None, True),
                                                                              ("cat0", None, None, ["a"], False)]),
                                         bl.StandardScaler(NUM[:2])]),
    }


def fit(folder: str) -> None:
    t = table()
    feather.write_feather(t, os.path.join(folder, "data.arrow"))
    digests = {}
    for name, pipe in cases().items():
        fitted = pipe.fit(t, batch_size=128)
        fitted.save(os.path.join(folder, f"{name}.blm"))
        digests[name] = digest(fitted.states)
    with open(os.path.join(folder, "states.json"), "w") as fh:
        json.dump(digests, fh)


def digest(states) -> str:
    """SHA-256 of fitted states as stored: every array's dtype, shape and bytes, every other value's repr."""
    h = hashlib.sha256()

    def walk(v) -> None:
        if isinstance(v, dict):
            for k in sorted(v, key=str):
                h.update(repr(k).encode())
                walk(v[k])
        elif isinstance(v, (list, tuple)):
            h.update(b"[")
            for x in v:
                walk(x)
            h.update(b"]")
        elif isinstance(v, np.ndarray) and v.dtype != object:
            h.update(f"{v.dtype.str}{v.shape}".encode() + np.ascontiguousarray(v).tobytes())
        elif isinstance(v, float):
            h.update(np.float64(v).tobytes())
        else:
            h.update(repr(v).encode())

    walk(states)
    return h.hexdigest()


def enabled_features() -> list[str]:
    """The dispatch targets numpy uses in this process, in numpy's order (``numpy.show_runtime()``'s "found")."""
    try:  # where show_runtime() reads them (numpy 2; numpy 1 kept them in numpy.core)
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    return [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]


def _same_type(got: dict, want: dict, where: str) -> None:
    for k, v in want.items():
        if v is not None and got[k] is not None and type(got[k]) is not type(v):
            raise AssertionError(f"{where}column {k!r}: {type(got[k]).__name__} != {type(v).__name__}")


def serve(folder: str, out: str) -> dict:
    t = feather.read_table(os.path.join(folder, "data.arrow"))
    rows = t.to_pylist()
    report = {"simd": enabled_features(), "cases": {}}
    for name in cases():
        fitted = bl.load(os.path.join(folder, f"{name}.blm"))
        result = fitted.transform(t)
        for i, (rec, want) in enumerate(zip(rows, result.to_pylist())):
            got = fitted.transform_one(dict(rec))
            where = f"{name}, row {i}: "
            assert_rows_equal(got, want, where=where)  # rtol = atol = 0: bit for bit (NaN == None == NaN)
            _same_type(got, want, where)
        feather.write_feather(result, os.path.join(out, f"{name}.arrow"))
        report["cases"][name] = {"rows": len(rows), "states": digest(fitted.states),
                                 "steps": [type(s).__name__ for s in fitted.steps]}
    return report


if __name__ == "__main__":
    if sys.argv[1] == "fit":
        fit(sys.argv[2])
    else:
        print(json.dumps(serve(sys.argv[2], sys.argv[3])))
