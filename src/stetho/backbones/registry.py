"""Backbone registry: ``@register_backbone``, the ``create_backbone`` factory (timm-style) and
``describe_backbones`` (the facts ``stetho backbones`` lists).

Trust: a backbone checkpoint holding pickled objects is unpickled only when the *caller* passes
``create_backbone(..., trust_checkpoint=True)`` in code (CLI ``--trust-checkpoint``). Overrides
read from a file (a detector folder's ``config.json``, an ensemble member's ``feature.overrides``)
go through :func:`architecture_overrides` first, which keeps architecture settings only and
refuses ``trust_checkpoint`` and every other key naming the file.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from stetho.backbones.base import Backbone
from stetho.utils.config import ConfigError

__all__ = [
    "BackboneEntry",
    "architecture_keys",
    "architecture_overrides",
    "create_backbone",
    "describe_backbones",
    "get_entry",
    "list_backbones",
    "register_backbone",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackboneEntry:
    """A registered backbone.

    Attributes:
        name: Registry name (``"beats"``, ``"ced-base"``, ``"efficientat-mn04"``, ...).
        factory: ``factory(checkpoint=None, **overrides) -> Backbone``. With ``checkpoint=None``
            the model is randomly initialised (tests, tiny configs); otherwise the checkpoint is
            resolved (path, URL, hub id or cache) and loaded with strict key matching.
        description: One line shown by ``stetho backbones``.
        needs_weights: False for weight-free backbones such as ``logmel``.
        arch_keys: The factory's architecture settings (the overrides a file may set);
            ``None``: derived from the factory's keyword parameters and the
            :meth:`~stetho.backbones.base.Backbone.extra_config` keys of a model built on
            ``meta``.
    """

    name: str
    factory: Callable[..., Backbone]
    description: str = ""
    needs_weights: bool = True
    arch_keys: frozenset[str] | None = None


_REGISTRY: dict[str, BackboneEntry] = {}


def register_backbone(
    name: str,
    description: str = "",
    needs_weights: bool = True,
    arch_keys: frozenset[str] | set[str] | None = None,
) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Decorator registering a factory function under ``name``.

    ``arch_keys``: the architecture settings a file may override (default: derived, see
    :class:`BackboneEntry`).
    """

    def deco(fn: Callable[..., Backbone]) -> Callable[..., Backbone]:
        if name in _REGISTRY and _REGISTRY[name].factory is not fn:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = BackboneEntry(
            name,
            fn,
            description or (fn.__doc__ or "").strip().split("\n")[0],
            needs_weights,
            None if arch_keys is None else frozenset(arch_keys),
        )
        architecture_keys.cache_clear()
        return fn

    return deco


def _ensure_builtin() -> None:
    # Importing the package registers the built-in backbones.
    import stetho.backbones  # noqa: F401


def list_backbones() -> list[str]:
    """Names of all registered backbones, sorted."""
    _ensure_builtin()
    return sorted(_REGISTRY)


def get_entry(name: str) -> BackboneEntry:
    """Return the registry entry for ``name``.

    Raises:
        KeyError: with the list of valid names.
    """
    _ensure_builtin()
    if name not in _REGISTRY:
        raise KeyError(f"unknown backbone {name!r}; valid choices: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


#: Keys a factory takes that are not architecture settings: never from an overrides dict.
_NOT_ARCHITECTURE = frozenset({"checkpoint", "trust_checkpoint", "trust"})


@functools.cache
def architecture_keys(name: str) -> frozenset[str]:
    """The architecture settings of backbone ``name``: the keys an overrides dict may hold.

    Declared at registration (``arch_keys``) or derived once per process: the factory's named
    keyword parameters plus the :meth:`~stetho.backbones.base.Backbone.extra_config` keys of a
    randomly initialised model built on the ``meta`` device (no memory, no download).
    ``checkpoint`` and ``trust_checkpoint`` are never among them.

    Raises:
        KeyError: unknown backbone.
        ConfigError: the model cannot be built to find its settings.
    """
    entry = get_entry(name)
    if entry.arch_keys is not None:
        return entry.arch_keys - _NOT_ARCHITECTURE
    params = inspect.signature(entry.factory).parameters.values()
    named = {
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    try:
        with torch.device("meta"):
            model = entry.factory(checkpoint=None)
        extra = set(model.extra_config())
    except Exception as err:
        raise ConfigError(
            f"cannot list the architecture settings of backbone {name!r} ({err}); register it "
            "with arch_keys=... to allow overrides"
        ) from err
    return frozenset((named | extra) - _NOT_ARCHITECTURE)


def architecture_overrides(
    name: str, overrides: Mapping[str, Any] | None, *, source: str
) -> dict[str, Any]:
    """Check overrides read from a file: architecture settings of ``name`` only.

    Use it on every overrides dict that comes from disk (a detector folder, an experiment file,
    an ensemble member) before passing it to :func:`create_backbone`: whatever the dict says,
    it cannot grant trust to a pickled checkpoint or pass any other non-architecture argument.

    Args:
        name: Registry name of the backbone.
        overrides: The dict as read (``None`` = no overrides).
        source: Where the dict was read, named in errors (e.g. ``"run/detector/config.json
            (experiment.backbone.overrides)"``).

    Returns:
        A copy of ``overrides`` (every key an architecture setting of ``name``).

    Raises:
        ConfigError: not a mapping, ``trust_checkpoint`` (trust comes from the caller only) or
            another key that is not an architecture setting; the message names ``source``.
    """
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise ConfigError(
            f"{source}: backbone overrides must be a mapping of architecture settings, got "
            f"{type(overrides).__name__}"
        )
    out = dict(overrides)
    bad = sorted(k for k in out if not isinstance(k, str))
    if bad:
        raise ConfigError(f"{source}: backbone override keys must be strings, got {bad!r}")
    refused = sorted(set(out) & _NOT_ARCHITECTURE)
    if refused:
        raise ConfigError(
            f"{source}: {refused[0]!r} in the backbone overrides is refused: overrides hold "
            "architecture settings only, and trust in a pickled checkpoint is granted by the "
            "person loading it (trust_checkpoint=True in code, --trust-checkpoint on the "
            "command line), never by a file. Remove the key"
        )
    if not out:
        return out
    valid = architecture_keys(name)
    unknown = sorted(set(out) - valid)
    if unknown:
        raise ConfigError(
            f"{source}: {unknown[0]!r} is not an architecture setting of backbone {name!r} "
            f"(unknown override(s) {unknown}; valid: {sorted(valid)}). Remove it"
        )
    return out


def create_backbone(
    name: str,
    checkpoint: str | None = None,
    *,
    trust_checkpoint: bool = False,
    **overrides: Any,
) -> Backbone:
    """Build a registered backbone.

    Args:
        name: Registry name; see :func:`list_backbones`.
        checkpoint: Local path, URL, hub id or ``None`` (random weights / weight-free).
        trust_checkpoint: Allow pickled objects in the checkpoint (``weights_only`` off). Pass
            only a value your program decided (e.g. ``--trust-checkpoint``); never spread a
            dict read from a file into this call without :func:`architecture_overrides`.
        **overrides: Architecture settings of the same code (e.g. ``embed_dim=64, depth=2``);
            anything else is refused.

    Returns:
        The backbone in eval mode.

    Raises:
        ConfigError: an override that is not an architecture setting, or a ``trust_checkpoint``
            that is not a bool.
    """
    if not isinstance(trust_checkpoint, bool):
        raise ConfigError(
            f"trust_checkpoint must be True or False, got {type(trust_checkpoint).__name__}"
        )
    entry = get_entry(name)
    if overrides:
        architecture_overrides(name, overrides, source=f"create_backbone({name!r})")
    kwargs = dict(overrides)
    if trust_checkpoint:
        if "trust_checkpoint" in inspect.signature(entry.factory).parameters:
            kwargs["trust_checkpoint"] = True
        else:  # safetensors / hub loaders: nothing is ever unpickled
            logger.debug("backbone %s loads no pickles; trust_checkpoint has no effect", name)
    model = entry.factory(checkpoint=checkpoint, **kwargs)
    model.eval()
    logger.debug(
        "created backbone %s (checkpoint=%s, trusted=%s, overrides=%s)",
        name,
        checkpoint,
        trust_checkpoint,
        overrides,
    )
    return model


def describe_backbones(names: list[str] | None = None) -> list[dict[str, Any]]:
    """One summary per registered backbone, for ``stetho backbones``.

    Each model is built with random weights on the ``meta`` device (no memory, no download), so even
    the largest ones are summarised in well under a second each.

    Args:
        names: Registry names to describe (default: all, sorted).

    Returns:
        Dicts with ``name``, ``description``, ``params`` (unique parameters), ``sample_rate``,
        ``embed_dim``, ``input`` (``"fbank"``/``"waveform"``), ``weights`` (where the official
        weights come from) and ``needs_weights``. A backbone that cannot be built on ``meta``
        gets ``None`` for the model facts and the reason under ``error``.

    Raises:
        KeyError: for an unknown name (the message lists the valid ones).
    """
    rows: list[dict[str, Any]] = []
    for name in list_backbones() if names is None else names:
        entry = get_entry(name)
        row: dict[str, Any] = {
            "name": name,
            "description": entry.description,
            "params": None,
            "sample_rate": None,
            "embed_dim": None,
            "input": None,
            "weights": None,
            "needs_weights": entry.needs_weights,
        }
        try:
            with torch.device("meta"):
                model = entry.factory(checkpoint=None)
            info = model.describe()
        except Exception as err:  # a broken entry must not hide the others
            logger.warning("cannot describe backbone %s: %s", name, err)
            row["error"] = f"{type(err).__name__}: {err}"
        else:
            row.update({k: info[k] for k in ("params", "sample_rate", "embed_dim", "input")})
            row["weights"] = info.get("weights")
        rows.append(row)
    return rows
