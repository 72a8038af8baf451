"""``stetho backbones fetch NAME``: put a backbone's registered weights into the cache, verified.

The registry knows each released checkpoint's URL, file name and (where published) SHA-256.
:func:`fetch_weights` downloads it once into ``$STETHO_CACHE`` (``--url`` points at a mirror or
a local server) and refuses a file whose SHA-256 differs; later runs find it by file name.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from stetho.backbones.checkpoint import CheckpointError, cache_dir, resolve_checkpoint
from stetho.backbones.registry import create_backbone, get_entry

__all__ = ["fetch_weights", "registered_weights"]

logger = logging.getLogger(__name__)


def registered_weights(name: str) -> tuple[str | None, str | None, str | None]:
    """``(url, file name, sha256)`` of a backbone's released checkpoint (``None`` if unknown)."""
    entry = get_entry(name)
    if not entry.needs_weights:
        raise CheckpointError(f"backbone {name!r} has no weights to fetch")
    cfg = create_backbone(name).pretrained_cfg  # random init: only the metadata is read
    return cfg.url, cfg.filename, cfg.sha256


def fetch_weights(
    name: str, *, url: str | None = None, cache: str | os.PathLike[str] | None = None
) -> Path:
    """Download (or find) the weights of backbone ``name`` in the cache and verify them.

    Args:
        name: Registry name, e.g. ``efficientat-mn04``.
        url: Download from this URL instead of the registered one (a mirror).
        cache: Cache folder (default :func:`~stetho.backbones.checkpoint.cache_dir`).

    Raises:
        CheckpointError: no known URL, download failure, or a SHA-256 mismatch.
    """
    reg_url, filename, sha256 = registered_weights(name)
    src = url or reg_url
    if src is None:
        raise CheckpointError(
            f"backbone {name!r} has no registered download URL; pass --url, or place the file "
            f"in {cache or cache_dir()} and give its name as checkpoint"
        )
    if sha256 is None:
        logger.warning("%s: no published SHA-256; the download cannot be verified", name)
    root = Path(cache) if cache is not None else cache_dir()
    path = resolve_checkpoint(src, filename=filename, sha256=sha256, cache=root)
    logger.info("%s weights at %s", name, path)
    return path
