"""Resumable HTTP(S) downloads with progress bars and checksum verification.

Used for dataset archives (``stetho data download``) and checkpoint caches. Only the standard
library is used (``urllib``). A partial download is kept as ``<dest>.part`` and resumed with an HTTP
``Range`` request; the file is moved into place only after its size and hashes verify.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from stetho.utils.errors import StethoError
from stetho.utils.progress import progress_bar

__all__ = ["DownloadError", "OfflineError", "download_file", "file_hash", "is_offline"]

logger = logging.getLogger(__name__)


class DownloadError(StethoError, RuntimeError):
    """A download failed or its checksum did not match."""

    exit_code = 1
    http_status = 503


class OfflineError(DownloadError):
    """The network is unreachable (or offline mode is on) and the file is not available locally."""


def is_offline() -> bool:
    """True when ``STETHO_OFFLINE`` or ``HF_HUB_OFFLINE`` is set to a true value."""
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("STETHO_OFFLINE", "HF_HUB_OFFLINE")
    )


def file_hash(path: str | os.PathLike[str], algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file (``md5`` or ``sha256``)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _verify(path: Path, size: int | None, md5: str | None, sha256: str | None, url: str) -> None:
    if size is not None and path.stat().st_size != size:
        raise DownloadError(f"{url}: expected {size} bytes, got {path.stat().st_size} ({path})")
    for algo, expected in (("md5", md5), ("sha256", sha256)):
        if expected:
            got = file_hash(path, algo)
            if got.lower() != expected.lower():
                raise DownloadError(
                    f"{url}: {algo} mismatch for {path}: expected {expected}, got {got}"
                )


def download_file(
    url: str,
    dest: str | os.PathLike[str],
    *,
    size: int | None = None,
    md5: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
) -> Path:
    """Download ``url`` to ``dest`` (resuming a ``.part`` file), verify, and return ``dest``.

    An existing ``dest`` that verifies is returned without network access (idempotent re-runs).

    Raises:
        OfflineError: offline mode is on, or the host cannot be reached.
        DownloadError: HTTP errors, truncated transfers, size or checksum mismatch.
    """
    dest = Path(dest)
    if dest.exists():
        try:
            _verify(dest, size, md5, sha256, url)
            logger.info("already present and verified: %s", dest)
            return dest
        except DownloadError:
            logger.warning("existing %s does not verify; downloading again", dest)
            dest.unlink()
    if is_offline():
        raise OfflineError(f"offline mode: cannot download {url}; place the file at {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    response = _open(url, offset, size, timeout, dest)
    if response is not None:
        with response:
            _receive(response, url, part, offset, dest.name, progress, chunk_size, size)
    try:
        _verify(part, size, md5, sha256, url)
    except DownloadError:
        if size is None or part.stat().st_size >= size:
            part.unlink()  # corrupt: do not resume from a bad file
        raise
    os.replace(part, dest)
    return dest


def _open(url: str, offset: int, size: int | None, timeout: float, dest: Path) -> Any:
    """The HTTP response (ranged from ``offset``), or ``None`` when ``.part`` is already whole."""
    request = urllib.request.Request(url, headers={"User-Agent": "stetho"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and size is not None and offset == size:
            return None
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
    except (TimeoutError, urllib.error.URLError, OSError) as err:
        raise OfflineError(
            f"cannot reach {url} ({getattr(err, 'reason', err)}); you appear to be offline. "
            f"Download it elsewhere and place it at {dest}"
        ) from err


def _receive(
    response: Any,
    url: str,
    part: Path,
    offset: int,
    name: str,
    progress: bool,
    chunk_size: int,
    size: int | None,
) -> None:
    """Append (or write, if the server ignored the range) the body to ``part``, fsynced."""
    status = getattr(response, "status", 200)
    if offset and status != 206:  # server ignored the Range header: start over
        offset = 0
    length = response.headers.get("Content-Length")
    total = (int(length) + offset) if length is not None else size
    mode = "ab" if offset else "wb"
    with (
        open(part, mode) as fh,
        progress_bar(
            total=total,
            initial=offset,
            desc=name,
            unit="B",
            unit_scale=True,
            disable=None if progress else True,
        ) as bar,
    ):
        try:
            while block := response.read(chunk_size):
                fh.write(block)
                bar.update(len(block))
        except (TimeoutError, OSError) as err:
            raise DownloadError(
                f"{url}: transfer interrupted after {part.stat().st_size} bytes ({err}); "
                "run again to resume"
            ) from err
        fh.flush()
        os.fsync(fh.fileno())
    received = part.stat().st_size
    if length is not None and received != total:
        raise DownloadError(
            f"{url}: connection closed after {received} of {total} bytes; run again to resume"
        )
