"""Saved artifacts: folders written as a set (temporary folder, then one rename), read back with checks.

Shared by the k-NN detector and the autoencoder baseline (re-exported by
:mod:`stetho.detector.artifact`).

A detector (or baseline) folder holds a ``config.json`` with ``format`` and ``format_version``
plus weight files, and a ``manifest.json`` with the SHA-256 of every other file in the folder.
Writing goes to a hidden temporary folder beside the destination, which is renamed into place in
one step; an existing folder is replaced only when it is an artifact of the same format, and
restored when the rename fails.

Reading (:func:`read_meta`) checks, before anything else is opened: ``config.json`` is a JSON
object of the expected format; its format version is not newer than this stetho reads (a clear
"upgrade stetho" message otherwise); every file listed in the manifest exists and has its
recorded SHA-256 (the error names the file). Folders of format version 1 predate the manifest:
they load with a warning that they carry no hashes. The hashes detect damaged or altered files;
they do not make a folder trustworthy (whoever writes the files can write the manifest too), and
nothing in a folder can grant itself trust: unpickling a checkpoint needs the person's explicit
``trust_checkpoint=True`` (CLI ``--trust-checkpoint``).
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

import stetho
from stetho.utils.errors import StethoError
from stetho.utils.io import MANIFEST_NAME, apply_umask, folder_files, sha256_file, write_manifest

__all__ = [
    "MANIFEST_NAME",
    "DetectorError",
    "check_replaceable",
    "publish_folder",
    "read_json",
    "read_meta",
    "verify_manifest",
    "write_folder",
]

logger = logging.getLogger(__name__)


class DetectorError(StethoError, RuntimeError):
    """A detector cannot be built, saved or loaded (the message says what to do)."""

    http_status = 422


def read_json(path: Path) -> Any:
    """Parse a JSON file of an artifact; empty, unreadable or invalid files raise
    :class:`DetectorError` naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DetectorError(f"{path}: unreadable ({err})") from err
    if not text.strip():
        raise DetectorError(
            f"{path}: empty file; the artifact folder is damaged (save or train it again)"
        )
    try:
        return json.loads(text)
    except ValueError as err:
        raise DetectorError(
            f"{path}: not valid JSON ({err}); the artifact folder is damaged"
        ) from err


def _version_tuple(text: object) -> tuple[int, ...] | None:
    parts = []
    for part in str(text).split("."):
        digits = "".join(ch for ch in part if ch.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or None


def read_meta(src: Path, fmt: str, version: int, *, min_version: int = 1) -> dict[str, Any]:
    """Read ``src/config.json`` of an artifact of ``fmt``, check its version and file hashes.

    Args:
        src: The artifact folder.
        fmt: Expected ``format`` tag.
        version: The newest format version this code reads; newer folders are refused.
        min_version: The oldest format version still read. Versions below ``version`` that
            carry no manifest (version 1) load with a warning.

    Raises:
        DetectorError: no folder, missing/empty/invalid ``config.json``, another format, a newer
            or unsupported format version, or a file missing or altered since it was saved
            (the message names the file).
    """
    src = Path(src)
    cfg_path = src / "config.json"
    if not cfg_path.is_file():
        raise DetectorError(f"{src} is not a detector folder (no config.json)")
    meta = read_json(cfg_path)
    if not isinstance(meta, dict):
        raise DetectorError(f"{cfg_path}: not a JSON object")
    got = meta.get("format_version")
    if meta.get("format") != fmt or not isinstance(got, int) or isinstance(got, bool):
        raise DetectorError(
            f"{cfg_path}: not a {fmt!r} artifact of format version {version} "
            f"(format={meta.get('format')!r}, version={got!r})"
        )
    saved_by = meta.get("stetho_version", "unknown")
    if got > version:
        raise DetectorError(
            f"{cfg_path}: format version {got} (saved by stetho {saved_by}) is newer than this "
            f"stetho {stetho.__version__} reads (up to {version}); upgrade stetho to load it"
        )
    if got < min_version:
        raise DetectorError(
            f"{cfg_path}: format version {got} is no longer supported (oldest: {min_version}); "
            "save or train the detector again"
        )
    mine, theirs = _version_tuple(stetho.__version__), _version_tuple(saved_by)
    if mine and theirs and theirs > mine:
        logger.warning(
            "%s was saved by stetho %s, newer than this stetho %s; upgrade stetho if it fails "
            "to load or scores differently",
            src,
            saved_by,
            stetho.__version__,
        )
    if (src / MANIFEST_NAME).exists() or got >= 2:
        verify_manifest(src)
    else:
        logger.warning(
            "%s: format version %d carries no file hashes (%s), so damaged files cannot be "
            "detected; save the detector again to add them",
            src,
            got,
            MANIFEST_NAME,
        )
    return meta


def verify_manifest(src: Path) -> list[str]:
    """Check every file listed in ``src/manifest.json`` against its recorded SHA-256.

    Files in the folder that the manifest does not list are ignored (and logged): nothing reads
    them. Returns the verified file names.

    Raises:
        DetectorError: no or invalid manifest, a listed file missing or altered, a listed name
            outside the folder; the message names the file.
    """
    src = Path(src)
    path = src / MANIFEST_NAME
    if not path.is_file():
        raise DetectorError(
            f"{path} is missing: the folder's files cannot be checked (save the detector again)"
        )
    doc = read_json(path)
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, dict) or doc.get("algorithm") != "sha256" or not files:
        raise DetectorError(f"{path}: not a SHA-256 manifest of the folder's files")
    for name, want in sorted(files.items()):
        rel = Path(str(name))
        if rel.is_absolute() or ".." in rel.parts or not isinstance(want, str):
            raise DetectorError(f"{path}: invalid entry {name!r}")
        target = src / rel
        if not target.is_file():
            raise DetectorError(f"{target}: missing (listed in {path}); the folder is incomplete")
        if sha256_file(target) != want.lower():
            raise DetectorError(
                f"{target}: SHA-256 differs from the one recorded when the folder was saved "
                f"({path}); the file was damaged or changed (save the detector again)"
            )
    extra = sorted(set(folder_files(src)) - set(files))
    if extra:
        logger.warning("%s: files not listed in %s are ignored: %s", src, MANIFEST_NAME, extra)
    return sorted(files)


def publish_folder(tmp: Path, dest: Path, fmt: str | None = None, *, manifest: bool = True) -> None:
    """Rename the finished folder ``tmp`` to ``dest`` in one step (replacing an old artifact).

    With ``manifest`` (default), ``manifest.json`` with the SHA-256 of every file is written
    first. Permissions follow the process umask (``mkdtemp`` makes 0700 folders, safetensors 0600
    files).
    """
    if manifest:
        write_manifest(tmp)
    apply_umask(tmp, directory=True)
    for f in tmp.rglob("*"):
        apply_umask(f, directory=f.is_dir())
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
