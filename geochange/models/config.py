"""A model's config from values a user gave (``-p KEY=VALUE``, a checkpoint): known keys, right types.

Every refusal is one line that names the key and lists the settings the model takes with their types,
so ``-p bins=abc`` or ``-p foo=1`` tells the user what to write instead.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing

from geochange.errors import GeochangeError


def make_config(model: str, cls: type, values: dict):
    """``cls(**values)`` after checking every key and value against the dataclass's fields."""
    if not dataclasses.is_dataclass(cls):   # a config of another kind checks itself
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise GeochangeError(f"bad setting for model {model}: {exc}") from None
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    checked = {}
    for key, value in values.items():
        if key not in hints or key not in fields:
            raise GeochangeError(f"model {model} has no setting {key!r}; it takes {settings(cls)}")
        checked[key] = _coerce(model, key, value, hints[key], cls)
    try:
        return cls(**checked)
    except (TypeError, ValueError) as exc:
        raise GeochangeError(f"bad setting for model {model}: {exc}") from None


def settings(cls: type) -> str:
    """``"bins (int), measure (str), ..."``: what a model's config takes."""
    hints = typing.get_type_hints(cls)
    return ", ".join(f"{f.name} ({type_name(hints[f.name])})" for f in dataclasses.fields(cls))


def type_name(hint) -> str:
    """A type hint as a user reads it: ``int``, ``float or none``, ``list of int``."""
    options = _union(hint)
    if options:
        return " or ".join(type_name(h) for h in options)
    if hint is type(None):
        return "none"
    origin = typing.get_origin(hint)
    if hint is tuple or origin is tuple:
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return f"list of {type_name(args[0])}" if args else "list"
    return getattr(hint, "__name__", str(hint))


def _union(hint) -> tuple:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return ()


def _coerce(model: str, key: str, value, hint, cls: type):
    """``value`` as ``hint`` wants it (an int for a float, a list for a tuple), or a one-line refusal."""
    options = _union(hint) or (hint,)
    for option in options:
        ok, out = _as(value, option)
        if ok:
            return out
    raise GeochangeError(f"model {model}: {key} must be {type_name(hint)}, not {value!r}; "
                         f"it takes {settings(cls)}")


def _as(value, hint) -> tuple[bool, object]:
    if hint is type(None):
        return value is None, None
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return ok, float(value) if ok else value
    if hint is str:
        return isinstance(value, str), value
    if hint is tuple or typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            return False, value
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if args:
            items = [_as(v, args[0]) for v in value]
            if not all(ok for ok, _ in items):
                return False, value
            return True, tuple(v for _, v in items)
        return True, tuple(value)
    return True, value   # a type this check does not know: the config's own checks decide
