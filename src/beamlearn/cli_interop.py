"""``beamlearn export``: a fitted model for other runtimes.

::

    beamlearn export onnx MODEL --out MODEL.onnx [--layout columns|matrix]   # for ONNX Runtime
    beamlearn export sklearn MODEL --out MODEL.skops                          # a fitted scikit-learn Pipeline

``export sklearn`` writes the :meth:`~beamlearn.FittedPipeline.to_sklearn` object with skops (no pickle; load it
with ``skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))`` after reviewing the types).  A step
that cannot be exported is one line on stderr naming it, exit code 2.
"""

from __future__ import annotations

from typing import Annotated

import typer

from beamlearn.cli_common import say, user_errors

__all__ = ["export_app"]

export_app = typer.Typer(name="export", no_args_is_help=True,
                         help="Export a fitted model to ONNX or scikit-learn.")

ModelArg = Annotated[str, typer.Argument(help="A fitted model.", show_default=False, metavar="MODEL")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No summary.")]


@export_app.command("onnx")
@user_errors
def export_onnx_cmd(model: ModelArg,
                    out: Annotated[str, typer.Option("--out", "-o", metavar="FILE", help="The .onnx file.")],
                    layout: Annotated[str, typer.Option("--layout", help="'columns': one output per column; "
                                                        "'matrix': one output matrix.")] = "columns",
                    quiet: Quiet = False) -> None:
    """Write the fitted model as an ONNX graph (float64) for ONNX Runtime."""
    import onnx

    import beamlearn as bl

    graph = bl.load(model).to_onnx(layout=layout)
    onnx.save(graph, out)
    say(quiet, f"export onnx: {out} ({len(graph.graph.input)} inputs, {len(graph.graph.output)} outputs, "
               f"{len(graph.graph.node)} nodes)")


@export_app.command("sklearn")
@user_errors
def export_sklearn_cmd(model: ModelArg,
                       out: Annotated[str, typer.Option("--out", "-o", metavar="FILE", help="The .skops file.")],
                       quiet: Quiet = False) -> None:
    """Write the fitted model as a fitted scikit-learn object, saved with skops."""
    import skops.io as sio

    import beamlearn as bl

    est = bl.load(model).to_sklearn()
    sio.dump(est, out)
    say(quiet, f"export sklearn: {out} ({type(est).__name__})")
