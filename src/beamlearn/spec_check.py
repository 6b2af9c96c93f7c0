"""Checking one step of a spec: its type and parameters, with "did you mean" suggestions and YAML line numbers.

:func:`beamlearn.spec.read_spec` validates a spec's top level and hands each entry of ``steps:`` (and the
``model:`` section) to the helpers here: an unknown step type or parameter gets a "did you mean" suggestion,
values are checked against the type hints of the step's ``__init__`` (with pydantic, in strict JSON mode), and
every message names the line of the offending key in the YAML source.
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Callable
from typing import Any

import yaml

from beamlearn.errors import BeamlearnError, SpecError
from beamlearn.steps.base import Step


# ---------------------------------------------------------------------------------------------- messages
def yaml_line(nodes: yaml.Node | None, *path: Any) -> int | None:
    """The 1-based line of the node at ``path`` (keys and indices) in the composed tree, or of its nearest
    existing ancestor."""
    node, line = nodes, None
    for key in path:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(key)]
            if not match:
                return line
            line = match[0][0].start_mark.line + 1
            node = match[0][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            return line
    return node.start_mark.line + 1 if node is not None else line


def did_you_mean(word: str, choices: Any) -> str:
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered and lowered[word.lower()] != word:
        return f"; did you mean {lowered[word.lower()]!r}?"
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6) or [
        lowered[c] for c in difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)]
    return f"; did you mean {close[0]!r}?" if close else ""


# ---------------------------------------------------------------------------------------------- steps
def validate_step(i: int, entry: Any, registry: dict[str, type[Step]], fail: Callable[..., SpecError],
                   loc: tuple = ()) -> Step:
    loc = loc or ("steps", i)
    where = f"steps[{i}]" if loc == ("steps", i) else ".".join(map(str, loc))
    if not isinstance(entry, dict):
        raise fail(f"{where}: expected a mapping with a 'step' key, got {type(entry).__name__} {entry!r}",
                   *loc)
    kind = entry.get("step")
    if kind is None:
        raise fail(f"{where}: missing the 'step' key (the step type, e.g. StandardScaler)", *loc)
    if not isinstance(kind, str) or kind not in registry:
        raise fail(f"{where}: unknown step type {kind!r}{did_you_mean(str(kind), registry)} (known: "
                   f"{', '.join(sorted(registry))})", *loc, "step")
    cls = registry[kind]
    where = f"{where} ({kind})"
    params = {k: v for k, v in entry.items() if k != "step"}
    names = cls.param_names()
    for key in params:
        if key not in names:
            raise fail(f"{where}: unknown parameter {key!r}{did_you_mean(str(key), names)} "
                       f"(parameters: {', '.join(names)})", *loc, key)
    hints, shown = _hints(cls)
    import inspect

    signature = inspect.signature(cls.__init__).parameters
    for key in names:
        if key not in params and signature[key].default is inspect.Parameter.empty:
            raise fail(f"{where}: missing required key {key!r}", *loc)
    for key, value in params.items():
        problem = _type_problem(hints.get(key), value)
        if problem is not None:
            raise fail(f"{where}: {key}: expected {shown.get(key, 'another type')}, got "
                       f"{type(value).__name__} {value!r}{problem}", *loc, key)
    try:
        return cls(**params)
    except (TypeError, ValueError, BeamlearnError) as exc:
        raise fail(f"{where}: {exc}", *loc) from None


def validate_model(entry: Any, registry: dict[str, type[Step]], fail: Callable[..., SpecError]) -> Step:
    """The ``model:`` section: a model step (``step: LogisticRegression`` + parameters), or any scikit-learn
    estimator (``sklearn: sklearn.ensemble.RandomForestClassifier`` + ``params:``) wrapped in SklearnModel."""
    from beamlearn.models.base import Estimator
    from beamlearn.models.sklearn import SklearnModel
    from beamlearn.models.sklearn_io import build_estimator

    if not isinstance(entry, dict) or ("step" in entry) == ("sklearn" in entry):
        raise fail("model: expected a mapping with either 'step' (a beamlearn model, e.g. LogisticRegression) or "
                   "'sklearn' (a scikit-learn estimator class path) and its parameters", "model")
    if "step" in entry:
        kind = entry["step"]
        models = {n: c for n, c in registry.items() if issubclass(c, Estimator) and c is not SklearnModel}
        if isinstance(kind, str) and kind in registry and kind not in models:
            raise fail(f"model: {kind!r} is not a model step (preprocessing goes under 'steps:'; models: "
                       f"{', '.join(sorted(models))})", "model", "step")
        return validate_step(0, entry, models, fail, ("model",))
    allowed = ["sklearn", "params"] + [n for n in SklearnModel.param_names() if n != "estimator"]
    for key in entry:
        if key not in allowed:
            raise fail(f"model: unknown key {key!r}{did_you_mean(str(key), allowed)} (keys: "
                       f"{', '.join(allowed)})", "model", key)
    params = entry.get("params") or {}
    if not isinstance(params, dict):
        raise fail(f"model: params: expected a mapping of {entry['sklearn']} parameters, got {params!r}",
                   "model", "params")
    spec = {"class": entry["sklearn"], "params": params}
    try:
        est = build_estimator(spec)
        validate = getattr(est, "_validate_params", None)  # scikit-learn's own parameter constraints
        if validate is not None:
            validate()
    except SpecError as exc:
        raise fail(f"model: {exc}", "model", "sklearn") from None
    except (TypeError, ValueError) as exc:
        raise fail(f"model: params: {exc}", "model", "params") from None
    rest = {k: v for k, v in entry.items() if k not in ("sklearn", "params")}
    return validate_step(0, {"step": "SklearnModel", "estimator": spec, **rest}, {"SklearnModel": SklearnModel},
                          fail, ("model",))


def _hints(cls: type) -> tuple[dict[str, Any], dict[str, str]]:
    """The resolved type hints of ``cls.__init__`` and their source spelling (for messages)."""
    raw = getattr(cls.__init__, "__annotations__", {})
    shown = {k: (v if isinstance(v, str) else getattr(v, "__name__", str(v))) for k, v in raw.items()}
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - unresolvable hints (names behind TYPE_CHECKING): validate what resolves
        hints = {}
        module = __import__(cls.__module__, fromlist=["_"])
        for k, v in raw.items():  # one by one: a hint that resolves is checked, the others are not
            probe = types.SimpleNamespace(__annotations__={k: v})
            try:
                hints[k] = typing.get_type_hints(probe, globalns=vars(module))[k]
            except Exception:  # noqa: BLE001, S112 - this hint stays unchecked
                continue
    hints.pop("return", None)
    return hints, shown


def _type_problem(hint: Any, value: Any) -> str | None:
    """None if ``value`` fits ``hint`` (or the hint cannot be checked), else an extra hint for the message
    (possibly empty)."""
    if hint is None or hint is Any:
        return None
    from pydantic import TypeAdapter, ValidationError

    try:
        adapter = TypeAdapter(hint)
    except Exception:  # noqa: BLE001 - hints pydantic cannot express (callables, arrays): not checked here
        return None
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):  # YAML dates and the like: check in Python mode
        try:
            adapter.validate_python(value, strict=True)
            return None
        except ValidationError as exc:
            return _pydantic_reason(exc)
    try:
        adapter.validate_json(text, strict=True)  # JSON mode: lists fit tuples, ints fit floats, no coercion
        return None
    except ValidationError as exc:
        return _pydantic_reason(exc)


def _pydantic_reason(exc: Any) -> str:
    msgs = {e.get("msg", "") for e in exc.errors()}
    literal = [m for m in msgs if m.startswith("Input should be") and "'" in m]
    return f" ({literal[0][0].lower()}{literal[0][1:]})" if literal else ""
