"""AWS Lambda: the same app behind API Gateway (REST v1, HTTP API v2) and Function URLs, through Mangum.

The artifact is ``$BEAMLEARN_MODEL`` (default ``model.blm`` beside this package's bundle root, as
``beamlearn package lambda`` lays it out); it is loaded once per container, on the first event.
"""

from __future__ import annotations

import os
from typing import Any

from beamlearn.serving.app import create_app

__all__ = ["handler", "lambda_handler"]

_HANDLER: dict[str, Any] = {}


def _model_path() -> str:
    default = os.path.join(os.environ.get("LAMBDA_TASK_ROOT", os.getcwd()), "model.blm")
    return os.environ.get("BEAMLEARN_MODEL", default)


def handler() -> Any:
    """The Mangum handler over :func:`~beamlearn.serving.create_app` (built once; micro-batching is off: a Lambda
    container serves one request at a time)."""
    if "h" not in _HANDLER:
        from mangum import Mangum

        app = create_app(_model_path(), name=os.environ.get("BEAMLEARN_MODEL_NAME"), batching=False)
        _HANDLER["h"] = Mangum(app, lifespan="off")
    return _HANDLER["h"]


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point (``beamlearn.serving.lambda_handler``)."""
    return handler()(event, context)
