"""The Lambda handler answers API Gateway REST (v1), HTTP API (v2) and Function URL events with what the HTTP app
answers."""

from __future__ import annotations

import base64
import json

import pytest

import beamlearn as bl
from beamlearn.serving import aws_lambda

REC = {"x": 2.0, "c": "b"}


def _v1(body):
    return {"resource": "/{proxy+}", "path": "/v1/transform", "httpMethod": "POST",
            "headers": {"content-type": "application/json", "Host": "abc.execute-api.us-east-1.amazonaws.com"},
            "multiValueHeaders": {"content-type": ["application/json"]}, "queryStringParameters": None,
            "multiValueQueryStringParameters": None, "pathParameters": {"proxy": "v1/transform"},
            "stageVariables": None, "requestContext": {
                "resourceId": "x", "resourcePath": "/{proxy+}", "httpMethod": "POST", "path": "/prod/v1/transform",
                "accountId": "123456789012", "protocol": "HTTP/1.1", "stage": "prod", "requestId": "r1",
                "identity": {"sourceIp": "1.2.3.4", "userAgent": "curl"}, "apiId": "abc"},
            "body": json.dumps(body), "isBase64Encoded": False}


def _v2(body, *, url=False, b64=False):
    raw = json.dumps(body).encode()
    event = {"version": "2.0", "routeKey": "$default" if url else "POST /v1/transform", "rawPath": "/v1/transform",
             "rawQueryString": "", "headers": {"content-type": "application/json",
                                               "host": "abc.lambda-url.us-east-1.on.aws" if url else "abc.execute-api"},
             "requestContext": {"accountId": "123456789012", "apiId": "abc", "domainName": "abc.example",
                                "domainPrefix": "abc", "http": {"method": "POST", "path": "/v1/transform",
                                                                "protocol": "HTTP/1.1", "sourceIp": "1.2.3.4",
                                                                "userAgent": "curl"},
                                "requestId": "r2", "routeKey": "$default", "stage": "$default",
                                "time": "06/Dec/2026:05:00:00 +0000", "timeEpoch": 1796446800000},
             "body": base64.b64encode(raw).decode() if b64 else raw.decode(), "isBase64Encoded": b64}
    return event


@pytest.fixture
def model(tmp_path, monkeypatch):
    f = bl.Pipeline([bl.StandardScaler(["x"]), bl.OneHotEncoder(["c"])]).fit({"x": [1.0, 2.0, 4.0],
                                                                             "c": ["a", "b", "a"]})
    path = tmp_path / "model.blm"
    f.save(str(path))
    monkeypatch.setenv("BEAMLEARN_MODEL", str(path))
    aws_lambda._HANDLER.clear()
    yield f
    aws_lambda._HANDLER.clear()


@pytest.mark.parametrize("event", [_v1(REC), _v2(REC), _v2(REC, url=True), _v2(REC, url=True, b64=True)],
                         ids=["rest-v1", "http-api-v2", "function-url", "function-url-base64"])
def test_lambda_events_answer_like_transform_one(model, event):
    out = aws_lambda.lambda_handler(event, None)
    assert out["statusCode"] == 200
    body = base64.b64decode(out["body"]) if out.get("isBase64Encoded") else out["body"]
    assert json.loads(body) == model.transform_one(REC)


def test_lambda_bad_input_is_a_422(model):
    out = aws_lambda.lambda_handler(_v2({"c": "a"}), None)
    assert out["statusCode"] == 422 and "'x'" in json.loads(out["body"])["error"]
