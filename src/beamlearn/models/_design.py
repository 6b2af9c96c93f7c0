"""The design matrix of a logistic regression pass: a dense block and a sparse block of mostly-zero columns.

One-hot outputs make most feature columns mostly zeros; keeping them as a sparse (CSC) block makes the products
a pass needs (``X @ W.T``, ``R.T @ X``, ``X.T @ diag(h) @ X``) cost O(nonzeros), and when every row has the same
number of nonzeros (one-hot groups) the sparse Hessian block is a few weighted counts of column pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from beamlearn.batches import raw_values

__all__ = ["SPARSE_FRACTION", "Design", "complete_rows"]

SPARSE_FRACTION = 0.1  # a column with fewer nonzero values than this fraction of rows goes to the sparse block


def _int_view(arr: pa.Array) -> np.ndarray | None:
    """A zero-copy numpy view of an integer column without nulls (one-hot uint8 columns), else None."""
    if not pa.types.is_integer(arr.type) or arr.null_count:
        return None
    dtype = np.dtype(arr.type.to_pandas_dtype())
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize)


def complete_rows(batch: pa.RecordBatch, features: Sequence[str]) -> np.ndarray | None:
    """A mask of the rows with every feature present, or None when all are."""
    complete = None
    for c in features:
        if _int_view(batch.column(c)) is None:
            ok = raw_values(batch.column(c))[1]
            if ok is not None:
                complete = ok.copy() if complete is None else complete & ok
    return complete


class Design:
    """The design matrix of one batch, ``[features..., 1]``, as a dense block and a sparse (CSC) block of the
    mostly-zero columns (one-hot outputs), so that products cost O(nonzeros).  Rows in ``~keep`` are zero.

    >>> b = pa.record_batch({"x": [1.5, 2.0, 3.0], "h": pa.array([0, 1, 0], pa.uint8())})
    >>> D = Design(b, ["x", "h"], True, None, sparse_fraction=0.5)
    >>> D.dense_pos, D.sparse_pos, D.matvec(np.array([[1.0, 10.0, 100.0]])).ravel().tolist()
    ([0, 2], [1], [101.5, 112.0, 103.0])
    """

    def __init__(self, batch: pa.RecordBatch, features: Sequence[str], intercept: bool, keep: np.ndarray | None,
                 *, sparse_fraction: float = SPARSE_FRACTION) -> None:
        from scipy import sparse

        n = batch.num_rows
        dense: list[tuple[int, np.ndarray]] = []
        cols: list[tuple[int, np.ndarray]] = []
        for j, c in enumerate(features):
            x = _int_view(batch.column(c))
            if x is None:
                x = raw_values(batch.column(c))[0]
            (cols if np.count_nonzero(x) < sparse_fraction * n else dense).append((j, x))
        q = len(features) + int(intercept)
        self.dense_pos = [j for j, _ in dense] + ([q - 1] if intercept else [])
        self.sparse_pos = [j for j, _ in cols]
        self.D = np.empty((n, len(self.dense_pos)))
        for i, (_, x) in enumerate(dense):
            self.D[:, i] = x
        if intercept:
            self.D[:, -1] = 1.0
        if keep is not None:
            self.D[~keep] = 0.0
        self.S, self._rows = None, None
        if cols:
            # numpy's nonzero is ~10x faster on bool; a 0/1 uint8 column is a valid bool buffer
            idx = [np.flatnonzero(x.view(bool) if x.dtype == np.uint8 and x.max(initial=0) <= 1 else x)
                   for _, x in cols]
            if keep is not None:
                idx = [i[keep[i]] for i in idx]
            counts = [len(i) for i in idx]
            rows, ptr = np.concatenate(idx), np.concatenate([[0], np.cumsum(counts)])
            data = np.concatenate([x[i] for (_, x), i in zip(cols, idx)]).astype(np.float64)
            which = np.repeat(np.arange(len(cols)), counts)
            self.S = sparse.csc_array((data, rows, ptr), shape=(n, len(cols)))
            per_row = np.bincount(rows, minlength=n)
            r = int(per_row[0]) if n else 0
            if r and per_row.min() == per_row.max():  # e.g. one-hot groups: (n, r) column indices and values
                seen, slots = np.zeros(n, dtype=np.intp), []
                for i in idx:  # entry's rank within its row = earlier columns holding that row
                    slots.append(seen[i])
                    seen[i] += 1
                at = rows * r + np.concatenate(slots)
                ri, rv = np.empty(n * r, dtype=np.intp), np.empty(n * r)
                ri[at], rv[at] = which, data
                self._rows = (ri.reshape(n, r), rv.reshape(n, r))

    def matvec(self, W: np.ndarray) -> np.ndarray:
        """``X @ W.T`` for parameters ``W`` of shape (m, q): (n, m)."""
        Z = self.D @ W[:, self.dense_pos].T
        if self.S is not None:
            Z += self.S @ W[:, self.sparse_pos].T
        return Z

    def rmatvec(self, R: np.ndarray, q: int) -> np.ndarray:
        """``R.T @ X`` for residuals ``R`` of shape (n, m): (m, q)."""
        G = np.zeros((R.shape[1], q))
        G[:, self.dense_pos] = (self.D.T @ R).T
        if self.S is not None:
            G[:, self.sparse_pos] = (self.S.T @ R).T
        return G

    def gram(self, h: np.ndarray, q: int) -> np.ndarray:
        """``X.T @ diag(h) @ X``, (q, q), for ``h`` of one sign."""
        sign = -1.0 if np.any(h < 0) else 1.0
        Dh = self.D * np.sqrt(np.abs(h))[:, None]
        H = np.zeros((q, q))
        H[np.ix_(self.dense_pos, self.dense_pos)] = sign * (Dh.T @ Dh)  # syrk
        if self.S is not None:
            sd = self.S.T @ (self.D * h[:, None])
            H[np.ix_(self.sparse_pos, self.dense_pos)] = sd
            H[np.ix_(self.dense_pos, self.sparse_pos)] = sd.T
            H[np.ix_(self.sparse_pos, self.sparse_pos)] = self._sparse_gram(h)
        return H

    def _sparse_gram(self, h: np.ndarray) -> np.ndarray:
        """``S.T @ diag(h) @ S``; when every row has the same number r of nonzeros (one-hot groups), as r(r+1)/2
        weighted counts of column pairs (much faster than a sparse product)."""
        k = self.S.shape[1]
        if self._rows is None:
            ss = self.S.T @ (self.S * h[:, None])
            return ss.toarray() if hasattr(ss, "toarray") else np.asarray(ss)
        idx, val = self._rows
        out = np.zeros(k * k)
        for a in range(idx.shape[1]):
            for b in range(a, idx.shape[1]):
                pair = np.bincount(idx[:, a] * k + idx[:, b], weights=h * val[:, a] * val[:, b], minlength=k * k)
                out += pair
                if a != b:
                    out += pair.reshape(k, k).T.ravel()
        return out.reshape(k, k)
