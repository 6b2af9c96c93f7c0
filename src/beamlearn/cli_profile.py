"""The data-understanding commands: ``profile`` (and ``profile merge``), ``schema infer``, ``validate``, ``drift``.

::

    beamlearn profile DATA... --report DIR [--engine local|beam|spark] # DIR/profile.json + DIR/report.html
    beamlearn profile merge A.json B.json... --out C.json             # the profile of the union
    beamlearn schema infer DATA... [--max-domain N] > schema.yaml
    beamlearn validate DATA... --schema schema.yaml [--report DIR] [--json]   # exit 1 on anomalies
    beamlearn drift MODEL_OR_PROFILE --data NEW... [--by ROWS] [--method auto|psi|js|...] [--report DIR] [--json]

Exit codes: 0 fine, 1 anomalies or drift found (a gate), 2 a user mistake (one line on stderr).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from beamlearn import stores
from beamlearn.cli_common import Engine, check_extra, say, user_errors

__all__ = ["drift_cmd", "profile_cmd", "schema_app", "validate_cmd"]

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}
EngineOpt = Annotated[Engine, typer.Option("--engine", help="local (this process), beam (Apache Beam; unknown "
                                           "--options are Beam pipeline options) or spark (with --master URL "
                                           "and --conf key=value).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, metavar="ROWS", help="Rows per batch.")]
ReportOpt = Annotated[str | None, typer.Option("--report", metavar="DIR", help="Write the JSON and report.html "
                                               "here.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No summary.")]


def beam_options(ctx: typer.Context, data: list[str], engine: Engine) -> tuple[list[str], list[str]]:
    """``(paths, Beam options)``: unknown options land among a command's variadic DATA arguments; they are Beam
    pipeline options with ``--engine beam`` and a usage error otherwise (:func:`~beamlearn.cli_common.check_extra`)."""
    extra = [d for d in data if d.startswith("-")]
    ctx.args = list(ctx.args) + extra
    return [d for d in data if not d.startswith("-")], check_extra(ctx, engine)


@user_errors
def profile_cmd(ctx: typer.Context,
                data: Annotated[list[str], typer.Argument(help="Input files, globs or directories; or `merge` "
                                                          "followed by profile.json files.", show_default=False,
                                                          metavar="DATA...")],
                report: ReportOpt = None,
                out: Annotated[str | None, typer.Option("--out", "-o", metavar="FILE", help="With `merge`: the merged "
                                                        "profile.json.")] = None,
                engine: EngineOpt = Engine.local, batch_size: BatchOpt = 65_536,
                correlations: Annotated[int, typer.Option("--correlations", min=0, metavar="N", help="Pearson "
                                                          "correlations of the first N numeric columns.")] = 50,
                quiet: QuietOpt = False) -> None:
    """Profile DATA in one pass (counts, missing values, distinct values, moments, quantiles, histograms, top
    values, string lengths, correlations): DIR/profile.json and DIR/report.html.  `profile merge A B --out C`
    merges profiles."""
    from beamlearn.errors import SpecError
    from beamlearn.profile import merge_profiles, profile, read_profile, write_profile
    from beamlearn.profile.report import render_profile, write_html

    data, beam_args = beam_options(ctx, data, engine)
    if data and data[0] == "merge":
        if not out or len(data) < 2:
            raise SpecError("usage: beamlearn profile merge A.json B.json... --out C.json")
        merged = merge_profiles([read_profile(p) for p in data[1:]])
        write_profile(merged, out)
        if report:
            write_html(render_profile(merged), report)
        say(quiet, f"profile merge: {len(data) - 1} profiles, {merged['rows']:,} rows -> {out}")
        return
    if not report and not out:
        raise SpecError("say where to write the profile: --report DIR (profile.json and report.html) or --out FILE")
    from beamlearn import io

    io.expand_paths(data)
    doc = profile(data, engine=engine.value, batch_size=batch_size, beam_args=beam_args, correlations=correlations)
    doc["source"] = list(data)
    paths = []
    if out:
        paths.append(write_profile(doc, out))
    if report:
        paths.append(write_profile(doc, stores.join(stores.make_folder(report), "profile.json")))
        paths.append(write_html(render_profile(doc), report))
    say(quiet, f"profile: {doc['rows']:,} rows, {len(doc['columns']):,} columns -> {', '.join(paths)}")


schema_app = typer.Typer(name="schema", add_completion=False, no_args_is_help=True,
                         help="Infer a data schema (schema.yaml) for `beamlearn validate`.")


@schema_app.command("infer")
@user_errors
def schema_infer(data: Annotated[list[str], typer.Argument(help="Input files, globs or directories.",
                                                           show_default=False, metavar="DATA...")],
                 max_domain: Annotated[int, typer.Option("--max-domain", min=0, metavar="N", help="Record the values"
                                                         " of string/boolean columns with at most N values.")] = 100,
                 null_slack: Annotated[float, typer.Option("--null-slack", min=0.0, max=1.0, help="Added to the "
                                                           "observed missing fraction.")] = 0.01,
                 batch_size: BatchOpt = 65_536) -> None:
    """Profile DATA and print the inferred schema as YAML (types, missing fractions, ranges, domains)."""
    import yaml

    from beamlearn import io
    from beamlearn.profile import profile
    from beamlearn.profile.validate import infer_schema

    io.expand_paths(data)
    schema = infer_schema(profile(data, batch_size=batch_size, correlations=0), max_domain=max_domain,
                          null_slack=null_slack)
    sys.stdout.write(yaml.safe_dump(schema, sort_keys=False, default_flow_style=None, width=110))


@user_errors
def validate_cmd(ctx: typer.Context,
                 data: Annotated[list[str], typer.Argument(help="Input files, globs or directories.",
                                                           show_default=False, metavar="DATA...")],
                 schema: Annotated[str, typer.Option("--schema", metavar="SCHEMA.yaml", help="The schema (from "
                                                     "`beamlearn schema infer`).")],
                 report: ReportOpt = None, as_json: JsonOpt = False, engine: EngineOpt = Engine.local,
                 batch_size: BatchOpt = 65_536, quiet: QuietOpt = False) -> None:
    """Check DATA against SCHEMA: missing/extra columns, type changes, null rates, ranges, domains, distinct
    counts, each with counts and example rows.  Exits 1 when there is an anomaly."""
    from beamlearn import io
    from beamlearn.profile.report import render_validation, write_html, write_json
    from beamlearn.profile.validate import read_schema, validate

    data, beam_args = beam_options(ctx, data, engine)
    constraints = read_schema(schema)
    io.expand_paths(data)
    result = validate(data, constraints, engine=engine.value, batch_size=batch_size, beam_args=beam_args)
    if report:
        write_json(result, stores.join(stores.make_folder(report), "validation.json"))
        write_html(render_validation(result, schema), report)
    if as_json:
        print(json.dumps(result, indent=1, default=str))
    else:
        say(quiet, validation_text(result))
    if not result["passed"]:
        raise typer.Exit(1)


def validation_text(result: dict) -> str:
    """The summary ``beamlearn validate`` prints: one line per anomaly."""
    if result["passed"]:
        return f"validate: {result['rows']:,} rows, no anomalies"
    lines = [f"validate: {result['rows']:,} rows, {len(result['anomalies'])} anomalies"]
    for a in result["anomalies"]:
        rows = ", ".join(str(e["row"]) for e in a["examples"])
        lines.append(f"  {a['column']}: {a['kind']}: {a['description']}" + (f" (rows {rows})" if rows else ""))
    return "\n".join(lines)


@user_errors
def drift_cmd(ctx: typer.Context,
              reference: Annotated[str, typer.Argument(help="A fitted model (its training profile) or a "
                                                       "profile.json.", show_default=False,
                                                       metavar="MODEL_OR_PROFILE")],
              data: Annotated[list[str], typer.Option("--data", "-d", metavar="PATH...", help="The new data.")],
              by: Annotated[int | None, typer.Option("--by", min=1, metavar="ROWS", help="Compare each window of "
                                                     "ROWS consecutive rows (local engine).")] = None,
              method: Annotated[str, typer.Option("--method", help="auto (Evidently's choice per column), psi, js, "
                                                  "wasserstein, ks, chi2 or linf.")] = "auto",
              threshold: Annotated[float | None, typer.Option("--threshold", help="Override the method's default "
                                                              "threshold.")] = None,
              report: ReportOpt = None, as_json: JsonOpt = False, engine: EngineOpt = Engine.local,
              batch_size: BatchOpt = 65_536, quiet: QuietOpt = False) -> None:
    """Compare the distribution of each column of the new data with the reference (PSI, Jensen-Shannon,
    L-infinity, KS, Wasserstein, from sketches).  Exits 1 when a column drifted."""
    from beamlearn import io
    from beamlearn.errors import SpecError
    from beamlearn.profile import profile, profile_windows, read_profile
    from beamlearn.profile.drift import METHODS, drift
    from beamlearn.profile.report import render_drift, write_html, write_json
    from beamlearn.profile.stream import WINDOW_PARAMS

    beam_args = check_extra(ctx, engine)
    if method not in METHODS:
        raise SpecError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    ref = read_profile(reference)
    io.expand_paths(data)
    if by is not None:
        if engine is not Engine.local:
            raise SpecError("--by runs on the local engine")
        windows = []
        for start, cur in profile_windows(data, rows=by, batch_size=batch_size, **WINDOW_PARAMS):
            cols = [c for c in ref["columns"] if c in cur["columns"]]
            windows.append(dict(drift(ref, cur, method=method, threshold=threshold, columns=cols), window=start))
        result = {"method": method, "reference_rows": ref.get("rows"), "windows": windows,
                  "drift": any(w["drift"] for w in windows)}
    else:
        cur = profile(data, engine=engine.value, batch_size=batch_size, beam_args=beam_args, **WINDOW_PARAMS)
        result = drift(ref, cur, method=method, threshold=threshold)
    if report:
        write_json(result, stores.join(stores.make_folder(report), "drift.json"))
        write_html(render_drift(result), report)
    if as_json:
        print(json.dumps(result, indent=1, default=str))
    else:
        say(quiet, drift_text(result))
    if result["drift"]:
        raise typer.Exit(1)


def drift_text(result: dict) -> str:
    """The summary ``beamlearn drift`` prints: per window, the drifted columns with their test and value."""
    lines = []
    for w in result.get("windows") or [result]:
        where = f"window from row {w['window']}: " if w.get("window") is not None else ""
        lines.append(f"drift: {where}{len(w['drifted'])} of {w['compared']} columns drifted")
        for c in w["drifted"]:
            f = w["columns"][c]
            lines.append(f"  {c}: {f['method']} = {f['value']:.4g} (threshold {f['threshold']:g})")
    return "\n".join(lines)
