"""Settings as dataclasses: a small typed loader and the checks each settings class runs on itself.

Dataclasses are the schema, YAML files and ``--set`` fill them. Unknown keys are errors with a "did you
mean" suggestion; values are coerced to the field's type (PyYAML reads ``5e-5`` as a string, ``--set``
values arrive as text); every error names the file and the key. Settings classes check their values in
their own ``__post_init__`` (PEFT style) with :func:`at_least_one`, :func:`positive` and :func:`within`,
naming the dotted key as the user writes it (``search.population``); the loader adds the file name. The
run configuration's schema is :mod:`rlprompt.config`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, TypeVar

import yaml

from rlprompt.errors import RLPromptError
from rlprompt.files import load_yaml

T = TypeVar("T")


def from_dict(cls: type[T], data: Any, source: str, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and coercing types."""
    where = f"{source}: " if source else ""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RLPromptError(f"{where}'{prefix.rstrip('.') or '(top level)'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    values = {}
    for key, value in data.items():
        if key not in fields:
            raise RLPromptError(
                f"{where}unknown key '{prefix}{key}'{_suggestion(str(key), list(fields), prefix)}"
            )
        values[key] = coerce(value, hints[key], source, f"{prefix}{key}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise RLPromptError(f"{where}{err}") from None


def coerce(value: Any, annotation: Any, source: str, key: str) -> Any:
    """``value`` as type ``annotation`` (scalars, optionals, lists, dicts, nested dataclasses)."""
    where = f"{source}: " if source else ""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, source, key)
            except RLPromptError as err:
                errors.append(err)
        raise errors[0]
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, source, f"{key}.")
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise RLPromptError(f"{where}'{key}' must be one of {choices}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise RLPromptError(f"{where}'{key}' must be a list, got {value!r}")
        return [coerce(v, args[0], source, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise RLPromptError(f"{where}'{key}' must be a mapping, got {value!r}")
        return dict(value)
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        raise RLPromptError(f"{where}'{key}' must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise RLPromptError(f"{where}'{key}' must be an integer, got {value!r}")
        try:
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, (int, float)) and float(number).is_integer():
                return int(number)
        except (ValueError, OverflowError):
            pass
        raise RLPromptError(f"{where}'{key}' must be an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, bool):
            raise RLPromptError(f"{where}'{key}' must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise RLPromptError(f"{where}'{key}' must be a number, got {value!r}") from None
        if not math.isfinite(number):  # a NaN passes every range check (nan <= 0 is False)
            raise RLPromptError(f"{where}'{key}' must be a finite number, got {value!r}")
        return number
    if annotation is str:
        if isinstance(value, (dict, list)) or value is None:
            raise RLPromptError(f"{where}'{key}' must be a string, got {value!r}")
        return str(value)
    raise RLPromptError(f"{where}'{key}': unsupported type {annotation!r}")  # a schema bug, not user input


def _suggestion(key: str, known: list[str], prefix: str) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{prefix}{close[0]}'?"
    return f"; known keys: {', '.join(prefix + k for k in known)}"


def apply_overrides(data: dict, overrides: list[str], cls: type) -> dict:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a config mapping, checking keys."""
    data = dict(data)
    for item in overrides:
        dotted, equals, raw = item.partition("=")
        if not equals or not dotted.strip():
            raise RLPromptError(f"--set {item!r}: expected key=value, e.g. rl.learning_rate=3e-4")
        parts = dotted.strip().split(".")
        annotation = _check_path(cls, parts, dotted)
        try:
            value = load_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            # Text that is not YAML is kept as text where a string goes ("{sentence} It was" is a template);
            # elsewhere (an unclosed "[0, 1", say) the YAML is what went wrong.
            if not _takes_text(annotation):
                problem = getattr(err, "problem", None) or str(err).splitlines()[0]
                raise RLPromptError(f"--set {item}: not valid YAML ({problem})") from None
            value = raw
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[parts[-1]] = value
    return data


def _takes_text(annotation: Any) -> bool:
    """Whether a field of this type may hold arbitrary text: ``str``, a ``Literal`` of names, or a union
    with one of them."""
    if annotation is str or annotation is Any or typing.get_origin(annotation) is typing.Literal:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_takes_text(a) for a in typing.get_args(annotation))
    return False


def _check_path(cls: type, parts: list[str], dotted: str) -> Any:
    """Check that the dotted key names a field, and return the field's type."""
    current: Any = cls
    for depth, part in enumerate(parts):
        prefix = ".".join(parts[:depth])
        prefix = f"{prefix}." if prefix else ""
        if not dataclasses.is_dataclass(current):
            raise RLPromptError(f"--set {dotted}: '{prefix.rstrip('.')}' has no sub-keys")
        hints = typing.get_type_hints(current)
        if part not in hints:
            names = [f.name for f in dataclasses.fields(current)]
            raise RLPromptError(
                f"--set {dotted}: unknown key '{prefix}{part}'{_suggestion(part, names, prefix)}"
            )
        current = hints[part]
        args = [a for a in typing.get_args(current) if a is not type(None)]
        if typing.get_origin(current) in (typing.Union, types.UnionType) and len(args) == 1:
            current = args[0]
    return current


def to_dict(config: Any) -> dict:
    """A plain mapping of a config, for writing the resolved config of a run."""
    return dataclasses.asdict(config)


# -- the checks settings classes run on their own values ---------------------------------------------


def at_least_one(section: str, **values) -> None:
    for key, value in values.items():
        if value is not None and value < 1:
            raise ValueError(f"'{_key(section, key)}' must be at least 1, got {value}")


def positive(section: str, **values) -> None:
    for key, value in values.items():
        if value is not None and value <= 0:
            raise ValueError(f"'{_key(section, key)}' must be positive, got {value}")


def within(section: str, key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"'{_key(section, key)}' must be between {low:g} and {high:g}, got {value}")


def _key(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key
