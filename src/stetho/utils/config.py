"""Typed configuration dataclasses that save to JSON/YAML and rebuild exactly.

Every stetho config is a ``@dataclass`` that inherits :class:`ConfigBase`. Configs nest, validate
their keys on load (an unknown key is an error that lists the valid ones), coerce JSON lists back to
tuples, check ``Literal`` choices, and apply dotted command-line overrides such as
``train.lr=1e-4``.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Opt(ConfigBase):
    ...     lr: float = 5e-5
    >>> Opt.from_dict({"lr": 1e-3}).lr
    0.001
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from stetho.utils.errors import StethoError
from stetho.utils.io import atomic_write_text

__all__ = ["ConfigBase", "ConfigError"]

logger = logging.getLogger(__name__)

T = TypeVar("T", bound="ConfigBase")


class ConfigError(StethoError, ValueError):
    """A configuration value or key is invalid."""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a JSON/YAML value to the annotated type ``tp`` (recursively), or raise ConfigError."""
    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return _coerce_union(value, tp, where)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(
                f"{where}: {value!r} is not a valid choice; expected one of {list(get_args(tp))}"
            )
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return _from_dict(tp, value, where)
    if origin in _CONTAINERS:
        return _CONTAINERS[origin](value, get_args(tp), where)
    if tp in _SCALARS:
        return _SCALARS[tp](value, where)
    return value


def _coerce_union(value: Any, tp: Any, where: str) -> Any:
    args = get_args(tp)
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(value, arg, where)
        except (ConfigError, TypeError, ValueError) as err:
            errors.append(str(err))
    raise ConfigError(f"{where}: {value!r} matches none of {tp}: {'; '.join(errors)}")


def _coerce_tuple(value: Any, args: tuple[Any, ...], where: str) -> tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if args and len(args) != len(value):
        raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
    return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))


def _coerce_list(value: Any, args: tuple[Any, ...], where: str) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    return [_coerce(v, args[0] if args else Any, f"{where}[{i}]") for i, v in enumerate(value)]


def _coerce_dict(value: Any, args: tuple[Any, ...], where: str) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    kt, vt = args if args else (Any, Any)
    return {_coerce(k, kt, where): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}


def _coerce_float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    try:
        return float(value)
    except ValueError as err:
        raise ConfigError(f"{where}: expected a number, got {value!r}") from err


def _coerce_int(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError as err:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from err
    if not isinstance(value, int):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    return value


def _coerce_bool(value: Any, where: str) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    return value


def _coerce_str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


_CONTAINERS: dict[Any, Callable[[Any, tuple[Any, ...], str], Any]] = {
    tuple: _coerce_tuple,
    list: _coerce_list,
    dict: _coerce_dict,
}
_SCALARS: dict[Any, Callable[[Any, str], Any]] = {
    float: _coerce_float,
    int: _coerce_int,
    bool: _coerce_bool,
    str: _coerce_str,
}


def _apply_aliases(cls: type[Any], data: dict[str, Any], where: str) -> dict[str, Any]:
    """Old key names (``cls.config_aliases``: old → new) read as the new ones."""
    aliases: dict[str, str] = getattr(cls, "config_aliases", {})
    for old, new in aliases.items():
        if old not in data:
            continue
        if new in data:
            raise ConfigError(
                f"{where or cls.__name__}: both {old!r} (the old name) and {new!r} are set; "
                f"keep only {new!r}"
            )
        data[new] = data.pop(old)
        logger.info("config key %s%s is now called %r", f"{where}." if where else "", old, new)
    return data


def _from_dict(cls: type[Any], data: dict[str, Any], where: str) -> Any:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    data = _apply_aliases(cls, data, where)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown key(s) {unknown}; valid keys are {sorted(fields)}"
        )
    kwargs = {
        name: _coerce(value, hints[name], f"{where}.{name}" if where else name)
        for name, value in data.items()
    }
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{where or cls.__name__}: {err}") from err


def _strip_optional(tp: Any) -> Any:
    """``X | None`` → ``X``; other types unchanged."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _optional_dict(tp: Any) -> bool:
    return get_origin(_strip_optional(tp)) is dict


def _to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


class ConfigBase:
    """Mixin for ``@dataclass`` configs: dict/JSON/YAML round trips, validation and overrides.

    ``config_aliases`` (old key → new key) lets renamed keys load from old files, saved
    artifacts and ``--set`` overrides.
    """

    #: Renamed keys: old name → current field name.
    config_aliases: ClassVar[dict[str, str]] = {}

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible nested dict of every field."""
        return typing.cast(dict[str, Any], _to_jsonable(self))

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        """Build the config from a mapping, validating keys, types and choices.

        Raises:
            ConfigError: on an unknown key (the message lists the valid ones) or a bad value.
        """
        return typing.cast(T, _from_dict(cls, dict(data), ""))

    def to_json(self, indent: int = 2) -> str:
        """Serialise to a JSON string."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Atomically write the config as JSON (``.json``) or YAML (``.yaml``/``.yml``)."""
        path = Path(path)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))
        else:
            atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls: type[T], path: str | os.PathLike[str]) -> T:
        """Read a config saved by :meth:`save` (JSON or YAML)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"cannot read config file {path}: {err}") from err
        try:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text) or {}
            else:
                data = json.loads(text)
        except Exception as err:
            raise ConfigError(
                f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {err}"
            ) from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        try:
            return cls.from_dict(data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from err

    def override(self: T, assignments: list[str] | tuple[str, ...]) -> T:
        """Return a copy with dotted ``key=value`` overrides applied (values parsed as YAML).

        Example: ``cfg.override(["train.lr=1e-4", "lora.targets=[q,v]"])``.
        """
        import yaml

        data = self.to_dict()
        for item in assignments:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like key.sub=value")
            key, raw = item.split("=", 1)
            node: Any = data
            tp: Any = type(self)  # the type that `node` was built from
            parts = key.strip().split(".")
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                if dataclasses.is_dataclass(tp):
                    hints = get_type_hints(tp)
                    part = getattr(tp, "config_aliases", {}).get(part, part)
                    if part not in hints or not isinstance(node, dict):
                        valid = sorted(f.name for f in dataclasses.fields(tp))
                        raise ConfigError(
                            f"override {item!r}: unknown key {part!r}; valid keys are {valid}"
                        )
                    tp = hints[part]
                elif get_origin(tp) is dict or _optional_dict(tp):
                    if node is None:  # an unset optional mapping: start an empty one
                        raise ConfigError(f"override {item!r}: {parts[i - 1]!r} is not set")
                    args = get_args(_strip_optional(tp))
                    tp = args[1] if len(args) == 2 else Any  # free-form keys allowed
                else:
                    raise ConfigError(f"override {item!r}: {parts[i - 1]!r} has no sub-keys")
                if last:
                    node[part] = yaml.safe_load(raw) if raw.strip() else raw
                else:
                    tp = _strip_optional(tp)
                    if part not in node or node[part] is None:
                        if get_origin(tp) is dict:
                            node[part] = {}
                        else:
                            raise ConfigError(f"override {item!r}: {part!r} is not set")
                    node = node[part]
        return type(self).from_dict(data)

    def replace(self: T, **changes: Any) -> T:
        """Return a copy with some fields replaced (``dataclasses.replace``)."""
        return typing.cast(T, dataclasses.replace(typing.cast(Any, self), **changes))
