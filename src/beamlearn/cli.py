"""The ``beamlearn`` command line: fit a YAML spec, transform files with a fitted model, inspect a model.

::

    beamlearn fit SPEC.yaml --data PATH... --out MODEL [--engine local|beam] [--errors DEAD.jsonl]
    beamlearn transform MODEL --data PATH... --out PATH       # CSV, Parquet or JSON lines by extension
    beamlearn inspect MODEL [--json]

A spec with a ``model:`` section trains the preprocessing and the model together; ``transform`` then appends the
model's prediction columns, and ``inspect`` shows what it learned (coefficients, classes, priors, centroids).
    beamlearn evaluate DATA... --label COL --prediction COL [--score COL] [--slice COLS]... [--require EXPR]...
                       [--baseline METRICS.json] [--report DIR] [--json]     # exit 1 when a gate fails
    beamlearn evaluate MODEL --data PATH... --label COL --prediction COL ...  # predict with MODEL first
    beamlearn run SPEC.yaml [--output DIR] [--engine local|beam]   # split, fit, evaluate, save; exit 1 on a gate
    beamlearn --version

``--data`` takes one or more paths, globs or directories (``--data a.csv b.csv``, ``--data 'part-*.parquet'``).
With ``--engine beam`` every option beamlearn does not know (``--runner=DirectRunner``,
``--direct_num_workers 2``...) is passed to Beam as a pipeline option, exactly as Beam programs do; with the
local engine an unknown option is a usage error.  A user mistake (a bad spec, a missing file, a value that
cannot be cast) prints one line on stderr and exits with code 2.

Examples
--------
>>> main(["--version"])  # doctest: +ELLIPSIS
beamlearn ...
0
"""

from __future__ import annotations

import difflib
import enum
import functools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import numpy as np
import typer

from beamlearn.errors import BeamlearnError, EngineError

__all__ = ["app", "main"]

app = typer.Typer(name="beamlearn", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fit, apply and inspect beamlearn pipelines.")
_BEAM_OK = {"allow_extra_args": True, "ignore_unknown_options": True}
_OWN_OPTIONS = {"fit": ["--data", "--out", "--batch-size", "--errors", "--engine", "--quiet"],
                "run": ["--data", "--output", "--batch-size", "--errors", "--engine", "--quiet"],
                "transform": ["--data", "--out", "--batch-size", "--errors", "--engine", "--quiet"]}


class Engine(str, enum.Enum):
    """Where to run: in this process, or as an Apache Beam pipeline."""

    local = "local"
    beam = "beam"


# ---------------------------------------------------------------------------------------------- plumbing
def _err(message: str) -> None:
    sys.stderr.write("beamlearn: error: " + " ".join(str(message).split("\n")) + "\n")
    sys.stderr.flush()


def _user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a user mistake into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        import pyarrow as pa

        try:
            return fn(*args, **kwargs)
        except BeamlearnError as exc:
            _err(str(exc))
        except OSError as exc:
            _err(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc))
        except (pa.ArrowException, UnicodeDecodeError) as exc:  # unreadable input the readers did not catch
            _err(f"cannot read the data ({type(exc).__name__}: {exc})")
        except KeyboardInterrupt:
            _err("interrupted")
            raise typer.Exit(130) from None
        raise typer.Exit(2)

    return run


def _check_extra(ctx: typer.Context, engine: Engine) -> list[str]:
    """The options to pass to Beam; with the local engine, any of them is a usage error."""
    extra = list(ctx.args)
    if engine is Engine.local and extra:
        flag = extra[0].split("=", 1)[0]
        close = difflib.get_close_matches(flag, _OWN_OPTIONS.get(ctx.info_name or "", []), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        what = f"no such option: {flag}{hint}" if flag.startswith("-") else f"unexpected argument {flag!r}"
        _err(f"{what}; options beamlearn does not know are passed to Beam only with --engine beam")
        raise typer.Exit(2)
    return extra


def _rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f} rows/s" if seconds > 0 else "- rows/s"


def _plural(n: Any, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")


def _total_rows(paths: Sequence[str]) -> int | None:
    """The row count of Parquet inputs (from their footers), for a progress bar with an end; else None."""
    import pyarrow.parquet as pq

    from beamlearn import io

    try:
        files = io.expand_paths(list(paths))
        if all(io.file_format(f) == "parquet" for f in files):
            return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    except Exception:  # noqa: BLE001 - only a nicety; the read itself reports real problems
        return None
    return None


@contextmanager
def _progress(label: str, paths: Sequence[str], quiet: bool) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar (rows, rows/s) on stderr for reads, or None when quiet or not on a terminal."""
    from rich.console import Console

    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    total = _total_rows(paths)
    columns = [SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
               TextColumn("{task.completed:,.0f} rows"),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(label, total=total, rate="")
        t0 = time.perf_counter()
        done = [0]

        def advance(rows: int) -> None:
            done[0] += rows
            bar.update(task, advance=rows, rate=_rate(done[0], time.perf_counter() - t0))

        yield advance


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, flush=True)


def _dead_sink(errors: str | None) -> Any:
    from beamlearn import io

    return io.DeadLetters(errors) if errors else "raise"


def _beam(entry: str) -> Callable[..., Any]:
    """``beamlearn.engines.beam.<entry>``, imported only when the Beam engine is asked for."""
    try:
        from beamlearn.engines import beam
    except ImportError as exc:
        raise EngineError(f"the Beam engine is not available ({exc})") from None
    if not hasattr(beam, entry):
        raise EngineError(f"this beamlearn's Beam engine has no {entry}(); use --engine local")
    return getattr(beam, entry)


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
            _err(f"--import {name}: cannot import it ({exc}); is it installed or on PYTHONPATH?")
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
                                            "Parquet, JSON lines); several may follow one --data.")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", min=1, metavar="ROWS", help="Rows per batch (default: the "
                                              "spec's batch_size, else 65536).")]
ErrorsOpt = Annotated[str | None, typer.Option("--errors", metavar="PATH", help="Write rows that cannot be read to this "
                                               "JSON-lines file (with the reason) and go on, instead of stopping.")]
EngineOpt = Annotated[Engine, typer.Option("--engine", help="local (this process) or beam (Apache Beam; "
                                           "unknown --options are Beam pipeline options).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary.")]


@app.command(context_settings=_BEAM_OK)
@_user_errors
def fit(ctx: typer.Context,
        spec: Annotated[str, typer.Argument(help="The pipeline spec (YAML).", show_default=False, metavar="SPEC")],
        data: DataOpt, out: Annotated[str, typer.Option("--out", "-o", metavar="MODEL", help="Where to write the fitted model.")],
        batch_size: BatchOpt = None, errors: ErrorsOpt = None, engine: EngineOpt = Engine.local,
        quiet: QuietOpt = False) -> None:
    """Fit the pipeline of SPEC on the data and save the fitted model to --out."""
    from beamlearn import io
    from beamlearn.spec import read_spec

    beam_args = _check_extra(ctx, engine)
    parsed = read_spec(spec)
    io.expand_paths(data)  # a missing input is reported before anything runs
    size = batch_size or parsed.batch_size
    t0 = time.perf_counter()
    if engine is Engine.beam:
        from beamlearn.batches import DEFAULT_BATCH_SIZE

        schema = parsed.resolve_schema(data) if parsed.schema is not None else None
        fitted = _beam("run_fit")(parsed.pipeline, list(data), beam_args=beam_args,
                                 batch_size=size or DEFAULT_BATCH_SIZE, errors=errors, schema=schema,
                                 lineage=parsed.lineage())
    else:
        dead = _dead_sink(errors)
        with _progress("fitting", data, quiet) as progress:
            fitted = parsed.fit(data, batch_size=size, errors=dead, progress=progress)
    seconds = time.perf_counter() - t0
    fitted.save(out)
    rows, dead_count = int(fitted.lineage.get("rows", 0)), int(fitted.lineage.get("dead_letters", 0))
    read = rows + dead_count
    _say(quiet, f"fit: {read:,} rows read, {dead_count:,} dead letters"
         + (f" (written to {errors})" if errors else "")
         + f", {_plural(fitted.lineage.get('passes', 0), 'pass')}, {seconds:.2f} s ({_rate(read, seconds)}) -> {out}")


@app.command(context_settings=_BEAM_OK)
@_user_errors
def transform(ctx: typer.Context,
              model: Annotated[str, typer.Argument(help="A fitted model (from beamlearn fit).", show_default=False,
                                                    metavar="MODEL")],
              data: DataOpt,
              out: Annotated[str, typer.Option("--out", "-o", metavar="PATH",
                                                                help="Output file: .csv, .parquet or .jsonl.")],
              batch_size: BatchOpt = None, errors: ErrorsOpt = None, engine: EngineOpt = Engine.local,
              quiet: QuietOpt = False) -> None:
    """Transform the data with a fitted MODEL and write the result to --out."""
    import beamlearn as bl
    from beamlearn import io
    from beamlearn.batches import DEFAULT_BATCH_SIZE

    beam_args = _check_extra(ctx, engine)
    fitted = bl.load(model)
    io.expand_paths(data)
    io.file_format(out)  # an output we cannot write is reported before reading anything
    size = batch_size or DEFAULT_BATCH_SIZE
    t0 = time.perf_counter()
    if engine is Engine.beam:
        result = _beam("run_transform")(fitted, list(data), out, beam_args=beam_args, batch_size=size,
                                       errors=errors)
        written, dead_count = int(result.get("rows", 0)), int(result.get("dead_letters", 0))
    else:
        dead = _dead_sink(errors)
        with _progress("transforming", data, quiet) as progress:
            written = fitted.transform(data, out=out, batch_size=size, errors=dead, progress=progress)
        dead_count = dead.count if errors else 0
    seconds = time.perf_counter() - t0
    read = written + dead_count
    _say(quiet, f"transform: {read:,} rows read, {written:,} written, {dead_count:,} dead letters"
         + (f" (written to {errors})" if errors else "")
         + f", {seconds:.2f} s ({_rate(read, seconds)}) -> {out}")


@app.command()
@_user_errors
def inspect(model: Annotated[str, typer.Argument(help="A fitted model.", show_default=False, metavar="MODEL")],
            as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False) -> None:
    """Show what a fitted MODEL learned: per-step statistics (and model coefficients, classes, priors,
    centroids), schemas and lineage."""
    summary = _plain(model_summary(model))
    if as_json:
        print(json.dumps(summary, indent=1, allow_nan=False))
    else:
        _render(summary)


@app.command("evaluate")
@_user_errors
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
    with _progress("evaluating", data, quiet or as_json) as progress:
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
        _err(f"gate failed: {g}")
    if result.failures:
        raise typer.Exit(1)


@app.command("run", context_settings=_BEAM_OK)
@_user_errors
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

    beam_args = _check_extra(ctx, engine)
    with _progress("fitting", data or [], quiet) as progress:
        result = run(spec, engine=engine.value, beam_args=beam_args, data=data, output=output,
                     batch_size=batch_size, errors=errors, progress=progress)
    _say(quiet, summary_text(result))
    for g in result.evaluation.failures:
        _err(f"gate failed: {g}")
    if result.evaluation.failures:
        raise typer.Exit(1)


def model_summary(path: str) -> dict[str, Any]:
    """What ``beamlearn inspect`` shows: the artifact's header, schemas, each step's parameters and fitted
    statistics (from :meth:`~beamlearn.FittedPipeline.describe`), and the lineage."""
    import beamlearn as bl
    from beamlearn.artifact import read_manifest
    from beamlearn.batches import schema_to_json

    fitted = bl.load(path)
    manifest = read_manifest(path)
    return {"model": path, "bytes": os.path.getsize(path), "format_version": manifest.get("format_version"),
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


def _render(s: dict[str, Any]) -> None:
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
    head.add_row("[bold]trained", f"{lin.get('rows', '?'):,} rows, {lin.get('dead_letters', 0):,} dead letters, "
                 f"{_plural(lin.get('passes', 0), 'pass')}, {lin.get('fit_seconds', 0):.2f} s, engine {lin.get('engine')}")
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


def _plain(obj: Any) -> Any:
    """JSON-safe plain data: numpy arrays and scalars become lists and numbers, NaN null, infinities strings."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.generic):
        return _plain(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


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
