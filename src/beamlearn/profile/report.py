"""Self-contained HTML reports of profiles, validations and drift (inline CSS, inline SVG bars drawn here - a few
hundred bytes per column, so a 1,000-column report stays a few MB - and the correlation heatmap as a PNG drawn by
matplotlib).  A small inline script stamps ``data-plots`` / ``data-rendered`` on ``<body>`` after load (how many
plots the page has and how many the browser rendered), which the headless-browser test reads."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from beamlearn.report import CSS, atomic_write, esc, img_tag, number

__all__ = ["bars_svg", "render_drift", "render_profile", "render_validation", "write_html", "write_json"]

_EXTRA_CSS = """
.cols{display:flex;flex-wrap:wrap;gap:8px}.col{border:1px solid #ddd;border-radius:4px;padding:6px 8px;width:250px;
font-size:.8em}.col h3{font-size:1em;margin:0 0 2px 0;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.col table{font-size:.95em;margin:2px 0}.col td{padding:1px 4px;border:none}.drift{background:#fde8e8}
svg.plot{display:block}
"""
_SCRIPT = """<script>
window.addEventListener("load", function () {
  var plots = document.querySelectorAll("svg.plot, img.plot"), ok = 0;
  plots.forEach(function (p) {
    var r = p.getBoundingClientRect();
    if (p.tagName === "IMG" ? (p.complete && p.naturalWidth > 0 && r.width > 0) : (r.width > 0 && r.height > 0)) ok++;
  });
  document.body.setAttribute("data-plots", plots.length);
  document.body.setAttribute("data-rendered", ok);
});
</script>"""


def bars_svg(heights: Sequence[float], *, labels: Sequence[str] | None = None, width: int = 230, height: int = 56,
             title: str = "", color: str = "#4c72b0", second: Sequence[float] | None = None) -> str:
    """A small inline SVG bar chart (one ``<rect>`` per bar; ``second``: a second series drawn as outlines, e.g.
    the reference of a drift plot)."""
    n = max(1, len(heights))
    top = max([float(h) for h in heights] + [float(h) for h in second or []] + [1e-300])
    w = width / n
    rects = []
    for i, h in enumerate(heights):
        bh = max(0.0, float(h)) / top * (height - 2)
        tip = f"<title>{esc(labels[i])}: {float(h):,.4g}</title>" if labels else ""
        rects.append(f'<rect x="{i * w:.1f}" y="{height - bh:.1f}" width="{max(w - 1, 0.5):.1f}" height="{bh:.1f}" '
                     f'fill="{color}">{tip}</rect>')
    for i, h in enumerate(second or []):
        bh = max(0.0, float(h)) / top * (height - 2)
        rects.append(f'<rect x="{i * w:.1f}" y="{height - bh:.1f}" width="{max(w - 1, 0.5):.1f}" '
                     f'height="{bh:.1f}" fill="none" stroke="#222" stroke-width="0.8"/>')
    return (f'<svg class="plot" role="img" aria-label="{esc(title)}" xmlns="http://www.w3.org/2000/svg" '
            f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">{"".join(rects)}'
            f'<line x1="0" y1="{height - 0.5}" x2="{width}" y2="{height - 0.5}" stroke="#999"/></svg>')


def _page(title: str, body: str) -> str:
    return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{esc(title)}</title>\n<style>{CSS}{_EXTRA_CSS}</style>\n{_SCRIPT}\n</head>\n<body>\n{body}\n"
            "</body>\n</html>\n")


def _column_plot(name: str, c: dict[str, Any]) -> str:
    if c.get("histogram"):
        h = c["histogram"]
        edges = h["edges"]
        labels = [f"{edges[i]:.4g} - {edges[i + 1]:.4g}" for i in range(len(h["counts"]))]
        return bars_svg(h["counts"], labels=labels, title=f"histogram of {name}")
    if c.get("top"):
        return bars_svg([k for _, k in c["top"]], labels=[str(v) for v, _ in c["top"]], title=f"top values of {name}")
    return ""


def _column_card(name: str, c: dict[str, Any], rows: int) -> str:
    missing = c["nulls"] + c["nan"]
    cells = [("type", esc(c["type"])), ("missing", f"{missing:,} ({missing / rows:.1%})" if rows else "0"),
             ("distinct", f"~{c['distinct']['estimate']:,.0f}" if c.get("distinct") else "n/a")]
    if c["kind"] == "numeric":
        cells += [("min / max", f"{number(c.get('min'))} / {number(c.get('max'))}"),
                  ("mean / std", f"{number(c.get('mean'))} / {number(c.get('std'))}"),
                  ("median", number((c.get("quantiles") or {}).get("0.5")))]
    if c.get("length"):
        ln = c["length"]
        cells.append(("length", f"{number(ln['min'])} - {number(ln['max'])}, mean {number(ln['mean'])}"))
    if c.get("top"):
        cells.append(("top", ", ".join(f"{esc(v)} ({k:,})" for v, k in c["top"][:3])))
    table = "".join(f'<tr><td class="l">{k}</td><td class="l">{v}</td></tr>' for k, v in cells)
    return f'<div class="col"><h3 title="{esc(name)}">{esc(name)}</h3>{_column_plot(name, c)}<table>{table}</table></div>'


def render_profile(doc: dict[str, Any]) -> str:
    """The HTML report of a profile document: an overview, one card per column, the correlation heatmap."""
    cols, rows = doc["columns"], doc["rows"]
    kinds: dict[str, int] = {}
    for c in cols.values():
        kinds[c["kind"]] = kinds.get(c["kind"], 0) + 1
    parts = [f"<h1>Data profile</h1><p>{rows:,} rows, {len(cols):,} columns ("
             + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) + f"); profiled on the {esc(doc.get('engine', '?'))}"
             f" engine at {esc(doc.get('created', ''))}.</p>",
             "<h2>Columns</h2><div class=\"cols\">"
             + "".join(_column_card(n, c, rows) for n, c in cols.items()) + "</div>"]
    corr = doc.get("correlations")
    if corr and len(corr["columns"]) > 1:
        from beamlearn.report.plots import correlation_png

        img = img_tag(correlation_png(corr["columns"], corr["pearson"]), "Pearson correlations")
        parts.append(f"<h2>Correlations</h2><p>Pearson, over {corr['rows']:,} complete rows of the first "
                     f"{len(corr['columns'])} numeric columns.</p>" + img.replace("<img ", '<img class="plot" ', 1))
    return _page("beamlearn profile", "\n".join(parts))


def render_validation(result: dict[str, Any], schema_path: str | None = None) -> str:
    """The HTML report of :func:`~beamlearn.profile.validate.validate`'s result."""
    verdict = ('<p class="pass">No anomalies.</p>' if result["passed"] else
               f'<p class="fail">{len(result["anomalies"])} anomalies.</p>')
    rows = "".join(
        f'<tr><td class="l">{esc(a["column"])}</td><td class="l">{esc(a["kind"])}</td><td>{a["count"]:,}</td>'
        f'<td class="l">{esc(a["description"])}</td><td class="l">'
        + "; ".join(f"row {e['row']}" + (f" = {esc(e['value'])}" if e["value"] is not None else "") for e in a["examples"])
        + "</td></tr>" for a in result["anomalies"])
    table = ('<table><tr><th class="l">column</th><th class="l">anomaly</th><th>count</th><th class="l">description'
             f'</th><th class="l">examples</th></tr>{rows}</table>') if rows else ""
    src = f" against <code>{esc(schema_path)}</code>" if schema_path else ""
    return _page("beamlearn validation", f"<h1>Validation</h1><p>{result['rows']:,} rows{src}.</p>{verdict}{table}")


def render_drift(result: dict[str, Any]) -> str:
    """The HTML report of :func:`~beamlearn.profile.drift.drift`'s result (or of several windows)."""
    windows = result.get("windows") or [dict(result, window=None)]
    parts = [(f"<h1>Drift</h1><p>method {esc(result['method'])}; reference "
             f"{number(result.get('reference_rows'))} rows.</p>")]
    for w in windows:
        head = f"<h2>Window {w['window']}</h2>" if w.get("window") is not None else "<h2>Columns</h2>"
        verdict = (f'<p class="fail">Drift in {len(w["drifted"])} of {w["compared"]} columns.</p>' if w["drift"]
                   else f'<p class="pass">No drift in {w["compared"]} columns.</p>')
        keys = ("psi", "js", "linf", "ks", "ks_pvalue", "wasserstein_normed", "chi2_pvalue")
        body = "".join(
            f'<tr class="{"drift" if f.get("drift") else ""}"><td class="l">{esc(n)}</td><td class="l">'
            f'{esc(f.get("method"))}</td>' + "".join(f"<td>{number(f.get(k))}</td>" for k in keys)
            + f'<td class="l">{"yes" if f.get("drift") else "no"}</td><td>{_shares_plot(n, f)}</td></tr>'
            for n, f in w["columns"].items())
        parts.append(head + verdict + '<table><tr><th class="l">column</th><th class="l">test</th>'
                     + "".join(f"<th>{k}</th>" for k in keys) + '<th class="l">drift</th><th>current (bars) vs '
                     f'reference (outlines)</th></tr>{body}</table>')
    return _page("beamlearn drift", "\n".join(parts))


def _shares_plot(name: str, f: dict[str, Any]) -> str:
    sh = f.get("shares")
    if not sh:
        return ""
    return bars_svg(sh["current"], labels=sh["bins"], second=sh["reference"], width=160, height=36,
                    title=f"shares of {name}", color="#dd8452" if f.get("drift") else "#4c72b0")


def write_json(obj: Any, path: str) -> str:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write(path, (json.dumps(obj, indent=1, default=str) + "\n").encode("utf-8"))
    return path


def write_html(html_text: str, directory: str) -> str:
    """Write ``report.html`` into ``directory`` (created; may be a store URI), atomically; returns its path."""
    from beamlearn import stores

    path = stores.join(stores.make_folder(directory), "report.html")
    atomic_write(path, html_text.encode("utf-8"))
    return path
