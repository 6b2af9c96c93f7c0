"""Categorical encoders: OneHotEncoder and OrdinalEncoder, as scikit-learn's (dense output).

Both are thin layers over one :class:`Vocabulary` analyzer (a :class:`~beamlearn.analyzers.ValueCounts` pass
that then decides the categories, the missing category and the infrequent ones exactly as scikit-learn does), and
over one vectorized lookup (``pyarrow.compute.index_in`` against the vocabulary, then a numpy gather).  Each
category gets a *code*: the output slot of :class:`OneHotEncoder` (``-1`` for "all zeros") or the ordinal value of
:class:`OrdinalEncoder`.  Missing values (null or NaN) are a category placed last when seen at fit; a missing value
at transform that was not seen at fit is an unknown category, as in scikit-learn.

:func:`one_hot_columns` and :func:`one_hot_row` are the public one-hot kernels other steps reuse (e.g. the one-hot
encoding of bin indices).  They, :class:`Vocabulary` and the encoders' common base live in
:mod:`beamlearn.steps.vocabulary`; this module re-exports the public names.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn.batches import empty_batch, from_float
from beamlearn.errors import DataWarning, SpecError
from beamlearn.steps.base import RowFn, register_step, replace_columns
from beamlearn.steps.vocabulary import (
    EncodeLayout,
    Vocabulary,
    VocabularyEncoder,
    is_missing,
    one_hot_columns,
    one_hot_row,  # noqa: F401 - re-exported: other steps import it from here
    python_value,
)

# The steps are re-exported by ``beamlearn``; the kernels and the analyzer are imported from this module.
__all__ = ["OneHotEncoder", "OrdinalEncoder"]

_INFREQUENT = "infrequent_sklearn"
_UNKNOWN_OHE = ("error", "ignore", "infrequent_if_exist", "warn")


def _types(schema: pa.Schema, columns: Sequence[str]) -> list[pa.DataType]:
    """The columns' value types (a dictionary-encoded column's are its values')."""
    return [t.value_type if pa.types.is_dictionary(t) else t for t in (schema.field(c).type for c in columns)]


def _label(v: Any) -> str:
    return "nan" if is_missing(v) else str(v)


# ---------------------------------------------------------------------------------------------- one-hot
class _OneHotVocabulary(Vocabulary):
    """The one-hot vocabulary: also resolves ``drop`` to an output slot (after grouping), as scikit-learn."""

    def __init__(self, columns: Sequence[str], *, drop: Any = None, **kwargs: Any) -> None:
        super().__init__(columns, **kwargs)
        self.drop = drop

    def finish(self, column: str, i: int, vocab: dict[str, Any]) -> dict[str, Any]:
        group, cats = vocab["group"], vocab["categories"]
        n_slots = int(group.max()) + 1 if group.size else 0
        drop, slot = self.drop, None
        if isinstance(drop, str):
            slot = 0 if (drop == "first" and n_slots) or (drop == "if_binary" and n_slots == 2) else None
        elif drop is not None:
            value = python_value(drop[i])
            if is_missing(value):
                index = len(cats) if vocab["has_missing"] else None
            else:
                index = next((k for k, c in enumerate(cats) if c == value), None)
            if index is None:
                raise SpecError(f"OneHotEncoder: the category {value!r} of column {column!r} was supposed to be "
                                "dropped, but was not found in the training data")
            if index in vocab["infrequent"]:
                raise SpecError(f"OneHotEncoder: unable to drop category {value!r} from column {column!r} "
                                "because it is infrequent")
            slot = int(group[index])
        vocab["drop"] = slot
        return vocab


@register_step
class OneHotEncoder(VocabularyEncoder):
    """One-hot encode categorical columns, as :class:`sklearn.preprocessing.OneHotEncoder` (dense output).

    Each input column is replaced by uint8 columns named ``{column}_{category}`` (and ``{column}_nan`` for the
    missing category, ``{column}_infrequent_sklearn`` for grouped infrequent ones), in category order: sorted
    (strings by code point, numbers numerically), missing last, the infrequent group after it.

    Parameters
    ----------
    columns:
        String, integer or boolean columns to encode.
    categories:
        ``"auto"`` (the sorted values seen at fit) or one list per column (numbers sorted; a trailing
        ``None``/NaN makes missing a category).  With ``handle_unknown="error"``, values outside the lists at fit
        raise :class:`~beamlearn.errors.UnknownCategoryError`.
    drop:
        ``None``, ``"first"`` (the first output of each column), ``"if_binary"`` (the first of columns with
        exactly two outputs) or one category per column (``None`` for the missing one).  Applied after grouping
        infrequent categories; dropping an infrequent category is an error.
    handle_unknown:
        What a value not seen at fit becomes: ``"error"`` (raise :class:`~beamlearn.errors.UnknownCategoryError`
        naming the column and value), ``"ignore"`` (all zeros), ``"infrequent_if_exist"`` (the infrequent column
        if there is one, else all zeros), ``"warn"`` (as ``"infrequent_if_exist"``, with a
        :class:`~beamlearn.errors.DataWarning` naming the column and values).  As in scikit-learn, unknown values
        also warn with ``drop`` set and ``"ignore"``/``"infrequent_if_exist"`` (they encode like the dropped
        category).
    min_frequency:
        Categories seen fewer times (an int) or in a smaller fraction of the rows (a float) are infrequent.
    max_categories:
        At most this many outputs per column, the infrequent group included (the least frequent categories are
        grouped; among equal counts the categories that sort first are grouped first, as scikit-learn's stable
        argsort does).

    Attributes
    ----------
    The fitted state ``vocabulary`` holds, per column, the categories, their counts, the missing count, the
    infrequent categories, the grouping and the dropped output (see :class:`Vocabulary`).

    Examples
    --------
    >>> import beamlearn as bl
    >>> f = bl.Pipeline([bl.OneHotEncoder("c", handle_unknown="ignore")]).fit({"c": ["b", "a", None, "b"]})
    >>> f.output_schema.names
    ['c_a', 'c_b', 'c_nan']
    >>> f.transform({"c": ["a", "zz", None]}).column("c_nan").to_pylist()
    [0, 0, 1]
    >>> f.transform_one({"c": "b"})
    {'c_a': 0, 'c_b': 1, 'c_nan': 0}
    """

    _unknown_choices = _UNKNOWN_OHE

    def __init__(self, columns: str | Sequence[str], *, categories: Any = "auto", drop: Any = None,
                 handle_unknown: str = "error", min_frequency: float | None = None,
                 max_categories: int | None = None) -> None:
        self.columns, self.categories, self.drop, self.handle_unknown = columns, categories, drop, handle_unknown
        self.min_frequency, self.max_categories = min_frequency, max_categories

    def _vocabulary(self) -> Vocabulary:
        drop = self.drop if self.drop is None or isinstance(self.drop, str) else list(self.drop)
        return _OneHotVocabulary(self.input_columns(), drop=drop, categories=self.categories,
                                 min_frequency=self.min_frequency, max_categories=self.max_categories,
                                 missing_infrequent=True, unknown_error=self.handle_unknown == "error")

    def check(self, schema: pa.Schema) -> None:
        super().check(schema)
        drop = self.drop
        if isinstance(drop, str):
            self._check_choice("drop", [None, "first", "if_binary"])
        elif drop is not None and (not isinstance(drop, (list, tuple, np.ndarray))
                                   or len(drop) != len(self.input_columns())):
            raise SpecError(f"OneHotEncoder: drop={drop!r} must be None, 'first', 'if_binary' or one category "
                            f"per column ({len(self.input_columns())} columns)")

    def _layout(self, column: str, vocab: dict[str, Any], typ: pa.DataType | None) -> EncodeLayout:
        value_set = pa.array(vocab["categories"], type=typ)
        values = value_set.to_pylist()
        group, infrequent = vocab["group"], vocab["infrequent"]
        labels = values + [None] if vocab["has_missing"] else values
        frequent = np.ones(len(labels), dtype=bool)
        frequent[infrequent] = False
        names = [f"{column}_{_label(v)}" for v, f in zip(labels, frequent) if f]
        if len(infrequent):
            names.append(f"{column}_{_INFREQUENT}")
        unknown = len(names) - 1 if len(infrequent) and self.handle_unknown in ("infrequent_if_exist", "warn") \
            else -1
        codes = np.append(group, unknown).astype(np.int64)
        drop = vocab["drop"]
        if drop is not None:
            del names[drop]
            codes = np.where(codes == drop, -1, np.where(codes > drop, codes - 1, codes))
        return EncodeLayout(value_set, values, codes, names, len(values) if vocab["has_missing"] else -1)

    def _watches_unknown(self) -> bool:
        return self.handle_unknown in ("error", "warn") or self.drop is not None

    def _unknown(self, column: str, values: Sequence[Any], layout: EncodeLayout) -> None:
        super()._unknown(column, values, layout)
        if self.handle_unknown == "warn" or self.drop is not None:  # scikit-learn warns in both cases
            shown = ", ".join(repr(v) for v in values[:10]) + (", ..." if len(values) > 10 else "")
            code = int(layout.codes[-1])
            into = "all zeros" if code < 0 else repr(layout.names[code])
            warnings.warn(DataWarning(f"column {column!r}: unknown categories {shown} (not seen at fit) are "
                                      f"encoded as {into}"))

    def apply(self, batch: pa.RecordBatch, state: dict[str, Any]) -> pa.RecordBatch:
        columns = self.input_columns()
        outputs: list[tuple[str, pa.Array]] = []
        for c, layout in zip(columns, self._layouts(state, _types(batch.schema, columns))):
            outputs += one_hot_columns(self._encode(batch.column(c), c, layout), len(layout.names), layout.names)
        return replace_columns(batch, columns, outputs)

    def row_function(self, state: dict[str, Any], schema: pa.Schema) -> RowFn:
        # A fresh dict of the outputs in output order (one fast copy: every one-hot output at 0, a placeholder for
        # each other column), the ones set by lookup, then the other columns' values: far cheaper than inserting
        # dozens of zeros into the incoming record, and the record comes out in this step's output order.
        ours: set[str] = set()
        specs = []
        for c, layout in zip(self.input_columns(), self._layouts(state, _types(schema, self.input_columns()))):
            names = layout.names
            ours.update(names)

            def name_of(code: int, names: list[str] = names) -> str | None:
                return names[code] if code >= 0 else None

            lookup = {v: name_of(k) for v, k in zip(layout.values, layout.codes.tolist())}
            if layout.missing_index >= 0:
                lookup[None] = name_of(int(layout.codes[layout.missing_index]))
            specs.append((c, lookup, self._row_resolver(c, layout, name_of)))
        template = {n: 0 if n in ours else None for n in self.apply(empty_batch(schema), state).schema.names}

        def fn(row: dict) -> dict:
            out = template.copy()
            for c, lookup, resolve in specs:
                v = row.pop(c)
                try:
                    name = lookup[v]
                except (KeyError, TypeError):
                    name = resolve(v)
                if name is not None:
                    out[name] = 1
            out.update(row)
            return out

        return fn

    def describe(self, state: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for c, vocab in zip(self.input_columns(), state["vocabulary"]):
            layout = self._layout(c, vocab, None)
            labels = vocab["categories"] + ([None] if vocab["has_missing"] else [])
            counts = vocab["counts"].tolist() + ([vocab["missing"]] if vocab["has_missing"] else [])
            slots = [_label(v) for i, v in enumerate(labels) if i not in set(vocab["infrequent"].tolist())]
            slots += [_INFREQUENT] if len(vocab["infrequent"]) else []
            out[c] = {"categories": {_label(v): n for v, n in zip(labels, counts)},
                      "missing": vocab["missing"],
                      "infrequent": [_label(labels[i]) for i in vocab["infrequent"].tolist()],
                      "dropped": None if vocab["drop"] is None else slots[vocab["drop"]],
                      "outputs": layout.names}
        return out


# ---------------------------------------------------------------------------------------------- ordinal
def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


class _OrdinalVocabulary(Vocabulary):
    """The ordinal vocabulary: also checks that ``unknown_value`` and ``encoded_missing_value`` do not reuse
    the code of a known category (scikit-learn's rule: codes below the number of frequent categories)."""

    def __init__(self, columns: Sequence[str], *, unknown_value: Any = None, encoded_missing_value: Any = np.nan,
                 **kwargs: Any) -> None:
        super().__init__(columns, missing_infrequent=False, **kwargs)
        self.unknown_value, self.encoded_missing_value = unknown_value, encoded_missing_value

    def finish(self, column: str, i: int, vocab: dict[str, Any]) -> dict[str, Any]:
        used = len(vocab["categories"]) - len(vocab["infrequent"])
        for name, value, applies in (("unknown_value", self.unknown_value, True),
                                     ("encoded_missing_value", self.encoded_missing_value, vocab["has_missing"])):
            if applies and value is not None and not _is_nan(value) and 0 <= value < used:
                raise SpecError(f"OrdinalEncoder: {name}={value!r} is already the code of a known category of "
                                f"column {column!r} (codes 0..{used - 1}); choose a negative value or NaN")
        return vocab


@register_step
class OrdinalEncoder(VocabularyEncoder):
    """Encode categorical columns as category codes, as :class:`sklearn.preprocessing.OrdinalEncoder`.

    Each column is replaced (same name, same place) by a float64 column of codes ``0 .. n-1`` in category order
    (sorted, or as given); infrequent categories share the code after the frequent ones.  Missing values become
    ``encoded_missing_value`` (null when it is NaN).

    Parameters
    ----------
    columns:
        String, integer or boolean columns to encode.
    categories:
        ``"auto"`` or one list of categories per column (see :class:`OneHotEncoder`).
    handle_unknown:
        ``"error"`` (raise :class:`~beamlearn.errors.UnknownCategoryError` naming the column and value) or
        ``"use_encoded_value"`` (unknown values become ``unknown_value``).
    unknown_value:
        An int, or NaN (null output), required with ``"use_encoded_value"``; it must not be a category's code.
    encoded_missing_value:
        The code of missing values: an int (not a category's code) or NaN (null output).
    min_frequency, max_categories:
        Group infrequent categories under one code (missing values are never infrequent), as in
        :class:`OneHotEncoder`.

    Examples
    --------
    >>> import beamlearn as bl
    >>> f = bl.Pipeline([bl.OrdinalEncoder("c", handle_unknown="use_encoded_value", unknown_value=-1)]).fit(
    ...     {"c": ["b", "a", None, "b"]})
    >>> f.transform({"c": ["a", "b", "zz", None]}).column("c").to_pylist()
    [0.0, 1.0, -1.0, None]
    >>> f.transform_one({"c": "b"})
    {'c': 1.0}
    """

    _unknown_choices = ("error", "use_encoded_value")

    def __init__(self, columns: str | Sequence[str], *, categories: Any = "auto", handle_unknown: str = "error",
                 unknown_value: float | None = None, encoded_missing_value: float = np.nan,
                 min_frequency: float | None = None, max_categories: int | None = None) -> None:
        self.columns, self.categories, self.handle_unknown = columns, categories, handle_unknown
        self.unknown_value, self.encoded_missing_value = unknown_value, encoded_missing_value
        self.min_frequency, self.max_categories = min_frequency, max_categories

    def _vocabulary(self) -> Vocabulary:
        return _OrdinalVocabulary(self.input_columns(), categories=self.categories,
                                  min_frequency=self.min_frequency, max_categories=self.max_categories,
                                  unknown_error=self.handle_unknown == "error",
                                  unknown_value=self.unknown_value if self.handle_unknown != "error" else None,
                                  encoded_missing_value=self.encoded_missing_value)

    def check(self, schema: pa.Schema) -> None:
        super().check(schema)

        def is_code(v: Any) -> bool:
            return _is_nan(v) or (isinstance(v, numbers.Integral) and not isinstance(v, bool))

        if self.handle_unknown == "use_encoded_value" and not is_code(self.unknown_value):
            raise SpecError(f"OrdinalEncoder: unknown_value={self.unknown_value!r} must be an int or NaN when "
                            "handle_unknown='use_encoded_value'")
        if self.handle_unknown == "error" and self.unknown_value is not None:
            raise SpecError("OrdinalEncoder: unknown_value is only used with handle_unknown='use_encoded_value'")
        if not is_code(self.encoded_missing_value):
            raise SpecError(f"OrdinalEncoder: encoded_missing_value={self.encoded_missing_value!r} must be an "
                            "int or NaN")

    def _layout(self, column: str, vocab: dict[str, Any], typ: pa.DataType | None) -> EncodeLayout:
        value_set = pa.array(vocab["categories"], type=typ)
        codes = vocab["group"].astype(np.float64)
        if vocab["has_missing"]:
            codes[-1] = float(self.encoded_missing_value)
        unknown = float(self.unknown_value) if self.handle_unknown == "use_encoded_value" else np.nan
        return EncodeLayout(value_set, value_set.to_pylist(), np.append(codes, unknown), [],
                       len(value_set) if vocab["has_missing"] else -1)

    def apply(self, batch: pa.RecordBatch, state: dict[str, Any]) -> pa.RecordBatch:
        columns = self.input_columns()
        arrays, names = list(batch.columns), batch.schema.names
        for c, layout in zip(columns, self._layouts(state, _types(batch.schema, columns))):
            j = names.index(c)
            arrays[j] = from_float(self._encode(arrays[j], c, layout))
        return pa.RecordBatch.from_arrays(arrays, names=names)

    def row_function(self, state: dict[str, Any], schema: pa.Schema) -> RowFn:
        def code_of(code: float) -> float | None:
            return None if math.isnan(code) else code

        specs = []
        for c, layout in zip(self.input_columns(), self._layouts(state, _types(schema, self.input_columns()))):
            lookup = {v: code_of(k) for v, k in zip(layout.values, layout.codes.tolist())}
            if layout.missing_index >= 0:
                lookup[None] = code_of(float(layout.codes[layout.missing_index]))
            specs.append((c, lookup, self._row_resolver(c, layout, code_of)))

        def fn(row: dict) -> dict:
            for c, lookup, resolve in specs:
                v = row[c]
                try:
                    row[c] = lookup[v]
                except (KeyError, TypeError):
                    row[c] = resolve(v)
            return row

        return fn

    def describe(self, state: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for c, vocab in zip(self.input_columns(), state["vocabulary"]):
            codes = self._layout(c, vocab, None).codes.tolist()
            out[c] = {"categories": {_label(v): {"count": int(n), "code": k} for v, n, k in
                                     zip(vocab["categories"], vocab["counts"].tolist(), codes)},
                      "missing": vocab["missing"],
                      "infrequent": [_label(vocab["categories"][i]) for i in vocab["infrequent"].tolist()]}
        return out
