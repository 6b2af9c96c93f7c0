"""ONNX export of a fitted pipeline (:meth:`beamlearn.FittedPipeline.to_onnx`), written with the ``onnx`` package's
helper API.

The graph has one input per column the pipeline reads (``required_columns``), named like it and shaped ``[N, 1]``:
numeric and boolean columns as ``double``, string columns as ``string`` (:func:`onnx_feeds` builds them from any
data); and one output ``out.{column}`` per output column computed from them,
in output order (input columns passed through unchanged are left out: the caller has them): ``double``, ``uint8`` for one-hot and indicator columns,
a classifier's prediction ``string`` (``""`` where a feature is missing) or ``double`` (NaN there) for numeric
classes.  ONNX has no nulls: a missing number is NaN (in and
out: beamlearn's null is NaN here), a missing string is ``""``.  Everything is computed in float64, so outputs equal
:meth:`~beamlearn.FittedPipeline.transform`'s: exactly for scalers, imputers, encoders and bins (the same IEEE
operations), within 1e-12 relative for linear models (a matrix product sums in another order) and 1e-15 absolute
for probabilities.  Unknown categories encode as scikit-learn's ``handle_unknown="ignore"`` (all zeros / the
unknown value) whatever ``handle_unknown`` says: an ONNX graph cannot raise.

Exported: StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler, SimpleImputer, OneHotEncoder, OrdinalEncoder,
KBinsDiscretizer, Drop, LinearRegression, Ridge, LogisticRegression.  Anything else raises one
:class:`~beamlearn.errors.ConversionError` naming every step it cannot export.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from beamlearn.batches import column_kind
from beamlearn.errors import ConversionError
from beamlearn.models import LinearRegression, LogisticRegression, Ridge
from beamlearn.pipeline import FittedPipeline
from beamlearn.steps import (
    Drop,
    KBinsDiscretizer,
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    RobustScaler,
    SimpleImputer,
    StandardScaler,
    Step,
)

__all__ = ["MATRIX", "ML_OPSET", "OPSET", "OUTPUT_PREFIX", "onnx_feeds", "to_onnx"]

OPSET, ML_OPSET = 21, 4
OUTPUT_PREFIX = "out."
MATRIX = "matrix"
"""Outputs are named ``out.{column}`` (an ONNX graph cannot name an output like an input, and a scaler's output
column is named like its input)."""
_SCALERS = (StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler)


class _Col(NamedTuple):
    """Where a column lives in the graph: a ``[N, 1]`` tensor, or column ``j`` of a ``[N, width]`` block (one-hot
    outputs and class probabilities are computed as one block: far fewer nodes than one per column)."""

    tensor: str
    typ: int
    j: int | None = None
    width: int = 1


class _Graph:
    """Nodes, constants and the current column -> :class:`_Col` map while exporting."""

    def __init__(self, flags_as_double: bool = False) -> None:
        from onnx import TensorProto

        self.T = TensorProto
        # 0/1 columns (one-hot, indicators): uint8 as beamlearn's, or double straight away for a matrix output
        self.flag = TensorProto.DOUBLE if flags_as_double else TensorProto.UINT8
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.cols: dict[str, _Col] = {}
        self.k = 0
        self.sliced: dict[tuple[str, int], str] = {}

    def column(self, name: str) -> str:
        """The ``[N, 1]`` tensor of a column (a slice of its block, made once)."""
        col = self.cols[name]
        if col.j is None:
            return col.tensor
        key = (col.tensor, col.j)
        if key not in self.sliced:
            self.sliced[key] = self.op("Slice", [col.tensor, self.const(np.array([col.j])),
                                                 self.const(np.array([col.j + 1])), self.const(np.array([1]))], name)
        return self.sliced[key]

    def matrix(self, names: Sequence[str], hint: str = "X") -> str:
        """A ``[N, len(names)]`` double tensor of columns, whole blocks taken as they are."""
        parts: list[str] = []
        i = 0
        while i < len(names):
            col = self.cols[names[i]]
            run = 1
            if col.j is not None:
                while (i + run < len(names) and self.cols[names[i + run]].tensor == col.tensor
                       and self.cols[names[i + run]].j == col.j + run):
                    run += 1
            if col.j is not None and run == col.width and col.j == 0:
                part = col.tensor
            elif col.j is not None and run > 1:
                part = self.op("Slice", [col.tensor, self.const(np.array([col.j])),
                                         self.const(np.array([col.j + run])), self.const(np.array([1]))], hint)
            else:
                part = self.column(names[i])
            parts.append(part if col.typ == self.T.DOUBLE else self.cast(part, self.T.DOUBLE))
            i += run
        return self.op("Concat", parts, hint, axis=1) if len(parts) > 1 else parts[0]

    def name(self, hint: str) -> str:
        self.k += 1
        return f"{hint}__{self.k}"

    def const(self, value: Any, hint: str = "c") -> str:
        from onnx import numpy_helper

        arr = np.asarray(value)
        if arr.dtype.kind in "OU":
            arr = arr.astype(object)
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], hint: str = "t", domain: str = "", **attrs: Any) -> str:
        from onnx import helper

        out = self.name(hint)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], domain=domain, **attrs))
        return out

    def cast(self, x: str, to: int) -> str:
        return self.op("Cast", [x], "cast", to=to)

    def missing(self, x: str, typ: int) -> str:
        """Boolean: the value is missing (NaN, or "" for strings)."""
        if typ == self.T.STRING:
            return self.op("Equal", [x, self.const(np.array([""], dtype=object))], "missing")
        return self.op("IsNaN", [x], "missing")


# ---------------------------------------------------------------------------------------------- steps
def _block(g: _Graph, names: Sequence[str], tensor: str) -> None:
    """Columns ``names`` now live in the ``[N, len(names)]`` block ``tensor``."""
    for j, c in enumerate(names):
        g.cols[c] = _Col(tensor, g.T.DOUBLE, j, len(names))


def _scaler(g: _Graph, step: Step, state: dict[str, Any]) -> None:
    """One vectorized map over the step's columns as a block (the same IEEE operations as the step's)."""
    a, cols = step.affine(state), step.input_columns()
    y = g.op("Sub", [g.matrix(cols), g.const(np.asarray(a.offset, dtype=np.float64).reshape(1, -1))], "scaled")
    y = g.op("Div" if a.divide else "Mul", [y, g.const(np.asarray(a.scale, dtype=np.float64).reshape(1, -1))])
    if a.shift is not None:
        y = g.op("Add", [y, g.const(np.asarray(a.shift, dtype=np.float64).reshape(1, -1))])
    if a.clip is not None:
        y = g.op("Clip", [y, g.const(np.array(float(a.clip[0]))), g.const(np.array(float(a.clip[1])))])
    _block(g, cols, y)


def _imputer(g: _Graph, step: SimpleImputer, state: dict[str, Any], schema: pa.Schema) -> None:
    plan = step.fill_plan(state, schema)
    outputs: dict[str, _Col] = {}
    for c in plan.indicators:  # read before the fills replace the columns
        x, typ = g.column(c), g.cols[c].typ
        outputs[f"missingindicator_{c}"] = _Col(g.cast(g.missing(x, typ), g.flag), g.flag)
    numbers = [(c, v) for c, v, string in plan.fills if not string]
    if numbers:  # one Where over the block of numeric columns
        X = g.matrix([c for c, _ in numbers])
        fill = g.const(np.array([v for _, v in numbers], dtype=np.float64).reshape(1, -1))
        y = g.op("Where", [g.op("IsNaN", [X]), fill, X], "imputed")
    for c, value, string in plan.fills:
        if string:
            x = g.column(c)
            outputs[c] = _Col(g.op("Where", [g.missing(x, g.T.STRING), g.const(np.array([value], dtype=object)),
                                             x], c), g.T.STRING)
    for c in step.input_columns():
        g.cols.pop(c)
    if numbers:
        _block(g, [c for c, _ in numbers], y)
    g.cols.update(outputs)


def _codes(g: _Graph, x: str, typ: int, layout: Any, values: Sequence[Any], default: Any, out_type: int) -> str:
    """LabelEncoder: each category -> its code, the missing category ("" / NaN) -> its code, else ``default``."""
    from onnx import numpy_helper

    keys: list[Any] = list(layout.values)
    if layout.missing_index >= 0:
        keys.append("" if typ == g.T.STRING else np.nan)
    codes = list(values)[: len(keys)]
    if typ == g.T.STRING:
        key_attr = {"keys_strings": [str(k) for k in keys]}
    else:
        key_attr = {"keys_tensor": numpy_helper.from_array(np.asarray(keys, dtype=np.float64), "keys")}
    dtype = np.int64 if out_type == g.T.INT64 else np.float64
    return g.op("LabelEncoder", [x], "codes", domain="ai.onnx.ml", **key_attr,
                values_tensor=numpy_helper.from_array(np.asarray(codes, dtype=dtype), "values"),
                default_tensor=numpy_helper.from_array(np.asarray([default], dtype=dtype), "default"))


def _one_hot(g: _Graph, code: str, slots: np.ndarray, names: Sequence[str]) -> dict[str, _Col]:
    """One uint8 ``[N, k]`` block: row r, column k is ``code[r] == slots[k]``."""
    block = g.cast(g.op("Equal", [code, g.const(slots.reshape(1, -1))], "onehot"), g.flag)
    return {name: _Col(block, g.flag, k, len(names)) for k, name in enumerate(names)}


def _encoder(g: _Graph, step: Step, state: dict[str, Any], schema: pa.Schema) -> None:
    columns = step.input_columns()
    layouts = step.layouts(state, [schema.field(c).type for c in columns])
    outputs: dict[str, _Col] = {}
    for c, layout in zip(columns, layouts):
        x, typ = g.column(c), g.cols[c].typ
        n_known = len(layout.values) + (1 if layout.missing_index >= 0 else 0)
        if isinstance(step, OrdinalEncoder):
            codes = [float(v) for v in layout.codes[:n_known]]
            outputs[c] = _Col(_codes(g, x, typ, layout, codes, float(layout.codes[-1]), g.T.DOUBLE), g.T.DOUBLE)
            continue
        code = _codes(g, x, typ, layout, [int(v) for v in layout.codes[:n_known]], int(layout.codes[-1]),
                      g.T.INT64)
        outputs.update(_one_hot(g, code, np.arange(len(layout.names), dtype=np.int64), layout.names))
    for c in columns:
        g.cols.pop(c)
    g.cols.update(outputs)


def _bins(g: _Graph, step: KBinsDiscretizer, state: dict[str, Any]) -> None:
    outputs: dict[str, _Col] = {}
    for c, edges, n in zip(step.input_columns(), state["bins"]["edges"], state["bins"]["n_bins"]):
        x = g.column(c)
        inner = np.asarray(edges, dtype=np.float64)[1:-1]
        if len(inner):  # searchsorted(inner, x, side="right") = the number of inner edges <= x
            ge = g.cast(g.op("GreaterOrEqual", [x, g.const(inner.reshape(1, -1))], c), g.T.DOUBLE)
            code = g.op("ReduceSum", [ge, g.const(np.array([1], dtype=np.int64))], c, keepdims=1)
        else:
            code = g.op("Mul", [x, g.const(np.array([0.0]))], c)
        code = g.op("Where", [g.op("IsNaN", [x]), g.const(np.array([np.nan])), code], c)
        if step.encode == "ordinal":
            outputs[c] = _Col(code, g.T.DOUBLE)
            continue
        names = [f"{c}_{float(j)}" for j in range(int(n))]
        outputs.update(_one_hot(g, code, np.arange(int(n), dtype=np.float64), names))
    for c in step.input_columns():
        g.cols.pop(c)
    g.cols.update(outputs)


def _linear(g: _Graph, step: Step, state: dict[str, Any]) -> None:
    m = state["model"]
    X = g.matrix(state["features"])
    coef = np.asarray(m["coef"], dtype=np.float64).reshape(-1, 1)
    y = g.op("Add", [g.op("MatMul", [X, g.const(coef)]), g.const(np.array([float(m["intercept"])]))], step.output)
    g.cols[step.output] = _Col(y, g.T.DOUBLE)


def _logistic(g: _Graph, step: LogisticRegression, state: dict[str, Any]) -> None:
    m, classes = state["model"], step.classes_of(state)
    X = g.matrix(state["features"])
    W = np.asarray(m["coef"], dtype=np.float64).T
    Z = g.op("Add", [g.op("MatMul", [X, g.const(W)]), g.const(np.asarray(m["intercept"], dtype=np.float64))], "z")
    string = isinstance(classes[0], str)  # numeric classes come out as double, so a missing row can be NaN
    labels = np.array(classes, dtype=object if string else np.float64)
    label_type = g.T.STRING if string else g.T.DOUBLE
    if len(classes) == 2:
        p1 = g.op("Sigmoid", [Z], "p1")
        p0 = g.op("Sub", [g.const(np.array([1.0])), p1], "p0")
        idx = g.cast(g.op("Greater", [Z, g.const(np.array([0.0]))]), g.T.INT64)
        probs = [_Col(p0, g.T.DOUBLE), _Col(p1, g.T.DOUBLE)]
        extra = {"decision": _Col(Z, g.T.DOUBLE)}
    else:
        P = g.op("Softmax", [Z], "proba", axis=1)
        probs = [_Col(P, g.T.DOUBLE, j, len(classes)) for j in range(len(classes))]
        idx, extra = g.op("ArgMax", [Z], "argmax", axis=1, keepdims=1), {}
    pred = g.op("Gather", [g.const(labels), idx], step.output, axis=0)
    nan = g.op("IsNaN", [g.op("ReduceSum", [Z, g.const(np.array([1], dtype=np.int64))], keepdims=1)])
    missing = np.array([""], dtype=object) if string else np.array([np.nan])
    pred = g.op("Where", [nan, g.const(missing), pred], step.output)
    g.cols[step.output] = _Col(pred, label_type)
    for c, p in zip(classes, probs):
        g.cols[f"proba_{c}"] = p
    g.cols.update(extra)


def _export_step(g: _Graph, step: Step, state: dict[str, Any], schema: pa.Schema) -> str | None:
    """Add one step; the reason it cannot be exported, or None."""
    if state.get("decision_threshold"):
        return "a stored decision threshold is not exported"
    if isinstance(step, _SCALERS):
        _scaler(g, step, state)
    elif isinstance(step, SimpleImputer):
        _imputer(g, step, state, schema)
    elif isinstance(step, (OneHotEncoder, OrdinalEncoder)):
        _encoder(g, step, state, schema)
    elif isinstance(step, KBinsDiscretizer):
        _bins(g, step, state)
    elif isinstance(step, Drop):
        for c in step.input_columns():
            g.cols.pop(c, None)
    elif isinstance(step, (LinearRegression, Ridge)):
        _linear(g, step, state)
    elif isinstance(step, LogisticRegression):
        _logistic(g, step, state)
    else:
        return f"{type(step).__name__} has no ONNX export"
    return None


def to_onnx(fitted: FittedPipeline, *, name: str | None = None, layout: str = "columns") -> Any:
    """An ``onnx.ModelProto`` computing ``fitted``'s transform (see the module docstring).

    ``layout="columns"`` (default): one ``[N, 1]`` output per computed column.  ``layout="matrix"``: one ``[N, m]``
    double output ``out.matrix`` of every numeric output column in output order (inputs passed through
    included, as scikit-learn's ColumnTransformer output), plus one output per string column: the fewest nodes
    and outputs, for the lowest latency.  Save it with
    ``onnx.save(model, path)`` or run it with ``onnxruntime.InferenceSession(model.SerializeToString())``.

    Examples
    --------
    >>> import beamlearn as bl
    >>> f = bl.Pipeline([bl.StandardScaler(["x"])]).fit({"x": [1.0, 2.0, 3.0]})
    >>> model = f.to_onnx()
    >>> [i.name for i in model.graph.input], [o.name for o in model.graph.output]
    (['x'], ['out.x'])
    """
    import onnx
    from onnx import helper

    if layout not in ("columns", "matrix"):
        raise ConversionError(f"to_onnx: layout={layout!r} is not 'columns' or 'matrix'")
    g = _Graph(flags_as_double=layout == "matrix")
    inputs = []
    for c in fitted.required_columns:
        typ = g.T.STRING if column_kind(fitted.input_schema.field(c).type) == "string" else g.T.DOUBLE
        inputs.append(helper.make_tensor_value_info(c, typ, [None, 1]))
        g.cols[c] = _Col(c, typ)
    problems = []
    for i, (step, state, schema) in enumerate(zip(fitted.steps, fitted.states, fitted.step_schemas)):
        reason = _export_step(g, step, state, schema) if all(c in g.cols for c in _reads(step, state)) \
            else "it reads columns that are not exported"
        if reason:
            problems.append(f"step {i} ({type(step).__name__}): {reason}")
            for c in step.input_columns():  # its outputs are not available to later steps
                g.cols.pop(c, None)
    if problems:
        raise ConversionError("cannot export this pipeline to ONNX:\n- " + "\n- ".join(problems))
    outputs = []
    names = [c for c in fitted.output_schema.names if c in g.cols]
    if layout == "matrix":
        numeric = [c for c in names if g.cols[c].typ != g.T.STRING]
        g.nodes.append(helper.make_node("Identity", [g.matrix(numeric)], [OUTPUT_PREFIX + MATRIX]))
        outputs.append(helper.make_tensor_value_info(OUTPUT_PREFIX + MATRIX, g.T.DOUBLE, [None, len(numeric)]))
        names = [c for c in names if c not in numeric]
    for c in names:
        if g.cols[c].tensor != c or layout == "matrix":  # an input passed through unchanged is not an output
            g.nodes.append(helper.make_node("Identity", [g.column(c)], [OUTPUT_PREFIX + c]))
            outputs.append(helper.make_tensor_value_info(OUTPUT_PREFIX + c, g.cols[c].typ, [None, 1]))
    graph = helper.make_graph(g.nodes, name or fitted.name or "beamlearn", inputs, outputs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                    helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
                              producer_name="beamlearn")
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def onnx_feeds(model: Any, data: Any) -> dict[str, np.ndarray]:
    """The inputs of an exported ``model`` from ``data`` (anything beamlearn reads): ``[N, 1]`` double arrays
    (null as NaN) and string arrays (null as ``""``).

    Examples
    --------
    >>> import beamlearn as bl
    >>> f = bl.Pipeline([bl.StandardScaler(["x"])]).fit({"x": [1.0, 2.0, 3.0]})
    >>> onnx_feeds(f.to_onnx(), {"x": [1.0, None]})["x"].tolist()
    [[1.0], [nan]]
    """
    from beamlearn import io

    table = pa.Table.from_batches(list(io.read(data)))
    feeds = {}
    for inp in model.graph.input:
        col = table.column(inp.name)
        if inp.type.tensor_type.elem_type == 8:  # STRING
            values = ["" if v is None else str(v) for v in col.to_pylist()]
            feeds[inp.name] = np.array(values, dtype=object).reshape(-1, 1)
        else:
            values = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
            feeds[inp.name] = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    return feeds


def _reads(step: Step, state: dict[str, Any]) -> list[str]:
    if isinstance(step, (LinearRegression, Ridge, LogisticRegression)):
        return list(state.get("features", []))
    return [] if isinstance(step, Drop) else step.input_columns()
