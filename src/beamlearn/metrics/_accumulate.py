"""The accumulator shared by the classification and regression reductions: rows read and skipped, the class
list, one :class:`~beamlearn.metrics._core.Groups` per slicing, and (while the data is small) the rows kept
for exact metrics.  Subclasses say how a batch becomes per-group arrays (:meth:`MetricReduction._arrays`) and
which rows to keep (:meth:`MetricReduction._keep`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from beamlearn.analyzers import Analyzer
from beamlearn.batches import batch_origin, batch_rows, float_values, missing_mask
from beamlearn.metrics._core import (
    Groups,
    label_text,
    mix_bits,
    poisson_weights,
    python_value,
    row_hash,
    slice_codes,
)

__all__ = ["MetricAcc", "MetricReduction", "bootstrap_hash", "normalize_slices"]


def normalize_slices(slices: Any) -> tuple[tuple[str, ...], ...]:
    """``"origin"`` / ``["origin", "carrier,origin", ("carrier", "origin")]`` -> tuples of column names; a
    comma inside a string crosses columns."""
    if isinstance(slices, str):
        slices = [slices]
    out = []
    for s in slices or ():
        cols = tuple(c.strip() for c in s.split(",")) if isinstance(s, str) else tuple(s)
        if not cols or not all(isinstance(c, str) and c for c in cols):
            raise ValueError(f"a slice is a column name or a list of column names, got {s!r}")
        if cols not in out:
            out.append(cols)
    return tuple(out)


def bootstrap_hash(batch: pa.RecordBatch, columns: Sequence[str]) -> np.ndarray:
    """The hash that seeds a row's bootstrap weights: its values in ``columns``, and its position in its
    source (file base name and row index, as the readers tag batches), so that duplicate rows still draw
    independent weights while every engine and every batching draws the same ones."""
    source, _ = batch_origin(batch)
    pos = pa.record_batch({"source": pa.array([os.path.basename(source or "")] * batch.num_rows),
                           "row": pa.array(batch_rows(batch))})
    return mix_bits(row_hash(batch, columns) ^ row_hash(pos, ["source", "row"]))


class MetricAcc:
    """Picklable accumulator (see the module docstring)."""

    def __init__(self, slicings: Sequence[tuple[str, ...]]) -> None:
        self.rows = 0
        self.skipped = 0
        self.classes: list = []
        self.class_index: dict = {}
        self.groups = [Groups(()), *(Groups(s) for s in slicings)]
        self.kept: list[dict[str, Any]] | None = []  # None once the data outgrew the exact limit
        self.kept_rows = 0


class MetricReduction(Analyzer):
    """Base of the metric analyzers: one pass, grouped by every slicing, with an optional Poisson bootstrap.

    Subclasses set ``label``, ``prediction``, ``sample_weight``, ``slices``, ``n_bootstrap`` and
    ``exact_max_rows`` in ``__init__`` and implement ``_arrays`` and ``_keep``.
    """

    def place(self, result: dict, si: int, columns: Sequence[str], key: Sequence[Any], block: dict) -> None:
        """Put one group's metrics into ``result``: slicing 0 is the overall block; others are named slices,
        flagged ``insufficient`` below ``min_slice_count`` rows (flagged, never hidden)."""
        if si == 0:
            result["overall"] = block
            return
        name = ",".join(f"{c}={label_text(v)}" for c, v in zip(columns, key))
        block["insufficient"] = block["count"] < self.min_slice_count
        result["slices"][name] = {"columns": {c: python_value(v) for c, v in zip(columns, key)}, **block}

    label: str
    prediction: str
    sample_weight: str | None
    slices: Any
    n_bootstrap: int
    exact_max_rows: int
    class_axes: ClassVar[dict[str, tuple[int, ...]]] = {}

    @property
    def slicings(self) -> tuple[tuple[str, ...], ...]:
        return normalize_slices(self.slices)

    def score_columns(self) -> list[str]:
        return []

    @property
    def columns(self) -> tuple[str, ...]:  # type: ignore[override]
        cols = [self.label, self.prediction, *self.score_columns()]
        if self.sample_weight:
            cols.append(self.sample_weight)
        for s in self.slicings:
            cols += s
        return tuple(dict.fromkeys(cols))

    def create(self) -> MetricAcc:
        return MetricAcc(self.slicings)

    # ------------------------------------------------------------------ per batch
    def add(self, acc: MetricAcc, batch: pa.RecordBatch) -> MetricAcc:
        acc.rows += batch.num_rows
        if batch.num_rows == 0:
            return acc
        ok = ~(missing_mask(batch.column(self.label)) | missing_mask(batch.column(self.prediction)))
        hashes = bootstrap_hash(batch, self.columns) if self.n_bootstrap else None
        if not ok.all():
            acc.skipped += int((~ok).sum())
            batch = batch.filter(pa.array(ok))
            hashes = hashes[ok] if hashes is not None else None
            if batch.num_rows == 0:
                return acc
        w = np.ones(batch.num_rows) if not self.sample_weight else np.nan_to_num(
            float_values(batch.column(self.sample_weight)), nan=0.0)
        boot = None
        if hashes is not None:
            boot = poisson_weights(hashes, self.n_bootstrap) * w
        cmap, rows = self._prepare(acc, batch)
        kept = acc.kept is not None and acc.kept_rows + batch.num_rows <= self.exact_max_rows
        gidx = []
        for groups in acc.groups:
            keys, g = slice_codes(batch, groups.columns)
            arrays = self._arrays(rows, w, boot, g, len(keys))
            groups.add(keys, arrays, self.class_axes, cmap, len(acc.classes))
            gidx.append(groups._gmap(keys)[g] if kept else None)
        if kept:
            acc.kept.append({"groups": gidx, **self._keep(rows, w)})  # type: ignore[union-attr]
            acc.kept_rows += batch.num_rows
        else:
            acc.kept = None
        return acc

    def _prepare(self, acc: MetricAcc, batch: pa.RecordBatch) -> tuple[np.ndarray | None, dict[str, Any]]:
        """Decode the batch into numpy columns (and grow the class list); returns the local-to-global class
        map (or None) and the columns."""
        raise NotImplementedError

    def _arrays(self, rows: dict[str, Any], w: np.ndarray, boot: np.ndarray | None, g: np.ndarray,
                n_groups: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _keep(self, rows: dict[str, Any], w: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    # ------------------------------------------------------------------ merge
    def merge(self, accs: Sequence[MetricAcc]) -> MetricAcc:
        out = self.create()
        for acc in accs:
            out.rows += acc.rows
            out.skipped += acc.skipped
            for v in acc.classes:
                if v not in out.class_index:
                    out.class_index[v] = len(out.classes)
                    out.classes.append(v)
            cmap = np.array([out.class_index[v] for v in acc.classes], dtype=np.int64)
            gmaps = []
            for mine, theirs in zip(out.groups, acc.groups):
                mine.merge_from(theirs, self.class_axes, cmap, len(out.classes))
                gmaps.append(mine._gmap(theirs.keys))
            if out.kept is None or acc.kept is None or out.kept_rows + acc.kept_rows > self.exact_max_rows:
                out.kept = None
                continue
            for chunk in acc.kept:
                moved = dict(chunk)
                moved["groups"] = [gm[g] for gm, g in zip(gmaps, chunk["groups"])]
                if "y" in chunk and self.class_axes:
                    moved["y"] = cmap[chunk["y"]]
                out.kept.append(moved)
            out.kept_rows += acc.kept_rows
        return out

    # ------------------------------------------------------------------ extract helpers
    def _kept_arrays(self, acc: MetricAcc, order: np.ndarray | None) -> dict[str, Any] | None:
        """The kept rows concatenated (class indices renumbered by ``order``: old index -> sorted index)."""
        if acc.kept is None:
            return None
        names = [k for k in (acc.kept[0] if acc.kept else {}) if k != "groups"]
        out: dict[str, Any] = {k: np.concatenate([c[k] for c in acc.kept]) for k in names}
        out["groups"] = [np.concatenate([c["groups"][i] for c in acc.kept]) if acc.kept else np.zeros(0, int)
                         for i in range(len(acc.groups))]
        if order is not None and "y" in out:
            out["y"] = order[out["y"]] if len(out["y"]) else out["y"]
        return out
