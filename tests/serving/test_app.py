"""The HTTP app: OIP and JSON routes equal transform_one / transform, bad input is a 4xx naming the field,
micro-batching equals the unbatched path, hot reload swaps models and refuses a bad artifact."""

from __future__ import annotations

import asyncio
import json
import os

import httpx
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

import beamlearn as bl
from beamlearn.deadletters import json_safe
from beamlearn.serving import create_app
from beamlearn.serving.app import ARROW_STREAM
from beamlearn.serving.batcher import PROBE_EVERY, VECTOR_MIN, MicroBatcher

SCHEMA = pa.schema([("x", pa.float64()), ("n", pa.int64()), ("c", pa.string())])


def _data(seed=0, n=200):
    rng = np.random.default_rng(seed)
    return pa.table({"x": [float(v) if i % 9 else None for i, v in enumerate(rng.normal(5, 2, n))],
                     "n": rng.integers(0, 100, n).tolist(), "c": [["a", "b", "c"][i % 3] for i in range(n)]},
                    schema=SCHEMA)


PIPE = bl.Pipeline([bl.SimpleImputer(["x"], strategy="mean"), bl.StandardScaler(["x", "n"]),
                    bl.OneHotEncoder(["c"], handle_unknown="ignore")], name="demo")


@pytest.fixture(scope="module")
def fitted():
    return PIPE.fit(_data())


@pytest.fixture(scope="module")
def client(fitted):
    with TestClient(create_app(fitted)) as c:
        yield c


def test_health_metadata_and_schema(client, fitted):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200
    meta = client.get("/v2/models/demo").json()
    assert [i["name"] for i in meta["inputs"]] == ["x", "n", "c"]
    assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {"x": "FP64", "n": "INT64", "c": "BYTES"}
    assert [o["name"] for o in meta["outputs"]] == fitted.output_schema.names
    assert client.get("/v2/models/other").status_code == 404
    assert client.get("/v1/schema").json()["required"] == fitted.required_columns
    doc = client.get("/openapi.json").json()
    assert doc["components"]["schemas"]["Record"]["required"] == fitted.required_columns


def test_json_routes_equal_transform_one_and_transform(client, fitted):
    recs = _data(1, 50).to_pylist() + [{"x": None, "n": 3, "c": "zzz"}]
    for r in recs[:10]:
        assert client.post("/v1/transform", json=r).json() == fitted.transform_one(r)
    got = client.post("/v1/transform", json=recs).json()
    assert got == [fitted.transform_one(r) for r in recs]
    assert got == fitted.transform(pa.Table.from_pylist(recs, schema=SCHEMA)).to_pylist()


def test_integers_beyond_2_53_round_alike_on_every_path(client, fitted):
    # an int64 column of a scaler: 2**53 + 1 has no double; it rounds as numpy and scikit-learn round it (Arrow's
    # safe cast raised a raw ArrowInvalid: a 500, found by schemathesis)
    recs = [{"x": 1.0, "n": 2 ** 53 + 1, "c": "a"}, {"x": None, "n": -(2 ** 62) - 1, "c": "b"}]
    want = [fitted.transform_one(r) for r in recs]
    affine = fitted.steps[1].affine(fitted.states[1])
    assert want[0]["n"] == (float(2 ** 53) - affine.offset[1]) / affine.scale[1]
    assert client.post("/v1/transform", json=recs[0]).json() == want[0]
    assert client.post("/v1/transform", json=recs * 20).json() == want * 20  # the Arrow path
    assert fitted.transform(pa.Table.from_pylist(recs, schema=SCHEMA)).to_pylist() == want


def test_nan_literals_in_and_null_out(client, fitted):
    # Python clients send NaN as a bare literal (not strict JSON): accepted, read as NaN
    r = client.post("/v1/transform", content=b'{"x": NaN, "n": 3, "c": "a"}', headers={"content-type": "application/json"})
    assert r.status_code == 200
    assert r.json() == json_safe(fitted.transform_one({"x": float("nan"), "n": 3, "c": "a"}))
    # a non-finite output is written as null, whichever serializer wrote it
    from beamlearn.serving.app import _json
    assert json.loads(_json({"a": float("inf"), "b": [1.5, float("nan")]}).body) == {"a": None, "b": [1.5, None]}
    assert json.loads(_json({"big": 2 ** 70, "f": float("nan")}).body) == {"big": 2 ** 70, "f": None}


def test_oip_infer_in_mlservers_json_shape(client, fitted):
    recs = _data(2, 5).to_pylist()
    body = {"id": "req-1", "inputs": [
        {"name": "x", "shape": [5, 1], "datatype": "FP64", "data": [[r["x"]] for r in recs]},
        {"name": "n", "shape": [5], "datatype": "INT64", "data": [r["n"] for r in recs]},
        {"name": "c", "shape": [5], "datatype": "BYTES", "data": [r["c"] for r in recs]}]}
    out = client.post("/v2/models/demo/infer", json=body).json()
    assert out["id"] == "req-1" and out["model_name"] == "demo"
    want = fitted.transform(pa.Table.from_pylist(recs, schema=SCHEMA))
    assert [o["name"] for o in out["outputs"]] == want.schema.names
    for o in out["outputs"]:
        assert o["shape"] == [5] and o["data"] == want.column(o["name"]).to_pylist()


@pytest.mark.parametrize("n", [3, VECTOR_MIN + 5])  # the record path (few rows) and the Arrow path (many)
def test_oip_infer_is_the_same_on_the_record_and_arrow_paths(client, fitted, n):
    recs = _data(4, n).to_pylist()
    body = {"parameters": {"content_type": "pd"}, "inputs": [
        {"name": "x", "shape": [n], "datatype": "FP64", "data": [r["x"] for r in recs]},
        {"name": "n", "shape": [n, 1], "datatype": "INT64", "data": [[r["n"]] for r in recs]},
        {"name": "c", "shape": [n], "datatype": "BYTES", "data": [r["c"] for r in recs],
         "parameters": {"content_type": "str"}},
        {"name": "w", "shape": [n], "datatype": "FP32", "data": list(range(n))}]}  # unknown: typed as sent
    out = client.post("/v2/models/demo/infer", json=body).json()
    want = fitted.transform(pa.Table.from_pylist(recs, schema=SCHEMA).append_column(
        "w", pa.array(range(n), pa.float32())))
    assert {o["name"]: o["data"] for o in out["outputs"]} == want.to_pydict()
    assert {o["name"]: o["datatype"] for o in out["outputs"]}["w"] == "FP32"


def test_arrow_ipc_body(client, fitted):
    table = _data(3, 100)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    r = client.post("/v1/transform", content=sink.getvalue().to_pybytes(), headers={"content-type": ARROW_STREAM})
    assert r.status_code == 200 and r.headers["content-type"] == ARROW_STREAM
    assert pa.ipc.open_stream(r.content).read_all().equals(fitted.transform(table))


@pytest.mark.parametrize("body,status,words", [
    (b"{not json", 400, "not valid JSON"),
    (json.dumps({"n": 3, "c": "a"}).encode(), 422, "'x'"),  # missing required column
    (json.dumps({"x": "abc", "n": 3, "c": "a"}).encode(), 422, "'x'"),  # wrong type
    (json.dumps([{"x": 1.0, "n": 3, "c": "a"}, 5]).encode(), 400, "records"),
    (json.dumps(3).encode(), 400, "record"),
])
def test_bad_input_is_a_4xx_naming_the_field(client, body, status, words):
    r = client.post("/v1/transform", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status and words in r.json()["error"]


@pytest.mark.parametrize("inputs,words", [
    ([{"name": "x", "shape": [2], "datatype": "FP64", "data": [1.0]}], "shape"),
    ([{"name": "x", "shape": [1], "datatype": "NOPE", "data": [1.0]}], "datatype"),
    ([{"name": "x", "shape": [1], "datatype": "FP64", "data": ["a"]}], "'x'"),
    ([{"name": "n", "shape": [1], "datatype": "INT64", "data": [1]}], "'x'"),  # x missing
    ("nope", "inputs"),
])
def test_bad_oip_request_names_the_input(client, inputs, words):
    r = client.post("/v2/models/demo/infer", json={"inputs": inputs})
    assert r.status_code in (400, 422) and words in r.json()["error"], r.json()


def test_body_over_max_body_is_413(fitted):
    with TestClient(create_app(fitted, max_body=100)) as c:
        r = c.post("/v1/transform", json=[{"x": 1.0, "n": 1, "c": "a"}] * 20)
        assert r.status_code == 413 and "100 bytes" in r.json()["error"]


def test_metrics_are_prometheus_text(client):
    client.post("/v1/transform", json={"x": 1.0, "n": 1, "c": "a"})
    text = client.get("/metrics").text
    assert "beamlearn_requests_total" in text and "beamlearn_request_seconds_bucket" in text
    assert 'beamlearn_model_info{name="demo"' in text


@pytest.mark.parametrize("max_batch", [16, 64])  # record by record on the loop; one vectorized call in a thread
def test_micro_batching_coalesces_concurrent_requests_and_equals_unbatched(fitted, max_batch):
    app = create_app(fitted, max_batch=max_batch, max_wait_ms=50)
    recs = _data(4, 64).to_pylist()
    recs = recs[:40] + [{"x": "bad", "n": 1, "c": "a"}] + recs[40:]

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await asyncio.gather(*[c.post("/v1/transform", json=r) for r in recs])

    res = asyncio.run(go())
    bad = 40
    assert [r.json() for i, r in enumerate(res) if i != bad] == [fitted.transform_one(r) for i, r in enumerate(recs)
                                                                 if i != bad]
    assert res[bad].status_code == 422 and "'x'" in res[bad].json()["error"]
    with TestClient(app) as c:
        text = c.get("/metrics").text
    sizes = [line for line in text.splitlines() if line.startswith("beamlearn_batch_rows_count")]
    batches = float(sizes[0].split()[-1])
    assert batches < len(recs)  # coalesced


def test_batcher_takes_the_cheaper_way_and_measures_the_other_now_and_then(fitted):
    b = MicroBatcher(lambda: fitted, max_batch=64)
    assert b._vectorize() is True  # nothing measured: the vectorized way first
    b._measured("vector", 64e-3, 64)
    assert b._vectorize() is False  # then record by record
    b._measured("one", 64e-4, 64)  # record by record is 10x cheaper
    ways = [b._vectorize() for _ in range(3 * PROBE_EVERY)]
    assert sum(ways) == 3  # re-measured once every PROBE_EVERY batches
    b._measured("vector", 64e-6, 64)  # the vectorized way became cheaper (another model, another load)
    for _ in range(12):
        b._measured("vector", 64e-6, 64)
    assert b.cost["vector"] < b.cost["one"] and b._vectorize() is True


def test_batcher_measures_both_ways_on_real_batches_and_results_do_not_depend_on_the_way(fitted):
    b = MicroBatcher(lambda: fitted, max_batch=VECTOR_MIN, max_wait_ms=50)
    recs = _data(5, 6 * VECTOR_MIN).to_pylist()

    async def go():
        out = []
        for i in range(0, len(recs), VECTOR_MIN):  # one full batch at a time
            out += await asyncio.gather(*[b.submit(dict(r)) for r in recs[i:i + VECTOR_MIN]])
        return out

    assert asyncio.run(go()) == [fitted.transform_one(r) for r in recs]
    assert b.cost["vector"] is not None and b.cost["one"] is not None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.fixed_dictionaries({"x": st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=32),
                                             st.text(max_size=3), st.integers()),
                              "n": st.one_of(st.none(), st.integers(-2**63, 2**63 - 1), st.text(max_size=3),
                                             st.floats()),
                              "c": st.one_of(st.none(), st.text(max_size=5), st.integers())}))
def test_random_records_never_give_a_500(client, fitted, record):
    r = client.post("/v1/transform", content=json.dumps(record), headers={"content-type": "application/json"})
    assert r.status_code in (200, 422), r.text
    if r.status_code == 200:
        assert r.json() == json_safe(fitted.transform_one(record))


def test_hot_reload_swaps_and_refuses_a_bad_artifact(tmp_path, fitted):
    a, b = str(tmp_path / "a.blm"), str(tmp_path / "b.blm")
    fitted.save(a)
    other = bl.Pipeline([bl.StandardScaler(["x"], with_mean=False)], name="demo").fit(_data(5))
    other.save(b)
    bad = str(tmp_path / "bad.blm")
    with open(b, "rb") as src, open(bad, "wb") as fh:
        fh.write(src.read()[:-10] + b"0123456789")
    rec = {"x": 1.0, "n": 1, "c": "a"}
    with TestClient(create_app(a, name="demo")) as c:
        assert c.post("/v1/transform", json=rec).json() == fitted.transform_one(rec)
        r = c.post("/v2/repository/models/demo/load", json={"parameters": {"path": bad}})
        assert r.status_code == 422 and "bad.blm" in r.json()["error"]
        assert c.post("/v1/transform", json=rec).json() == fitted.transform_one(rec)  # the old one serves
        r = c.post("/v2/repository/models/demo/load", json={"parameters": {"path": b}})
        assert r.status_code == 200 and r.json()["loaded"]
        assert c.post("/v1/transform", json=rec).json() == other.transform_one(rec)
        os.replace(a, b)  # reload the served path (as SIGHUP does)
        assert c.post("/v2/repository/models/demo/load").status_code == 200
        assert c.post("/v1/transform", json=rec).json() == fitted.transform_one(rec)


def test_hot_swap_under_load_loses_no_request(tmp_path, fitted):
    a, b = str(tmp_path / "a.blm"), str(tmp_path / "b.blm")
    fitted.save(a)
    other = bl.Pipeline([bl.StandardScaler(["x"], with_mean=False)], name="demo").fit(_data(6))
    other.save(b)
    app = create_app(a, name="demo", max_batch=8, max_wait_ms=1)
    recs = _data(7, 300).to_pylist()

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            async def swaps():
                for i in range(10):
                    r = await c.post("/v2/repository/models/demo/load", json={"parameters": {"path": [a, b][i % 2]}})
                    assert r.status_code == 200
                    await asyncio.sleep(0)
            calls = [c.post("/v1/transform", json=r) for r in recs]
            *res, _ = await asyncio.gather(*calls, swaps())
            return res

    res = asyncio.run(go())
    assert all(r.status_code == 200 for r in res)
    for r, rec in zip(res, recs):
        assert r.json() in (fitted.transform_one(rec), other.transform_one(rec))
