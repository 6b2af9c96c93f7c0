"""``beamlearn run SPEC.yaml``: the whole flow in one command - read, split, fit, choose a threshold, evaluate,
save the artifact and the report.

A run spec is a pipeline spec (:mod:`beamlearn.spec`) with a ``model:`` and four more sections::

    data: [flights.parquet]          # paths or globs, relative to the spec file
    split: {by: time, column: time_hour, test_from: "2013-11-01"}   # or {by: hash, key: id, test_fraction: 0.2, seed: 0}
    evaluate:
      label: late                    # default: the model's label
      prediction: prediction         # default: the model's output column
      score: proba_1                 # default: proba_{positive class} for a binary classifier, proba_* otherwise
      pos_label: 1                   # default: the larger of two classes
      slices: [[origin], [carrier]]
      min_slice_count: 30
      require: ["roc_auc>=0.6"]      # quality gates on the test part
      threshold: {criterion: f1}     # or "recall>=0.6", "precision>=0.5"; binary classifiers only
      bootstrap: 0                   # replicates for confidence intervals
      sample_weight: null            # a weight column
    output: out/flights              # model.blm, metrics.json and report.html
    validate: {schema: schema.yaml}  # optional: check the data first (beamlearn schema infer); stop on anomalies

The flow (:func:`run`): every read streams the data through the split's filter (:mod:`beamlearn.split`), so
train and test never materialize.  The pipeline is fitted on the train part.  For a binary classifier with
probabilities, the decision threshold is chosen on the **train** part (one more pass: choosing it on the test
part would tune on the data that judges the model) and stored in the model's fitted state
(``state["decision_threshold"]``, see :mod:`beamlearn.models.base`), so every later prediction - ``transform``,
``transform_one``, a reloaded artifact - uses it.  The test part is then evaluated once with the stored model:
metrics, slices and gates.  The artifact's lineage and ``metrics.json`` (a ``run`` block) record the split, the
rows per part and the stored threshold (``metrics.json``'s ``overall.decision_threshold`` is the test part's
own sweep, for information only).

With ``engine="beam"`` the fit runs on Apache Beam (:func:`beamlearn.engines.beam_jobs.run_fit`): the workers
read the files and keep the train part themselves (the split filters rows where they are read); the threshold
and evaluation passes are Beam jobs too (:func:`beamlearn.engines.beam_eval.run_evaluate`: the same metric
reductions over the data files, through the same split filter, so bootstrap weights agree).  ``errors`` (a
dead-letter path) applies to the fit; the evaluation passes stop on a row that cannot be read.  With
``engine="spark"`` the same flow runs as Spark jobs (:mod:`beamlearn.engines.spark_jobs`; ``beam_args`` are then
``--master URL`` and ``--conf key=value``).

Examples
--------
>>> import os, tempfile
>>> import pyarrow as pa, pyarrow.parquet as pq
>>> d = tempfile.mkdtemp()
>>> n = 400
>>> pq.write_table(pa.table({"id": list(range(n)), "x": [((i * 7) % 20) / 2.0 for i in range(n)],
...                          "y": [int(((i * 7) % 20) / 2.0 + (i % 3) > 5) for i in range(n)]}),
...                f"{d}/data.parquet")
>>> _ = open(f"{d}/spec.yaml", "w").write('''
... data: [data.parquet]
... split: {by: hash, key: id, test_fraction: 0.25}
... steps: [{step: StandardScaler, columns: [x]}]
... model: {step: LogisticRegression, features: [x], label: y}
... evaluate: {require: ["roc_auc>=0.7"], threshold: {criterion: f1}}
... output: out
... ''')
>>> r = run(f"{d}/spec.yaml")
>>> r.passed, r.rows["train"] + r.rows["test"] == n, sorted(os.listdir(f"{d}/out"))
(True, True, ['metrics.json', 'model.blm', 'report.html'])
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from beamlearn import stores
from beamlearn.batches import DEFAULT_BATCH_SIZE
from beamlearn.errors import SpecError
from beamlearn.metrics.evaluate import EvaluationResult
from beamlearn.pipeline import FittedPipeline
from beamlearn.spec import Spec, read_spec
from beamlearn.split import Split, split_from_spec

__all__ = ["RunConfig", "RunResult", "read_run_spec", "run", "summary_text", "with_decision_threshold"]

_EVALUATE_KEYS = ("label", "prediction", "score", "pos_label", "slices", "min_slice_count", "require",
                  "threshold", "bootstrap", "sample_weight")


@dataclass
class RunConfig:
    """The run sections of a spec, validated: data paths (resolved against the spec's folder), the split,
    the evaluation settings and the output directory."""

    data: list[str]
    split: Split | None
    evaluate: dict[str, Any]
    output: str
    validate: dict[str, Any] | None = None


@dataclass
class RunResult:
    """What :func:`run` returns: the stored model, the test evaluation, rows per part, timings (s) and paths."""

    fitted: FittedPipeline
    evaluation: EvaluationResult
    rows: dict[str, int]
    seconds: dict[str, float]
    paths: dict[str, str]
    threshold: dict[str, Any] | None = None
    passes: int = 0
    engine: str = "local"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Whether every gate passed."""
        return self.evaluation.passed


# ---------------------------------------------------------------------------------------------- spec
def _resolve(path: str, base: str) -> str:
    """``path`` of a spec, relative to the spec's folder ``base`` (a store URI as it is)."""
    if stores.is_uri(path):
        return path
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(base, path))


def _resolve_data(entry: Any, base: str, source: str) -> list[str]:
    items = [entry] if isinstance(entry, str) else entry
    if not isinstance(items, list) or not items or not all(isinstance(p, str) for p in items):
        raise SpecError(f"{source}: data: expected a path, a glob or a list of them (relative to the spec file)")
    out = []
    for p in items:
        if stores.is_uri(p):  # a store's files or a database table: checked when read
            out.append(p)
            continue
        full = _resolve(p, base)
        if not (glob.has_magic(full) and glob.glob(full)) and not os.path.exists(full):
            raise SpecError(f"{source}: data: no such file or directory: {p!r} (looked for {full})")
        out.append(full)
    return out


def _validate_evaluate(entry: Any, source: str) -> dict[str, Any]:
    if entry is None:
        return {}
    if not isinstance(entry, Mapping):
        raise SpecError(f"{source}: evaluate: expected a mapping with keys {', '.join(_EVALUATE_KEYS)}")
    for k in entry:
        if k not in _EVALUATE_KEYS:
            from beamlearn.spec import did_you_mean

            raise SpecError(f"{source}: evaluate: unknown key {k!r}{did_you_mean(str(k), _EVALUATE_KEYS)} "
                            f"(keys: {', '.join(_EVALUATE_KEYS)})")
    ev = dict(entry)
    slices = ev.get("slices", [])
    if isinstance(slices, str) or not isinstance(slices, list):
        raise SpecError(f"{source}: evaluate: slices: expected a list like [[origin], [carrier, origin]]")
    ev["slices"] = [[s] if isinstance(s, str) else s for s in slices]
    require = ev.get("require", [])
    ev["require"] = [require] if isinstance(require, str) else require
    if not isinstance(ev["require"], list) or not all(isinstance(g, str) for g in ev["require"]):
        raise SpecError(f"{source}: evaluate: require: expected a list of gates like 'roc_auc>=0.6'")
    from beamlearn.metrics.gates import parse_gate

    for g in ev["require"]:
        try:
            parse_gate(g)
        except (SpecError, ValueError) as exc:
            raise SpecError(f"{source}: evaluate: require: {exc}") from None
    thr = ev.get("threshold")
    if thr is not None:
        crit = thr.get("criterion") if isinstance(thr, Mapping) and set(thr) == {"criterion"} else None
        ok = isinstance(crit, str) and (crit.replace(" ", "") == "f1" or
                                        crit.replace(" ", "").startswith(("recall>=", "precision>=")))
        if ok and crit.replace(" ", "") != "f1":
            try:
                float(crit.replace(" ", "").split(">=")[1])
            except ValueError:
                ok = False
        if not ok:
            raise SpecError(f"{source}: evaluate: threshold: expected {{criterion: f1 | 'recall>=0.6' | "
                            f"'precision>=0.5'}}, got {thr!r}")
    for key in ("min_slice_count", "bootstrap"):
        v = ev.get(key)
        if v is not None and (type(v) is not int or v < 0):
            raise SpecError(f"{source}: evaluate: {key}: expected a non-negative integer, got {v!r}")
    return ev


def read_run_spec(path: str) -> tuple[Spec, RunConfig]:
    """Read a run spec: the validated :class:`~beamlearn.spec.Spec` and its :class:`RunConfig`."""
    spec = read_spec(path)
    c, source = spec.content, spec.source
    if "model" not in c:
        raise SpecError(f"{source}: a run spec needs a 'model:' section (beamlearn run fits and evaluates a model)")
    if "data" not in c:
        raise SpecError(f"{source}: a run spec needs 'data:' (the training data paths, relative to the spec file)")
    base = os.path.dirname(os.path.abspath(path)) if isinstance(path, str) and os.path.isfile(path) else os.getcwd()
    try:
        split = split_from_spec(c.get("split"))
    except SpecError as exc:
        raise SpecError(f"{source}: {exc}") from None
    if split is None:
        raise SpecError(f"{source}: a run spec needs 'split:' ({{by: hash, ...}} or {{by: time, ...}}) to keep a "
                        "test part")
    output = c.get("output", "out")
    if not isinstance(output, str) or not output:
        raise SpecError(f"{source}: output: expected a directory path")
    return spec, RunConfig(_resolve_data(c["data"], base, source), split,
                           _validate_evaluate(c.get("evaluate"), source),
                           _resolve(output, base),
                           _validate_section(c.get("validate"), base, source))


def _validate_section(entry: Any, base: str, source: str) -> dict[str, Any] | None:
    """The ``validate:`` section: ``{schema: PATH}`` (relative to the spec), the schema read and checked."""
    if entry is None:
        return None
    if not isinstance(entry, Mapping) or set(entry) != {"schema"} or not isinstance(entry["schema"], str):
        raise SpecError(f"{source}: validate: expected {{schema: schema.yaml}} (from `beamlearn schema infer`)")
    from beamlearn.profile.validate import read_schema

    path = _resolve(entry["schema"], base)
    try:
        return {"path": path, "schema": read_schema(path)}
    except SpecError as exc:
        raise SpecError(f"{source}: validate: {exc}") from None


# ---------------------------------------------------------------------------------------------- helpers
def _part(paths: Sequence[str], split: Split, which: str, batch_size: int) -> Callable[[], Iterator[pa.RecordBatch]]:
    """A re-readable source of one part of the data (a function returning a fresh batch iterator)."""
    from beamlearn import io

    def read() -> Iterator[pa.RecordBatch]:
        return split.part(io.read(list(paths), batch_size=batch_size), which)

    return read


def _predicted(source: Callable[[], Iterator[pa.RecordBatch]], fitted: FittedPipeline,
               keep: Sequence[str]) -> Callable[[], Iterator[pa.RecordBatch]]:
    """Batches of ``source`` transformed by ``fitted``, with the ``keep`` columns (slice columns a step
    replaced, e.g. ``carrier`` after one-hot encoding) taken back from the input batch, and each row's origin
    (source, row number: the bootstrap hashes them, on every engine alike)."""
    from beamlearn.batches import batch_origin, batch_rows, tag_batch, tag_rows

    def read() -> Iterator[pa.RecordBatch]:
        for raw in source():
            out = fitted.transform(raw)
            for c in keep:
                if c not in out.column_names and c in raw.schema.names:
                    out = out.append_column(c, raw.column(c))
            origin, rows, start = batch_origin(raw)[0], batch_rows(raw), 0
            for b in out.to_batches():
                b = tag_batch(b, origin, 0) if origin is not None else b
                yield tag_rows(b, rows[start:start + b.num_rows])
                start += b.num_rows

    return read


def _model(fitted: FittedPipeline) -> tuple[int, Any, dict[str, Any]]:
    from beamlearn.models.base import Estimator

    for i in range(len(fitted.steps) - 1, -1, -1):
        if isinstance(fitted.steps[i], Estimator):
            return i, fitted.steps[i], fitted.states[i]
    raise SpecError("the pipeline has no model step")


def _classes(step: Any, state: dict[str, Any]) -> list[Any] | None:
    names = [n for n, _ in step.output_types(state) if n.startswith("proba_")]
    if not names:
        return None
    try:
        classes = list(step.classes_of(state))
    except (AttributeError, KeyError, TypeError):
        classes = list(state.get("model", {}).get("classes") or [])
    return classes if [f"proba_{c}" for c in classes] == names else None


def with_decision_threshold(fitted: FittedPipeline, threshold: float, pos_label: Any) -> FittedPipeline:
    """A copy of ``fitted`` whose binary classifier predicts ``pos_label`` when ``proba_{pos_label} >=
    threshold`` (stored in its fitted state, hence in the artifact).

    Examples
    --------
    >>> import beamlearn as bl
    >>> f = bl.Pipeline([bl.LogisticRegression(["x"], "y")]).fit({"x": [-2.0, -1.0, 1.0, 2.0], "y": [0, 0, 1, 1]})
    >>> g = with_decision_threshold(f, 0.99, 1)
    >>> f.transform_one({"x": 1.5})["prediction"], g.transform_one({"x": 1.5})["prediction"]
    (1, 0)
    """
    i, step, state = _model(fitted)
    classes = _classes(step, state)
    if classes is None or len(classes) != 2:
        raise SpecError("a decision threshold needs a binary classifier with class probabilities")
    if pos_label not in classes:
        raise SpecError(f"pos_label {pos_label!r} is not one of the classes {classes}")
    neg = classes[0] if classes[1] == pos_label else classes[1]
    states = list(fitted.states)
    states[i] = {**state, "decision_threshold": {"threshold": float(threshold), "pos_label": pos_label,
                                                 "labels": [neg, pos_label]}}
    return FittedPipeline(fitted.steps, states, fitted.input_schema, name=fitted.name, lineage=fitted.lineage)


def _fit_distributed(engine: str, spec: Spec, paths: Sequence[str], split: Split, batch_size: int,
                     beam_args: list[str] | None, errors: str | None) -> FittedPipeline:
    if engine == "beam":
        from beamlearn.engines.beam_jobs import run_fit

        args: dict[str, Any] = {"beam_args": beam_args}
    else:
        from beamlearn.engines.spark_jobs import run_fit  # type: ignore[assignment]

        args = {"spark_args": beam_args}
    schema = spec.resolve_schema(list(paths)) if spec.schema is not None else None
    return run_fit(spec.pipeline, list(paths), batch_size=batch_size, errors=errors, schema=schema,
                   lineage=spec.lineage(), part=(split, "train"), **args)


def _evaluator(engine: str, paths: Sequence[str], split: Split, keep: Sequence[str],
               beam_args: list[str] | None) -> Callable[..., EvaluationResult]:
    """``evaluate(which, fitted, **options)`` of one part of the data: in this process, or as one Beam job
    (:func:`beamlearn.engines.beam_eval.run_evaluate`) reading the same files through the same split filter."""

    def evaluate_part(which: str, fitted: FittedPipeline, *, batch_size: int, **options: Any) -> EvaluationResult:
        if engine == "beam":
            from beamlearn.engines.beam_eval import run_evaluate

            return run_evaluate(list(paths), model=fitted, part=(split, which), beam_args=beam_args,
                                batch_size=batch_size, **options)
        if engine == "spark":
            from beamlearn.engines.spark_jobs import run_evaluate as run_spark

            return run_spark(list(paths), model=fitted, part=(split, which), spark_args=beam_args,
                             batch_size=batch_size, keep=keep, **options)
        from beamlearn.metrics import evaluate

        return evaluate(_predicted(_part(paths, split, which, batch_size), fitted, keep), batch_size=batch_size,
                        **options)

    return evaluate_part


# ---------------------------------------------------------------------------------------------- the flow
def run(spec_path: str, *, engine: str = "local", beam_args: list[str] | None = None,
        data: Sequence[str] | None = None, output: str | None = None, batch_size: int | None = None,
        errors: str | None = None, progress: Callable[[int], None] | None = None) -> RunResult:
    """Run the whole flow of a run spec (see the module docstring); ``data``/``output`` override the spec's.

    Returns a :class:`RunResult`; a failing gate is reported in it (``passed``), not raised.
    """
    from beamlearn import io

    if engine not in ("local", "beam", "spark"):
        raise SpecError(f"engine must be 'local', 'beam' or 'spark', got {engine!r}")
    t0 = time.perf_counter()
    spec, cfg = read_run_spec(spec_path)
    paths = list(data) if data else cfg.data
    out_dir = output or cfg.output
    io.expand_paths(paths)  # a missing input is reported before anything runs
    size = batch_size or spec.batch_size or DEFAULT_BATCH_SIZE
    split = cfg.split
    assert split is not None
    seconds: dict[str, float] = {}

    if cfg.validate is not None:  # before training: bad data stops the run
        from beamlearn.profile.validate import check_before_run

        t = time.perf_counter()
        check_before_run(paths, cfg.validate, out_dir, engine=engine, batch_size=size, beam_args=beam_args)
        seconds["validate"] = time.perf_counter() - t
    t = time.perf_counter()
    if engine in ("beam", "spark"):
        fitted = _fit_distributed(engine, spec, paths, split, size, beam_args, errors)
    else:
        dead = io.DeadLetters(errors) if errors else "raise"
        fitted = spec.fit(_part(paths, split, "train", size), batch_size=size, errors=dead, progress=progress)
    seconds["fit"] = time.perf_counter() - t
    rows_train = int(fitted.lineage.get("rows", 0))
    passes = int(fitted.lineage.get("passes", 0))

    _, step, state = _model(fitted)
    ev = cfg.evaluate
    label = ev.get("label") or getattr(step, "label", None)
    if not label:
        raise SpecError(f"{spec.source}: evaluate: label: the model has no label; name the label column")
    prediction = ev.get("prediction") or step.output
    classes = _classes(step, state)
    pos_label = ev.get("pos_label")
    if classes is not None and len(classes) == 2 and pos_label is None:
        pos_label = classes[1]
    if classes is not None and len(classes) == 2 and pos_label not in classes:
        raise SpecError(f"{spec.source}: evaluate: pos_label {pos_label!r} is not one of the classes {classes}")
    score = ev.get("score")
    if score is None and classes is not None:
        score = f"proba_{pos_label}" if len(classes) == 2 else "proba_*"
    common = {"label": label, "prediction": prediction, "score": score, "pos_label": pos_label,
              "sample_weight": ev.get("sample_weight"), "batch_size": size}

    keep = [c for cols in ev.get("slices", ()) for c in cols] + [c for c in (label, ev.get("sample_weight")) if c]
    evaluate_part = _evaluator(engine, paths, split, keep, beam_args)
    threshold = None
    if ev.get("threshold") is not None and classes is not None and len(classes) == 2:
        t = time.perf_counter()
        crit = ev["threshold"]["criterion"].replace(" ", "")
        sweep = evaluate_part("train", fitted, threshold_criterion=crit, **common)
        seconds["threshold"] = time.perf_counter() - t
        passes += 1
        chosen = sweep.metrics["overall"].get("decision_threshold")
        if chosen is None:
            raise SpecError(f"{spec.source}: evaluate: threshold: no threshold meets {crit!r} on the train part")
        threshold = {**chosen, "pos_label": pos_label, "chosen_on": "train"}
        fitted = with_decision_threshold(fitted, chosen["threshold"], pos_label)
    elif ev.get("threshold") is not None:
        raise SpecError(f"{spec.source}: evaluate: threshold: only for a binary classifier with probabilities")

    t = time.perf_counter()
    result = evaluate_part("test", fitted, slices=ev.get("slices", ()), require=ev.get("require", ()),
                           min_slice_count=ev.get("min_slice_count", 30), n_bootstrap=ev.get("bootstrap", 0),
                           **common)
    seconds["evaluate"] = time.perf_counter() - t
    passes += 1

    overall = result.metrics["overall"]
    headline = {k: overall[k] for k in ("accuracy", "balanced_accuracy", "f1", "roc_auc", "average_precision",
                                        "mae", "rmse", "r2") if isinstance(overall.get(k), float)}
    info = {"split": repr(split), "rows_train": rows_train, "rows_test": int(result.metrics["rows"]),
            "decision_threshold": threshold}
    # metrics.json gets a "run" block too: its overall "decision_threshold" is the test part's own sweep
    # (informative), while the model predicts with the train-chosen one recorded here
    result.metrics["run"] = info
    fitted.lineage["run"] = {**info, "test_metrics": headline, "gates": [g.to_dict() for g in result.gates]}
    model_path = stores.join(stores.make_folder(out_dir), "model.blm")
    fitted.save(model_path)
    report = result.write_report(out_dir)
    seconds["total"] = time.perf_counter() - t0
    return RunResult(fitted, result, {"train": rows_train, "test": int(result.metrics["rows"])}, seconds,
                     {"model": model_path, "metrics": report["json"], "report": report["html"]},
                     threshold=threshold, passes=passes, engine=engine)


def summary_text(r: RunResult) -> str:
    """The plain-text summary ``beamlearn run`` prints: rows, passes, seconds, threshold, headline metrics,
    gates, and where the files went."""
    from beamlearn.report import summary_text as evaluation_text

    s = r.seconds
    lines = [f"run: {r.rows['train']:,} train rows, {r.rows['test']:,} test rows, {r.passes} passes, "
             f"{s['total']:.2f} s (fit {s['fit']:.2f} s"
             + (f", threshold {s['threshold']:.2f} s" if "threshold" in s else "")
             + f", evaluate {s['evaluate']:.2f} s; engine {r.engine})"]
    if r.threshold:
        t = r.threshold
        lines.append(f"decision threshold {t['threshold']:.4g} for class {t['pos_label']!r} ({t['criterion']} on "
                     f"the train part: precision {t['precision']:.4f}, recall {t['recall']:.4f}, f1 {t['f1']:.4f})")
    lines.append(evaluation_text(r.evaluation.to_dict()).replace("evaluate:", "test:", 1))
    lines.append(f"model  -> {r.paths['model']}")
    lines.append(f"report -> {r.paths['report']} (metrics: {r.paths['metrics']})")
    return "\n".join(lines)
