"""Plain dict <-> frozen config dataclass, with type checks and "did you mean" errors for unknown keys."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from arco._checks import ConfigError, did_you_mean

__all__ = ["from_dict", "to_dict", "convert"]


def _convert_union(value: Any, tp: Any, key: str) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    errors = []
    for a in args:
        if a is type(None):
            continue
        try:
            return convert(value, a, key)
        except ConfigError as exc:
            errors.append(str(exc))
    raise ConfigError(errors[0] if errors else f"config key {key!r}: bad value {value!r}")


def _convert_tuple(value: Any, tp: Any, key: str) -> tuple:
    args = typing.get_args(tp)
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"config key {key!r} must be a list, got {type(value).__name__} {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if len(args) != len(value):
        raise ConfigError(f"config key {key!r} must be a list of {len(args)} values, got {list(value)!r}")
    return tuple(convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))


_SCALARS: dict[type, tuple[tuple[type, ...], str]] = {
    bool: ((bool,), "true or false"),
    int: ((int,), "an integer"),
    float: ((int, float), "a number"),
    str: ((str, int, float), "a string"),
}


def convert(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked (and converted) against type annotation ``tp``; ``key`` names it in errors."""
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} must be a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _convert_union(value, tp, key)
    if origin is tuple:
        return _convert_tuple(value, tp, key)
    if tp in _SCALARS:
        allowed, what = _SCALARS[tp]
        if not isinstance(value, allowed) or (tp is not bool and isinstance(value, bool)):
            raise ConfigError(f"config key {key!r} must be {what}, got {type(value).__name__} {value!r}")
        return tp(value)
    return value


def from_dict(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``values``; unknown keys, wrong types and values its ``__post_init__`` rejects
    raise :class:`ConfigError` naming the key."""
    where = prefix.rstrip(".") or "(top level)"
    if not isinstance(values, dict):
        raise ConfigError(f"config section {where} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            full = [f"{prefix}{n}" for n in names]
            raise ConfigError(
                f"unknown config key {prefix + str(key)!r}{did_you_mean(prefix + str(key), full)}; "
                f"valid keys{' in ' + where if prefix else ''}: {', '.join(names)}"
            )
        kwargs[key] = convert(value, hints[key], prefix + key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"config section {where}: {exc}") from exc


def to_dict(cfg: Any) -> Any:
    """Plain YAML-safe form of a (nested) config dataclass (tuples become lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(x) for x in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg
