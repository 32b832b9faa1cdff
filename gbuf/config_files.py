"""Typed option files: the one loader behind every command that takes ``--config``.

A configuration is a tree of dataclasses whose defaults are the published
recipe (``gbuf.train.config.TrainConfig``, ``gbuf.datasets.degrade.config.DegradeConfig``).
It resolves in three layers: the defaults, then a ``.toml``/``.yaml``/``.yml``
file with the same nesting as the dataclasses (any subset of it), then
overrides by dotted name (``--set data.val_frames=50`` or a command's own
flags). An unknown key, or a value of the wrong type, is a one-line
``GbufError`` naming the file (or ``--set``) and the key, so a typo never
silently falls back to a default.

Field types understood: ``bool``, ``int``, ``float`` (an integer is accepted
and becomes a float), ``str``, ``Literal[...]``, ``X | None``, ``list[X]``,
``dict`` (a free-form table) and nested dataclasses. A class may define
``validate(self, source)`` for the checks a type cannot express (ranges,
probabilities summing to 1); :func:`load` calls it last.

The resolved configuration is written back as TOML with ``tomli-w``
(:func:`to_toml`, :func:`save_toml`), itself a valid ``--config`` file. TOML has
no null, so an option whose value is None is left out of the file (it then
reads back as its default, which is None for every such option here).
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from gbuf.errors import GbufError, error_line

T = TypeVar("T")


def read_config_file(path: str | Path) -> dict:
    """The top-level table of a ``.toml``, ``.yaml`` or ``.yml`` file, as a dict.

    Errors name the file and the problem on one line.
    """
    path = Path(path)
    if not path.is_file():
        raise GbufError(f"{path}: no such config file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:  # TOML is UTF-8 by definition; YAML here too
        raise GbufError(f"{path}: not UTF-8 text (byte {err.start}); config files must be UTF-8") from None
    except OSError as err:
        raise GbufError(f"{path}: cannot read the config file ({err.strerror or err})") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise GbufError(f"{path}: config must be .toml, .yaml or .yml")
    except GbufError:
        raise
    except Exception as err:  # tomllib.TOMLDecodeError, yaml.YAMLError
        raise GbufError(f"{path}: cannot parse config: {error_line(err)}") from None
    if not isinstance(data, dict):
        raise GbufError(f"{path}: the top level must be a table of options")
    return data


def parse_set(items: Iterable[str], flag: str = "--set") -> dict[str, Any]:
    """``["data.val_frames=50", "run.out=r"]`` -> ``{"data.val_frames": 50, "run.out": "r"}``.

    Each value is read as a TOML value (``50``, ``1e-4``, ``true``, ``[1, 2]``,
    ``"text"``); what is not valid TOML is taken as plain text, so
    ``run.out=runs/a`` needs no quotes. The loader type-checks the result.
    """
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise GbufError(f"{flag} {item!r}: expected KEY=VALUE, e.g. data.val_frames=50")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        out[key.strip()] = value
    return out


# --------------------------------------------------------------------------- type checks


def _type_name(annotation) -> str:
    return getattr(annotation, "__name__", None) or str(annotation)


def coerce(value, annotation, where: str, source: str):
    """``value`` checked against one field type (see the module docstring); returns the stored value."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None:
            if type(None) in options:
                return None
            raise GbufError(f"{source}: {where} must not be empty (null)")
        (inner,) = [a for a in options if a is not type(None)]  # only ``X | None`` is used
        return coerce(value, inner, where, source)
    if origin is typing.Literal:
        allowed = typing.get_args(annotation)
        if isinstance(value, bool) or value not in allowed:
            raise GbufError(f"{source}: {where} must be one of {', '.join(map(str, allowed))}, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GbufError(f"{source}: {where} must be a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise GbufError(f"{source}: {where} must be an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise GbufError(f"{source}: {where} must be true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise GbufError(f"{source}: {where} must be a string, got {value!r}")
        return value
    if origin is list:
        (item,) = typing.get_args(annotation)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise GbufError(f"{source}: {where} must be a list, got {value!r}")
        return [coerce(v, item, f"{where}[{i}]", source) for i, v in enumerate(value)]
    if annotation is dict or origin is dict:
        if not isinstance(value, dict):
            raise GbufError(f"{source}: {where} must be a table, got {value!r}")
        return dict(value)
    raise AssertionError(f"unsupported config field type {_type_name(annotation)} at {where}")


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


# --------------------------------------------------------------------------- building and overlaying


def copy(obj: T) -> T:
    """A deep copy of a configuration (no section is shared with ``obj``)."""
    return _build(type(obj), dataclasses.asdict(obj), "", "config")


def _build(cls, values: dict, prefix: str, source: str):
    hints = _hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        value = values[field.name]
        annotation = hints[field.name]
        if dataclasses.is_dataclass(annotation):
            kwargs[field.name] = _build(annotation, value, f"{prefix}{field.name}.", source)
        else:
            kwargs[field.name] = coerce(value, annotation, prefix + field.name, source)
    return cls(**kwargs)


def overlay(obj: T, data: Mapping, source: str, prefix: str = "") -> T:
    """Set the options in nested ``data`` on ``obj`` (in place), type-checked; returns ``obj``."""
    if not isinstance(data, Mapping):
        raise GbufError(f"{source}: {prefix.rstrip('.') or 'the top level'} must be a table")
    hints = _hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        if key not in names:
            known = ", ".join(prefix + n for n in sorted(names))
            raise GbufError(f"{source}: unknown option {prefix}{key} (known here: {known})")
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            overlay(getattr(obj, key), value, source, f"{prefix}{key}.")
        else:
            setattr(obj, key, coerce(value, annotation, prefix + key, source))
    return obj


def _merged(base: dict, extra: Mapping) -> dict:
    out = dict(base)
    for key, value in extra.items():
        both = isinstance(value, Mapping) and isinstance(out.get(key), dict)
        out[key] = _merged(out[key], value) if both else value
    return out


def nest(flat: Mapping[str, Any]) -> dict:
    """``{"a.b": 1, "a": {"c": 2}}`` -> ``{"a": {"b": 1, "c": 2}}``: dotted names become nested tables."""
    nested: dict = {}
    for key, value in flat.items():
        *parents, last = str(key).split(".")
        entry = {last: value}
        for part in reversed(parents):
            entry = {part: entry}
        nested = _merged(nested, entry)
    return nested


def set_dotted(obj, key: str, value, source: str = "command line") -> None:
    """Set one option by its dotted name (``data.patch``), type-checked."""
    overlay(obj, nest({key: value}), source)


def get_dotted(obj, key: str):
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _drop_retired(data: dict, retired: Iterable[str], source: str) -> dict:
    """``data`` without the ``retired`` dotted options (logged), so files written before an
    option was removed still load."""
    for key in retired:
        *parents, last = key.split(".")
        cursor = data
        for part in parents:
            cursor = cursor.get(part) if isinstance(cursor, dict) else None
        if isinstance(cursor, dict) and last in cursor:
            del cursor[last]
            logging.getLogger(__name__).warning("%s: option %s is no longer used; ignored", source, key)
    return data


def load(cls: type[T], path: str | Path | None = None, overrides: Mapping[str, Any] | None = None, *,
         base: T | None = None, overrides_source: str = "command line", retired: Iterable[str] = ()) -> T:
    """``base`` (default: ``cls()``) <- the file at ``path`` <- ``overrides``, then ``validate``.

    ``overrides`` maps dotted names (``"data.patch"``) or section names to values
    (nested tables are merged). Errors name ``path`` or ``overrides_source``.
    ``retired``: dotted names of removed options that a file may still hold (ignored).
    """
    config = copy(base if base is not None else cls())
    source = overrides_source
    if path is not None:
        source = str(path)
        overlay(config, _drop_retired(read_config_file(path), retired, source), source)
    if overrides:
        overlay(config, nest(overrides), overrides_source)
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate(source)
    return config


# --------------------------------------------------------------------------- output


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def _without_none(value):
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def to_toml(obj, header: str | None = None) -> str:
    """The configuration as TOML text (``tomli-w``), optionally under a ``# header`` comment."""
    import tomli_w

    text = tomli_w.dumps(_without_none(to_dict(obj)))
    if header:
        text = "".join(f"# {line}\n" for line in header.splitlines()) + text
    return text


def save_toml(obj, path: str | Path, header: str | None = None) -> Path:
    """Write :func:`to_toml` to ``path`` atomically (a reader never sees half a file)."""
    from gbuf import fileio

    return fileio.write_text(path, to_toml(obj, header))
