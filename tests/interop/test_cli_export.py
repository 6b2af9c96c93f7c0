"""beamlearn export onnx|sklearn: files other runtimes load and that compute what the model computes; a step
that cannot be exported is one line on stderr and exit code 2."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow as pa
import skops.io as sio

import beamlearn as bl
from beamlearn.cli import main
from beamlearn.interop.onnx import onnx_feeds
from beamlearn.testing import random_table


def test_export_onnx_and_sklearn(tmp_path, capsys):
    t = random_table(200, n_numeric=2, n_string=1, seed=2).append_column("y", pa.array(np.arange(200) % 2))
    fitted = bl.Pipeline([bl.SimpleImputer(["num0", "num1"]), bl.StandardScaler(["num0", "num1"]),
                          bl.OneHotEncoder("cat0", handle_unknown="ignore"),
                          bl.LogisticRegression(["num0", "num1", "cat0"], "y")]).fit(t)
    model = fitted.save(str(tmp_path / "m.blm"))
    assert main(["export", "onnx", model, "--out", str(tmp_path / "m.onnx"), "--layout", "matrix"]) == 0
    assert "export onnx:" in capsys.readouterr().out
    graph = onnx.load(str(tmp_path / "m.onnx"))
    x = t.drop_columns(["y"])
    proba = ort.InferenceSession(graph.SerializeToString()).run(None, onnx_feeds(graph, x))[0][:, -2]
    np.testing.assert_allclose(proba, fitted.transform(x).column("proba_1").to_numpy(), atol=1e-14)
    assert main(["export", "sklearn", model, "--out", str(tmp_path / "m.skops"), "-q"]) == 0
    path = str(tmp_path / "m.skops")
    sk = sio.load(path, trusted=sio.get_untrusted_types(file=path))
    np.testing.assert_allclose(sk.predict_proba(x.to_pandas())[:, 1], fitted.transform(x).column("proba_1"),
                               rtol=1e-12)


def test_export_error_is_one_line(tmp_path, capsys):
    t = random_table(50, n_numeric=1, n_string=0, seed=2)
    model = bl.Pipeline([bl.Log1p("num0")]).fit(t).save(str(tmp_path / "m.blm"))
    assert main(["export", "onnx", model, "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "step 0 (Log1p)" in err and "Traceback" not in err
