"""The shape of the house (shared/DESIGN.md §3): no import circles, no private names across modules, and a light
serving core.  The import graph is read from the source with ``ast`` (every import, at module level, inside
functions and under ``TYPE_CHECKING`` alike), so a circle cannot hide behind an import placed in a function."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pyarrow as pa
import pytest

import beamlearn as bl
from beamlearn.testing import random_table

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
HEAVY = ("apache_beam", "sklearn", "scipy", "pandas", "matplotlib")


def modules() -> dict[str, str]:
    """Every module of the package: dotted name -> file."""
    out = {}
    for folder, _, files in os.walk(os.path.join(SRC, "beamlearn")):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                name = os.path.relpath(path, SRC)[:-3].replace(os.sep, ".")
                out[name.removesuffix(".__init__")] = path
    return out


def imports(mods: dict[str, str]) -> list[tuple[str, str, str | None, int]]:
    """``(importer, imported module, imported name or None, line)`` for every import of a beamlearn module."""
    out = []
    for mod, path in mods.items():
        package = mod if path.endswith("__init__.py") else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
            if isinstance(node, ast.Import):
                out += [(mod, a.name, None, node.lineno) for a in node.names if a.name.startswith("beamlearn")]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                if not base.startswith("beamlearn"):
                    continue
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    out.append((mod, sub, None, node.lineno) if sub in mods else (mod, base, a.name, node.lineno))
    return out


def graph(mods: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the modules importing it runs (a submodule's import runs its packages too)."""
    g: dict[str, set[str]] = {m: set() for m in mods}
    for mod, target, _, _ in imports(mods):
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            t = ".".join(parts[:i])
            if t in mods and t != mod and not mod.startswith(t + "."):  # a package's own modules run inside it
                g[mod].add(t)
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def test_the_detector_finds_a_circle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(g) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    assert cycles(graph(modules())) == []


def test_no_engine_imports_another_engine():
    engines = {m for m in modules() if m.startswith("beamlearn.engines.")}
    family = {m: m.rpartition(".")[2].split("_")[0] for m in engines}  # beam_jobs is Beam's, spark_jobs Spark's
    shared = {"passes"}  # the engine-neutral pass runner every engine drives
    crossing = [(m, t) for m, t, _, _ in imports(modules()) if m in engines and t in engines
                and family[t] not in shared and family[m] != family[t]]
    assert crossing == []


# pyarrow imports pandas by itself whenever pandas is installed (pa.array asks it about its inputs), so pandas is
# made unimportable here: serving must work without it, as in a bundle that does not ship it
SERVE = """
import json, sys
class NoPandas:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "pandas":
            raise ModuleNotFoundError("No module named 'pandas'", name=name)
sys.meta_path.insert(0, NoPandas())
import pyarrow as pa
import pyarrow.feather as feather
import beamlearn
fitted = beamlearn.load(sys.argv[1])
table = feather.read_table(sys.argv[2])
fitted.transform_one(table.slice(0, 1).to_pylist()[0])
fitted.transform(table)
import asyncio, httpx
from beamlearn.serving import create_app
async def http():
    app = create_app(sys.argv[1])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        rows = table.slice(0, 3).to_pylist()
        for r in [await c.post("/v1/transform", json=json.loads(json.dumps(rows[0], default=str))),
                  await c.post("/v1/transform", json=json.loads(json.dumps(rows, default=str)))]:
            assert r.status_code == 200, r.text
        # drift of the served records: numpy and datasketches, no scipy
        assert "beamlearn_drift_window_rows 4.0" in (await c.get("/metrics")).text
        assert (await c.get("/v1/drift")).json()["window_rows"] == 4
asyncio.run(http())
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in %r)))
""" % (HEAVY,)


@pytest.mark.parametrize("case", ["preprocessing", "models"])
def test_serving_imports_only_numpy_and_pyarrow(tmp_path, case):
    """Loading, transform_one, transform and the HTTP app (beamlearn.serving) import no heavy package."""
    from pyarrow import feather

    t = random_table(200, n_numeric=3, n_string=2, seed=4)
    t = t.append_column("y", pa.array(["a", "b"] * 100))
    num = ["num0", "num1", "num2"]
    steps = [bl.SimpleImputer(num, strategy="median", add_indicator=True), bl.StandardScaler(num),
             bl.Log1p("num2"), bl.OneHotEncoder(["cat0"], handle_unknown="ignore"),
             bl.KBinsDiscretizer("num1", n_bins=3), bl.FeatureHasher("cat1", n_features=8)]
    if case == "models":
        steps += [bl.LogisticRegression(num + ["cat0_*"], "y"), bl.KMeans(num, n_clusters=3)]
    model, data = tmp_path / "m.blm", tmp_path / "t.arrow"
    bl.Pipeline(steps).fit(t).save(str(model))
    feather.write_feather(t.drop_columns(["y"]), str(data))
    out = subprocess.run([sys.executable, "-c", SERVE, str(model), str(data)], capture_output=True, text=True,
                         check=False, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.splitlines()[-1]) == []


def test_no_private_name_is_imported_from_another_module():
    mods = modules()
    private = [f"{m}:{line} imports {name} from {t}" for m, t, name, line in imports(mods)
               if name and name.startswith("_") and not name.startswith("__") and t != m]
    assert private == []
