"""Backbone registry: ``@register_backbone``, the ``create_backbone`` factory (timm-style) and
``describe_backbones`` (the facts ``stetho backbones`` lists)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from stetho.backbones.base import Backbone

__all__ = [
    "BackboneEntry",
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
    """

    name: str
    factory: Callable[..., Backbone]
    description: str = ""
    needs_weights: bool = True


_REGISTRY: dict[str, BackboneEntry] = {}


def register_backbone(
    name: str, description: str = "", needs_weights: bool = True
) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Decorator registering a factory function under ``name``."""

    def deco(fn: Callable[..., Backbone]) -> Callable[..., Backbone]:
        if name in _REGISTRY and _REGISTRY[name].factory is not fn:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = BackboneEntry(
            name, fn, description or (fn.__doc__ or "").strip().split("\n")[0], needs_weights
        )
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


def create_backbone(name: str, checkpoint: str | None = None, **overrides: Any) -> Backbone:
    """Build a registered backbone.

    Args:
        name: Registry name; see :func:`list_backbones`.
        checkpoint: Local path, URL, hub id or ``None`` (random weights / weight-free).
        **overrides: Architecture overrides of the same code (e.g. ``embed_dim=64, depth=2``).

    Returns:
        The backbone in eval mode.
    """
    entry = get_entry(name)
    model = entry.factory(checkpoint=checkpoint, **overrides)
    model.eval()
    logger.debug("created backbone %s (checkpoint=%s, overrides=%s)", name, checkpoint, overrides)
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
