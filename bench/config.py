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
import math
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


def zero_allowed(default: int | float) -> Any:
    """A count or a learning rate whose 0 means something (full batch, off, all, frozen): exempt
    from the "at least 1" (counts) or "positive" (learning rates) rule of :func:`check_range`."""
    return dataclasses.field(default=default, metadata={"min": 0})


def check_range(field: dataclasses.Field, value: Any, where: str) -> None:
    """The range every numeric option keeps, by convention, so that a bad value is one clear
    line before any work rather than a traceback in the middle of a run:

    * a count (int) is at least 1 when its default is, at least 0 otherwise (or when the field
      is declared with :func:`zero_allowed`); an optional count, when given, is at least 1;
    * a real number (float) is finite and not negative; a dropout or a ``*_ratio`` is below 1;
      a learning rate (``lr``, ``*_lr``) whose default is positive stays positive;
    * the same for each element of a tuple of numbers.

    A method's own ``__post_init__`` adds what is particular to it (e.g. ``tau > 0``)."""
    name, default = field.name, field.default
    if isinstance(value, (tuple, list)):
        for item in value:
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                continue
            if isinstance(item, int) and item < 1:
                raise UserError(f"option {where}: expected positive integers, got {list(value)}")
            if isinstance(item, float) and not math.isfinite(item):
                raise UserError(f"option {where}: expected finite numbers, got {list(value)}")
        return
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        least = field.metadata.get("min", 1 if (isinstance(default, int) and default >= 1) or default is None else 0)
        if value < least:
            raise UserError(f"option {where}: expected an integer >= {least}, got {value}")
    elif isinstance(value, float):
        if not math.isfinite(value) or value < 0:
            raise UserError(f"option {where}: expected a finite number >= 0, got {value}")
        if ("dropout" in name or name.endswith("_ratio")) and value >= 1:
            raise UserError(f"option {where}: expected a fraction in [0, 1), got {value}")
        if (name == "lr" or name.endswith("_lr")) and isinstance(default, float) and default > 0 and value == 0 \
                and "min" not in field.metadata:
            raise UserError(f"option {where}: expected a positive learning rate, got {value}")


def apply_overrides(config: Any, overrides: dict[str, Any], section: str) -> Any:
    """Return a copy of dataclass ``config`` with ``overrides`` coerced to the field types and
    checked (:func:`check_range`, then the config's own ``__post_init__``)."""
    if not overrides:
        return config
    hints = typing.get_type_hints(type(config))
    fields = {f.name: f for f in dataclasses.fields(config)}
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
            raise did_you_mean(key, fields, "option", f" of {section!r} (in {section}.{key})")
        changes[key] = _coerce(value, hints[key], f"option {section}.{key}")
        check_range(fields[key], changes[key], f"{section}.{key}")
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
    if path.is_dir():
        raise UserError(f"--config {path}: is a directory; expected a TOML or JSON file")
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


def _plain(value: Any) -> Any:
    """A config value as a JSON record holds it (tuples become lists)."""
    return json.loads(json.dumps(value))


def config_differences(config: Any, recorded: dict[str, Any]) -> list[tuple[str, Any, Any, str]]:
    """How a record's ``config`` section differs from ``config`` (a resolved config dataclass):
    ``(option, recorded value, value in config, note)`` per option that differs, sorted.

    An option added after a record was made counts as the value its field declares in its
    metadata ``before`` (what such records ran with); without that, it is "unrecorded". An
    option the record has but the config no longer knows is "no longer an option". An option
    declared ``supplementary`` in its metadata only asks for supplementary test passes after
    the headline (:meth:`bench.method.Method.test_variants`; it changes neither training,
    selection nor the headline metrics), so it is no part of a record's identity: never a
    difference."""
    expected = _plain(dataclasses.asdict(config))
    before = {f.name: _plain(f.metadata["before"]) for f in dataclasses.fields(config) if "before" in f.metadata}
    supplementary = supplementary_options(type(config))
    out = []
    for key in sorted((recorded.keys() | expected.keys()) - supplementary):
        if key not in expected:
            out.append((key, recorded[key], None, "no longer an option"))
        elif key not in recorded:
            if key not in before:
                out.append((key, None, expected[key], "unrecorded"))
            elif before[key] != expected[key]:
                out.append((key, before[key], expected[key], "made before the option"))
        elif _plain(recorded[key]) != expected[key]:
            out.append((key, recorded[key], expected[key], ""))
    return out


def supplementary_options(config_cls: type) -> set[str]:
    """The options of ``config_cls`` declared ``supplementary`` (metadata): they only ask for
    supplementary test passes, so they are no part of a record's identity."""
    return {f.name for f in dataclasses.fields(config_cls) if f.metadata.get("supplementary")}


def normalized_config(config_cls: type, recorded: dict[str, Any]) -> dict[str, Any]:
    """A record's config with options added after it was made filled in from their ``before``
    metadata, and without its ``supplementary`` options: two records that ran with the same
    settings normalize to the same dict."""
    filled = {k: v for k, v in _plain(recorded).items() if k not in supplementary_options(config_cls)}
    for f in dataclasses.fields(config_cls):
        if f.name not in filled and "before" in f.metadata:
            filled[f.name] = _plain(f.metadata["before"])
    return filled
