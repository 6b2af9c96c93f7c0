"""The ``beamlearn`` command line: fit a YAML spec, transform files with a fitted model, inspect a model.

::

    beamlearn fit SPEC.yaml --data PATH... --out MODEL [--engine local|beam] [--errors DEAD.jsonl]
    beamlearn transform MODEL --data PATH... --out PATH       # CSV, Parquet or JSON lines by extension
    beamlearn transform MODEL --follow [--listen HOST:PORT | --watch DIR] [--out -|FILE.jsonl|DIR]  # streaming
    beamlearn inspect MODEL [--json]

A spec with a ``model:`` section trains the preprocessing and the model together; ``transform`` then appends the
model's prediction columns, and ``inspect`` shows what it learned (coefficients, classes, priors, centroids).
    beamlearn evaluate DATA... --label COL --prediction COL [--score COL] [--slice COLS]... [--require EXPR]...
                       [--baseline METRICS.json] [--report DIR] [--json]     # exit 1 when a gate fails
    beamlearn evaluate MODEL --data PATH... --label COL --prediction COL ...  # predict with MODEL first
    beamlearn run SPEC.yaml [--output DIR] [--engine local|beam]   # split, fit, evaluate, save; exit 1 on a gate
    beamlearn export onnx|sklearn MODEL --out FILE          # for ONNX Runtime / scikit-learn (cli_interop)
    beamlearn profile DATA... --report DIR | schema infer DATA | validate DATA --schema S | drift MODEL --data NEW
    beamlearn serve MODEL [--drift-window N] | transform MODEL --follow --drift-every ROWS   # drift while serving
    beamlearn fit|transform|run ... --engine spark --master spark://HOST:7077|local[N] [--conf key=value]...
    beamlearn --version

``--data`` takes one or more paths, globs or directories (``--data a.csv b.csv``, ``--data 'part-*.parquet'``).
With ``--engine beam`` every option beamlearn does not know (``--runner=DirectRunner``,
``--direct_num_workers 2``...) is passed to Beam as a pipeline option, exactly as Beam programs do; with the
local engine an unknown option is a usage error.  A user mistake (a bad spec, a missing file, a value that
cannot be cast) prints one line on stderr and exits with code 2.

The commands are defined here; their shared plumbing (errors, progress, the Beam engine) is in
:mod:`beamlearn.cli_common`, and ``inspect``'s summary and rendering in :mod:`beamlearn.cli_inspect`.

Examples
--------
>>> main(["--version"])  # doctest: +ELLIPSIS
beamlearn ...
0
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Annotated

import typer

from beamlearn.cli_common import (
    Engine,
    beam_entry,
    check_extra,
    dead_sink,
    format_rate,
    plural,
    print_error,
    progress_bar,
    say,
    spark_entry,
    user_errors,
)
from beamlearn.cli_interop import export_app
from beamlearn.cli_inspect import escape, model_summary, plain_data, render_summary  # noqa: F401 - escape: re-exported

__all__ = ["app", "main"]

app = typer.Typer(name="beamlearn", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fit, apply and inspect beamlearn pipelines.")
_BEAM_OK = {"allow_extra_args": True, "ignore_unknown_options": True}


# ---------------------------------------------------------------------------------------------- commands
def _version(value: bool) -> None:
    if value:
        from beamlearn import __version__

        print(f"beamlearn {__version__}")
        raise typer.Exit(0)


def _import_modules(modules: list[str] | None) -> list[str] | None:
    """Import the user's modules (custom steps and functions register themselves on import)."""
    import importlib

    for name in modules or []:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            print_error(f"--import {name}: cannot import it ({exc}); is it installed or on PYTHONPATH?")
            raise typer.Exit(2) from None
    return modules


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False,
          imports: Annotated[list[str] | None, typer.Option(
              "--import", metavar="MODULE", callback=_import_modules, is_eager=True,
              help="Import a Python module first, so its custom steps (@register_step) and functions "
                   "(@register_function) are known to specs and artifacts; repeatable.")] = None) -> None:
    """Fit, apply and inspect beamlearn pipelines."""


DataOpt = Annotated[list[str], typer.Option("--data", "-d", metavar="PATH...", help="Input files, globs or directories (CSV, "
                                            "Parquet, JSON lines; local or s3://, gs://, hdfs://, az://), or a database "
                                            "(postgresql://...?table=T, sqlite:///F.db?query=...); several may follow one --data.")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", min=1, metavar="ROWS", help="Rows per batch (default: the "
                                              "spec's batch_size, else 65536).")]
ErrorsOpt = Annotated[str | None, typer.Option("--errors", metavar="PATH", help="Write rows that cannot be read to this "
                                               "JSON-lines file (with the reason) and go on, instead of stopping.")]
EngineOpt = Annotated[Engine, typer.Option("--engine", help="local (this process), beam (Apache Beam; "
                                           "unknown --options are Beam pipeline options) or spark (with "
                                           "--master URL and --conf key=value).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary.")]


@app.command(context_settings=_BEAM_OK)
@user_errors
def fit(ctx: typer.Context,
        spec: Annotated[str, typer.Argument(help="The pipeline spec (YAML).", show_default=False, metavar="SPEC")],
        data: DataOpt, out: Annotated[str, typer.Option("--out", "-o", metavar="MODEL", help="Where to write the fitted model.")],
        batch_size: BatchOpt = None, errors: ErrorsOpt = None, engine: EngineOpt = Engine.local,
        quiet: QuietOpt = False) -> None:
    """Fit the pipeline of SPEC on the data and save the fitted model to --out."""
    from beamlearn import io
    from beamlearn.spec import read_spec

    beam_args = check_extra(ctx, engine)
    parsed = read_spec(spec)
    io.expand_paths(data)  # a missing input is reported before anything runs
    size = batch_size or parsed.batch_size
    t0 = time.perf_counter()
    if engine is not Engine.local:
        from beamlearn.batches import DEFAULT_BATCH_SIZE

        schema = parsed.resolve_schema(data) if parsed.schema is not None else None
        job, args = (beam_entry("run_fit"), {"beam_args": beam_args}) if engine is Engine.beam else \
            (spark_entry("run_fit"), {"spark_args": beam_args})
        fitted = job(parsed.pipeline, list(data), batch_size=size or DEFAULT_BATCH_SIZE, errors=errors,
                     schema=schema, lineage=parsed.lineage(), **args)
    else:
        dead = dead_sink(errors)
        with progress_bar("fitting", data, quiet) as progress:
            fitted = parsed.fit(data, batch_size=size, errors=dead, progress=progress)
    seconds = time.perf_counter() - t0
    fitted.save(out)
    rows, dead_count = int(fitted.lineage.get("rows", 0)), int(fitted.lineage.get("dead_letters", 0))
    read = rows + dead_count
    say(quiet, f"fit: {read:,} rows read, {dead_count:,} dead letters"
         + (f" (written to {errors})" if errors else "")
         + f", {plural(fitted.lineage.get('passes', 0), 'pass')}, {seconds:.2f} s ({format_rate(read, seconds)}) -> {out}")


@app.command(context_settings=_BEAM_OK)
@user_errors
def transform(ctx: typer.Context,
              model: Annotated[str, typer.Argument(help="A fitted model (from beamlearn fit).", show_default=False,
                                                    metavar="MODEL")],
              data: Annotated[list[str] | None, typer.Option(
                  "--data", "-d", metavar="PATH...", help="Input files, globs or directories (CSV, Parquet, JSON "
                  "lines; local or s3://, gs://, ...), or a database (postgresql://...?table=T); several may follow "
                  "one --data.  Not with --follow.")] = None,
              out: Annotated[str | None, typer.Option("--out", "-o", metavar="PATH", help="Output file: .csv, "
                                                      ".parquet or .jsonl (local or s3://...), or a table: "
                                                      "postgresql://...?table=T[&mode=append].  With --follow: '-' (stdout, the "
                                                      "default), a .jsonl file, or a folder of rolled files.")] = None,
              batch_size: BatchOpt = None, errors: ErrorsOpt = None, engine: EngineOpt = Engine.local,
              quiet: QuietOpt = False,
              follow: Annotated[bool, typer.Option("--follow", help="Stream: transform JSON lines from stdin, "
                                                   "--listen or --watch as they arrive, in micro-batches, until "
                                                   "the input ends or Ctrl-C / SIGTERM (--batch-size: "
                                                   "16384 by default).")] = False,
              listen: Annotated[str | None, typer.Option("--listen", metavar="HOST:PORT", help="--follow: read "
                                                         "JSON lines from TCP connections on this address.")] = None,
              watch: Annotated[str | None, typer.Option("--watch", metavar="DIR", help="--follow: read new *.jsonl "
                                                        "(.gz) files of this folder, each exactly once.")] = None,
              max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", min=0, metavar="MS", help="--follow: "
                                                         "flush a micro-batch when its oldest row waited this "
                                                         "long.")] = 25.0,
              fmt: Annotated[str | None, typer.Option("--format", metavar="jsonl|parquet", help="--follow: the "
                                                      "format of the files rolled in an --out folder (default "
                                                      "parquet).")] = None,
              roll_rows: Annotated[int, typer.Option("--roll-rows", min=1, metavar="ROWS", help="--follow: start "
                                                     "a new output file after this many rows.")] = 1_000_000,
              roll_seconds: Annotated[float, typer.Option("--roll-seconds", min=0.001, metavar="S", help="--follow:"
                                                          " start a new output file after this long.")] = 60.0,
              settle_seconds: Annotated[float, typer.Option("--settle-seconds", min=0, metavar="S", help=(
                  "--watch: take a file once unchanged this long."))] = 1.0,
              drift_every: Annotated[int | None, typer.Option("--drift-every", min=1, metavar="ROWS", help=(
                  "--follow: drift of each window of ROWS rows vs the training profile (stderr)."))] = None,
              drift_out: Annotated[str | None, typer.Option("--drift-out", metavar="FILE", help=(
                  "--follow: write each window's drift report as a JSON line here."))] = None) -> None:
    """Transform the data with a fitted MODEL and write the result to --out; with --follow, stream JSON lines
    (stdin, --listen or --watch) through MODEL as they arrive."""
    import beamlearn as bl
    from beamlearn import io
    from beamlearn.batches import DEFAULT_BATCH_SIZE
    from beamlearn.cli_follow import FOLLOW_ONLY, run_follow
    from beamlearn.errors import SpecError

    beam_args = check_extra(ctx, engine)
    if follow:
        if data or engine is not Engine.local:
            raise SpecError("--follow streams JSON lines from stdin, --listen or --watch in this process: "
                            "give no --data and no --engine beam|spark")
        run_follow(bl.load(model), out=out or "-", listen=listen, watch=watch, fmt=fmt, batch_size=batch_size,
                   max_wait_ms=max_wait_ms, roll_rows=roll_rows, roll_seconds=roll_seconds,
                   settle_seconds=settle_seconds, errors=errors, quiet=quiet, drift_every=drift_every,
                   drift_out=drift_out)
        return
    given = [flag for flag in FOLLOW_ONLY if getattr(ctx.get_parameter_source(  # typer may vendor click: by name
        flag[2:].replace("-", "_").replace("format", "fmt")), "name", None) == "COMMANDLINE"]
    if given:
        raise SpecError(f"{given[0]} needs --follow")
    if not data or not out:
        raise SpecError("transform needs --data PATH... and --out PATH (or --follow to stream)")
    fitted = bl.load(model)
    io.expand_paths(data)
    io.file_format(out)  # an output we cannot write is reported before reading anything
    size = batch_size or DEFAULT_BATCH_SIZE
    t0 = time.perf_counter()
    if engine is not Engine.local:
        job, args = (beam_entry("run_transform"), {"beam_args": beam_args}) if engine is Engine.beam else \
            (spark_entry("run_transform"), {"spark_args": beam_args})
        result = job(fitted, list(data), out, batch_size=size, errors=errors, **args)
        written, dead_count = int(result.get("rows", 0)), int(result.get("dead_letters", 0))
    else:
        dead = dead_sink(errors)
        with progress_bar("transforming", data, quiet) as progress:
            written = fitted.transform(data, out=out, batch_size=size, errors=dead, progress=progress)
        dead_count = dead.count if errors else 0
    seconds = time.perf_counter() - t0
    read = written + dead_count
    say(quiet, f"transform: {read:,} rows read, {written:,} written, {dead_count:,} dead letters"
         + (f" (written to {errors})" if errors else "")
         + f", {seconds:.2f} s ({format_rate(read, seconds)}) -> {out}")


@app.command()
@user_errors
def inspect(model: Annotated[str, typer.Argument(help="A fitted model.", show_default=False, metavar="MODEL")],
            as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False) -> None:
    """Show what a fitted MODEL learned: per-step statistics (and model coefficients, classes, priors,
    centroids), schemas and lineage."""
    summary = plain_data(model_summary(model))
    if as_json:
        print(json.dumps(summary, indent=1, allow_nan=False))
    else:
        render_summary(summary)


@app.command("update")
@user_errors
def update(model: Annotated[str, typer.Argument(help="A fitted model.", show_default=False, metavar="MODEL")],
           data: DataOpt, out: Annotated[str, typer.Option("--out", "-o", metavar="MODEL2",
                                                           help="Where to write the updated model.")],
           approx: Annotated[bool, typer.Option("--approx", help="Also update steps fitted on the output of an "
                                                "earlier fitted step (approximate).")] = False,
           half_life: Annotated[str | None, typer.Option("--half-life", metavar="ROWS|DURATION", help=(
               "Forget old data exponentially: its weight halves every ROWS new rows, or every DURATION "
               "(7d, 12h, 30m, 90s) since the last fit or update."))] = None,
           batch_size: BatchOpt = None, errors: ErrorsOpt = None, quiet: QuietOpt = False) -> None:
    """Merge the statistics of new data into the fitted MODEL (without reading its training data again) and
    save the result to --out."""
    import beamlearn as bl
    from beamlearn import io
    from beamlearn.batches import DEFAULT_BATCH_SIZE

    io.expand_paths(data)  # a missing input is reported before anything runs
    t0 = time.perf_counter()
    updated = bl.load(model).update(data, approx=approx, half_life=half_life, batch_size=batch_size or DEFAULT_BATCH_SIZE,
                                    errors=dead_sink(errors))
    updated.save(out)
    last = updated.lineage["updates"][-1]
    say(quiet, f"update: {last['rows']:,} rows added ({int(updated.lineage['rows']):,} in all), "
         f"{last['dead_letters']:,} dead letters" + (f" (written to {errors})" if errors else "")
         + f", {time.perf_counter() - t0:.2f} s -> {out}")


@app.command("serve")
@user_errors
def serve_cmd(
        model: Annotated[str, typer.Argument(help="A fitted model.", show_default=False, metavar="MODEL")],
        host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
        workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes.")] = 1,
        name: Annotated[str | None, typer.Option("--name", help="The model's name in /v2/models/NAME.")] = None,
        max_batch: Annotated[int, typer.Option("--max-batch", min=1,
                                               help="Micro-batching: most records per transform call.")] = 64,
        max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", min=0,
                                                   help="Micro-batching: longest wait for company.")] = 2.0,
        max_body: Annotated[int, typer.Option("--max-body", min=1, help="Largest request body, bytes.")] = 16 << 20,
        timeout: Annotated[float, typer.Option("--timeout", min=0.001, help="Request timeout, seconds.")] = 30.0,
        drift_window: Annotated[int, typer.Option("--drift-window", min=0, help="Drift (/metrics, /v1/drift): the "
                                                  "last N served records per worker vs the training profile; "
                                                  "0: off.")] = 10_000,
        drift_every: Annotated[float, typer.Option("--drift-every", min=0, help="Recompute drift at most every "
                                                   "this many seconds.")] = 5.0,
) -> None:
    """Serve MODEL over HTTP: the Open Inference Protocol (/v2/...), POST /v1/transform, /openapi.json,
    /metrics; POST /v2/repository/models/NAME/load or SIGHUP reloads the artifact."""
    from beamlearn.serving import serve

    print(f"beamlearn: serving {model} on http://{host}:{port} ({workers} worker{'s' if workers > 1 else ''})",
          file=sys.stderr, flush=True)
    serve(model, host=host, port=port, workers=workers, name=name, max_batch=max_batch, max_wait_ms=max_wait_ms,
          max_body=max_body, timeout_s=timeout, drift_window=drift_window, drift_every=drift_every)


app.add_typer(export_app)
package_app = typer.Typer(name="package", no_args_is_help=True, help="Package a fitted model for deployment.")
app.add_typer(package_app)


@package_app.command("lambda")
@user_errors
def package_lambda_cmd(
        model: Annotated[str, typer.Argument(help="A fitted model.", show_default=False, metavar="MODEL")],
        out: Annotated[str, typer.Option("--out", "-o", metavar="DIR",
                                         help="Folder for bundle.zip and template.yaml.")],
        name: Annotated[str | None, typer.Option("--name", help="The model's name in /v2/models/NAME.")] = None,
        memory: Annotated[int, typer.Option("--memory", min=128, max=10240, help="Lambda memory, MB.")] = 1024,
        timeout: Annotated[int, typer.Option("--timeout", min=1, max=900, help="Lambda timeout, seconds.")] = 30,
        quiet: QuietOpt = False,
) -> None:
    """Write an AWS Lambda bundle (DIR/bundle.zip: the artifact and only what serving it imports) and an AWS SAM
    template (DIR/template.yaml: the function, an HTTP API and a Function URL).  Deploy with `sam deploy`."""
    from beamlearn.serving.package import LAMBDA_LIMIT, package_lambda

    r = package_lambda(model, out, name=name, memory_mb=memory, timeout_s=timeout)
    say(quiet, f"package lambda: {r['bundle']} ({r['zipped'] / 2**20:.1f} MiB zipped, {r['unzipped'] / 2**20:.1f} "
         f"MiB unzipped of Lambda's {LAMBDA_LIMIT / 2**20:.0f}; {r['runtime']} {r['architecture']}), "
         f"{r['template']}\n  includes: beamlearn, {', '.join(r['distributions'])}")


@app.command("evaluate")
@user_errors
def evaluate_cmd(
        label: Annotated[str, typer.Option("--label", metavar="COL", help="The true label column.")],
        prediction: Annotated[str, typer.Option("--prediction", metavar="COL", help="The prediction column.")],
        args: Annotated[list[str] | None, typer.Argument(
            help="Files, globs or directories holding the label and prediction columns; or, with --data, the "
                 "MODEL that predicts them.", show_default=False, metavar="DATA... | MODEL")] = None,
        score: Annotated[str | None, typer.Option("--score", metavar="COL", help="Probability of the positive "
                                                  "class, or a pattern such as 'proba_*' (one column per class).")] = None,
        slices: Annotated[list[str] | None, typer.Option("--slice", metavar="COLS", help="Slice by a column; "
                                                         "'a,b' crosses columns; repeatable.")] = None,
        require: Annotated[list[str] | None, typer.Option("--require", metavar="EXPR", help="A quality gate, e.g. "
                                                          "'f1_macro>=0.8'; repeatable.")] = None,
        baseline: Annotated[str | None, typer.Option("--baseline", metavar="METRICS.json", help="Baseline metrics "
                                                     "for gates like 'f1_macro>=baseline-0.01'.")] = None,
        report: Annotated[str | None, typer.Option("--report", metavar="DIR", help="Write metrics.json and "
                                                   "report.html here.")] = None,
        model: Annotated[str | None, typer.Option("--model", metavar="MODEL", help="Transform the data with this "
                                                  "fitted model first (its output holds the prediction).")] = None,
        data: Annotated[list[str] | None, typer.Option("--data", "-d", metavar="PATH...", help="The data, when "
                                                       "the argument is a MODEL.")] = None,
        sample_weight: Annotated[str | None, typer.Option("--sample-weight", metavar="COL",
                                                          help="A column of row weights.")] = None,
        pos_label: Annotated[str | None, typer.Option("--pos-label", metavar="CLASS", help="The positive class of "
                                                      "binary metrics (default: the larger of 0/1).")] = None,
        min_slice_count: Annotated[int, typer.Option("--min-slice-count", min=0, metavar="ROWS")] = 30,
        bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, metavar="N", help="Poisson-bootstrap "
                                               "replicates for confidence intervals (0: none).")] = 0,
        threshold: Annotated[str, typer.Option("--threshold-criterion", metavar="CRIT", help="'f1', "
                                               "'precision>=X' or 'recall>=X'.")] = "f1",
        batch_size: BatchOpt = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
        quiet: QuietOpt = False) -> None:
    """Evaluate predictions in DATA: metrics overall and per slice, quality gates, optional report.

    ``beamlearn evaluate DATA...`` evaluates columns already in the data; ``beamlearn evaluate MODEL --data
    PATH...`` (or ``--model MODEL``) transforms the data with a fitted model first.  Exits 1 when a gate fails
    (each failure listed with its value), 2 on a usage or data mistake.
    """
    import beamlearn as bl
    from beamlearn.batches import DEFAULT_BATCH_SIZE
    from beamlearn.errors import SpecError
    from beamlearn.metrics import evaluate as run_evaluation

    if data:
        if len(args or []) > 1 or (args and model):
            raise SpecError("with --data, give at most one MODEL argument (or --model), not more paths")
        model = model or (args[0] if args else None)
    elif not args:
        raise SpecError("no data to evaluate: give DATA paths, or a MODEL and --data PATH")
    else:
        data = args
    fitted = bl.load(model) if model else None
    with progress_bar("evaluating", data, quiet or as_json) as progress:
        result = run_evaluation(list(data), label=label, prediction=prediction, score=score, slices=slices or (),
                                sample_weight=sample_weight, pos_label=pos_label, min_slice_count=min_slice_count,
                                n_bootstrap=bootstrap, threshold_criterion=threshold, require=require or (),
                                baseline=baseline, model=fitted, batch_size=batch_size or DEFAULT_BATCH_SIZE,
                                progress=progress)
    if report:
        result.write_report(report)
    if as_json:
        print(result.to_json())
    elif not quiet:
        from beamlearn.report import summary_text

        print(summary_text(result.to_dict(), report), flush=True)
    for g in result.failures:
        print_error(f"gate failed: {g}")
    if result.failures:
        raise typer.Exit(1)


@app.command("run", context_settings=_BEAM_OK)
@user_errors
def run_cmd(ctx: typer.Context,
            spec: Annotated[str, typer.Argument(help="A run spec (YAML): pipeline, model, data, split, evaluate, "
                                                "output.", show_default=False, metavar="SPEC")],
            data: Annotated[list[str] | None, typer.Option("--data", "-d", metavar="PATH...", help="Use this data "
                                                           "instead of the spec's data:.")] = None,
            output: Annotated[str | None, typer.Option("--output", "-o", metavar="DIR", help="Write model.blm, "
                                                       "metrics.json and report.html here (default: the spec's "
                                                       "output:).")] = None,
            batch_size: BatchOpt = None, errors: ErrorsOpt = None, engine: EngineOpt = Engine.local,
            quiet: QuietOpt = False) -> None:
    """Run the whole flow of SPEC: read, split train/test, fit on train, choose the decision threshold, evaluate
    on test (metrics, slices, gates), save the model and the report.  Exits 1 when a gate fails, 2 on a mistake."""
    from beamlearn.run import run, summary_text

    beam_args = check_extra(ctx, engine)
    from beamlearn.profile.validate import AnomaliesFound

    try:
        with progress_bar("fitting", data or [], quiet) as progress:
            result = run(spec, engine=engine.value, beam_args=beam_args, data=data, output=output,
                         batch_size=batch_size, errors=errors, progress=progress)
    except AnomaliesFound as exc:  # the data failed the spec's validate: schema - a gate, exit 1
        print_error(str(exc))
        raise typer.Exit(1) from None
    say(quiet, summary_text(result))
    for g in result.evaluation.failures:
        print_error(f"gate failed: {g}")
    if result.evaluation.failures:
        raise typer.Exit(1)




from beamlearn import cli_profile

app.command("profile", context_settings=_BEAM_OK)(cli_profile.profile_cmd)
app.add_typer(cli_profile.schema_app)
app.command("validate", context_settings=_BEAM_OK)(cli_profile.validate_cmd)
app.command("drift", context_settings=_BEAM_OK)(cli_profile.drift_cmd)


# ---------------------------------------------------------------------------------------------- entry point
def _spread_data(argv: list[str]) -> list[str]:
    """Let ``--data`` take several values (``--data a.csv b.csv``, as a shell glob expands): every following
    argument up to the next option becomes its own ``--data``."""
    out: list[str] = []
    i, taking = 0, False
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            out += argv[i:]
            break
        if arg in ("--data", "-d") and i + 1 < len(argv):
            out += [arg, argv[i + 1]]
            i, taking = i + 2, True
            continue
        if arg.startswith("--data="):
            out.append(arg)
            i, taking = i + 1, True
            continue
        if taking and not arg.startswith("-"):
            out += ["--data", arg]
        else:
            taking = False
            out.append(arg)
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Put the SPEC or MODEL argument before ``--data``: every argument after ``--data`` up to the next option is
    an input path.
    """
    args = _spread_data(list(sys.argv[1:] if argv is None else argv))
    try:
        app(args=args, prog_name="beamlearn", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
