"""Moment analyzers: :class:`Moments`, :class:`MinMax`, :class:`CoMoments` and :class:`GroupedMoments`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn.analyzers.base import Analyzer, batch_weights, run_analyzer  # noqa: F401 - run_analyzer: the doctests
from beamlearn.batches import missing_mask, present_values, raw_values


# ---------------------------------------------------------------------------------------------- moments
class Moments(Analyzer):
    """Count, mean and (population) variance of numeric columns, merged with Chan et al.'s formulas.

    With ``weight`` (a column name) every statistic is weighted and ``count`` is the sum of weights.
    State: ``{"count", "mean", "var"}``, float64 arrays with one entry per column (NaN where count is 0).
    """

    def __init__(self, columns: Sequence[str], *, weight: str | None = None) -> None:
        self.columns, self.weight = tuple(columns), weight

    def reads(self) -> tuple[str, ...]:
        return self._reads(self.weight)

    def create(self) -> np.ndarray:
        return np.zeros((3, len(self.columns)))  # rows: n, mean, M2

    def add(self, acc: np.ndarray, batch: pa.RecordBatch) -> np.ndarray:
        if batch.num_rows == 0:
            return acc
        w = batch_weights(batch, self.weight)
        part = np.zeros_like(acc)
        with np.errstate(invalid="ignore", over="ignore"):  # +-inf data gives inf/NaN moments, as numpy does
            self._add_columns(batch, w, part)
        return self.merge([acc, part])

    def _add_columns(self, batch: pa.RecordBatch, w: np.ndarray | None, part: np.ndarray) -> None:
        for i, c in enumerate(self.columns):
            if w is None:
                xs = present_values(batch.column(c))
                n = float(len(xs))
                if n:
                    mean = xs.sum() / n
                    d = xs - mean
                    part[:, i] = n, mean, np.einsum("i,i->", d, d)
            else:
                x, ok = raw_values(batch.column(c))
                ww = w if ok is None else np.where(ok, w, 0.0)
                n = float(ww.sum())
                if n:
                    xs = x if ok is None else np.where(ok, x, 0.0)
                    mean = np.einsum("i,i->", ww, xs) / n
                    d = xs - mean
                    part[:, i] = n, mean, np.einsum("i,i,i->", ww, d, d)

    def merge(self, accs: Sequence[np.ndarray]) -> np.ndarray:
        out = np.array(accs[0], dtype=np.float64, copy=True)
        for b in accs[1:]:
            na, ma, qa = out
            nb, mb, qb = b
            n = na + nb
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                delta = mb - ma
                frac = np.where(n > 0, nb / np.where(n > 0, n, 1), 0.0)
                mean, m2 = ma + delta * frac, qa + qb + delta * delta * na * frac
                # an empty side leaves the other as it is (an infinite mean would else become inf * 0 = NaN)
                out = np.stack([n, np.where(nb == 0, ma, np.where(na == 0, mb, mean)),
                                np.where(nb == 0, qa, np.where(na == 0, qb, m2))])
        return out

    def decay(self, acc: np.ndarray, factor: float) -> np.ndarray:
        return np.asarray(acc, dtype=np.float64) * np.array([[factor], [1.0], [factor]])

    def extract(self, acc: np.ndarray) -> dict[str, np.ndarray]:
        n, mean, m2 = acc
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"count": n.copy(), "mean": np.where(n > 0, mean, np.nan),
                    "var": np.where(n > 0, m2 / np.where(n > 0, n, 1), np.nan)}


class MinMax(Analyzer):
    """Minimum and maximum of numeric columns (NaN when a column has no values). State: ``{"min", "max"}``."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = tuple(columns)

    def reads(self) -> tuple[str, ...]:
        return self._reads()

    def create(self) -> np.ndarray:
        return np.full((2, len(self.columns)), np.nan)

    def add(self, acc: np.ndarray, batch: pa.RecordBatch) -> np.ndarray:
        part = np.full_like(acc, np.nan)
        for i, c in enumerate(self.columns):
            xs = present_values(batch.column(c))
            if len(xs):
                part[:, i] = xs.min(), xs.max()
        return self.merge([acc, part])

    def merge(self, accs: Sequence[np.ndarray]) -> np.ndarray:
        out = np.array(accs[0], copy=True)
        for b in accs[1:]:
            out[0] = np.fmin(out[0], b[0])
            out[1] = np.fmax(out[1], b[1])
        return out

    def decay(self, acc: np.ndarray, factor: float) -> np.ndarray:
        return acc  # an extreme does not fade: the range keeps every row seen

    def extract(self, acc: np.ndarray) -> dict[str, np.ndarray]:
        return {"min": acc[0].copy(), "max": acc[1].copy()}



# ---------------------------------------------------------------------------------------------- co-moments
class CoMoments(Analyzer):
    """Count, mean vector and centred cross-product matrix of numeric columns (rows with any missing value
    skipped), merged with Chan et al.'s formula ``C = Ca + Cb + outer(d, d) * na * nb / n``.

    Centring before the cross products keeps the conditioning of the centred data (plain ``XᵀX`` of
    uncentred columns mixes the means in and loses precision).  With ``weight`` (a column; a missing weight
    is 0) every statistic is weighted and ``count`` is the sum of weights.
    State: ``{"count": float, "rows": int (complete rows), "skipped": int (rows with a missing value),
    "mean": (d,) array, "comoment": (d, d) array}``; ``comoment / count`` is the population covariance.

    >>> import pyarrow as pa
    >>> c = CoMoments(["x", "y"])
    >>> acc = c.merge([c.add(c.create(), pa.record_batch({"x": [1.0, 2.0], "y": [2.0, 4.0]})),
    ...                c.add(c.create(), pa.record_batch({"x": [3.0, None], "y": [6.0, 1.0]}))])
    >>> s = c.extract(acc)
    >>> s["count"], s["skipped"], s["mean"].tolist(), s["comoment"].tolist()
    (3.0, 1, [2.0, 4.0], [[2.0, 4.0], [4.0, 8.0]])
    """

    def __init__(self, columns: Sequence[str], *, weight: str | None = None) -> None:
        self.columns, self.weight = tuple(columns), weight

    def reads(self) -> tuple[str, ...]:
        return self._reads(self.weight)

    def create(self) -> list[Any]:
        d = len(self.columns)
        return [0.0, np.zeros(d), np.zeros((d, d)), 0, 0]  # count, mean, comoment, rows, skipped

    def add(self, acc: list[Any], batch: pa.RecordBatch) -> list[Any]:
        n = batch.num_rows
        if n == 0:
            return acc
        X = np.empty((n, len(self.columns)))
        ok: np.ndarray | None = None
        for j, c in enumerate(self.columns):
            x, valid = raw_values(batch.column(c))
            X[:, j] = x
            if valid is not None:
                ok = valid.copy() if ok is None else ok & valid
        w = batch_weights(batch, self.weight)
        skipped = 0
        if ok is not None:
            skipped = n - int(np.count_nonzero(ok))
            X = X[ok]
            w = None if w is None else w[ok]
        return self.merge([acc, self._moments(X, w, skipped)])

    @staticmethod
    def _moments(X: np.ndarray, w: np.ndarray | None, skipped: int) -> list[Any]:
        rows, d = X.shape
        count = float(rows) if w is None else float(w.sum())
        if count <= 0:
            return [0.0, np.zeros(d), np.zeros((d, d)), rows, skipped]
        with np.errstate(invalid="ignore", over="ignore"):
            mean = X.sum(axis=0) / count if w is None else (w @ X) / count
            D = X - mean
            C = D.T @ D if w is None else (D * w[:, None]).T @ D
        return [count, mean, (C + C.T) / 2, rows, skipped]

    def merge(self, accs: Sequence[list[Any]]) -> list[Any]:
        na, ma, ca, ra, sa = accs[0]
        ma, ca = np.array(ma, dtype=np.float64, copy=True), np.array(ca, dtype=np.float64, copy=True)
        for nb, mb, cb, rb, sb in accs[1:]:
            ra, sa = ra + rb, sa + sb
            if nb <= 0:
                continue
            if na <= 0:
                na, ma, ca = nb, np.array(mb, dtype=np.float64, copy=True), np.array(cb, dtype=np.float64, copy=True)
                continue
            n = na + nb
            delta = mb - ma
            ca = ca + cb + np.outer(delta, delta) * (na * nb / n)
            ma = ma + delta * (nb / n)
            na = n
        return [na, ma, ca, ra, sa]

    def decay(self, acc: list[Any], factor: float) -> list[Any]:
        count, mean, C, rows, skipped = acc
        return [count * factor, mean, np.asarray(C) * factor, rows, skipped]

    def extract(self, acc: list[Any]) -> dict[str, Any]:
        count, mean, C, rows, skipped = acc
        if count <= 0:
            mean = np.full(len(self.columns), np.nan)
        return {"count": float(count), "rows": int(rows), "skipped": int(skipped), "mean": np.array(mean),
                "comoment": np.array(C)}


# ---------------------------------------------------------------------------------------------- grouped moments
class GroupedMoments(Analyzer):
    """Weighted count, sum, mean and (population) variance of numeric columns per value of a ``by`` column.

    Only complete rows count: a row with a missing value in any of ``columns`` is skipped (``skipped``), and
    a row whose ``by`` value is missing is skipped too (``missing_by``).  Without ``by`` there is one group,
    keyed ``None``.  With ``weight`` every statistic is weighted (a missing weight is 0).  Sums and squared
    deviations are merged with Chan et al.'s formulas, so any split of the data agrees within rtol 1e-12.
    Subclasses may override :meth:`matrix` to reduce a function of the columns instead (e.g. binarized).

    State: ``{"groups": [sorted values], "rows": int64 (g,), "count": float64 (g,) (sum of weights),
    "sum", "mean", "var": float64 (g, d), "skipped": int, "missing_by": int}``.

    Examples
    --------
    >>> g = GroupedMoments(["x"], by="y")
    >>> s = run_analyzer(g, [pa.record_batch({"x": [1.0, 3.0, 5.0, None], "y": ["a", "a", "b", "b"]})])
    >>> s["groups"], s["mean"].tolist(), s["var"].tolist(), s["skipped"]
    (['a', 'b'], [[2.0], [5.0]], [[1.0], [0.0]], 1)
    """

    mergeable_state = False  # groups are keyed by any value: no plain dump yet

    def __init__(self, columns: Sequence[str], *, by: str | None = None, weight: str | None = None) -> None:
        self.columns, self.by, self.weight = tuple(columns), by, weight

    def reads(self) -> tuple[str, ...]:
        return self._reads(self.by, self.weight)

    def matrix(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray | None]:
        """``(X, complete)``: the (n, d) float64 values of ``columns`` and the mask of complete rows (None
        when every row is complete)."""
        X = np.empty((batch.num_rows, len(self.columns)))
        complete: np.ndarray | None = None
        for j, c in enumerate(self.columns):
            x, ok = raw_values(batch.column(c))
            X[:, j] = x
            if ok is not None:
                complete = ok.copy() if complete is None else complete & ok
        return X, complete

    def create(self) -> dict[str, Any]:
        return {"groups": {}, "skipped": 0, "missing_by": 0}

    def add(self, acc: dict[str, Any], batch: pa.RecordBatch) -> dict[str, Any]:
        if batch.num_rows == 0:
            return acc
        X, keep = self.matrix(batch)
        if keep is not None:
            acc["skipped"] += int(batch.num_rows - np.count_nonzero(keep))
        keep = np.ones(batch.num_rows, bool) if keep is None else keep
        if self.by is None:
            codes, keys = np.zeros(batch.num_rows, np.int64), [None]
        else:
            arr = batch.column(self.by)
            miss = missing_mask(arr)
            acc["missing_by"] += int(np.count_nonzero(miss & keep))
            keep &= ~miss
            enc = arr.dictionary_encode()
            codes = enc.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
            keys = enc.dictionary.to_pylist()
        w = batch_weights(batch, self.weight)
        if not keep.all():
            X, codes, w = X[keep], codes[keep], (None if w is None else w[keep])
        if len(codes) == 0:
            return acc
        order = np.argsort(codes, kind="stable")
        present, starts = np.unique(codes[order], return_index=True)
        rows = np.diff(np.append(starts, len(codes)))
        Xs = X[order]
        if w is None:
            n = rows.astype(np.float64)
            S = np.add.reduceat(Xs, starts, axis=0)
        else:
            ws = w[order]
            n = np.add.reduceat(ws, starts)
            S = np.add.reduceat(Xs * ws[:, None], starts, axis=0)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            mean = np.where(n[:, None] > 0, S / np.where(n > 0, n, 1.0)[:, None], 0.0)
            D = Xs - np.repeat(mean, rows, axis=0)
            M2 = np.add.reduceat(D * D if w is None else D * D * ws[:, None], starts, axis=0)
        groups = acc["groups"]
        for g, code in enumerate(present):
            part = [int(rows[g]), float(n[g]), S[g], M2[g]]
            key = keys[code]
            groups[key] = part if key not in groups else self._chan(groups[key], part)
        return acc

    @staticmethod
    def _chan(a: list, b: list) -> list:
        ra, na, sa, qa = a
        rb, nb, sb, qb = b
        n = na + nb
        q = qa + qb
        if na > 0 and nb > 0:
            with np.errstate(invalid="ignore", over="ignore"):
                delta = sb / nb - sa / na
                q = q + delta * delta * (na * nb / n)
        return [ra + rb, n, sa + sb, q]

    def merge(self, accs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        out = self.create()
        for acc in accs:
            out["skipped"] += acc["skipped"]
            out["missing_by"] += acc["missing_by"]
            for key, part in acc["groups"].items():
                out["groups"][key] = part if key not in out["groups"] else self._chan(out["groups"][key], part)
        return out

    def extract(self, acc: dict[str, Any]) -> dict[str, Any]:
        keys = sorted(acc["groups"], key=lambda k: (k is not None, k))
        d = len(self.columns)
        parts = [acc["groups"][k] for k in keys]
        rows = np.array([p[0] for p in parts], dtype=np.int64)
        n = np.array([p[1] for p in parts], dtype=np.float64)
        S = np.array([p[2] for p in parts], dtype=np.float64).reshape(len(keys), d)
        M2 = np.array([p[3] for p in parts], dtype=np.float64).reshape(len(keys), d)
        with np.errstate(invalid="ignore", divide="ignore"):
            pos = (n > 0)[:, None]
            mean = np.where(pos, S / np.where(n > 0, n, 1.0)[:, None], np.nan)
            var = np.where(pos, M2 / np.where(n > 0, n, 1.0)[:, None], np.nan)
        return {"groups": keys, "rows": rows, "count": n, "sum": S, "mean": mean, "var": var,
                "skipped": acc["skipped"], "missing_by": acc["missing_by"]}
