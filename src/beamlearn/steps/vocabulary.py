"""The categorical vocabulary shared by the encoders: the :class:`Vocabulary` analyzer, the layout and lookup
that map values to codes, the encoders' common base, and the public one-hot kernels (:func:`one_hot_columns`,
:func:`one_hot_row`) other steps reuse.  :mod:`beamlearn.steps.encode` re-exports the public names.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beamlearn.analyzers import ValueCounts
from beamlearn.batches import column_kind, missing_mask
from beamlearn.errors import SpecError, UnknownCategoryError
from beamlearn.steps.base import Step

__all__ = ["Vocabulary", "one_hot_columns", "one_hot_row"]


# ---------------------------------------------------------------------------------------------- one-hot kernels
def one_hot_columns(indices: np.ndarray, n: int, names: Sequence[str]) -> list[tuple[str, pa.Array]]:
    """One-hot encode integer ``indices`` into ``n`` uint8 columns named ``names``.

    ``indices[r]`` in ``[0, n)`` sets output ``indices[r]`` of row ``r`` to 1; ``-1`` leaves the row all zeros.
    The codes are scattered into one ``(n, rows)`` uint8 array whose rows become the Arrow columns without a copy.

    Examples
    --------
    >>> cols = one_hot_columns(np.array([0, 2, -1]), 3, ["b_0", "b_1", "b_2"])
    >>> [(name, arr.to_pylist()) for name, arr in cols]
    [('b_0', [1, 0, 0]), ('b_1', [0, 0, 0]), ('b_2', [0, 1, 0])]
    """
    codes = np.asarray(indices, dtype=np.int64)
    rows = len(codes)
    out = np.zeros((n, rows), dtype=np.uint8)
    if n and rows:
        flat = out.reshape(-1)
        if codes.min() >= 0:
            flat[codes * rows + np.arange(rows)] = 1
        else:
            r = np.flatnonzero(codes >= 0)
            flat[codes[r] * rows + r] = 1
    buf = pa.py_buffer(out)  # one buffer, each output a slice of it
    return [(name, pa.Array.from_buffers(pa.uint8(), rows, [None, buf.slice(j * rows, rows)], null_count=0))
            for j, name in enumerate(names)]


def one_hot_row(names: Sequence[str]) -> Callable[[dict, int], dict]:
    """The single-record counterpart of :func:`one_hot_columns`: ``set(row, i)`` writes all ``names`` into
    ``row`` as 0, then ``names[i]`` as 1 (none for ``i == -1``), and returns the row.

    Examples
    --------
    >>> set_bin = one_hot_row(["b_0", "b_1"])
    >>> set_bin({"y": 1.5}, 1)
    {'y': 1.5, 'b_0': 0, 'b_1': 1}
    """
    zeros, names = dict.fromkeys(names, 0), list(names)

    def set_(row: dict, i: int) -> dict:
        row.update(zeros)
        if i >= 0:
            row[names[i]] = 1
        return row

    return set_


# ---------------------------------------------------------------------------------------------- vocabulary
def is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def python_value(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _infrequent_mask(counts: np.ndarray, n_samples: int, min_frequency: Any, max_categories: Any) -> np.ndarray:
    """scikit-learn's ``_identify_infrequent``: below ``min_frequency``, then the smallest counts beyond
    ``max_categories - 1`` frequent ones (a stable argsort: among equal counts, the categories that come first
    are grouped first)."""
    if isinstance(min_frequency, numbers.Integral):
        mask = counts < min_frequency
    elif isinstance(min_frequency, numbers.Real):
        mask = counts < n_samples * min_frequency
    else:
        mask = np.zeros(counts.shape[0], dtype=bool)
    if max_categories is not None and max_categories < counts.size - mask.sum() + 1:
        keep = max_categories - 1
        if keep == 0:
            mask[:] = True
        else:
            mask[np.argsort(counts, kind="mergesort")[:-keep]] = True
    return mask


class Vocabulary(ValueCounts):
    """The categories of each column and their grouping, from one :class:`ValueCounts` pass.

    Categories are the sorted distinct values (or the given ``categories``), with the missing category last when
    missing values were seen (or the given list ends with ``None``/NaN).  Infrequent categories (``min_frequency``,
    ``max_categories``) are grouped as scikit-learn does; ``missing_infrequent`` says whether the missing category
    may be infrequent (one-hot) or stays apart (ordinal).  With ``unknown_error``, values outside explicit
    ``categories`` are an :class:`~beamlearn.errors.UnknownCategoryError` at fit.

    State: one dict per column: ``categories`` (list), ``counts`` (int64, per category), ``missing`` (count),
    ``has_missing`` (bool), ``infrequent`` (int64 indices into categories + missing), ``group`` (int64: the group
    of each category, frequent ones numbered in order, all infrequent ones sharing the last number; -1 for a
    missing category kept apart), plus what :meth:`finish` adds.

    Examples
    --------
    >>> from beamlearn.analyzers import run_analyzer
    >>> state = run_analyzer(Vocabulary(["c"], max_categories=2), [pa.record_batch({"c": ["b", "a", "b", None]})])
    >>> state[0]["categories"], state[0]["counts"].tolist(), state[0]["missing"], state[0]["infrequent"].tolist()
    (['a', 'b'], [1, 2], 1, [0, 2])
    >>> state[0]["group"].tolist()  # 'b' is output 0; 'a' and the missing category share the infrequent output
    [1, 0, 1]
    """

    def __init__(self, columns: Sequence[str], *, categories: Any = "auto", min_frequency: Any = None,
                 max_categories: Any = None, missing_infrequent: bool = True, unknown_error: bool = False) -> None:
        super().__init__(columns)
        self.categories, self.min_frequency, self.max_categories = categories, min_frequency, max_categories
        self.missing_infrequent, self.unknown_error = missing_infrequent, unknown_error

    def extract(self, acc: list[list[Any]]) -> list[dict[str, Any]]:
        out = []
        for i, (column, (counter, missing)) in enumerate(zip(self.columns, acc)):
            if self.categories == "auto":
                cats, has_missing = sorted(counter), missing > 0
            else:
                given = [python_value(v) for v in self.categories[i]]
                has_missing = bool(given) and is_missing(given[-1])
                cats = given[:-1] if has_missing else given
                if self.unknown_error:
                    known = set(cats)
                    bad = [v for v in counter if v not in known] + ([None] if missing and not has_missing else [])
                    if bad:
                        raise UnknownCategoryError(f"found unknown categories {sorted(map(repr, bad))} during fit, "
                                                   "outside the given categories", column=column, value=bad[0])
            counts = np.array([counter.get(v, 0) for v in cats], dtype=np.int64)
            rows = sum(counter.values()) + missing
            full = np.append(counts, missing) if has_missing and self.missing_infrequent else counts
            infrequent = np.zeros(full.size, dtype=bool)
            if self.min_frequency is not None or (self.max_categories is not None and self.max_categories >= 1):
                infrequent = _infrequent_mask(full, rows, self.min_frequency, self.max_categories)
            group = np.cumsum(~infrequent) - 1
            group[infrequent] = np.count_nonzero(~infrequent)
            if has_missing and not self.missing_infrequent:
                group = np.append(group, -1)
            vocab = {"categories": cats, "counts": counts, "missing": int(missing), "has_missing": has_missing,
                     "infrequent": np.flatnonzero(infrequent).astype(np.int64), "group": group.astype(np.int64)}
            out.append(self.finish(column, i, vocab))
        return out

    def finish(self, column: str, i: int, vocab: dict[str, Any]) -> dict[str, Any]:
        """Complete (and validate) a column's vocabulary; encoders override this."""
        return vocab


class EncodeLayout(NamedTuple):
    """A column's vocabulary ready to encode with: the categories typed like the column, the code of each
    category (then of the missing category, then of unknown values), and the output names (one-hot)."""

    value_set: pa.Array
    values: list
    codes: np.ndarray
    names: list[str]
    missing_index: int  # index of the missing category in ``codes`` (-1: missing is unknown)


def _lookup(arr: pa.Array, layout: EncodeLayout) -> np.ndarray:
    """The index of each value in the layout's categories; missing values get the missing index, and values
    not found -1 (so ``layout.codes[index]`` is each row's code).  A dictionary-encoded column is looked up
    through its (small) dictionary."""
    if pa.types.is_dictionary(arr.type):
        by_entry = _lookup(arr.dictionary, layout)
        if len(by_entry):
            index = by_entry[arr.indices.fill_null(0).to_numpy(zero_copy_only=False)]
        else:  # an empty dictionary: every value is null
            index = np.full(len(arr), -1, dtype=np.int32)
        return np.where(missing_mask(arr), layout.missing_index, index) if arr.null_count else index
    if len(layout.values) and not pa.types.is_null(arr.type):
        index = pc.index_in(arr, value_set=layout.value_set).fill_null(-1).to_numpy()
    else:
        index = np.full(len(arr), -1, dtype=np.int32)
    if arr.null_count or pa.types.is_floating(arr.type):
        miss = missing_mask(arr)
        if miss.any():
            index = np.where(miss, layout.missing_index, index)
    return index


# ---------------------------------------------------------------------------------------------- shared base
class VocabularyEncoder(Step):
    """Parameter checks, the lookup and the unknown-value policy shared by both encoders."""

    _unknown_choices: tuple[str, ...] = ()
    reads_dictionary = True  # looked up through the dictionary; the input columns are replaced

    def _vocabulary(self) -> Vocabulary:  # the analyzer, configured by the subclass
        raise NotImplementedError

    def analyzers(self) -> dict[str, Any]:
        return {"vocabulary": self._vocabulary()}

    def check(self, schema: pa.Schema) -> None:
        super().check(schema)
        self._check_kind(schema, ["string", "numeric", "boolean"])
        self._check_choice("handle_unknown", self._unknown_choices)
        mf, mc = self.min_frequency, self.max_categories
        if mf is not None and not (isinstance(mf, numbers.Integral) and not isinstance(mf, bool) and mf >= 1) \
                and not (isinstance(mf, numbers.Real) and not isinstance(mf, numbers.Integral) and 0 < mf < 1):
            raise SpecError(f"{type(self).__name__}: min_frequency={mf!r} must be an int >= 1 (a count) or a "
                            "float in (0, 1) (a fraction of the rows)")
        if mc is not None and not (isinstance(mc, numbers.Integral) and not isinstance(mc, bool) and mc >= 1):
            raise SpecError(f"{type(self).__name__}: max_categories={mc!r} must be an int >= 1")
        if self.categories != "auto":
            self._check_categories(schema)

    def _check_categories(self, schema: pa.Schema) -> None:
        name, columns = type(self).__name__, self.input_columns()
        if not isinstance(self.categories, (list, tuple)) or len(self.categories) != len(columns):
            raise SpecError(f"{name}: categories must be 'auto' or one list of categories per column "
                            f"({len(columns)} columns)")
        for column, cats in zip(columns, self.categories):
            cats = [python_value(v) for v in cats]
            if not cats:
                raise SpecError(f"{name}: the categories of column {column!r} are empty")
            if any(is_missing(v) for v in cats[:-1]):
                raise SpecError(f"{name}: a missing category (None/NaN) must be the last of column {column!r}")
            values = cats[:-1] if is_missing(cats[-1]) else cats
            if len(set(values)) != len(values):
                raise SpecError(f"{name}: the categories of column {column!r} contain duplicates")
            typ = schema.field(column).type
            try:
                pa.array(values, type=typ)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
                raise SpecError(f"{name}: the categories of column {column!r} do not fit its type {typ}: "
                                f"{values!r}") from None
            if column_kind(typ) != "string" and values != sorted(values):
                raise SpecError(f"{name}: the numeric categories of column {column!r} must be sorted: {values!r}")

    def _layouts(self, state: dict[str, Any], types: Sequence[pa.DataType]) -> list[EncodeLayout]:
        """Each column's layout, cached for the last fitted state seen (the cache holds that state, so its
        identity cannot be reused): building a layout is O(categories), too much to repeat on every batch."""
        vocab, key = state["vocabulary"], tuple(types)
        cached = self.__dict__.get("_cache")
        if cached is not None and cached[0] is vocab and cached[1] == key:
            return cached[2]
        layouts = [self._layout(c, v, t) for c, v, t in zip(self.input_columns(), vocab, types)]
        self._cache = (vocab, key, layouts)
        return layouts

    def layouts(self, state: dict[str, Any], types: Sequence[pa.DataType]) -> list[EncodeLayout]:
        """Each input column's :class:`EncodeLayout` (categories, the code of each category, then of the missing
        category, then of unknown values; one-hot output names) for columns of ``types``: what exporters
        (:mod:`beamlearn.interop.onnx`) translate."""
        return self._layouts(state, types)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_cache"}

    def _layout(self, column: str, vocab: dict[str, Any], typ: pa.DataType) -> EncodeLayout:
        raise NotImplementedError

    def _watches_unknown(self) -> bool:
        """Whether unknown values must be looked at (to raise or warn) rather than just encoded."""
        return self.handle_unknown == "error"

    def _unknown(self, column: str, values: Sequence[Any], layout: EncodeLayout) -> None:
        """The policy for unknown values found while transforming (``values``: distinct ones, at least one)."""
        if self.handle_unknown == "error":
            raise UnknownCategoryError(f"unknown category {values[0]!r} (not seen at fit; "
                                       "handle_unknown='error')", column=column, value=values[0])

    def _encode(self, arr: pa.Array, column: str, layout: EncodeLayout) -> np.ndarray:
        index = _lookup(arr, layout)
        if self._watches_unknown():
            unknown = index < 0
            if unknown.any():
                self._unknown(column, pc.unique(arr.filter(pa.array(unknown))).to_pylist(), layout)
        return layout.codes[index]

    def _row_resolver(self, column: str, layout: EncodeLayout, out: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """The slow path of a row function: missing values, then unknown ones."""
        codes = layout.codes.tolist()  # Python numbers, as the vectorized path's to_pylist() gives
        missing = out(codes[layout.missing_index]) if layout.missing_index >= 0 else None
        unknown = out(codes[-1])

        def resolve(v: Any) -> Any:
            if is_missing(v) and layout.missing_index >= 0:
                return missing
            self._unknown(column, [v], layout)
            return unknown

        return resolve
