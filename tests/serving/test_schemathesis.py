"""schemathesis against the app's own /openapi.json: no generated request gets a 5xx, and every response
conforms to the document."""

from __future__ import annotations

import pyarrow as pa
import schemathesis
from hypothesis import HealthCheck, settings

import beamlearn as bl
from beamlearn.serving import create_app

_TABLE = pa.table({"x": [1.0, None, 3.0, 7.5], "n": [1, 2, 3, 4], "c": ["a", "b", "a", "c"]})
_FITTED = bl.Pipeline([bl.SimpleImputer(["x"]), bl.StandardScaler(["x", "n"]),
                       bl.OneHotEncoder(["c"], handle_unknown="ignore")], name="demo").fit(_TABLE)
APP = create_app(_FITTED)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api(case):
    case.call_and_validate(checks=[schemathesis.checks.not_a_server_error])
