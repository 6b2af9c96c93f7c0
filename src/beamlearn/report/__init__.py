"""Evaluation reports: ``metrics.json`` (the stable metrics schema plus gate results) and a self-contained
``report.html`` (inline CSS, plots embedded as base64 PNG: no network access needed to view it).

Examples
--------
>>> import tempfile, os
>>> from beamlearn.metrics import evaluate
>>> r = evaluate({"y": [0, 1, 1, 0], "p": [0, 1, 0, 0]}, label="y", prediction="p", require=["accuracy>=0.5"])
>>> paths = write_report(r, tempfile.mkdtemp())
>>> sorted(os.path.basename(p) for p in paths.values())
['metrics.json', 'report.html']
"""

from __future__ import annotations

import base64
import html
import os
import tempfile
from typing import Any

from beamlearn.report import plots

__all__ = ["CSS", "atomic_write", "esc", "img_tag", "number", "render_html", "write_report"]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;color:#222;max-width:1100px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}.pass{color:#176d1a;font-weight:bold}.fail{color:#b00020;font-weight:bold}
.flag{color:#8a6d00}.plots img{margin:4px;border:1px solid #eee;vertical-align:top}.muted{color:#777}
"""
_CLASSIFICATION = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "precision_macro", "recall_macro",
                   "f1_macro", "f1_micro", "f1_weighted", "log_loss", "roc_auc", "roc_auc_error_bound",
                   "average_precision")
_FLAG = '<span class="flag">insufficient</span>'
_REGRESSION = ("mae", "mse", "rmse", "r2", "mape", "median_absolute_error")


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file in the same folder, then a rename; a store URI:
    :func:`beamlearn.stores.write_bytes`, an object appearing whole or not at all)."""
    from beamlearn import stores

    if stores.is_uri(path):
        stores.write_bytes(path, data)
        return
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_report(result: Any, directory: str) -> dict[str, str]:
    """Write ``metrics.json`` and ``report.html`` for an :class:`~beamlearn.metrics.EvaluationResult` into
    ``directory`` (created if needed; a store URI too; each file written atomically).  Returns ``{"json": ...,
    "html": ...}``."""
    from beamlearn import stores

    stores.make_folder(directory)
    paths = {"json": stores.join(directory, "metrics.json"), "html": stores.join(directory, "report.html")}
    atomic_write(paths["json"], (result.to_json() + "\n").encode("utf-8"))
    atomic_write(paths["html"], render_html(result.to_dict()).encode("utf-8"))
    return paths


def img_tag(png: bytes, alt: str) -> str:
    """An <img> with ``png`` inline (base64)."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def number(v: Any) -> str:
    """A number for an HTML table (4 decimals, n/a for None)."""
    if v is None:
        return '<span class="muted">n/a</span>'
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e5 else f"{v:.4g}"
    return html.escape(str(v))


def esc(v: Any) -> str:
    """``str(v)`` HTML-escaped."""
    return html.escape(str(v))


def _overall_table(o: dict[str, Any], names: tuple[str, ...]) -> str:
    ci = o.get("ci", {})
    rows = []
    for k in names:
        if k in o:
            interval = f"[{number(ci[k][0])}, {number(ci[k][1])}]" if k in ci else ""
            rows.append(f'<tr><td class="l">{k}</td><td>{number(o[k])}</td><td>{interval}</td></tr>')
    head = '<tr><th class="l">metric</th><th>value</th><th>confidence interval</th></tr>'
    return f"<table>{head}{''.join(rows)}</table>"


def _gates_table(gates: list[dict[str, Any]]) -> str:
    if not gates:
        return '<p class="muted">No gates were given.</p>'
    rows = "".join(
        f'<tr><td class="l">{esc(g["gate"])}</td><td class="{"pass" if g["passed"] else "fail"}">'
        f'{"PASS" if g["passed"] else "FAIL"}</td><td>{number(g["value"])}</td><td>{number(g["threshold"])}</td>'
        f'<td class="l">{esc(g["reason"])}</td></tr>' for g in gates)
    return ('<table><tr><th class="l">gate</th><th>result</th><th>value</th><th>threshold</th>'
            f'<th class="l">reason</th></tr>{rows}</table>')


def _slices(m: dict[str, Any], metric: str) -> str:
    slices = m.get("slices", {})
    if not slices:
        return ""
    out = [(f"<h2>Slices</h2><p>Slices with fewer than {m.get('min_slice_count')} rows are flagged "
            "(kept, not hidden).</p>")]
    keys = _CLASSIFICATION[:1] + ("f1_macro", "roc_auc") if m.get("task") == "classification" else _REGRESSION[:4]
    for cols in m.get("slicing", []):
        mine = {n: b for n, b in slices.items() if list(b.get("columns", {})) == cols}
        if not mine:
            continue
        names = list(mine)
        out.append(f"<h3>{esc(', '.join(cols))}</h3>")
        out.append('<div class="plots">' + img_tag(plots.slice_bars_png(
            names, [mine[n].get(metric) for n in names], [bool(mine[n].get("insufficient")) for n in names],
            metric, m["overall"].get(metric)), f"{metric} per slice of {', '.join(cols)}") + "</div>")
        head = "".join(f"<th>{k}</th>" for k in keys)
        rows = "".join(
            f'<tr><td class="l">{esc(n)}</td><td>{b["count"]}</td>'
            f'<td class="l">{_FLAG if b.get("insufficient") else ""}</td>'
            + "".join(f"<td>{number(b.get(k))}</td>" for k in keys) + "</tr>" for n, b in mine.items())
        out.append(f'<table><tr><th class="l">slice</th><th>rows</th><th class="l">flag</th>{head}</tr>{rows}</table>')
    return "".join(out)


def render_html(m: dict[str, Any]) -> str:
    """The HTML report of a metrics dict (``EvaluationResult.to_dict()``): one self-contained page."""
    o = m.get("overall", {})
    classification = m.get("task") == "classification"
    gates = m.get("gates", [])
    failed = [g for g in gates if not g["passed"]]
    verdict = (f'<p class="fail">{len(failed)} of {len(gates)} gates failed.</p>' if failed else
               f'<p class="pass">All {len(gates)} gates passed.</p>' if gates else "")
    parts = [f"<h1>Evaluation report: {esc(m.get('task'))}</h1>", verdict,
             f"<p>label <code>{esc(m.get('label'))}</code>, prediction <code>{esc(m.get('prediction'))}</code>"
             + (f", score <code>{esc(m.get('score'))}</code>" if m.get("score") else "")
             + (f", weights <code>{esc(m.get('sample_weight'))}</code>" if m.get("sample_weight") else "")
             + f"; {m.get('rows', 0):,} rows read, {m.get('skipped', 0):,} skipped (no label or prediction); "
             + ("exact" if m.get("exact") else "binned / sketched") + " ranking metrics.</p>",
             "<h2>Gates</h2>", _gates_table(gates),
             "<h2>Overall</h2>", _overall_table(o, _CLASSIFICATION if classification else _REGRESSION)]
    figures = []
    if classification and "confusion_matrix" in o:
        figures.append(img_tag(plots.confusion_png(o["confusion_matrix"]), "confusion matrix"))
    if "curves" in o:
        figures.append(img_tag(plots.roc_png(o["curves"]["roc"], o.get("roc_auc")), "ROC curve"))
        figures.append(img_tag(plots.pr_png(o["curves"]["pr"], o.get("average_precision")), "precision-recall curve"))
    if o.get("calibration"):
        figures.append(img_tag(plots.calibration_png(o["calibration"]), "calibration"))
    if not classification and "residual_histogram" in o:
        figures.append(img_tag(plots.residuals_png(o["residual_histogram"]), "residual histogram"))
    parts.append('<div class="plots">' + "".join(figures) + "</div>")
    if o.get("decision_threshold"):
        d = o["decision_threshold"]
        parts.append(f"<p>Decision threshold ({esc(d['criterion'])}): <b>{number(d['threshold'])}</b> — precision "
                     f"{number(d['precision'])}, recall {number(d['recall'])}, F1 {number(d['f1'])}.</p>")
    if classification and o.get("per_class"):
        keys = sorted({k for v in o["per_class"].values() for k in v})
        rows = "".join(f'<tr><td class="l">{esc(c)}</td>' + "".join(f"<td>{number(v.get(k))}</td>" for k in keys)
                       + "</tr>" for c, v in o["per_class"].items())
        parts.append('<h2>Per class</h2><table><tr><th class="l">class</th>'
                     + "".join(f"<th>{k}</th>" for k in keys) + f"</tr>{rows}</table>")
    parts.append(_slices(m, "accuracy" if classification else "mae"))
    body = "\n".join(p for p in parts if p)
    return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>beamlearn evaluation</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def summary_text(m: dict[str, Any], report: str | None = None) -> str:
    """The plain-text summary ``beamlearn evaluate`` prints: headline metrics (with intervals), then each gate.

    ``m`` is ``EvaluationResult.to_dict()``.
    """
    o = m["overall"]
    keys = (("accuracy", "balanced_accuracy", "precision", "recall", "f1", "f1_macro", "log_loss", "roc_auc",
             "average_precision") if m["task"] == "classification" else _REGRESSION)
    slices = m.get("slices", {})
    flagged = sum(bool(b.get("insufficient")) for b in slices.values())
    lines = [f"evaluate: {m['task']}, {m['rows']:,} rows ({m['skipped']:,} skipped), {len(slices)} slices"
             + (f" ({flagged} below {m['min_slice_count']} rows)" if slices else "")]
    for k in keys:
        if isinstance(o.get(k), (int, float)):
            ci = o.get("ci", {}).get(k)
            lines.append(f"  {k:<22} {o[k]:.4f}" + (f"  [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
    if o.get("roc_auc_method") == "binned":
        lines.append(f"  (roc_auc from score bins, error bound {o['roc_auc_error_bound']:.2g})")
    for g in m.get("gates", []):
        value = "n/a" if g["value"] is None else f"{g['value']:.6g}"
        lines.append(f"  {'PASS' if g['passed'] else 'FAIL'} {g['gate']}: value {value}"
                     + (f" ({g['reason']})" if g["reason"] else ""))
    if report:
        lines.append(f"  report -> {report}")
    return "\n".join(lines)
