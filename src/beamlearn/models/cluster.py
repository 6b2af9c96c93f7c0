"""KMeans: a deterministic initialisation on a hashed sample, then Lloyd iterations, one pass each.

Passes (every engine runs them unchanged; :meth:`KMeans.max_passes` bounds them):

1. :class:`KMeansStart`: the feature means and variances of the complete rows (scikit-learn's tolerance is
   ``tol`` times the mean feature variance; data are centred on the means as scikit-learn does) and a bounded
   sample of rows: the ``init_size`` rows with the smallest hash of ``(random_state, row values)``.  Sampling
   by hash, never by an RNG stream over row order (Beam has no row order), makes ``random_state``
   deterministic on every engine and under any batching.  k-means++ (or ``"random"``) runs on that sample with
   ``numpy.random.RandomState(random_state)``; ``init_centers`` replaces it.
2. :class:`LloydIteration` (one per iteration): assign each row to its nearest centre and reduce per-cluster
   weighted sums and weights, the inertia, and the rows farthest from their centres (a small mergeable top-k,
   for scikit-learn's empty-cluster relocation).  Converged when the squared norm of the centre shift is
   ``<= tol``; ``max_iter`` passes at most (then a ConvergenceWarning).
3. :class:`KMeansFinish`: the inertia of the final centres (skipped when the last update left every centre
   unchanged), as scikit-learn's final E-step; with ``n_init > 1`` the run of lowest inertia wins.

Given the same initial centres the centres equal scikit-learn's (``KMeans(init=centers, n_init=1,
algorithm="lloyd")``) after every iteration.  Outputs: ``output`` (int64 cluster index) and, with
``distances=True``, the Euclidean distance to each centre (``{output}_distance_{i}``).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn.analyzers import Analyzer, GroupedMoments, batch_weights
from beamlearn.batches import raw_values
from beamlearn.errors import BeamlearnWarning, DataError, SpecError
from beamlearn.models.base import Estimator, Iteration
from beamlearn.steps.base import RowFn, register_step

__all__ = ["KMeans"]

_M64 = (1 << 64) - 1


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def row_hash(XT: np.ndarray, seed: int) -> np.ndarray:
    """A stable 64-bit hash of each row's float64 values and ``seed`` (-0.0 hashes as 0.0); ``XT`` holds
    the rows as columns (shape (d, n)).

    >>> h = row_hash(np.array([[1.0, 1.0, 2.0], [2.0, 2.0, 1.0]]), 0)
    >>> bool(h[0] == h[1]), bool(h[0] == h[2])
    (True, False)
    """
    with np.errstate(over="ignore"):
        h = _mix(np.full(XT.shape[1], np.uint64(seed & _M64)) + np.uint64(0x9E3779B97F4A7C15))
        for j, x in enumerate(XT):
            bits = np.ascontiguousarray(x + 0.0, dtype=np.float64).view(np.uint64)
            h = _mix(h ^ _mix(bits + np.uint64(j + 1) * np.uint64(0x9E3779B97F4A7C15)))
    return h


def _first(keys: list[np.ndarray], m: int) -> np.ndarray:
    """Indices of the first ``m`` rows in the lexicographic order of ``keys`` (primary key first): by the
    first key alone when its kept values are distinct (the common case), else by all of them."""
    first = keys[0]
    order = np.argsort(first, kind="stable")
    if len(order) > m:
        order = order[:m + 1]
    kept = first[order]
    if len(kept) > 1 and np.any(kept[1:] == kept[:-1]):
        order = np.lexsort(keys[::-1])
    return order[:m]


def _complete(columns: Sequence[str], weight: str | None, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
    """``(XT, w)``: the features of the rows with every feature present, one feature per row of ``XT``
    (shape (d, n); the layout the Lloyd pass reads fastest), and their weights (1 without a weight column)."""
    XT = np.empty((len(columns), batch.num_rows))
    ok = None
    for j, c in enumerate(columns):
        x, valid = raw_values(batch.column(c))
        XT[j] = x
        if valid is not None:
            ok = valid.copy() if ok is None else ok & valid
    w = batch_weights(batch, weight)
    w = np.ones(batch.num_rows) if w is None else w
    return (XT, w) if ok is None else (XT[:, ok], w[ok])


class KMeansStart(Analyzer):
    """First pass: feature moments (complete rows, unweighted) and the hash sample; extracts initial centres.

    State: ``{"params": {"centers": (n_init, k, d) centred}, "mean", "tol", "rows", "skipped"}``; the next
    pass is the first :class:`LloydIteration`.

    Examples
    --------
    >>> from beamlearn.analyzers import run_analyzer
    >>> start = KMeansStart(["x"], weight=None, n_clusters=2, init="k-means++", n_init=1, max_iter=10, tol=1e-4,
    ...                     random_state=0, init_centers=[[0.0], [1.0]], init_size=100)
    >>> run_analyzer(start, [pa.record_batch({"x": [0.0, 1.0, 9.0, 10.0]})])["centers"].tolist()
    [[0.5], [9.5]]
    """

    def __init__(self, columns: Sequence[str], *, weight: str | None, n_clusters: int, init: str, n_init: int,
                 max_iter: int, tol: float, random_state: int, init_centers: Any, init_size: int) -> None:
        self.columns, self.weight, self.n_clusters, self.init, self.n_init = (
            tuple(columns), weight, n_clusters, init, n_init)
        self.max_iter, self.tol, self.random_state, self.init_centers, self.init_size = (
            max_iter, tol, random_state, init_centers, init_size)

    def create(self) -> list:
        d = len(self.columns)
        return [GroupedMoments(self.columns).create(), np.zeros(0, np.uint64), np.zeros((0, d)), np.zeros(0)]

    def add(self, acc: list, batch: pa.RecordBatch) -> list:
        moments = GroupedMoments(self.columns)
        part = moments.add(moments.create(), batch)
        XT, w = _complete(self.columns, self.weight, batch)
        pos = w > 0
        X, w = XT[:, pos].T, w[pos]
        h = row_hash(X.T, self.random_state)
        if len(h) > self.init_size:
            keep = np.argpartition(h, self.init_size)[:self.init_size + 1]
            X, w, h = X[keep], w[keep], h[keep]
        return self.merge([acc, [part, h, X, w]])

    def merge(self, accs: Sequence[list]) -> list:
        moments = GroupedMoments(self.columns).merge([a[0] for a in accs])
        h = np.concatenate([a[1] for a in accs])
        X = np.concatenate([a[2] for a in accs]).reshape(len(h), len(self.columns))
        w = np.concatenate([a[3] for a in accs])
        keep = _first([h, *X.T, w], self.init_size)  # ties between equal hashes broken by the values
        return [moments, h[keep], X[keep], w[keep]]

    def extract(self, acc: list) -> dict[str, Any]:
        m = GroupedMoments(self.columns).extract(acc[0])
        rows = int(m["rows"][0]) if len(m["rows"]) else 0
        if rows < self.n_clusters:
            raise DataError(f"KMeans: {rows} complete rows, fewer than n_clusters={self.n_clusters}")
        mean, var = m["mean"][0], m["var"][0]
        sample, w = acc[2], acc[3]
        if self.init_centers is not None:
            raw = np.asarray(self.init_centers, dtype=np.float64)[None]
        else:
            if len(sample) < self.n_clusters:
                raise DataError(f"KMeans: {len(sample)} rows of positive weight, fewer than n_clusters")
            from sklearn.cluster import kmeans_plusplus

            rng = np.random.RandomState(self.random_state)
            runs = []
            for _ in range(self.n_init):
                if self.init == "random":
                    runs.append(sample[rng.choice(len(sample), self.n_clusters, replace=False, p=w / w.sum())])
                else:
                    runs.append(kmeans_plusplus(sample, self.n_clusters, sample_weight=w, random_state=rng)[0])
            raw = np.stack(runs)
        return {"params": {"centers": raw - mean}, "mean": mean, "tol": float(np.mean(var) * self.tol)
                if self.tol else 0.0, "rows": rows, "skipped": int(m["skipped"])}

    def then(self, state: dict[str, Any]) -> Analyzer:
        r = len(state["params"]["centers"])
        params = dict(state["params"], active=np.ones(r, bool), n_iter=np.zeros(r, np.int64),
                      converged=np.zeros(r, bool), inertia=np.zeros(r), moved=np.ones(r, bool))
        return LloydIteration(self.columns, params, max_iter=self.max_iter, tol=state["tol"],
                              context={"weight": self.weight, "mean": state["mean"], "rows": state["rows"],
                                       "skipped": state["skipped"], "k": self.n_clusters})


def _assign(XT: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre by scikit-learn's ``||c||^2 - 2 x.c`` (first on ties), and the exact squared distance
    ``sum_j (x_j - c_j)^2`` to it.  Loops over clusters and features: numpy's argmin along a short axis is slow."""
    D = (-2.0 * C) @ XT
    D += np.einsum("ij,ij->i", C, C)[:, None]
    labels = np.zeros(XT.shape[1], np.intp)
    best = D[0]
    for i in range(1, len(C)):
        closer = D[i] < best
        labels[closer] = i
        best = np.where(closer, D[i], best)
    dist = np.zeros(XT.shape[1])
    for j, x in enumerate(XT):
        t = x - C[:, j][labels]
        t *= t
        dist += t
    return labels, dist


class LloydIteration(Iteration):
    """One Lloyd iteration of every active run: per-cluster weighted sums and weights, inertia, and the
    ``k`` rows farthest from their centres (for empty-cluster relocation).

    Examples
    --------
    >>> it = LloydIteration(["x"], {"centers": np.array([[[0.0], [1.0]]]), "active": np.ones(1, bool),
    ...                             "n_iter": np.zeros(1, int), "converged": np.zeros(1, bool),
    ...                             "inertia": np.zeros(1), "moved": np.ones(1, bool)},
    ...                     context={"weight": None, "mean": np.zeros(1), "rows": 3, "skipped": 0})
    >>> state = it.extract(it.add(it.create(), pa.record_batch({"x": [0.0, 2.0, 4.0]})))
    >>> state["params"]["centers"].tolist(), state["inertia"]  # inertia of the centres this pass started from
    ([[[0.0], [3.0]]], 10.0)
    """

    def _rows(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        XT, w = _complete(self.columns, self.context["weight"], batch)
        XT -= self.context["mean"][:, None]
        return XT, w

    def create(self) -> list:
        k, d = self.params["centers"].shape[1:]
        return [[np.zeros((k, d)), np.zeros(k), 0.0, np.zeros(0), np.zeros((0, d)), np.zeros(0), np.zeros(0, int)]
                for _ in self.params["centers"]]

    def add(self, acc: list, batch: pa.RecordBatch) -> list:
        XT, w = self._rows(batch)
        if not XT.shape[1]:
            return acc
        k = self.params["centers"].shape[1]
        weighted = self.context["weight"] is not None
        parts = []
        for r, C in enumerate(self.params["centers"]):
            if not self.params["active"][r]:
                parts.append(acc[r])
                continue
            labels, dist = _assign(XT, C)
            sums = np.stack([np.bincount(labels, x * w if weighted else x, minlength=k) for x in XT], axis=1)
            top = np.argpartition(dist, -k)[-k:] if len(dist) > k else np.arange(len(dist))
            parts.append([sums.reshape(k, len(XT)), np.bincount(labels, w, minlength=k), float(dist @ w),
                          dist[top], XT[:, top].T, w[top], labels[top]])
        return self.merge([acc, parts])

    def merge(self, accs: Sequence[list]) -> list:
        out = []
        k = self.params["centers"].shape[1]
        for runs in zip(*accs):
            dist = np.concatenate([p[3] for p in runs])
            X = np.concatenate([p[4] for p in runs])
            w, lab = np.concatenate([p[5] for p in runs]), np.concatenate([p[6] for p in runs])
            keep = _first([-dist, *X.T, w, lab], k)  # farthest first; ties broken by the values
            out.append([sum(p[0] for p in runs), sum(p[1] for p in runs), sum(p[2] for p in runs),
                        dist[keep], X[keep], w[keep], lab[keep]])
        return out

    def update(self, stats: list) -> tuple[Any, bool, dict[str, Any]]:
        p = {key: np.array(v, copy=True) for key, v in self.params.items()}
        for r, (sums, wic, inertia, dist, Xf, wf, lf) in enumerate(stats):
            if not p["active"][r]:
                continue
            old = p["centers"][r].copy()
            new = _relocate_and_average(sums.copy(), wic.copy(), dist, Xf, wf, lf)
            shift = np.sqrt(((new - old) ** 2).sum(axis=1))
            p["centers"][r], p["inertia"][r], p["n_iter"][r] = new, inertia, p["n_iter"][r] + 1
            p["moved"][r] = not np.array_equal(new, old)
            if (shift ** 2).sum() <= self.tol:
                p["converged"][r], p["active"][r] = True, False
        done = not p["active"].any()
        return p, done, self._result(p)

    def _result(self, p: dict[str, Any]) -> dict[str, Any]:
        best = int(np.argmin(p["inertia"]))
        return {"centers": p["centers"][best] + self.context["mean"], "inertia": float(p["inertia"][best]),
                "n_iter_run": int(p["n_iter"][best]), "all_converged": bool(p["converged"].all()),
                "rows": self.context["rows"], "skipped": self.context["skipped"]}

    def then(self, state: dict[str, Any]) -> Analyzer | None:
        nxt = super().then(state)
        if nxt is not None or not state["params"]["moved"].any():
            return nxt  # unchanged centres: this pass's inertia is the final one
        return KMeansFinish(self.columns, state["params"], context=self.context)


def _relocate_and_average(sums: np.ndarray, wic: np.ndarray, dist: np.ndarray, Xf: np.ndarray, wf: np.ndarray,
                          lf: np.ndarray) -> np.ndarray:
    """scikit-learn's ``_relocate_empty_clusters_dense`` then ``_average_centers``, on reduced sums."""
    empty = np.flatnonzero(wic == 0)
    if len(empty) and len(dist) and dist[0] != 0:
        for idx, new_id in enumerate(empty[:len(dist)]):
            x, weight, old_id = Xf[idx], wf[idx], lf[idx]
            sums[old_id] -= x * weight
            sums[new_id] = x * weight
            wic[new_id] = weight
            wic[old_id] -= weight
    biggest = int(np.argmax(wic))
    for j in range(len(wic)):  # in order, as scikit-learn (an empty cluster copies the biggest one's row)
        sums[j] = sums[j] * (1.0 / wic[j]) if wic[j] > 0 else sums[biggest]
    return sums


class KMeansFinish(LloydIteration):
    """The final E-step: the inertia of every run's final centres; the lowest wins.

    Examples
    --------
    >>> fin = KMeansFinish(["x"], {"centers": np.array([[[0.0], [3.0]]]), "n_iter": np.ones(1, int),
    ...                            "converged": np.ones(1, bool)},
    ...                    context={"weight": None, "mean": np.zeros(1), "rows": 3, "skipped": 0})
    >>> fin.extract(fin.add(fin.create(), pa.record_batch({"x": [0.0, 2.0, 4.0]})))["inertia"]
    2.0
    """

    def __init__(self, columns: Sequence[str], params: Any, *, context: Any) -> None:
        super().__init__(columns, params, context=context)

    def create(self) -> list:
        return [0.0 for _ in self.params["centers"]]

    def add(self, acc: list, batch: pa.RecordBatch) -> list:
        XT, w = self._rows(batch)
        for r, C in enumerate(self.params["centers"]):
            acc[r] += float(_assign(XT, C)[1] @ w)
        return acc

    def merge(self, accs: Sequence[list]) -> list:
        return [sum(x) for x in zip(*accs)]

    def extract(self, acc: list) -> dict[str, Any]:
        p = dict(self.params, inertia=np.array(acc, dtype=np.float64))
        return {"params": p, "n_iter": int(p["n_iter"].max()), "converged": True, **self._result(p)}

    def then(self, state: dict[str, Any]) -> None:
        return None


@register_step
class KMeans(Estimator):
    """K-means clustering as :class:`sklearn.cluster.KMeans` (Lloyd), one pass per iteration.

    Parameters
    ----------
    features:
        Feature columns: output column names, input column names (every column derived from them) or globs.
    n_clusters, max_iter, tol:
        As scikit-learn (``tol`` is relative to the mean feature variance).
    init:
        ``"k-means++"`` or ``"random"``, on the hashed sample of ``init_size`` rows.
    n_init:
        Independent initialisations run side by side in the same passes; the lowest inertia wins.
    random_state:
        An int: the seed of the sample hash and of the initialisation (deterministic on every engine).
    sample_weight:
        A column of non-negative sample weights (missing weight = 0).
    output:
        Name of the cluster-index column (int64).
    init_centers:
        Explicit initial centres (``n_clusters`` lists of one value per feature), instead of ``init``.
    distances:
        Also output the Euclidean distance to each centre, ``{output}_distance_{i}``.
    init_size:
        Rows in the initialisation sample.

    Attributes
    ----------
    The fitted state ``kmeans`` holds ``centers`` (``cluster_centers_``), ``inertia``, ``n_iter`` (passes of
    Lloyd iterations; ``n_iter_run`` for the winning run) and whether every run converged.

    Examples
    --------
    >>> import beamlearn as bl
    >>> data = {"x": [0.0, 0.1, 0.2, 5.0, 5.1, 5.2]}
    >>> f = bl.Pipeline([bl.KMeans("x", n_clusters=2, init_centers=[[0.0], [1.0]])]).fit(data)
    >>> f.transform(data).column("cluster").to_pylist()
    [0, 0, 0, 1, 1, 1]
    >>> f.describe()[0]["fitted"]["centroids"]
    [[0.1], [5.1]]
    """

    needs_label = False

    def __init__(self, features: str | Sequence[str], *, n_clusters: int = 8, init: str = "k-means++",
                 n_init: int = 1, max_iter: int = 300, tol: float = 1e-4, random_state: int = 0,
                 sample_weight: str | None = None, output: str = "cluster", init_centers: Any = None,
                 distances: bool = False, init_size: int = 10_000) -> None:
        self.features, self.n_clusters, self.init, self.n_init, self.max_iter = (
            features, n_clusters, init, n_init, max_iter)
        self.tol, self.random_state, self.sample_weight, self.output = tol, random_state, sample_weight, output
        self.init_centers, self.distances, self.init_size = init_centers, distances, init_size

    def check(self, schema: pa.Schema) -> None:
        super().check(schema)
        self._check_choice("init", ("k-means++", "random"))
        for name, low in (("n_clusters", 1), ("n_init", 1), ("max_iter", 1), ("init_size", 1)):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < low:
                raise SpecError(f"KMeans: {name} must be an integer >= {low}, got {v!r}")
        if not isinstance(self.random_state, numbers.Integral) or not 0 <= self.random_state < 2**32:
            raise SpecError("KMeans: random_state must be an int in [0, 2**32) (fits are deterministic on every "
                            f"engine), got {self.random_state!r}")
        if not isinstance(self.tol, numbers.Real) or self.tol < 0:
            raise SpecError(f"KMeans: tol must be a non-negative number, got {self.tol!r}")
        if self.init_size < self.n_clusters:
            raise SpecError("KMeans: init_size must be at least n_clusters")
        if self.init_centers is not None and self.n_init != 1:
            warnings.warn(f"KMeans: explicit init_centers given: performing only one init instead of n_init="
                          f"{self.n_init}", BeamlearnWarning, stacklevel=2)

    def max_passes(self) -> int:
        """Passes the fit may need: the start pass, ``max_iter`` Lloyd passes and the final inertia pass."""
        return self.max_iter + 2

    def fit_analyzers(self, features: list[str], schema: pa.Schema) -> dict[str, Analyzer]:
        centers = None
        if self.init_centers is not None:
            centers = np.asarray(self.init_centers, dtype=np.float64)
            if centers.shape != (self.n_clusters, len(features)):
                raise SpecError(f"KMeans: init_centers must be {self.n_clusters} lists of {len(features)} values "
                                f"(features: {', '.join(features)}), got shape {centers.shape}")
            centers = centers.tolist()
        return {"kmeans": KMeansStart(features, weight=self.sample_weight, n_clusters=self.n_clusters,
                                      init=self.init, n_init=1 if centers is not None else self.n_init,
                                      max_iter=self.max_iter, tol=self.tol, random_state=int(self.random_state),
                                      init_centers=centers, init_size=self.init_size)}

    def _distance_names(self) -> list[str]:
        return [f"{self.output}_distance_{i}" for i in range(self.n_clusters)] if self.distances else []

    def output_types(self, state: dict[str, Any]) -> list[tuple[str, pa.DataType]]:
        return [(self.output, pa.int64())] + [(n, pa.float64()) for n in self._distance_names()]

    def predict_columns(self, X: np.ndarray, state: dict[str, Any]) -> list[tuple[str, Any]]:
        C = np.asarray(state["kmeans"]["centers"], dtype=np.float64)
        acc = np.zeros((len(X), len(C)))
        for j in range(C.shape[1]):  # feature by feature: the row function's order, so both paths agree
            d = X[:, j, None] - C[:, j]
            acc += d * d
        out = [(self.output, np.argmin(acc, axis=1).astype(np.int64))]
        if self.distances:
            dist = np.sqrt(acc)
            out += [(n, dist[:, i]) for i, n in enumerate(self._distance_names())]
        return out

    def row_function(self, state: dict[str, Any], schema: pa.Schema) -> RowFn:
        features = list(state["features"])
        centers = np.asarray(state["kmeans"]["centers"], dtype=np.float64).tolist()
        out, dnames = self.output, self._distance_names()
        sqrt = math.sqrt

        def fn(row: dict) -> dict:
            xs = []
            for c in features:
                v = row.get(c)
                if v is None or v != v:  # noqa: PLR0124 - NaN is missing
                    row[out] = None
                    for n in dnames:
                        row[n] = None
                    return row
                xs.append(float(v))
            best, bd, ds = 0, math.inf, []
            for i, cen in enumerate(centers):
                s = 0.0
                for x, c in zip(xs, cen):
                    d = x - c
                    s += d * d
                if s < bd:
                    best, bd = i, s
                ds.append(s)
            row[out] = best
            for n, s in zip(dnames, ds):
                row[n] = sqrt(s)
            return row

        return fn

    def describe(self, state: dict[str, Any]) -> dict[str, Any]:
        km = state["kmeans"]
        return {"features": list(state["features"]), "centroids": np.round(km["centers"], 6).tolist(),
                "inertia": float(km["inertia"]), "n_iter": int(km["n_iter_run"]),
                "converged": bool(km["all_converged"]), "rows": int(km["rows"]), "skipped_rows": int(km["skipped"])}
