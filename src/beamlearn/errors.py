"""The exceptions and warnings beamlearn raises.

Every error a user can cause derives from :class:`BeamlearnError` and carries a message that says what is wrong
and where (file, row, column, step) so it can be acted on without reading a traceback.  The CLI turns any
``BeamlearnError`` into one line on stderr and exit code 2.
"""

from __future__ import annotations

from typing import Any


class BeamlearnError(Exception):
    """Base class of every error beamlearn raises for a user mistake or bad data."""


class BeamlearnWarning(UserWarning):
    """Base class of beamlearn's warnings."""


class DataError(BeamlearnError):
    """A value, row or column of the data is unusable.

    Attributes
    ----------
    column, source, row, value:
        Where the problem is, when known.  ``row`` is the 0-based index of the data row within its source
        (a file, or the in-memory table); for CSV files the message also gives the 1-based line number.
    reason:
        The bare reason, without the location.
    """

    def __init__(
        self,
        reason: str,
        *,
        column: str | None = None,
        source: str | None = None,
        row: int | None = None,
        value: Any = None,
        line: int | None = None,
    ) -> None:
        self.reason, self.column, self.source, self.row, self.value, self.line = (
            reason, column, source, row, value, line)
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.source:
            where.append(str(self.source))
        if self.row is not None:
            where.append(f"row {self.row}" + (f" (line {self.line})" if self.line is not None else ""))
        if self.column is not None:
            where.append(f"column {self.column!r}")
        return (", ".join(where) + ": " if where else "") + self.reason


class SchemaError(DataError):
    """The data does not have the columns or types the pipeline expects."""


class UnknownCategoryError(DataError):
    """A category not seen at fit reached an encoder with ``handle_unknown='error'``."""


class SpecError(BeamlearnError):
    """A pipeline spec (YAML or Python parameters) is invalid."""


class ConversionError(SpecError):
    """An object cannot be converted to or from another library (scikit-learn, ONNX); the message lists every
    piece that cannot, so one run shows all of them."""


class NotFittedError(BeamlearnError):
    """A fitted state was asked of something that was not fitted."""


class ArtifactError(BeamlearnError):
    """A saved artifact is unreadable, tampered with, unsigned when a signature is required, or unknown."""


class UpdateError(BeamlearnError):
    """A fitted pipeline cannot be updated with new data (:meth:`beamlearn.FittedPipeline.update`)."""


class EngineError(BeamlearnError):
    """An execution engine was asked for something it cannot do (unsupported runner, bad options)."""


class DataWarning(BeamlearnWarning):
    """Something in the data deserves attention but is not an error (unknown categories, dropped bins)."""


def error_in_text(text: str) -> BeamlearnError | None:
    """The last beamlearn error named in ``text`` (a worker's traceback, as distributed engines report it),
    rebuilt from its message; None when the text names none.

    Examples
    --------
    >>> error_in_text("Traceback ...\\nbeamlearn.errors.DataError: a.csv, row 3: not a number\\n")
    DataError('a.csv, row 3: not a number')
    >>> error_in_text("ValueError: boom") is None
    True
    """
    import re

    found = re.findall(r"\b(SchemaError|UnknownCategoryError|DataError|SpecError|EngineError|ArtifactError)"
                       r": (.+)", text)
    if not found:
        return None
    name, message = found[-1]
    return globals()[name](re.sub(r" \[while running .*", "", message).strip())
