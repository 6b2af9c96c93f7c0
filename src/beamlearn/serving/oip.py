"""The Open Inference Protocol (KServe v2, as MLServer and Triton speak it) on Arrow: tensors in, tensors out.

A request's ``inputs`` are columns: each has a ``name`` (an input column of the fitted pipeline), a ``shape``
(``[n]`` or ``[n, 1]``), a ``datatype`` and its ``data`` (a flat list; nested lists are flattened, as the protocol
allows).  The response holds one output tensor per output column, in the same form.  Missing values are JSON
``null`` in both directions (the protocol has no null; floats may also be ``NaN``).

>>> import pyarrow as pa
>>> datatype(pa.float64()), datatype(pa.string()), datatype(pa.uint8())
('FP64', 'BYTES', 'UINT8')
>>> t = request_table({"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [1.0, 2.5]}]},
...                   pa.schema([("x", pa.float64())]))
>>> t.column("x").to_pylist()
[1.0, 2.5]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from beamlearn.errors import DataError

__all__ = ["DATATYPES", "datatype", "metadata", "request_columns", "request_records", "request_table",
           "request_types", "response", "response_rows"]

DATATYPES = {
    "BOOL": pa.bool_(), "INT8": pa.int8(), "INT16": pa.int16(), "INT32": pa.int32(), "INT64": pa.int64(),
    "UINT8": pa.uint8(), "UINT16": pa.uint16(), "UINT32": pa.uint32(), "UINT64": pa.uint64(),
    "FP16": pa.float16(), "FP32": pa.float32(), "FP64": pa.float64(), "BYTES": pa.string(),
}
_BY_TYPE = {str(t): n for n, t in DATATYPES.items()}


def datatype(typ: pa.DataType) -> str:
    """The protocol's datatype of an Arrow type (strings, dictionaries of strings, dates and the rest: BYTES)."""
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    return _BY_TYPE.get(str(typ), "BYTES")


def metadata(name: str, version: str | None, input_schema: pa.Schema, output_schema: pa.Schema,
             required: list[str]) -> dict[str, Any]:
    """``GET /v2/models/{name}``: the model's inputs (those a request must carry are not ``optional``) and
    outputs, with datatypes and shapes (``-1``: any number of rows)."""
    return {"name": name, "versions": [version] if version else [], "platform": "beamlearn",
            "inputs": [{"name": f.name, "datatype": datatype(f.type), "shape": [-1],
                        "parameters": {"optional": f.name not in required}} for f in input_schema],
            "outputs": [{"name": f.name, "datatype": datatype(f.type), "shape": [-1]} for f in output_schema]}


def _flat(data: Any) -> list:
    if not isinstance(data, list):
        raise DataError("'data' must be a list")
    if data and isinstance(data[0], list):
        return [v for row in data for v in _flat(row)]
    return data


def request_columns(body: Mapping[str, Any]) -> dict[str, list]:
    """The columns of an inference request, by name, as the JSON sent them (each a flat list, all of one length);
    a malformed request raises :class:`DataError` naming the input."""
    inputs = body.get("inputs") if isinstance(body, Mapping) else None
    if not isinstance(inputs, list) or not inputs:
        raise DataError("the request needs a non-empty 'inputs' list")
    columns: dict[str, list] = {}
    rows = None
    for i, inp in enumerate(inputs):
        if not isinstance(inp, Mapping) or not isinstance(inp.get("name"), str):
            raise DataError(f"inputs[{i}] needs a 'name'")
        name = inp["name"]
        where = f"input {name!r}"
        if name in columns:
            raise DataError(f"{where} is given twice")
        if not isinstance(inp.get("datatype"), str) or inp["datatype"] not in DATATYPES:
            raise DataError(f"{where}: unknown datatype {inp.get('datatype')!r} "
                            f"(one of {', '.join(DATATYPES)})")
        try:
            data = _flat(inp.get("data"))
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
        shape = inp.get("shape")
        if not (isinstance(shape, list) and all(isinstance(s, int) for s in shape) and shape):
            raise DataError(f"{where}: 'shape' must be a list of integers")
        n = shape[0]
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1) or n * (shape[1] if len(shape) == 2 else 1) \
                != len(data):
            raise DataError(f"{where}: shape {shape} does not fit {len(data)} values (one column: [n] or [n, 1])")
        if rows is not None and n != rows:
            raise DataError(f"{where} has {n} rows, the inputs before it {rows}")
        rows = n
        columns[name] = data
    return columns


def _typed(name: str, data: list, typ: pa.DataType) -> pa.Array:
    try:
        return pa.array(data, type=typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise DataError(f"input {name!r}: its values do not fit {typ} ({exc})") from None


def request_types(body: Mapping[str, Any], input_schema: pa.Schema) -> dict[str, pa.DataType]:
    """Each input's type: the fitted schema's for the columns it knows, the request's ``datatype`` for others."""
    return {inp["name"]: input_schema.field(inp["name"]).type if inp["name"] in input_schema.names
            else DATATYPES[inp["datatype"]] for inp in body["inputs"]}


def request_records(columns: Mapping[str, list], types: Mapping[str, pa.DataType],
                    input_schema: pa.Schema) -> list[dict[str, Any]]:
    """The rows of :func:`request_columns`' ``columns`` as records for ``transform_one``, which types and checks
    the fitted schema's columns itself; the other columns are typed by their ``datatype`` here, as
    :func:`request_table` types them, so both give the same rows (``types``: :func:`request_types`)."""
    columns = {name: data if name in input_schema.names else _typed(name, data, types[name]).to_pylist()
               for name, data in columns.items()}
    names = list(columns)
    return [dict(zip(names, values)) for values in zip(*columns.values())]


def request_table(body: Mapping[str, Any], input_schema: pa.Schema) -> pa.Table:
    """The columns of an inference request as a Table typed as ``input_schema`` where it knows the column
    (other columns as their ``datatype`` says); a malformed request raises :class:`DataError` naming the input."""
    types = request_types(body, input_schema)
    return pa.table({name: _typed(name, data, types[name]) for name, data in request_columns(body).items()})


def response(name: str, version: str | None, table: pa.Table, request_id: str | None = None) -> dict[str, Any]:
    """The inference response: one output tensor per column of ``table``."""
    out = {"model_name": name, "model_version": version,
           "outputs": [{"name": f.name, "datatype": datatype(f.type), "shape": [table.num_rows],
                        "data": table.column(f.name).to_pylist()} for f in table.schema]}
    if request_id is not None:
        out["id"] = request_id
    return out


def response_rows(name: str, version: str | None, schema: pa.Schema, rows: list[dict[str, Any]],
                  request_id: str | None = None, extra: Mapping[str, pa.DataType] | None = None) -> dict[str, Any]:
    """The inference response of output ``rows`` (what ``transform_one`` gives), typed by ``schema`` and, for
    the columns a request added that pass through (``extra``), by their request type: the response
    :func:`response` gives for the table of those rows."""
    types = {**(extra or {}), **{f.name: f.type for f in schema}}
    names = list(rows[0]) if rows else schema.names
    out = {"model_name": name, "model_version": version,
           "outputs": [{"name": n, "datatype": datatype(types[n]), "shape": [len(rows)],
                        "data": [r.get(n) for r in rows]} for n in names]}
    if request_id is not None:
        out["id"] = request_id
    return out
