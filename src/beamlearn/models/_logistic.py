"""The passes of :class:`~beamlearn.models.LogisticRegression`: one optimizer iteration per pass (damped Newton
for small dimension, L-BFGS above it), the first of which also discovers the classes (:class:`ClassCounts`).

Parameters are a matrix ``W`` of shape ``(m, q)``, flattened row by row: ``m = 1`` (binary, sigmoid of the
positive class ``classes[1]``) or ``m = k`` (multinomial softmax), ``q = d + 1`` with the intercept last (``q = d``
without intercept).  The objective is scikit-learn's ``sum_i w_i loss_i + 0.5 / C * ||coef||^2`` (no penalty on
the intercept; ``w_i`` = sample weight x class weight).

A pass receives a base point ``w`` and a direction ``s``.  In the same read of the data it evaluates the loss
at several step sizes ``w + t s`` (cheap: two matrix-vector products, then elementwise work per step size) and
the gradient (for Newton, also the Hessian) at the full step ``t = 1``.  The update picks a step size satisfying
Armijo's condition (Newton: the largest; L-BFGS: the lowest loss), so a line search costs no extra pass unless
every tried step fails (then the next pass retries shorter steps from the same point).  Newton takes the
gradient and Hessian at ``t = 1`` only (the usual case); after a damped step the next pass evaluates them at
the accepted point.  L-BFGS takes the gradient at every step size.  Convergence is scikit-learn's: the largest gradient entry of the objective
divided by the sum of weights is at most ``tol``; Newton then takes its final (unverified, quadratically small)
step.  Newton also stops one pass earlier when it is visibly converging quadratically (full steps, the gradient
shrinking at least 10x per pass) and the predicted gradient after its step, ``gmax^2 / previous gmax``, meets
``tol``.  In the multinomial model the intercepts are defined up to a common shift: steps are kept orthogonal to
it, so the intercepts sum to zero as scikit-learn's do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beamlearn.analyzers import Analyzer
from beamlearn.errors import DataError
from beamlearn.models._design import Design, complete_rows
from beamlearn.models.base import Iteration, label_values, weights_of

NEWTON_TRIALS = (1.0, 0.5, 0.25, 0.1)
LBFGS_TRIALS = (1.0, 3.0, 0.5, 0.2, 0.05)
LBFGS_MEMORY = 10
ARMIJO = 1e-4


class ClassCounts(Analyzer):
    """Pass 1: the classes of the training rows with their weighted counts, merged with the first optimizer
    iteration at ``w = 0``, where every probability is ``1/k`` whatever the class: so per label value the
    weighted count, ``sum w x`` and ``sum w x xᵀ`` give the loss, gradient and Hessian at 0 once the classes
    (and the class weights) are known.  Its state is that of the first :class:`LogisticPass` iteration.
    """

    def __init__(self, label: str, *, weight: str | None = None, missing_label: str = "error",
                 features: Sequence[str] = (), settings: dict[str, Any] | None = None) -> None:
        self.columns, self.label, self.weight, self.missing_label = (*features, label), label, weight, missing_label
        self.features, self.settings = tuple(features), dict(settings or {})

    def _q(self) -> int:
        return len(self.features) + int(self.settings["fit_intercept"])

    def _newton(self, k: int) -> bool:
        s, p = self.settings, (1 if k <= 2 else k) * self._q()
        return s["solver"] == "newton-cholesky" or (s["solver"] == "auto" and p <= s["newton_max_dim"])

    def create(self) -> list[Any]:
        return [{}, 0, 0, True]  # per label value [count, sum w x, sum w x x^T]; rows; skipped; Hessians kept

    def add(self, acc: list[Any], batch: pa.RecordBatch) -> list[Any]:
        n = batch.num_rows
        if n == 0:
            return acc
        arr, has = label_values(batch, self.label, self.missing_label)
        complete = complete_rows(batch, self.features)
        keep = has if complete is None else complete if has is None else complete & has
        sw = weights_of(batch, self.weight)
        sw = np.ones(n) if sw is None else np.array(sw, dtype=np.float64)
        if keep is not None:
            sw[~keep] = 0.0
            arr = arr.filter(pa.array(keep))
        skipped = 0 if keep is None else int(n - keep.sum())
        enc = pc.dictionary_encode(arr)
        codes = np.full(n, -1, dtype=np.intp)
        codes[slice(None) if keep is None else keep] = enc.indices.to_numpy(zero_copy_only=False)
        values = enc.dictionary.to_pylist()
        part = [{}, n - skipped, skipped, acc[3] and self._newton(len(set(acc[0]) | set(values)))]
        if n > skipped:
            X = Design(batch, self.features, self.settings["fit_intercept"], keep)
            q = self._q()
            for j, v in enumerate(values):
                wv = np.where(codes == j, sw, 0.0)
                part[0][v] = [float(wv.sum()), X.rmatvec(wv[:, None], q)[0], X.gram(wv, q) if part[3] else None]
        return self.merge([acc, part])

    def merge(self, accs: Sequence[list[Any]]) -> list[Any]:
        out: dict[Any, list[Any]] = {}
        keep_h = all(a[3] for a in accs)
        for a in accs:
            keep_h = keep_h and self._newton(len(set(out) | set(a[0])))
            for v, (c, g, h) in a[0].items():
                o = out.setdefault(v, [0.0, np.zeros_like(g), None if h is None else np.zeros_like(h)])
                o[0] += c
                o[1] = o[1] + g
                o[2] = None if (h is None or o[2] is None) else o[2] + h
        if not keep_h:
            for o in out.values():
                o[2] = None
        return [out, sum(a[1] for a in accs), sum(a[2] for a in accs), keep_h]

    def _first(self, classes: list[Any], counts: np.ndarray) -> LogisticPass:
        s = self.settings
        m, q = (1 if len(classes) == 2 else len(classes)), self._q()
        zero = np.zeros(m * q)
        return LogisticPass(self.features, {"w": zero, "s": zero}, max_iter=s["max_iter"], tol=s["tol"],
                            context={"label": self.label, "weight": self.weight,
                                     "missing_label": self.missing_label, "classes": classes,
                                     "class_counts": counts, "class_weight": class_weights(
                                         s["class_weight"], classes, counts), "C": float(s["C"]),
                                     "fit_intercept": bool(s["fit_intercept"]), "lbfgs": not self._newton(
                                         len(classes))})

    def extract(self, acc: list[Any]) -> dict[str, Any]:
        stats, rows, skipped, _ = acc
        classes = sorted(stats)
        if len(classes) < 2:
            raise DataError(f"LogisticRegression needs at least 2 classes in the training rows, found "
                            f"{classes!r}", column=self.label)
        counts = np.array([stats[c][0] for c in classes])
        first = self._first(classes, counts)
        k = len(classes)
        cw = first.context["class_weight"]
        cw = np.ones(k) if cw is None else cw
        m = 1 if k == 2 else k
        sw = float(cw @ counts)
        f = sw * np.log(k)
        total = sum(c * stats[v][1] for c, v in zip(cw, classes))
        # data gradient of class c: sum_i w_i (1/k - [y_i = c]) x_i (binary: of the positive class classes[1])
        g = np.stack([total / k - cw[c] * stats[classes[c]][1] for c in ([1] if m == 1 else range(k))])
        H = None
        if not first.context["lbfgs"]:
            Hs = sum(c * stats[v][2] for c, v in zip(cw, classes))
            p = 1.0 / k  # every probability at w = 0
            H = np.kron(np.eye(m) * p - (p * p if m > 1 else 0.0), Hs) if m > 1 else Hs * 0.25
        return first.extract([np.array([f]), g.reshape(1, -1), H, sw, rows, skipped])

    def then(self, state: dict[str, Any]) -> Analyzer | None:
        return self._first(state["classes"], np.asarray(state["class_counts"])).then(state)


def class_weights(spec: Any, classes: list[Any], counts: np.ndarray) -> np.ndarray | None:
    """Per-class weights as scikit-learn's ``compute_class_weight``: ``None``, ``"balanced"`` (``total /
    (k * count)`` from the weighted class counts) or a dict by class (keys may also be the classes' strings).

    >>> class_weights("balanced", ["a", "b"], np.array([3.0, 1.0])).tolist()
    [0.6666666666666666, 2.0]
    """
    if spec is None:
        return None
    if spec == "balanced":
        return counts.sum() / (len(classes) * counts)
    return np.array([float(spec.get(c, spec.get(str(c), 1.0))) for c in classes])


class LogisticPass(Iteration):
    """One optimizer iteration of logistic regression (see the module docstring).

    ``context`` holds the fixed settings (label, classes, class weights, C, fit_intercept, lbfgs); ``params`` the
    base point, the direction and the optimizer memory.  State: ``params``, ``n_iter``, ``converged`` and
    ``classes``, ``class_counts``, ``coef`` ``(m, d)``, ``intercept`` ``(m,)``, ``loss`` (the objective),
    ``rows`` and ``skipped`` (training rows used and skipped in the last pass).
    """

    # -------------------------------------------------------------------- layout
    def _shape(self) -> tuple[int, int]:
        ctx = self.context
        return (1 if len(ctx["classes"]) == 2 else len(ctx["classes"])), len(self.columns) + ctx["fit_intercept"]

    def _trials(self) -> tuple[float, ...]:
        if not np.any(self.params["s"]):
            return (1.0,)
        return LBFGS_TRIALS if self.context["lbfgs"] else NEWTON_TRIALS

    def _penalty_mask(self) -> np.ndarray:
        m, q = self._shape()
        pm = np.zeros((m, q))
        pm[:, :len(self.columns)] = 1.0
        return pm.ravel()

    # -------------------------------------------------------------------- reduction
    def create(self) -> list[Any]:
        m, q = self._shape()
        T, p = len(self._trials()), m * q
        return [np.zeros(T), np.zeros((T, p)), None if self.context["lbfgs"] else np.zeros((p, p)), 0.0, 0, 0]

    def add(self, acc: list[Any], batch: pa.RecordBatch) -> list[Any]:
        n = batch.num_rows
        if n == 0:
            return acc
        ctx = self.context
        arr, has = label_values(batch, ctx["label"], ctx["missing_label"])
        complete = complete_rows(batch, self.columns)
        keep = has if complete is None else complete if has is None else complete & has
        part = self.create()
        sw = weights_of(batch, ctx["weight"])
        sw = np.ones(n) if sw is None else np.array(sw, dtype=np.float64)
        if keep is not None:
            sw[~keep] = 0.0
            part[5] = int(n - keep.sum())
        y = self._class_index(arr, keep)
        if ctx["class_weight"] is not None:
            sw *= ctx["class_weight"][y]
        if part[5] < n:
            self._accumulate(part, Design(batch, self.columns, ctx["fit_intercept"], keep), y, sw)
            part[3], part[4] = float(sw.sum()), n - part[5]
        return self.merge([acc, part])

    def _class_index(self, arr: pa.Array, keep: np.ndarray | None) -> np.ndarray:
        classes = self.context["classes"]
        idx = pc.index_in(arr, value_set=pa.array(classes).cast(arr.type))
        unseen = idx.is_null().to_numpy(zero_copy_only=False)
        if keep is not None:
            unseen &= keep
        if unseen.any():
            raise DataError("a label not seen in the first pass (did the data change between passes?)",
                            column=self.context["label"], value=arr[int(np.flatnonzero(unseen)[0])].as_py())
        return pc.fill_null(idx, 0).to_numpy(zero_copy_only=False).astype(np.intp)

    def _accumulate(self, part: list[Any], X: Design, y: np.ndarray, sw: np.ndarray) -> None:
        from scipy.special import expit, logsumexp  # fit-time only: serving imports no scipy

        m, q = self._shape()
        W, S = self.params["w"].reshape(m, q), self.params["s"].reshape(m, q)
        Z0 = X.matvec(W)
        Zs = X.matvec(S) if np.any(S) else None
        rows, pos = np.arange(len(y)), (y == 1)
        for i, t in enumerate(self._trials()):
            Z = Z0 if Zs is None else Z0 + t * Zs
            gradient = i == 0 or self.context["lbfgs"]  # Newton: only the full step's (see update)
            if m == 1:
                z = Z[:, 0]
                part[0][i] = sw @ (np.logaddexp(0.0, z) - np.where(pos, z, 0.0))
                if gradient:
                    prob = expit(z)
                    R = (sw * (prob - pos))[:, None]
            else:
                lse = logsumexp(Z, axis=1)
                part[0][i] = sw @ (lse - Z[rows, y])
                if gradient:
                    P = np.exp(Z - lse[:, None])
                    R = P.copy()
                    R[rows, y] -= 1.0
                    R *= sw[:, None]
            if gradient:
                part[1][i] = X.rmatvec(R, q).ravel()
            if i == 0 and part[2] is not None:  # the Hessian at the full step
                if m == 1:
                    part[2] += X.gram(sw * prob * (1.0 - prob), q)
                else:
                    for a in range(m):
                        for b in range(a, m):
                            block = X.gram(sw * P[:, a] * ((a == b) - P[:, b]), q)  # >= 0 on the diagonal
                            part[2][a * q:(a + 1) * q, b * q:(b + 1) * q] += block
                            if a != b:
                                part[2][b * q:(b + 1) * q, a * q:(a + 1) * q] += block

    def merge(self, accs: Sequence[list[Any]]) -> list[Any]:
        f, g, H, sw, rows, skipped = accs[0]
        f, g, H = f.copy(), g.copy(), None if H is None else H.copy()
        for b in accs[1:]:
            f += b[0]
            g += b[1]
            if H is not None:
                H += b[2]
            sw, rows, skipped = sw + b[3], rows + b[4], skipped + b[5]
        return [f, g, H, sw, rows, skipped]

    # -------------------------------------------------------------------- update
    def update(self, acc: list[Any]) -> tuple[Any, bool, dict[str, Any]]:
        f, g, H, sw, rows, skipped = acc
        if sw <= 0:
            raise DataError("LogisticRegression has no training rows with a feature set, a label and a positive "
                            "weight", column=self.context["label"])
        lam, pm, trials = 1.0 / self.context["C"], self._penalty_mask(), self._trials()
        w, s = self.params["w"], self.params["s"]
        F = [f[i] + 0.5 * lam * float(np.sum((pm * (w + t * s)) ** 2)) for i, t in enumerate(trials)]
        G = [g[i] + lam * pm * (w + t * s) for i, t in enumerate(trials)]
        best = self._line_search(F, trials)
        if best is None:  # no tried step decreased the objective enough: retry shorter steps from the same point
            params = {**self.params, "s": s * (trials[-1] * 0.5)}
            if self.iteration + 1 >= self.max_iter:
                params = {"w": params["w"]}
            return params, False, self._extra(params["w"], self.params["f"], sw, rows, skipped)
        t, f_new, g_new = trials[best], F[best], G[best]
        w_new = w + t * s
        if best and not self.context["lbfgs"]:  # a damped Newton step: its gradient is taken by the next pass
            params = {"w": w_new, "s": np.zeros_like(w_new), "f": f_new, "g": np.zeros_like(w_new)}
            if self.iteration + 1 >= self.max_iter:
                params = {"w": w_new}
            return params, False, self._extra(w_new, f_new, sw, rows, skipped)
        gmax = float(np.max(np.abs(g_new))) / sw
        converged = gmax <= self.tol
        if self.context["lbfgs"]:
            params = self._lbfgs(w_new, t * s, f_new, g_new, sw)
            if converged:
                params["s"] = np.zeros_like(w_new)
        else:
            # Newton converging quadratically (full steps, gradient shrinking >= 10x a pass): the gradient after
            # this step is predicted as gmax^2 / previous gmax; when that meets tol, take the step and stop
            prev = self.params.get("gmax")
            converged = converged or (t == 1.0 and prev is not None and gmax <= 0.1 * prev
                                      and gmax * gmax / prev <= self.tol)
            step = self._newton_direction(H, lam * pm, g_new)
            params = {"w": w_new + step if converged else w_new, "s": step, "f": f_new, "g": g_new,
                      "gmax": gmax}
        if converged or self.iteration + 1 >= self.max_iter:  # the final state keeps only the model
            params = {"w": params["w"]}
        return params, converged, self._extra(params["w"], f_new, sw, rows, skipped)

    def _line_search(self, F: list[float], trials: Sequence[float]) -> int | None:
        if "f" not in self.params or not np.any(self.params["s"]):  # a first or re-evaluation pass
            return 0
        f0, slope = self.params["f"], float(self.params["g"] @ self.params["s"])
        ok = [i for i, t in enumerate(trials) if F[i] <= f0 + ARMIJO * t * slope]
        if not ok:
            return None
        return min(ok, key=lambda i: F[i]) if self.context["lbfgs"] else ok[0]

    def _newton_direction(self, H: np.ndarray, penalty: np.ndarray, g: np.ndarray) -> np.ndarray:
        from scipy import linalg  # fit-time only: serving imports no scipy

        A = H + np.diag(penalty)
        m, q = self._shape()
        u = None
        if m > 1 and self.context["fit_intercept"]:  # the common shift of the intercepts leaves the loss unchanged
            u = np.zeros((m, q))
            u[:, -1] = 1.0 / np.sqrt(m)
            u = u.ravel()
            A += np.outer(u, u) * max(1.0, float(np.max(np.diag(A))))
        try:
            step = -linalg.cho_solve(linalg.cho_factor(A), g)
        except linalg.LinAlgError:
            step = -np.linalg.lstsq(A, g, rcond=None)[0]
        if u is not None:
            step -= u * (u @ step)
        return step

    def _lbfgs(self, w: np.ndarray, step: np.ndarray, f: float, g: np.ndarray, sw: float) -> dict[str, Any]:
        p = len(w)
        mem_s, mem_y = self.params.get("mem_s", np.zeros((0, p))), self.params.get("mem_y", np.zeros((0, p)))
        if "g" in self.params:
            yk = g - self.params["g"]
            if float(yk @ step) > 1e-12 * float(yk @ yk):
                mem_s, mem_y = np.vstack([mem_s, step])[-LBFGS_MEMORY:], np.vstack([mem_y, yk])[-LBFGS_MEMORY:]
        q = -g
        if len(mem_s) == 0:
            return {"w": w, "s": q / sw, "f": f, "g": g, "mem_s": mem_s, "mem_y": mem_y}
        rho = 1.0 / np.einsum("ij,ij->i", mem_y, mem_s)
        alpha = np.zeros(len(mem_s))
        for i in range(len(mem_s) - 1, -1, -1):
            alpha[i] = rho[i] * (mem_s[i] @ q)
            q = q - alpha[i] * mem_y[i]
        q = q * (float(mem_s[-1] @ mem_y[-1]) / float(mem_y[-1] @ mem_y[-1]))
        for i in range(len(mem_s)):
            beta = rho[i] * (mem_y[i] @ q)
            q = q + mem_s[i] * (alpha[i] - beta)
        return {"w": w, "s": q, "f": f, "g": g, "mem_s": mem_s, "mem_y": mem_y}

    def _extra(self, w: np.ndarray, loss: float, sw: float, rows: int, skipped: int) -> dict[str, Any]:
        ctx = self.context
        m, q = self._shape()
        d = len(self.columns)
        W = w.reshape(m, q)
        return {"classes": list(ctx["classes"]), "class_counts": np.asarray(ctx["class_counts"]),
                "coef": W[:, :d].copy(), "intercept": W[:, d].copy() if ctx["fit_intercept"] else np.zeros(m),
                "loss": float(loss), "weight_sum": float(sw), "rows": int(rows), "skipped": int(skipped)}
