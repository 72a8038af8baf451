"""Finding and loading official checkpoints: local paths, URLs and the stetho cache.

``resolve_checkpoint`` turns a user-given spec into a local file:

* an existing path is used as is;
* an ``http(s)://`` or ``file://`` URL is downloaded once into the cache
  (``$STETHO_CACHE``, default ``~/.cache/stetho``) and verified by SHA-256 when known;
* a bare file name found in the cache is used from there.

Offline (``STETHO_OFFLINE=1``, or no network) a missing file raises :class:`CheckpointError` that
says which file to place where. ``load_checkpoint`` reads ``.pt``/``.pth``/``.ckpt`` files with
``torch.load(weights_only=True)`` (pickled code is refused unless the user opts in with
``trust=True``) and ``.safetensors`` files with safetensors.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from pathlib import Path
from typing import Any

import torch

from stetho.utils.download import DownloadError, download_file, file_hash
from stetho.utils.errors import StethoError

__all__ = [
    "CheckpointError",
    "cache_dir",
    "load_checkpoint",
    "resolve_checkpoint",
    "unwrap_state_dict",
]

logger = logging.getLogger(__name__)


class CheckpointError(StethoError, RuntimeError):
    """A checkpoint cannot be found, downloaded, verified or loaded."""

    http_status = 422


def cache_dir() -> Path:
    """The checkpoint cache folder: ``$STETHO_CACHE`` or ``~/.cache/stetho``."""
    return Path(os.environ.get("STETHO_CACHE") or Path.home() / ".cache" / "stetho").expanduser()


def resolve_checkpoint(
    spec: str | os.PathLike[str],
    *,
    filename: str | None = None,
    sha256: str | None = None,
    cache: str | os.PathLike[str] | None = None,
) -> Path:
    """Return a local file for ``spec`` (path, URL, or file name in the cache).

    Args:
        spec: Local path, ``http(s)://``/``file://`` URL, or a file name already in the cache.
        filename: File name to store a download under (default: last URL component).
        sha256: Expected SHA-256; verified after download and for cached files.
        cache: Cache folder (default :func:`cache_dir`).

    Raises:
        CheckpointError: the file is missing (message says where to put it) or fails verification.
    """
    text = str(spec)
    root = Path(cache) if cache is not None else cache_dir()
    parsed = urllib.parse.urlparse(text)
    if parsed.scheme in ("http", "https", "file"):
        name = filename or Path(urllib.parse.unquote(parsed.path)).name or "checkpoint.pt"
        dest = root / name
        try:
            return download_file(text, dest, sha256=sha256)
        except DownloadError as err:
            raise CheckpointError(
                f"could not fetch checkpoint {text}: {err}. Download it by hand and place it at "
                f"{dest} (or pass its local path)"
            ) from err
    path = Path(text).expanduser()
    if path.is_file():
        if sha256 and file_hash(path) != sha256.lower():
            raise CheckpointError(f"{path}: SHA-256 does not match the expected {sha256}")
        return path
    cached = root / path.name
    if cached.is_file():
        return resolve_checkpoint(cached, sha256=sha256)
    raise CheckpointError(
        f"checkpoint {text!r} not found: it is not an existing file, a URL, or a file in the cache "
        f"{root}. Place the file at {cached} or pass its path."
    )


def load_checkpoint(path: str | os.PathLike[str], *, trust: bool = False) -> Any:
    """Load a checkpoint file on the CPU.

    ``.safetensors`` files load with safetensors; anything else with
    ``torch.load(weights_only=not trust)``.

    Raises:
        CheckpointError: unreadable file, or pickled objects refused by ``weights_only=True``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as err:
            raise CheckpointError(f"{path}: not a readable safetensors file: {err}") from err
    with open(path, "rb") as fh:
        magic = fh.read(4)
    # torch.save writes a zip archive (PK\x03\x04); legacy files are raw pickles (protocol byte 0x80)
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint (expected a torch.save .pt/.pth/.ckpt file or a "
            ".safetensors file)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as err:
        if not trust and "Weights only load failed" in str(err):
            raise CheckpointError(
                f"{path}: contains pickled objects that weights_only=True refuses. If you trust the "
                "file's origin, load it with trust=True (CLI: --trust-checkpoint)."
            ) from err
        raise CheckpointError(f"{path}: cannot load checkpoint: {err}") from err


def unwrap_state_dict(
    obj: Any, keys: tuple[str, ...] = ("model", "state_dict")
) -> dict[str, torch.Tensor]:
    """Return the state dict inside common wrappers (``{'model': sd}``, ``{'state_dict': sd}``)."""
    if isinstance(obj, dict):
        for key in keys:
            inner = obj.get(key)
            if (
                isinstance(inner, dict)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                return inner
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise CheckpointError(
        f"expected a state dict (or a dict wrapping one under {list(keys)}), got {type(obj).__name__}"
    )
