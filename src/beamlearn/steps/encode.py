"""Categorical encoders: OneHotEncoder and OrdinalEncoder, as scikit-learn's (dense output).

Both are thin layers over one :class:`Vocabulary` analyzer (a :class:`~beamlearn.analyzers.ValueCounts` pass
that then decides the categories, the missing category and the infrequent ones exactly as scikit-learn does), and
over one vectorized lookup (``pyarrow.compute.index_in`` against the vocabulary, then a numpy gather).  Each
category gets a *code*: the output slot of :class:`OneHotEncoder` (``-1`` for "all zeros") or the ordinal value of
:class:`OrdinalEncoder`.  Missing values (null or NaN) are a category placed last when seen at fit; a missing value
at transform that was not seen at fit is an unknown category, as in scikit-learn.

:func:`one_hot_columns` and :func:`one_hot_row` are the public one-hot kernels other steps reuse (e.g. the one-hot
encoding of bin indices).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beamlearn.analyzers import ValueCounts
from beamlearn.batches import column_kind, empty_batch, from_float, missing_mask
from beamlearn.errors import DataWarning, SpecError, UnknownCategoryError
from beamlearn.steps.base import RowFn, Step, register_step, replace_columns

# The steps are re-exported by ``beamlearn``; the kernels and the analyzer are imported from this module.
__all__ = ["OneHotEncoder", "OrdinalEncoder"]

_INFREQUENT = "infrequent_sklearn"
_UNKNOWN_OHE = ("error", "ignore", "infrequent_if_exist", "warn")


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
def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _py(v: Any) -> Any:
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
                given = [_py(v) for v in self.categories[i]]
                has_missing = bool(given) and _is_missing(given[-1])
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


class _Layout(NamedTuple):
    """A column's vocabulary ready to encode with: the categories typed like the column, the code of each
    category (then of the missing category, then of unknown values), and the output names (one-hot)."""

    value_set: pa.Array
    values: list
    codes: np.ndarray
    names: list[str]
    missing_index: int  # index of the missing category in ``codes`` (-1: missing is unknown)


def _lookup(arr: pa.Array, layout: _Layout) -> np.ndarray:
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
class _Encoder(Step):
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
            cats = [_py(v) for v in cats]
            if not cats:
                raise SpecError(f"{name}: the categories of column {column!r} are empty")
            if any(_is_missing(v) for v in cats[:-1]):
                raise SpecError(f"{name}: a missing category (None/NaN) must be the last of column {column!r}")
            values = cats[:-1] if _is_missing(cats[-1]) else cats
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

    def _layouts(self, state: dict[str, Any], types: Sequence[pa.DataType]) -> list[_Layout]:
        """Each column's layout, cached for the last fitted state seen (the cache holds that state, so its
        identity cannot be reused): building a layout is O(categories), too much to repeat on every batch."""
        vocab, key = state["vocabulary"], tuple(types)
        cached = self.__dict__.get("_cache")
        if cached is not None and cached[0] is vocab and cached[1] == key:
            return cached[2]
        layouts = [self._layout(c, v, t) for c, v, t in zip(self.input_columns(), vocab, types)]
        self._cache = (vocab, key, layouts)
        return layouts

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_cache"}

    def _layout(self, column: str, vocab: dict[str, Any], typ: pa.DataType) -> _Layout:
        raise NotImplementedError

    def _watches_unknown(self) -> bool:
        """Whether unknown values must be looked at (to raise or warn) rather than just encoded."""
        return self.handle_unknown == "error"

    def _unknown(self, column: str, values: Sequence[Any], layout: _Layout) -> None:
        """The policy for unknown values found while transforming (``values``: distinct ones, at least one)."""
        if self.handle_unknown == "error":
            raise UnknownCategoryError(f"unknown category {values[0]!r} (not seen at fit; "
                                       "handle_unknown='error')", column=column, value=values[0])

    def _encode(self, arr: pa.Array, column: str, layout: _Layout) -> np.ndarray:
        index = _lookup(arr, layout)
        if self._watches_unknown():
            unknown = index < 0
            if unknown.any():
                self._unknown(column, pc.unique(arr.filter(pa.array(unknown))).to_pylist(), layout)
        return layout.codes[index]

    def _row_resolver(self, column: str, layout: _Layout, out: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """The slow path of a row function: missing values, then unknown ones."""
        codes = layout.codes.tolist()  # Python numbers, as the vectorized path's to_pylist() gives
        missing = out(codes[layout.missing_index]) if layout.missing_index >= 0 else None
        unknown = out(codes[-1])

        def resolve(v: Any) -> Any:
            if _is_missing(v) and layout.missing_index >= 0:
                return missing
            self._unknown(column, [v], layout)
            return unknown

        return resolve


def _types(schema: pa.Schema, columns: Sequence[str]) -> list[pa.DataType]:
    """The columns' value types (a dictionary-encoded column's are its values')."""
    return [t.value_type if pa.types.is_dictionary(t) else t for t in (schema.field(c).type for c in columns)]


def _label(v: Any) -> str:
    return "nan" if _is_missing(v) else str(v)


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
            value = _py(drop[i])
            if _is_missing(value):
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
class OneHotEncoder(_Encoder):
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

    def _layout(self, column: str, vocab: dict[str, Any], typ: pa.DataType | None) -> _Layout:
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
        return _Layout(value_set, values, codes, names, len(values) if vocab["has_missing"] else -1)

    def _watches_unknown(self) -> bool:
        return self.handle_unknown in ("error", "warn") or self.drop is not None

    def _unknown(self, column: str, values: Sequence[Any], layout: _Layout) -> None:
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
class OrdinalEncoder(_Encoder):
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

    def _layout(self, column: str, vocab: dict[str, Any], typ: pa.DataType | None) -> _Layout:
        value_set = pa.array(vocab["categories"], type=typ)
        codes = vocab["group"].astype(np.float64)
        if vocab["has_missing"]:
            codes[-1] = float(self.encoded_missing_value)
        unknown = float(self.unknown_value) if self.handle_unknown == "use_encoded_value" else np.nan
        return _Layout(value_set, value_set.to_pylist(), np.append(codes, unknown), [],
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
