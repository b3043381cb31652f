"""Answerer settings: frozen, validated dataclasses built from ``key=value`` text (CLI, YAML, Prefect parameters).

Every registered answerer names its settings class (model/answerers.py ``register_answerer(..., settings=...)``).
Settings arrive as strings (``--answerer-opt max_new_tokens=256``) or YAML scalars (``--answerer-config``); both
are normalised to text with :func:`settings_text` and parsed here by each field's declared type, so the driver
validates them before anything starts and the actor builds the very same object. An unknown key or a bad value
raises :class:`SettingsError` naming the answerer, the key and what is allowed.

Field types understood: ``str``, ``int``, ``float``, ``bool`` (true/false/yes/no/on/off/1/0), ``Literal[...]``
choices, and ``X | None`` (the text "none" or "" gives None). Range checks belong in the class's
``__post_init__`` and raise ValueError; they are reported the same way.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from model.errors import ArfscoreError

__all__ = ["NoSettings", "SettingsError", "parse_settings", "settings_dict", "settings_text"]

S = TypeVar("S")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_NONE = {"", "none", "null"}


class SettingsError(ArfscoreError, ValueError):
    """An answerer setting that is unknown or has a bad value (the message names the answerer and the key)."""


@dataclasses.dataclass(frozen=True)
class NoSettings:
    """Settings of answerers with nothing to set (random, frequent)."""

    threads: int = 0  # accepted from the flow (CPUs per actor) and ignored


def settings_text(value: Any) -> str:
    """A YAML / Python scalar as the text a CLI user would type (True -> "true", None -> "none")."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise SettingsError(f"settings values must be scalars (text, numbers, true/false), got {value!r}")


def _optional_inner(kind: Any) -> Any | None:
    """X for ``X | None`` / ``Optional[X]``, else None."""
    if get_origin(kind) in (Union, types.UnionType):
        args = [arg for arg in get_args(kind) if arg is not type(None)]
        if len(args) == 1 and len(get_args(kind)) == 2:
            return args[0]
    return None


def _describe(kind: Any) -> str:
    inner = _optional_inner(kind)
    if inner is not None:
        return f"{_describe(inner)} or none"
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(str(choice) for choice in get_args(kind))
    return {str: "text", int: "an integer", float: "a number", bool: "true or false"}.get(kind, str(kind))


def _coerce(kind: Any, text: str) -> Any:
    inner = _optional_inner(kind)
    if inner is not None:
        if text.strip().lower() in _NONE:
            return None
        try:
            return _coerce(inner, text)
        except ValueError:
            raise ValueError(f"expected {_describe(kind)}") from None
    if get_origin(kind) is Literal:
        choices = get_args(kind)
        if text not in choices:
            raise ValueError(f"expected {_describe(kind)}")
        return text
    if kind is bool:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError("expected true or false")
    if kind is int:
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError("expected an integer") from None
    if kind is float:
        try:
            value = float(text.strip())
        except ValueError:
            raise ValueError("expected a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("expected a finite number")
        return value
    if kind is str:
        return text
    raise TypeError(f"unsupported settings field type {kind!r}")


def parse_settings(cls: type[S], params: Mapping[str, Any], answerer: str) -> S:
    """Build the frozen settings ``cls`` from ``params`` (text or scalars); SettingsError names the bad key."""
    hints = get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise SettingsError(f"answerer {answerer}: unknown setting(s) {unknown}; known: {sorted(known)}")
    values: dict[str, Any] = {}
    for key, raw in params.items():
        text = settings_text(raw)
        try:
            values[key] = _coerce(hints[key], text)
        except ValueError as error:
            raise SettingsError(f"answerer {answerer}: setting {key}={text!r}: {error}") from None
    missing = [
        name for name, f in known.items()
        if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise SettingsError(f"answerer {answerer}: required setting(s) {missing} missing (use --answerer-opt KEY=VALUE)")
    try:
        return cls(**values)
    except SettingsError:
        raise
    except (ValueError, TypeError) as error:
        raise SettingsError(f"answerer {answerer}: {error}") from None


def settings_dict(settings: Any) -> dict[str, Any]:
    """Every field of a settings object, defaults included (what the run manifest records)."""
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}

