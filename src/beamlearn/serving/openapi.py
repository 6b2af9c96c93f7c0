"""The OpenAPI 3.0 document of a served model, generated from its input and output schemas.

>>> import beamlearn as bl
>>> f = bl.Pipeline([bl.StandardScaler(["x"])]).fit({"x": [1.0, 3.0]})
>>> doc = openapi("m", "1", f)
>>> doc["components"]["schemas"]["Record"]["required"], doc["components"]["schemas"]["Record"]["properties"]["x"]
(['x'], {'type': 'number', 'nullable': True})
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from beamlearn.pipeline import FittedPipeline
from beamlearn.serving.oip import DATATYPES

__all__ = ["json_type", "openapi"]


def json_type(typ: pa.DataType) -> dict[str, Any]:
    """The JSON schema of a value of an Arrow type (nullable: a missing value is ``null``)."""
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    if pa.types.is_boolean(typ):
        out: dict[str, Any] = {"type": "boolean"}
    elif pa.types.is_integer(typ):
        out = {"type": "integer"}
    elif pa.types.is_floating(typ):
        out = {"type": "number"}
    else:
        out = {"type": "string"}
    return {**out, "nullable": True}


def _error() -> dict[str, Any]:
    return {"description": "bad input: the reason names the field",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def openapi(name: str, version: str, fitted: FittedPipeline) -> dict[str, Any]:
    """The OpenAPI document of the app serving ``fitted`` as ``name``."""
    record = {"type": "object", "required": list(fitted.required_columns),
              "properties": {f.name: json_type(f.type) for f in fitted.input_schema}}
    output = {"type": "object", "properties": {f.name: json_type(f.type) for f in fitted.output_schema}}
    tensor = {"type": "object", "required": ["name", "shape", "datatype", "data"],
              "properties": {"name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
                             "datatype": {"type": "string", "enum": list(DATATYPES)},
                             "data": {"type": "array", "items": {}}, "parameters": {"type": "object"}}}
    errors = {"400": _error(), "413": _error(), "422": _error()}
    json_body = {"application/json": {"schema": {"oneOf": [{"$ref": "#/components/schemas/Record"},
                                                           {"type": "array",
                                                            "items": {"$ref": "#/components/schemas/Record"}}]}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": f"beamlearn: {name}", "version": version},
        "paths": {
            "/v1/transform": {"post": {
                "summary": "Transform one record (an object) or a list of records",
                "requestBody": {"required": True, "content": json_body},
                "responses": {"200": {"description": "the transformed record(s), as transform_one gives them",
                                      "content": {"application/json": {"schema": {"oneOf": [
                                          {"$ref": "#/components/schemas/Output"},
                                          {"type": "array", "items": {"$ref": "#/components/schemas/Output"}}]}}}},
                              **errors}}},
            f"/v2/models/{name}/infer": {"post": {
                "summary": "Open Inference Protocol inference",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["inputs"],
                    "properties": {"id": {"type": "string"}, "parameters": {"type": "object"},
                                   "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}}}}}}},
                "responses": {"200": {"description": "one output tensor per output column"}, **errors}}},
            "/v1/schema": {"get": {"summary": "The model's input and output columns",
                                   "responses": {"200": {"description": "the schemas"}}}},
            f"/v2/models/{name}": {"get": {"summary": "OIP model metadata",
                                           "responses": {"200": {"description": "inputs and outputs"}}}},
            "/v2/health/live": {"get": {"responses": {"200": {"description": "live"}}}},
            "/v2/health/ready": {"get": {"responses": {"200": {"description": "ready"}}}},
        },
        "components": {"schemas": {"Record": record, "Output": output, "Tensor": tensor,
                                   "Error": {"type": "object", "properties": {"error": {"type": "string"}}}}},
    }
