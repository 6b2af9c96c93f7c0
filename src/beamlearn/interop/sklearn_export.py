"""beamlearn -> scikit-learn: :func:`to_sklearn` (also :meth:`beamlearn.FittedPipeline.to_sklearn`) builds a fitted
scikit-learn ``ColumnTransformer`` (followed by the estimator in a ``Pipeline`` when the pipeline ends with one)
that transforms and predicts as the fitted beamlearn pipeline does.

Steps are grouped by the columns they read: a step reading original input columns starts an entry of the
ColumnTransformer; a step reading exactly every output of an entry joins it (a nested ``Pipeline``); columns no
step reads pass through (``remainder="passthrough"``, the estimator's label and weight excluded);
:class:`~beamlearn.Drop` becomes a ``"drop"`` entry.  Output names are beamlearn's
(``verbose_feature_names_out=False``); the column order is scikit-learn's (entries in order, then the remainder),
and a linear estimator's coefficients are permuted to it.  Each entry is fitted on one synthetic row through
:class:`sklearn.frozen.FrozenEstimator` (its fit does nothing), so the ColumnTransformer computes its own
bookkeeping, then the frozen wrappers are removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from beamlearn.errors import ConversionError
from beamlearn.interop.sklearn_models import model_to_sklearn
from beamlearn.interop.sklearn_steps import Unsupported, translation_for_step
from beamlearn.models.base import Estimator
from beamlearn.pipeline import FittedPipeline
from beamlearn.steps import Drop, OneHotEncoder, OrdinalEncoder, Step

__all__ = ["to_sklearn"]


@dataclass
class _Group:
    """One ColumnTransformer entry: the original columns it reads, its fitted sklearn transformers, and the
    columns it outputs so far (sklearn order)."""

    columns: list[str]
    transformers: list[Any] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)


def _outputs(step: Step, before: pa.Schema, after: pa.Schema) -> list[str]:
    inputs = step.input_columns()
    others = set(before.names) - set(inputs)
    out = [n for n in after.names if n not in others]
    return list(inputs) if set(out) == set(inputs) else out


def _sample_row(fitted: FittedPipeline, columns: Sequence[str]) -> dict[str, Any]:
    """One row every entry can transform: an encoder's first category for the columns it reads, else 0 / ''."""
    row: dict[str, Any] = {c: ("" if pa.types.is_string(fitted.input_schema.field(c).type) else 0)
                           for c in columns}
    for step, state in zip(fitted.steps, fitted.states):
        if isinstance(step, (OneHotEncoder, OrdinalEncoder)):
            for c, v in zip(step.input_columns(), state["vocabulary"]):
                if c in row and v["categories"]:
                    row[c] = v["categories"][0]
    return row


def to_sklearn(fitted: FittedPipeline) -> Any:
    """A fitted scikit-learn object equal to ``fitted`` (see the module docstring).

    Raises :class:`~beamlearn.errors.ConversionError` listing every step it cannot express.

    Examples
    --------
    >>> import beamlearn as bl
    >>> import pandas as pd
    >>> f = bl.Pipeline([bl.StandardScaler(["a"])]).fit({"a": [1.0, 2.0, 3.0], "b": [5.0, 6.0, 7.0]})
    >>> ct = to_sklearn(f)
    >>> ct.transform(pd.DataFrame({"a": [2.0], "b": [1.0]})).tolist()
    [[0.0, 1.0]]
    """
    problems: list[str] = []
    groups: list[_Group] = []
    owner: dict[str, int] = {}
    untouched = list(fitted.input_schema.names)
    dropped: list[str] = []
    estimator: tuple[Step, dict[str, Any]] | None = None
    schemas = [*fitted.step_schemas, fitted.output_schema]
    for i, (step, state) in enumerate(zip(fitted.steps, fitted.states)):
        where = f"step {i} ({type(step).__name__})"
        if isinstance(step, Estimator):
            if i != len(fitted.steps) - 1:
                problems.append(f"{where}: an estimator must be the last step to become a scikit-learn Pipeline")
            estimator = (step, state)
            continue
        ins = step.input_columns()
        if isinstance(step, Drop):
            if all(c in untouched for c in ins):
                dropped += ins
                untouched = [c for c in untouched if c not in ins]
            else:
                problems.append(f"{where}: dropping outputs of other steps is not supported")
            continue
        tr = translation_for_step(step)
        if tr is None:
            problems.append(f"{where}: {type(step).__name__} has no scikit-learn counterpart here")
            continue
        if all(c in untouched for c in ins):
            group, named = _Group(list(ins)), True
            groups.append(group)
            untouched = [c for c in untouched if c not in ins]
            order = list(ins)
        elif {owner.get(c) for c in ins} == {owner.get(ins[0])} and owner.get(ins[0]) is not None \
                and set(ins) == set(groups[owner[ins[0]]].outputs):
            group, named = groups[owner[ins[0]]], False
            order = group.outputs
        else:
            problems.append(f"{where}: reads {ins}, which are neither untouched input columns nor exactly the "
                            "outputs of one earlier group of steps")
            continue
        try:
            group.transformers.append(tr.to_sklearn(step, state, order, schemas[i], named))
            group.names.append(type(step).__name__.lower())
        except Unsupported as exc:
            problems.append(f"{where}: {exc}")
            continue
        group.outputs = _outputs(step, schemas[i], schemas[i + 1])
        for c in group.outputs:
            owner[c] = groups.index(group)
    excluded = [] if estimator is None else [c for c in (estimator[0].label, estimator[0].sample_weight) if c]
    groups, remainder = _ordered(fitted, groups, [c for c in untouched if c not in excluded])
    model = None
    if estimator is not None:
        features = [c for g in groups for c in g.outputs] + remainder
        try:
            model = model_to_sklearn(*estimator, features)
        except Unsupported as exc:
            problems.append(f"step {len(fitted.steps) - 1} ({type(estimator[0]).__name__}): {exc}")
    if problems:
        raise ConversionError("cannot convert this fitted pipeline to scikit-learn:\n- " + "\n- ".join(problems))
    inputs = [c for c in fitted.input_schema.names if c not in excluded]
    ct = _column_transformer(fitted, groups, dropped, inputs)
    if model is None:
        return ct
    from sklearn.pipeline import Pipeline as SkPipeline

    return SkPipeline([("columns", ct), ("model", model)])


def _ordered(fitted: FittedPipeline, groups: list[_Group], remainder: list[str]) -> tuple[list[_Group], list[str]]:
    """Entries in the column order a converted scikit-learn object had (``lineage["sklearn"]["columns"]``), so a
    round trip gives the same matrix: untouched columns placed before an entry become passthrough entries.
    Without that record, entries keep the step order and untouched columns come last."""
    order = [b for _, b in fitted.lineage.get("sklearn", {}).get("columns", [])]
    if not order or any(c not in order for g in groups for c in g.outputs):
        return groups, remainder
    pos = {c: i for i, c in enumerate(order)}
    last = max((pos[c] for g in groups for c in g.outputs), default=-1)
    early = [c for c in remainder if pos.get(c, len(order)) < last]
    entries = groups + [_Group([c], ["passthrough"], [c], ["passthrough"]) for c in early]
    entries.sort(key=lambda g: min(pos[c] for c in g.outputs))
    return entries, [c for c in remainder if c not in early]


def _column_transformer(fitted: FittedPipeline, groups: list[_Group], dropped: list[str],
                        inputs: list[str]) -> Any:
    from sklearn.base import clone
    from sklearn.compose import ColumnTransformer
    from sklearn.frozen import FrozenEstimator
    from sklearn.pipeline import Pipeline as SkPipeline

    entries, inner = [], []
    for k, g in enumerate(groups):
        if g.transformers == ["passthrough"]:
            entries.append((f"passthrough{k}", "passthrough", list(g.columns)))
            continue
        est = g.transformers[0] if len(g.transformers) == 1 else SkPipeline(list(zip(g.names, g.transformers)))
        name = f"{g.names[0]}{k}"
        entries.append((name, FrozenEstimator(est), list(g.columns)))
        inner.append(est)
    if dropped:
        entries.append(("drop", "drop", list(dropped)))
    ct = ColumnTransformer(entries, remainder="passthrough", verbose_feature_names_out=False)
    sample = pa.table({c: pa.array([v], type=fitted.input_schema.field(c).type)
                       for c, v in _sample_row(fitted, inputs).items()}).to_pandas()
    ct.fit(sample)
    fitted_entries = iter(inner)
    ct.transformers_ = [(n, next(fitted_entries) if isinstance(t, FrozenEstimator) else t, c)
                        for n, t, c in ct.transformers_]
    ct.transformers = [(n, clone(t.estimator) if isinstance(t, FrozenEstimator) else t, c)
                       for n, t, c in ct.transformers]
    return ct
