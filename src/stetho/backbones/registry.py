"""Backbone registry: ``@register_backbone`` and the ``create_backbone`` factory (timm-style)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stetho.backbones.base import Backbone

__all__ = ["BackboneEntry", "create_backbone", "get_entry", "list_backbones", "register_backbone"]

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
