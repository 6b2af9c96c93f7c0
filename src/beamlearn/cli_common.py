"""Plumbing shared by the ``beamlearn`` commands (:mod:`beamlearn.cli`): the engine option, one-line errors,
the progress bar, the summary line and the lazy import of the Beam engine."""

from __future__ import annotations

import difflib
import enum
import functools
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import typer

from beamlearn.errors import BeamlearnError, EngineError

__all__ = ["Engine"]

_OWN_OPTIONS = {"fit": ["--data", "--out", "--batch-size", "--errors", "--engine", "--quiet"],
                "run": ["--data", "--output", "--batch-size", "--errors", "--engine", "--quiet"],
                "transform": ["--data", "--out", "--batch-size", "--errors", "--engine", "--quiet", "--follow",
                              "--listen", "--watch", "--max-wait-ms", "--format", "--roll-rows", "--roll-seconds",
                              "--settle-seconds"]}


class Engine(str, enum.Enum):
    """Where to run: in this process, as an Apache Beam pipeline, or on Spark."""

    local = "local"
    beam = "beam"
    spark = "spark"


# ---------------------------------------------------------------------------------------------- plumbing
def print_error(message: str) -> None:
    sys.stderr.write("beamlearn: error: " + " ".join(str(message).split("\n")) + "\n")
    sys.stderr.flush()


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a user mistake into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        import pyarrow as pa

        try:
            return fn(*args, **kwargs)
        except BeamlearnError as exc:
            print_error(str(exc))
        except OSError as exc:
            print_error(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc))
        except (pa.ArrowException, UnicodeDecodeError) as exc:  # unreadable input the readers did not catch
            print_error(f"cannot read the data ({type(exc).__name__}: {exc})")
        except KeyboardInterrupt:
            print_error("interrupted")
            raise typer.Exit(130) from None
        raise typer.Exit(2)

    return run


def check_extra(ctx: typer.Context, engine: Engine) -> list[str]:
    """The options to pass to Beam; with the local engine, any of them is a usage error."""
    extra = list(ctx.args)
    if engine is Engine.local and extra:
        flag = extra[0].split("=", 1)[0]
        close = difflib.get_close_matches(flag, _OWN_OPTIONS.get(ctx.info_name or "", []), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        what = f"no such option: {flag}{hint}" if flag.startswith("-") else f"unexpected argument {flag!r}"
        print_error(f"{what}; options beamlearn does not know are passed to Beam only with --engine beam "
                    "(and --master/--conf to Spark with --engine spark)")
        raise typer.Exit(2)
    return extra


def format_rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f} rows/s" if seconds > 0 else "- rows/s"


def plural(n: Any, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")


def _total_rows(paths: Sequence[str]) -> int | None:
    """The row count of Parquet inputs (from their footers), for a progress bar with an end; else None."""
    import pyarrow.parquet as pq

    from beamlearn import io

    try:
        files = io.expand_paths(list(paths))
        if all(io.file_format(f) == "parquet" and "://" not in f for f in files):  # local footers only
            return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    except Exception:  # noqa: BLE001 - only a nicety; the read itself reports real problems
        return None
    return None


@contextmanager
def progress_bar(label: str, paths: Sequence[str], quiet: bool) -> Iterator[Callable[[int], None] | None]:
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
            bar.update(task, advance=rows, rate=format_rate(done[0], time.perf_counter() - t0))

        yield advance


def say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, flush=True)


def dead_sink(errors: str | None) -> Any:
    from beamlearn import io

    return io.DeadLetters(errors) if errors else "raise"


def beam_entry(entry: str) -> Callable[..., Any]:
    """``beamlearn.beam.<entry>``, imported only when the Beam engine is asked for."""
    try:
        from beamlearn import beam
    except ImportError as exc:
        raise EngineError(f"the Beam engine is not available ({exc})") from None
    if not hasattr(beam, entry):
        raise EngineError(f"this beamlearn's Beam engine has no {entry}(); use --engine local")
    return getattr(beam, entry)


def spark_entry(entry: str) -> Callable[..., Any]:
    """``beamlearn.spark.<entry>``, imported only when the Spark engine is asked for."""
    try:
        from beamlearn import spark
    except ImportError as exc:
        raise EngineError(f"the Spark engine is not available ({exc}); pip install 'beamlearn[spark]'") from None
    return getattr(spark, entry)
