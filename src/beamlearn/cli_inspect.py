"""``beamlearn inspect``: what a fitted model holds (:func:`model_summary`), as rich tables or plain JSON data."""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from beamlearn.cli_common import plural

__all__ = ["model_summary"]



def model_summary(path: str) -> dict[str, Any]:
    """What ``beamlearn inspect`` shows: the artifact's header, schemas, each step's parameters and fitted
    statistics (from :meth:`~beamlearn.FittedPipeline.describe`), and the lineage."""
    import beamlearn as bl
    from beamlearn import io
    from beamlearn.artifact import read_manifest
    from beamlearn.batches import schema_to_json

    fitted = bl.load(path)
    manifest = read_manifest(path)
    return {"model": path, "bytes": io.source_size(path), "format_version": manifest.get("format_version"),
            "library_version": manifest.get("library_version"), "created": manifest.get("created"),
            "name": fitted.name, "input_schema": schema_to_json(fitted.input_schema),
            "output_schema": schema_to_json(fitted.output_schema), "required_columns": fitted.required_columns,
            "steps": fitted.describe(), "lineage": fitted.lineage}


def escape(text: str) -> str:
    from rich.markup import escape as _escape

    return _escape(text)


def _fmt(v: Any, limit: int = 8) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list):
        shown = ", ".join(_fmt(x, limit) for x in v[:limit])
        return f"[{shown}{f', ... (+{len(v) - limit} more)' if len(v) > limit else ''}]"
    if isinstance(v, dict):
        shown = ", ".join(f"{k}={_fmt(x, limit)}" for k, x in list(v.items())[:limit])
        return shown + (f", ... (+{len(v) - limit} more)" if len(v) > limit else "")
    return "null" if v is None else str(v)


def _columns(schema: list[dict[str, Any]], limit: int = 12) -> str:
    shown = ", ".join(f"{f['name']} {f['type']}" for f in schema[:limit])
    return f"{len(schema)} columns: {shown}" + (f", ... (+{len(schema) - limit} more)" if len(schema) > limit else "")


def render_summary(s: dict[str, Any]) -> None:
    """The human-readable form of :func:`model_summary` (rich tables on stdout)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    out = Console(soft_wrap=False, width=None if sys.stdout.isatty() else 140, highlight=False)
    lin = s["lineage"]
    head = Table.grid(padding=(0, 2))
    head.add_row("[bold]model", escape(f"{s['model']} ({s['bytes']:,} bytes, format {s['format_version']}, beamlearn "
                 f"{s['library_version']}, created {s['created']})"))
    head.add_row("[bold]name", escape(_fmt(s["name"])))
    if "spec_sha256" in lin:
        head.add_row("[bold]spec", escape(f"{lin.get('spec_name')} (sha256 {str(lin['spec_sha256'])[:16]}...)"))
    rows = f"{lin['rows']:,}" if isinstance(lin.get("rows"), int) else "?"  # unknown for a converted model
    head.add_row("[bold]trained", f"{rows} rows, {lin.get('dead_letters', 0):,} dead letters, "
                 f"{plural(lin.get('passes', 0), 'pass')}, {lin.get('fit_seconds', 0):.2f} s, engine {lin.get('engine')}")
    files = lin.get("data", {}).get("files") if isinstance(lin.get("data"), dict) else None
    if files:
        head.add_row("[bold]data", escape(_fmt([f"{f['name']} ({f['bytes']:,} bytes)" for f in files], 4)))
    if isinstance(lin.get("versions"), dict):
        head.add_row("[bold]versions", escape(_fmt(lin["versions"])))
    head.add_row("[bold]input", escape(_columns(s["input_schema"])))
    head.add_row("[bold]output", escape(_columns(s["output_schema"])))
    out.print(head)
    for i, step in enumerate(s["steps"]):
        params = ", ".join(f"{k}={_fmt(v, 6)}" for k, v in step["params"].items() if v is not None)
        out.print(f"\n[bold]step {i}: {step['step']}[/bold]({escape(params)})")
        fitted = step["fitted"]
        if isinstance(fitted, dict) and fitted and all(isinstance(v, dict) for v in fitted.values()):
            keys = list(dict.fromkeys(k for v in fitted.values() for k in v))
            table = Table(box=box.SIMPLE, show_edge=False, pad_edge=False)
            for k in ["column", *keys]:
                table.add_column(escape(str(k)), overflow="fold")
            for col, stats in fitted.items():
                table.add_row(escape(str(col)), *(escape(_fmt(stats.get(k), 10)) for k in keys))
            out.print(table)
        elif isinstance(fitted, dict) and fitted:
            for k, v in fitted.items():
                out.print(escape(f"  {k}: {_fmt(v, 10)}"))
        else:
            out.print("  (stateless)" if not fitted else escape(f"  {_fmt(fitted, 10)}"))


def plain_data(obj: Any) -> Any:
    """JSON-safe plain data: numpy arrays and scalars become lists and numbers, NaN null, infinities strings."""
    if isinstance(obj, dict):
        return {str(k): plain_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_data(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return plain_data(obj.tolist())
    if isinstance(obj, np.generic):
        return plain_data(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)
