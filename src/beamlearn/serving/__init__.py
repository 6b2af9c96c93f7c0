"""Deployment: one fitted artifact served over HTTP (the Open Inference Protocol and plain JSON).

:func:`create_app` builds the ASGI app (Starlette); ``beamlearn serve MODEL`` runs it under uvicorn.  Serving
imports numpy, pyarrow and Starlette, never Beam, scikit-learn (unless the pipeline holds a SklearnModel), scipy,
pandas or matplotlib.
"""

import gc
import json
import os
from typing import Any

from beamlearn.serving.app import create_app
from beamlearn.serving.aws_lambda import lambda_handler

__all__ = ["app_from_env", "create_app", "lambda_handler", "serve", "tune_gc"]

_ENV = "BEAMLEARN_SERVE"


def app_from_env() -> Any:
    """The app described by ``$BEAMLEARN_SERVE`` (JSON: the model path and :func:`create_app`'s options): the
    factory each uvicorn worker process calls."""
    options = json.loads(os.environ[_ENV])
    app = create_app(options.pop("model"), **options)
    tune_gc()
    return app


def tune_gc() -> None:
    """Tune the cyclic garbage collector for a serving process: what is loaded now (modules, the model) is frozen
    out of its scans, and young collections run every 10,000 allocations instead of 700.  Under load the default
    collector's full scans stalled requests by tens of milliseconds (p99 55 ms against 10 ms tuned, at 64
    connections; ``benchmarks/bench_serve.py``).  Called by the serving entry points (``beamlearn serve`` and the
    container), never by :func:`create_app`: an embedding process keeps its own settings."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)


def serve(model: str, *, host: str = "127.0.0.1", port: int = 8080, workers: int = 1, log_level: str = "warning",
          **options: Any) -> None:
    """Serve the artifact ``model`` under uvicorn (``workers`` processes); ``options`` go to :func:`create_app`.
    The artifact is loaded and verified first, so a bad one fails here, not in a worker."""
    import uvicorn

    from beamlearn import artifact

    artifact.load(model)
    os.environ[_ENV] = json.dumps({"model": model, **options})
    uvicorn.run("beamlearn.serving:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, timeout_graceful_shutdown=10)
