"""Checks of the Beam runner a job is given, and the beamlearn error behind a failed job.

Examples
--------
>>> check_runner("FlinkRunner")
"""

from __future__ import annotations

import re
from typing import Any

from beamlearn import errors
from beamlearn.errors import EngineError

__all__ = ["check_pipeline", "check_runner", "translate_error"]


# ---------------------------------------------------------------------------------------------- checks
def check_runner(runner: Any) -> None:
    """Raise :class:`EngineError` if ``runner`` (a name, class or instance) is Beam's DaskRunner.

    Examples
    --------
    >>> check_runner("DirectRunner")
    >>> check_runner("dask")
    Traceback (most recent call last):
    ...
    beamlearn.errors.EngineError: Beam's DaskRunner is not supported: ...
    """
    name = runner if isinstance(runner, str) else type(runner).__name__ if not isinstance(runner, type) \
        else runner.__name__
    if name and "dask" in str(name).lower():
        raise EngineError("Beam's DaskRunner is not supported: on Beam 2.77 it computes only the last leaf of a "
                          "multi-leaf pipeline and sends every element to every tagged output, so fits and dead "
                          "letters would be silently wrong. Use the DirectRunner, Flink, Spark or Dataflow (or "
                          "beamlearn's local engine).")


def check_pipeline(pcoll: Any) -> None:
    """Raise :class:`EngineError` if the Beam pipeline of ``pcoll`` runs on DaskRunner (see :func:`check_runner`)."""
    pipeline = pcoll.pipeline
    check_runner(pipeline.runner)
    opts = getattr(pipeline, "_options", None)
    if opts is not None:
        check_runner(opts.get_all_options().get("runner") or "")


_ERROR_RE = re.compile(r"\b(SchemaError|UnknownCategoryError|DataError|SpecError|EngineError|ArtifactError)"
                       r": (.+)")


def translate_error(exc: BaseException) -> BaseException:
    """The beamlearn error behind a failed Beam job's exception, or ``exc``.

    In-process runners re-raise the worker's exception (with Beam's ``[while running ...]`` note; the original
    is in the exception chain); portable runners report it as text, parsed here.
    """
    found, seen = None, exc
    while seen is not None:
        if isinstance(seen, errors.BeamlearnError):
            found = seen
        seen = seen.__cause__ or seen.__context__
    if found is not None:
        return found
    matches = _ERROR_RE.findall(str(exc))
    if not matches:
        return exc
    name, message = matches[-1]
    return getattr(errors, name)(re.sub(r" \[while running .*", "", message).strip())
