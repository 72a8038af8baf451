"""Atomic file and folder writes, hashing and folder manifests.

Every artifact or result stetho writes goes through :func:`atomic_write`: data is written to a
temporary file in the destination folder, flushed and fsync'ed, then renamed over the target, so an
interrupted run never leaves a half-written file behind. A set of files that belongs together (the
CSVs of one ``stetho score`` run) is written with :func:`atomic_folder`: into a hidden temporary
folder, renamed into place in one step. Write errors (disk full, permission denied) name the path.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "MANIFEST_NAME",
    "apply_umask",
    "atomic_folder",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "clean_stale_temporaries",
    "folder_files",
    "sha256_file",
    "write_error",
    "write_manifest",
]

logger = logging.getLogger(__name__)

#: File listing the SHA-256 of every other file of an artifact folder.
MANIFEST_NAME = "manifest.json"
#: ``format`` tag of the manifest file.
MANIFEST_FORMAT = "stetho-manifest"


def write_error(path: str | os.PathLike[str], err: BaseException) -> OSError:
    """An :class:`OSError` naming ``path`` for a failed write (disk full, permission denied…).

    The errno of ``err`` (or of the ``OSError`` that caused it) is kept, so callers can still
    tell ``ENOSPC`` from ``EACCES``.
    """
    cause: BaseException | None = err
    code = None
    while cause is not None and code is None:
        if isinstance(cause, OSError) and cause.errno is not None:
            code = cause.errno
        cause = cause.__cause__ or cause.__context__
    text = os.strerror(code) if code is not None else str(err)
    hint = " (disk full?)" if code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) else ""
    out = OSError(code or errno.EIO, f"cannot write {path}: {text}{hint}")
    out.filename = str(path)
    return out


def _umask() -> int:
    """The process umask (read without changing it for longer than two calls)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike[str], *, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open()`` / ``mkdir()`` would have given it (the umask).

    ``tempfile.mkstemp``/``mkdtemp`` and safetensors create 0600/0700 entries; files published
    from a temporary location get ordinary permissions with this.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str], mode: str = "w", **open_kwargs: Any
) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` and atomically move it into place on success.

    Args:
        path: Destination file. Its parent folder is created if needed.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        **open_kwargs: Passed to :func:`open` (e.g. ``encoding``, ``newline``).

    Yields:
        The open temporary file. If the block raises, the temporary file is removed and the
        destination is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    dest = Path(path)
    if mode == "w":
        open_kwargs.setdefault("encoding", "utf-8")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as err:
        raise write_error(dest, err) from err
    try:
        # mkstemp creates 0600 files; give the result the mode a plain open() would (umask)
        apply_umask(tmp)
        with os.fdopen(fd, mode, **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno is not None and err.filename in (None, tmp):
            raise write_error(dest, err) from err  # a write error without the destination's name
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Atomically write ``text`` to ``path``."""
    with atomic_write(path, "w", encoding=encoding, newline="") as fh:
        fh.write(text)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically write ``data`` to ``path``."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Return the hex SHA-256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def folder_files(folder: str | os.PathLike[str]) -> list[str]:
    """Relative POSIX paths of all regular files under ``folder`` except the manifest, sorted."""
    root = Path(folder)
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).as_posix() != MANIFEST_NAME
    )


def write_manifest(folder: str | os.PathLike[str]) -> Path:
    """Write ``folder/manifest.json`` with the SHA-256 of every other file in the folder."""
    root = Path(folder)
    files = {name: sha256_file(root / name) for name in folder_files(root)}
    doc = {"format": MANIFEST_FORMAT, "algorithm": "sha256", "files": files}
    path = root / MANIFEST_NAME
    atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return path


def clean_stale_temporaries(parent: str | os.PathLike[str], name: str) -> list[Path]:
    """Remove ``.NAME.*.tmp`` leftovers of killed runs next to ``parent/NAME``; returns them.

    Only entries whose name has the exact pattern of :func:`atomic_folder` / :func:`atomic_write`
    temporaries are touched.
    """
    removed: list[Path] = []
    base = Path(parent)
    if not base.is_dir():
        return removed
    for p in base.glob(f".{name}.*.tmp"):
        if "." in p.name[len(name) + 2 : -4]:  # e.g. ".out.csv.x.tmp" belongs to "out.csv"
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        removed.append(p)
        logger.info("removed %s, left over by an interrupted run", p)
    return removed


@contextlib.contextmanager
def atomic_folder(dest: str | os.PathLike[str], *, replace: bool = True) -> Iterator[Path]:
    """Write a folder as a set: yield a hidden temporary folder, rename it to ``dest`` on success.

    Leftovers of killed runs (``.DEST.*.tmp`` beside ``dest``) are removed first. If the block
    raises, the temporary folder is removed and ``dest`` is untouched. An existing ``dest`` folder
    is replaced (``replace=True``) by moving it aside first and deleting it after the rename.

    Args:
        dest: The folder to create or replace.
        replace: Allow replacing an existing ``dest``; False raises :class:`FileExistsError`.

    Yields:
        The temporary folder to write into.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temporaries(dest.parent, dest.name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    except OSError as err:
        raise write_error(dest, err) from err
    try:
        yield tmp
        apply_umask(tmp, directory=True)
        if dest.exists() or dest.is_symlink():
            if not replace or not dest.is_dir() or dest.is_symlink():
                raise FileExistsError(f"{dest} exists and is not a folder stetho may replace")
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
            os.replace(dest, old / "old")
            try:
                os.replace(tmp, dest)
            except BaseException:
                os.replace(old / "old", dest)
                raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError) and not isinstance(err, FileExistsError) and not err.filename:
            raise write_error(dest, err) from err
        raise
