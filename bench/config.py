"""Typed configs with defaults, overridable from the command line and a TOML/JSON file.

Every method declares a ``@dataclass`` config.  Overrides arrive as ``section.field=value``
strings (``--set sasrec.hidden=64``) or as a file with one table per section::

    [sasrec]
    hidden = 64
    max_len = 200

Values are coerced to the field's declared type; an unknown field or an unparsable value
is a ``UserError`` that names the option and what was expected.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from bench.errors import UserError, did_you_mean


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:  # Optional[X] and X | None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, args[0], where)
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp) or (str,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        return origin(_coerce(v, inner, where) for v in value)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if tp is int:
            if isinstance(value, bool):
                raise ValueError(value)
            number = float(value) if isinstance(value, str) and "e" in value.lower() else value  # 1e3
            if isinstance(number, float) and not number.is_integer():
                raise ValueError(value)  # 2.5, 2.5e0: not an integer
            return int(number)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: expected a value of type {tp.__name__}, got {value!r}") from None
    return value


def apply_overrides(config: Any, overrides: dict[str, Any], section: str) -> Any:
    """Return a copy of dataclass ``config`` with ``overrides`` coerced to the field types."""
    if not overrides:
        return config
    hints = typing.get_type_hints(type(config))
    fields = {f.name for f in dataclasses.fields(config)}
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
            raise did_you_mean(key, fields, f"option of {section!r} (in {section}.{key})")
        changes[key] = _coerce(value, hints[key], f"option {section}.{key}")
    try:
        return dataclasses.replace(config, **changes)  # runs the config's own checks (__post_init__)
    except UserError as exc:
        raise UserError(f"{section}: {exc}") from None


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def parse_set_options(items: list[str]) -> dict[str, dict[str, str]]:
    """``["sasrec.hidden=64", "mf.lr=1e-3"]`` -> ``{"sasrec": {"hidden": "64"}, "mf": {"lr": "1e-3"}}``."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, field = key.strip().partition(".")
        if not sep or not dot or not section or not field:
            raise UserError(f"--set {item!r}: expected SECTION.FIELD=VALUE, e.g. --set sasrec.hidden=64")
        out.setdefault(section, {})[field] = value.strip()
    return out


def load_config_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a TOML or JSON file of ``{section: {field: value}}``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--config {path}: no such file")
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            data = tomllib.loads(path.read_text())
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"--config {path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'} ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UserError(f"--config {path}: expected one table per section, e.g. [sasrec] hidden = 64")
    return data


def merge_overrides(*layers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Later layers win, field by field."""
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in layer.items():
            out.setdefault(section, {}).update(values)
    return out


def resolve_config(method_cls: Any, preset: str = "", overrides: dict[str, Any] | None = None) -> Any:
    """A method's config, resolved once: its defaults, then the named preset (declared by the
    method beside its defaults, ``Method.presets``), then the user's overrides.

    A preset the method does not declare is an error that lists the ones it has.
    """
    config = method_cls.Config()
    if preset:
        presets = getattr(method_cls, "presets", {}) or {}
        if preset not in presets:
            have = ", ".join(sorted(presets)) or "none"
            raise UserError(f"--preset {preset!r}: method {method_cls.name!r} declares no such preset (it has: {have})")
        config = apply_overrides(config, presets[preset], f"{method_cls.name} (preset {preset})")
    return apply_overrides(config, overrides or {}, method_cls.name)
