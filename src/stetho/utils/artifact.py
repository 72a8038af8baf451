"""Saved artifacts: folders written as a set (temporary folder, then one rename), read back with checks.

Shared by the k-NN detector and the autoencoder baseline (re-exported by
:mod:`stetho.detector.artifact`).

A detector (or baseline) folder holds a ``config.json`` with ``format`` and ``format_version``
plus weight files. Writing goes to a hidden temporary folder beside the destination, which is
renamed into place in one step; an existing folder is replaced only when it is an artifact of the
same format, and restored when the rename fails.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stetho.utils.io import apply_umask

__all__ = [
    "DetectorError",
    "check_replaceable",
    "publish_folder",
    "read_meta",
    "write_folder",
]

logger = logging.getLogger(__name__)


class DetectorError(RuntimeError):
    """A detector cannot be built, saved or loaded (the message says what to do)."""


def read_meta(src: Path, fmt: str, version: int) -> dict[str, Any]:
    """Read ``src/config.json`` of an artifact of ``fmt`` and check its format version.

    Raises:
        DetectorError: no folder, no or unreadable ``config.json``, or another format/version.
    """
    cfg_path = src / "config.json"
    if not cfg_path.is_file():
        raise DetectorError(f"{src} is not a detector folder (no config.json)")
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DetectorError(f"{cfg_path}: unreadable ({err})") from err
    if not isinstance(meta, dict):
        raise DetectorError(f"{cfg_path}: not a JSON object")
    if meta.get("format") != fmt or meta.get("format_version") != version:
        raise DetectorError(
            f"{cfg_path}: not a {fmt!r} artifact of format version {version} "
            f"(format={meta.get('format')!r}, version={meta.get('format_version')!r})"
        )
    return meta


def publish_folder(tmp: Path, dest: Path, fmt: str | None = None) -> None:
    """Rename the finished folder ``tmp`` to ``dest`` in one step (replacing an old artifact).

    Permissions follow the process umask (``mkdtemp`` makes 0700 folders, safetensors 0600 files).
    """
    apply_umask(tmp, directory=True)
    for f in tmp.iterdir():
        apply_umask(f)
    if fmt is not None:
        check_replaceable(dest, fmt)  # again: it may have appeared while the files were written
    old = None
    if dest.exists() or dest.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
        os.replace(dest, old / dest.name)
    try:
        os.replace(tmp, dest)
    except BaseException:
        if old is not None and _restore(old / dest.name, dest):
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def write_folder(dest: Path, fmt: str) -> Iterator[Path]:
    """Write an artifact folder as a set: yields a temporary folder beside ``dest``.

    On a clean exit the folder is published at ``dest`` (:func:`publish_folder`); on an error it
    is removed and ``dest`` is untouched. ``dest`` must be absent, empty or an artifact of
    ``fmt`` (:func:`check_replaceable`).
    """
    check_replaceable(dest, fmt)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
        publish_folder(tmp, dest, fmt)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_replaceable(dest: Path, fmt: str) -> None:
    """Refuse to replace anything but an artifact of format ``fmt`` (or nothing)."""
    if not (dest.exists() or dest.is_symlink()):
        return
    if not dest.is_dir():
        raise DetectorError(
            f"cannot save the detector to {dest}: it exists and is not a folder (refusing to "
            "replace it); choose a new folder"
        )
    cfg_path = dest / "config.json"
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = None
    if isinstance(meta, dict) and meta.get("format") == fmt:
        return
    if not any(dest.iterdir()):
        return  # an empty folder: nothing to lose
    raise DetectorError(
        f"cannot save the detector to {dest}: the folder exists and is not a stetho detector "
        f"folder (no config.json with format {fmt!r}); refusing to replace it. "
        f"Choose a new folder (e.g. {dest / 'detector'}) or an existing detector folder"
    )


def _restore(saved: Path, dest: Path) -> bool:
    """Put the previous detector folder back after a failed replace; False if it stays at
    ``saved`` (logged, so that it can be recovered by hand)."""
    try:
        os.replace(saved, dest)
    except OSError as err:
        logger.error(
            "could not restore the previous detector %s; it is kept at %s (%s)", dest, saved, err
        )
        return False
    return True
