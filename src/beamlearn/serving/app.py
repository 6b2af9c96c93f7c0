"""The HTTP app serving one fitted artifact: the Open Inference Protocol, a plain JSON route, Arrow IPC bodies,
OpenAPI, Prometheus metrics, adaptive micro-batching and hot reload (an ASGI app on Starlette).

Routes
------
``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2``, ``GET /v2/models/{name}``,
``GET /v2/models/{name}/ready``, ``POST /v2/models/{name}/infer`` (OIP, :mod:`beamlearn.serving.oip`);
``POST /v2/repository/models/{name}/load`` (hot reload: body ``{"parameters": {"path": ...}}`` or none to reread
the served path); ``POST /v1/transform`` (one record or a list, giving what ``transform_one`` gives; an Arrow IPC
stream body gives an Arrow IPC stream back); ``GET /v1/schema``; ``GET /openapi.json``; ``GET /metrics``;
``GET /v1/drift`` (the drift of the last served records against the training profile,
:mod:`beamlearn.serving.drift`; also in ``/metrics`` as ``beamlearn_drift{column, method}``).

Bad input is a 400 (unparseable body, too large) or 422 (a missing column, a value of the wrong type) JSON error
``{"error": ...}`` naming the field; never a 500 for a user's mistake.

>>> import beamlearn as bl
>>> from starlette.testclient import TestClient
>>> f = bl.Pipeline([bl.StandardScaler(["x"])]).fit({"x": [1.0, 3.0]})
>>> client = TestClient(create_app(f))
>>> client.post("/v1/transform", json={"x": 3.0}).json()
{'x': 1.0}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Mapping
from typing import Any

import orjson
import pyarrow as pa
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from beamlearn import artifact
from beamlearn.deadletters import json_safe
from beamlearn.errors import ArtifactError, BeamlearnError, DataError
from beamlearn.pipeline import FittedPipeline
from beamlearn.serving import oip
from beamlearn.serving.batcher import VECTOR_MIN, MicroBatcher, rows_of
from beamlearn.serving.drift import DEFAULT_WINDOW, DriftCollector, DriftMonitor
from beamlearn.serving.openapi import openapi

__all__ = ["ARROW_STREAM", "Served", "create_app", "parse_json"]

ARROW_STREAM = "application/vnd.apache.arrow.stream"


class Served:
    """The model being served: the fitted pipeline, its name, version and path; replaced whole on reload, so a
    request that started on one model finishes on it."""

    def __init__(self, fitted: FittedPipeline, name: str, path: str | None,
                 drift: DriftMonitor | None = None) -> None:
        self.fitted, self.name, self.path = fitted, name, path
        self.drift = drift or DriftMonitor(fitted, window=0)
        self.version = str((fitted.lineage.get("version") or {}).get("id") or fitted.lineage.get("checksum")
                           or fitted.lineage.get("fitted_at") or "1")
        self.loaded_at = time.time()


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("beamlearn_requests", "HTTP requests", ["route", "status"], registry=self.registry)
        self.latency = Histogram("beamlearn_request_seconds", "Request latency", ["route"], registry=self.registry,
                                 buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))
        self.rows = Counter("beamlearn_rows", "Rows transformed", registry=self.registry)
        self.errors = Counter("beamlearn_rejected_rows", "Rows or requests rejected as bad input",
                              registry=self.registry)
        self.batch = Histogram("beamlearn_batch_rows", "Rows per coalesced transform call", registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
        self.version = Gauge("beamlearn_model_info", "The model served", ["name", "version"],
                             registry=self.registry)
        self.reloads = Counter("beamlearn_reloads", "Model reloads", ["outcome"], registry=self.registry)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _json(content: Any) -> Response:
    """A JSON response of ``content``, NaN and infinities as null.  orjson writes the common case (about 10x
    faster than ``json.dumps``; it writes non-finite floats as null itself); what it cannot take (an integer over
    64 bits, a numpy scalar) goes through :func:`json_safe` and ``json.dumps``."""
    try:
        body = orjson.dumps(content)
    except TypeError:
        body = json.dumps(json_safe(content), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(body, media_type="application/json")


def parse_json(raw: bytes) -> Any:
    """The JSON value of a request body: orjson for the common case, ``json.loads`` for what only it accepts
    (``NaN`` and ``Infinity`` literals, as Python clients send them) and for its error message; a 400 when
    neither can read it."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BadRequest(f"the body is not valid JSON ({exc})") from None


if hasattr(asyncio, "timeout"):  # Python 3.11+: a deadline on the running task, no new task per request
    async def _within(awaitable: Any, seconds: float) -> Any:
        async with asyncio.timeout(seconds):
            return await awaitable
else:  # pragma: no cover - Python 3.10
    _within = asyncio.wait_for


def create_app(model: FittedPipeline | str, *, name: str | None = None, max_batch: int = 64,
               max_wait_ms: float = 2.0, max_body: int = 16 << 20, timeout_s: float = 30.0,
               batching: bool = True, drift_window: int = DEFAULT_WINDOW, drift_every: float = 5.0,
               drift_method: str = "auto", drift_threshold: float | None = None) -> Starlette:
    """The ASGI app serving ``model`` (a FittedPipeline or an artifact path).

    Parameters
    ----------
    name:
        The model's name in OIP routes (default: the pipeline's name, the artifact's file name, or ``model``).
    max_batch, max_wait_ms:
        Micro-batching: concurrent single-record requests are coalesced into one vectorized transform of at most
        ``max_batch`` records, waiting at most ``max_wait_ms`` for company (``batching=False``: none).
    max_body:
        Bodies over this many bytes are refused (413).
    timeout_s:
        A request taking longer is answered 503.
    drift_window, drift_every, drift_method, drift_threshold:
        Drift monitoring (:class:`~beamlearn.serving.drift.DriftMonitor`): the last ``drift_window`` served
        records (0: off) against the training profile, recomputed at most every ``drift_every`` seconds.
    """
    path = model if isinstance(model, str) else None
    fitted = artifact.load(model) if isinstance(model, str) else model
    default = name or fitted.name or (os.path.splitext(os.path.basename(path))[0] if path else "model")
    def monitor(f: FittedPipeline) -> DriftMonitor:
        return DriftMonitor(f, window=drift_window, every=drift_every, method=drift_method, threshold=drift_threshold)

    state = {"served": Served(fitted, default, path, monitor(fitted))}
    metrics = _Metrics()
    metrics.registry.register(DriftCollector(lambda: state["served"].drift))
    metrics.version.labels(default, state["served"].version).set(1)
    batcher = MicroBatcher(lambda: state["served"].fitted, max_batch=max_batch, max_wait_ms=max_wait_ms,
                           on_batch=metrics.batch.observe) if batching else None

    async def body_of(request: Request) -> bytes:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > max_body:
            raise _TooLarge()
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_body:
                raise _TooLarge()
            chunks.append(chunk)
        return b"".join(chunks)

    async def json_of(request: Request) -> Any:
        return parse_json(await body_of(request))

    def timed(route: str):
        latency = metrics.latency.labels(route)
        counters: dict[int, Any] = {}

        def wrap(fn):
            async def handler(request: Request) -> Response:
                t0 = time.perf_counter()
                try:
                    resp = await _within(fn(request), timeout_s)
                except _TooLarge:
                    resp = _error(413, f"the body is larger than {max_body} bytes")
                except _BadRequest as exc:
                    metrics.errors.inc()
                    resp = _error(400, str(exc))
                except DataError as exc:
                    metrics.errors.inc()
                    resp = _error(422, str(exc))
                except (TimeoutError, asyncio.TimeoutError):
                    resp = _error(503, f"the request took longer than {timeout_s:g} s")
                except BeamlearnError as exc:
                    resp = _error(422, str(exc))
                counter = counters.get(resp.status_code)
                if counter is None:
                    counter = counters[resp.status_code] = metrics.requests.labels(route, str(resp.status_code))
                counter.inc()
                latency.observe(time.perf_counter() - t0)
                return resp
            return handler
        return wrap

    def check_name(request: Request) -> Served:
        served = state["served"]
        if request.path_params["name"] != served.name:
            raise _NotFound(f"no model named {request.path_params['name']!r} (this server serves {served.name!r})")
        return served

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        return JSONResponse({"ready": True})

    async def server_meta(request: Request) -> Response:
        from beamlearn.version import __version__

        return JSONResponse({"name": "beamlearn", "version": __version__, "extensions": ["model_repository"]})

    async def model_meta(request: Request) -> Response:
        s = check_name(request)
        f = s.fitted
        return JSONResponse(oip.metadata(s.name, s.version, f.input_schema, f.output_schema, f.required_columns))

    async def model_ready(request: Request) -> Response:
        check_name(request)
        return JSONResponse({"name": state["served"].name, "ready": True})

    @timed("infer")
    async def infer(request: Request) -> Response:
        s = check_name(request)
        body = await json_of(request)
        columns = oip.request_columns(body)
        rid = body.get("id") if isinstance(body.get("id"), str) else None
        if len(next(iter(columns.values()))) < VECTOR_MIN:  # a few rows: as /v1 records, no Arrow round trip
            types = oip.request_types(body, s.fitted.input_schema)
            records = oip.request_records(columns, types, s.fitted.input_schema)
            if batcher is not None:
                rows = await asyncio.gather(*[batcher.submit(r) for r in records])
            else:
                rows = [s.fitted.transform_one(r) for r in records]
            s.drift.extend(records)
            metrics.rows.inc(len(rows))
            return _json(oip.response_rows(s.name, s.version, s.fitted.output_schema, rows, rid, types))
        table = oip.request_table(body, s.fitted.input_schema)
        out = await asyncio.get_running_loop().run_in_executor(None, s.fitted.transform, table)
        s.drift.extend_table(table)
        metrics.rows.inc(out.num_rows)
        return _json(oip.response(s.name, s.version, out, rid))

    @timed("transform")
    async def transform(request: Request) -> Response:
        s = state["served"]
        if request.headers.get("content-type", "").split(";")[0].strip() == ARROW_STREAM:
            raw = await body_of(request)
            try:
                table = pa.ipc.open_stream(raw).read_all()
            except (pa.ArrowInvalid, OSError) as exc:
                raise _BadRequest(f"the body is not an Arrow IPC stream ({exc})") from None
            out = await asyncio.get_running_loop().run_in_executor(None, s.fitted.transform, table)
            s.drift.extend_table(table)
            metrics.rows.inc(out.num_rows)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, out.schema) as writer:
                writer.write_table(out)
            return Response(sink.getvalue().to_pybytes(), media_type=ARROW_STREAM)
        body = await json_of(request)
        if isinstance(body, Mapping):
            row = await batcher.submit(dict(body)) if batcher is not None else s.fitted.transform_one(dict(body))
            s.drift.add(body)
            metrics.rows.inc()
            return _json(row)
        if isinstance(body, list):
            if not all(isinstance(r, Mapping) for r in body):
                raise _BadRequest("a list body must hold records (JSON objects)")
            if not body:
                return JSONResponse([])
            fitted = s.fitted
            rows = await asyncio.get_running_loop().run_in_executor(None, _transform_rows, fitted, body)
            s.drift.extend(body)
            metrics.rows.inc(len(rows))
            return _json(rows)
        raise _BadRequest("the body must be a record (a JSON object) or a list of records")

    async def schema(request: Request) -> Response:
        f = state["served"].fitted
        return JSONResponse({"name": state["served"].name, "version": state["served"].version,
                             "required": f.required_columns,
                             "input": [{"name": x.name, "type": str(x.type), "nullable": x.nullable}
                                       for x in f.input_schema],
                             "output": [{"name": x.name, "type": str(x.type)} for x in f.output_schema]})

    async def openapi_json(request: Request) -> Response:
        s = state["served"]
        return JSONResponse(openapi(s.name, s.version, s.fitted))

    async def prometheus(request: Request) -> Response:
        if state["served"].drift.enabled:
            await state["served"].drift.current()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def drift(request: Request) -> Response:
        return _json(json_safe(await state["served"].drift.current()))

    def reload_from(path: str | None) -> Served:
        old = state["served"]
        path = path or old.path
        if not path:
            raise ArtifactError("this server was started with an in-memory model: give parameters.path")
        try:
            loaded = artifact.load(path)
            new = Served(loaded, old.name, path, monitor(loaded))
        except BeamlearnError:
            metrics.reloads.labels("refused").inc()
            raise
        state["served"] = new  # requests in flight keep the Served they started with
        metrics.version.clear()
        metrics.version.labels(new.name, new.version).set(1)
        metrics.reloads.labels("loaded").inc()
        return new

    @timed("load")
    async def load(request: Request) -> Response:
        check_name(request)
        raw = await body_of(request)
        path = None
        if raw.strip():
            body = parse_json(raw)
            params = body.get("parameters") if isinstance(body, Mapping) else None
            path = params.get("path") if isinstance(params, Mapping) else None
        new = await asyncio.get_running_loop().run_in_executor(None, reload_from, path)
        return JSONResponse({"name": new.name, "version": new.version, "loaded": True})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        if path is not None:
            try:
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, lambda: _reload_quietly(reload_from))
            except (RuntimeError, NotImplementedError, ValueError):  # not the main thread, or no signals here
                pass
        yield

    routes = [  # the request routes first: Starlette tries them in order
        Route("/v1/transform", transform, methods=["POST"]), Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/health/live", live), Route("/v2/health/ready", ready), Route("/v2", server_meta),
        Route("/v2/models/{name}", model_meta), Route("/v2/models/{name}/ready", model_ready),
        Route("/v2/repository/models/{name}/load", load, methods=["POST"]), Route("/v1/schema", schema),
        Route("/openapi.json", openapi_json), Route("/metrics", prometheus), Route("/v1/drift", drift),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={_NotFound: lambda r, e: _error(404, str(e)),
                                        404: lambda r, e: _error(404, f"no route {r.url.path}"),
                                        405: lambda r, e: _error(405, f"{r.method} is not allowed on {r.url.path}")})
    app.state.served = state
    return app


def _transform_rows(fitted: FittedPipeline, records: list) -> list[dict[str, Any]]:
    """A list of records through the vectorized path: the same dicts ``transform_one`` gives, one by one."""
    from beamlearn.batches import to_batches

    batches = list(to_batches([dict(r) for r in records], batch_size=max(len(records), 1),
                              schema=fitted.input_schema, source="<request>"))
    return rows_of(fitted.transform(batches))


def _reload_quietly(reload_from: Any) -> None:
    import logging

    try:
        reload_from(None)
    except BeamlearnError as exc:
        logging.getLogger("beamlearn").error("reload refused, the old model keeps serving: %s", exc)


class _TooLarge(Exception):
    pass


class _BadRequest(Exception):
    pass


class _NotFound(Exception):
    pass
