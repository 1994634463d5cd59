"""Turn plain dicts (from YAML, ``--set`` overrides or Flower run configs) into frozen config dataclasses.

Validation happens here, at the edge, once: unknown keys (with the closest valid key suggested), wrong
types and out-of-range values raise :class:`~mtmedformer.errors.ConfigError` naming the key's full
dotted path and what to do. Range checks live in each dataclass's ``__post_init__`` and raise
:class:`FieldError`; this module adds the path.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from mtmedformer.errors import ConfigError

T = TypeVar("T")


class FieldError(ConfigError):
    """Raised by a config dataclass's ``__post_init__``; the loader prefixes the parent key path."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def reject_non_finite(obj: Any, *, allow_inf: typing.Iterable[str] = ()) -> None:
    """Raise :class:`FieldError` for the first float field of the dataclass ``obj`` that is NaN or infinite.

    Every config dataclass calls this first in ``__post_init__``: comparisons with NaN are false, so a range
    check such as ``if lr <= 0`` lets NaN through, and an infinite budget or timeout never ends. Tuples of
    floats are checked element by element.

    Parameters
    ----------
    obj
        A config dataclass instance.
    allow_inf
        Names of fields where ``+inf`` is a meaningful value (e.g. "no prior"); NaN and ``-inf`` stay errors.

    Raises
    ------
    FieldError
        Naming the field, so that the loader reports its full key path.
    """
    allowed = set(allow_inf)
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if not isinstance(item, float) or math.isfinite(item):
                continue
            if f.name in allowed and item == math.inf:
                continue
            hint = " (.inf is allowed here, NaN and -inf are not)" if f.name in allowed else ""
            raise FieldError(f.name, f"must be a finite number, got {value}{hint}")


def suggest(name: str, options: typing.Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest option, or ``""`` when none is close."""
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping of {tp.__name__} settings, got {value!r}")
        return from_dict(tp, value, path)
    if origin is Literal:
        options = get_args(tp)
        if value not in options:
            hint = suggest(str(value), [str(o) for o in options])
            raise ConfigError(f"{path}: {value!r} is not one of {list(options)}.{hint}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{path}: a value is required here, got null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: {value!r} fits none of {_type_name(tp)}")
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{path}: expected a list of {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        key_tp, val_tp = get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return {_coerce(k, key_tp, path): _coerce(v, val_tp, _join(path, str(k))) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config field type {tp!r} at {path}")  # a programming error, not user input


def from_dict(cls: type[T], data: Mapping[str, Any] | None, path: str = "") -> T:
    """Build the frozen dataclass ``cls`` from ``data``, validating every key and value.

    Parameters
    ----------
    cls
        A dataclass type whose fields are typed with the forms this module supports (bool, int, float,
        str, ``Literal``, ``X | None``, ``tuple[X, ...]``, ``dict[str, X]``, nested dataclasses).
    data
        The values; missing keys keep their defaults. ``None`` means all defaults.
    path
        The dotted key path of ``data`` in the whole config, used in error messages.

    Raises
    ------
    ConfigError
        On an unknown key, a wrong type or a value its dataclass rejects; the message names the path.
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            where = f"'{path}'" if path else "the top level"
            raise ConfigError(
                f"{_join(path, str(key))}: unknown key in {where}.{suggest(str(key), names)} "
                f"Valid keys: {', '.join(names)}."
            )
        kwargs[key] = _coerce(value, hints[key], _join(path, key))
    try:
        return cls(**kwargs)
    except FieldError as exc:
        raise ConfigError(f"{_join(path, exc.field)}: {exc.message}") from None


def to_dict(obj: Any) -> Any:
    """Convert a config dataclass (recursively) to plain YAML-safe Python values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def parse_overrides(items: typing.Iterable[str]) -> dict[str, Any]:
    """Turn ``["train.epochs=3", "model.tasks=[classification]"]`` into a nested dict.

    Values are parsed as YAML scalars/lists, so ``3`` is an int, ``true`` a bool, ``[a, b]`` a list.

    Raises
    ------
    ConfigError
        If an item has no ``=`` or an empty key.
    """
    nested: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE with a dotted key, e.g. train.epochs=3")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({exc})") from None
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: '{part}' is set both as a value and as a section")
        node[parts[-1]] = value
    return nested


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``update`` merged in recursively (``update`` wins)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``.

    Raises
    ------
    ConfigError
        If the file is missing, is not valid YAML, or does not hold a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass the path of a YAML file (see configs/)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data
