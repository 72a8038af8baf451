"""Atomic file writes and hashing.

Every artifact or result stetho writes goes through :func:`atomic_write`: data is written to a
temporary file in the destination folder, flushed and fsync'ed, then renamed over the target, so an
interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["apply_umask", "atomic_write", "atomic_write_bytes", "atomic_write_text", "sha256_file"]


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
    dest.parent.mkdir(parents=True, exist_ok=True)
    if mode == "w":
        open_kwargs.setdefault("encoding", "utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        # mkstemp creates 0600 files; give the result the mode a plain open() would (umask)
        apply_umask(tmp)
        with os.fdopen(fd, mode, **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
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
