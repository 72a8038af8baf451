"""Audio kept next to the score store: anomalous windows and their nearest normal bank clips.

>>> keeper = AudioKeeper.for_store("runs/plant.db")        # folder runs/plant.db.audio/
>>> name = keeper.keep(wave, 16000, "fan", "00")           # doctest: +SKIP
>>> keeper.path(name).read_bytes()[:4]                     # doctest: +SKIP
b'RIFF'

Files are 16-bit PCM WAV written atomically (a reader never sees half a file), named
``<UTC time>_<machine>_<section>_<random>.wav`` (windows) or ``ref_<hash of the path>.wav``
(copies of bank clips, shared by every window that is nearest to the same clip). The folder is
bounded by total size and by age: after every write the oldest files go first until both hold
(not in the paper). A window whose file was dropped answers 404 on its audio URL.

Only names this module generated are ever opened: :meth:`AudioKeeper.path` refuses anything
else, so a stored (or forged) name cannot reach a file outside the folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from stetho.utils.errors import NotFoundError
from stetho.utils.io import atomic_write_bytes

__all__ = ["DEFAULT_AUDIO_DAYS", "DEFAULT_AUDIO_MB", "AudioKeeper", "audio_folder_for"]

logger = logging.getLogger(__name__)

#: Default bound of the audio folder (MiB) and age of its files (days). Not in the paper.
DEFAULT_AUDIO_MB = 500.0
DEFAULT_AUDIO_DAYS = 30.0

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}\.wav$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def audio_folder_for(target: str | os.PathLike[str]) -> Path | None:
    """``<database file>.audio`` for an SQLite path or ``sqlite:///`` URL; None for a server
    database (PostgreSQL), whose audio folder must be given explicitly."""
    s = os.fspath(target)
    if s.startswith("sqlite:///"):
        s = s[len("sqlite:///") :]
    elif "://" in s:
        return None
    if not s or s == ":memory:":
        return None
    return Path(s).expanduser().absolute().with_name(Path(s).name + ".audio")


def _wav_bytes(wave: np.ndarray, sample_rate: int) -> bytes:
    import soundfile as sf

    data = np.clip(np.nan_to_num(np.asarray(wave, dtype=np.float32).reshape(-1)), -1.0, 1.0)
    buf = io.BytesIO()
    sf.write(buf, data, int(sample_rate), format="WAV", subtype="PCM_16")
    return buf.getvalue()


@dataclass
class AudioKeeper:
    """A bounded folder of WAV files (thread-safe; several processes may share it).

    Attributes:
        folder: Where the files go (created on the first write).
        max_bytes: Total size beyond which the oldest files are deleted.
        max_age_days: Files older than this are deleted (0: no age bound).
    """

    folder: Path
    max_bytes: int = int(DEFAULT_AUDIO_MB * 2**20)
    max_age_days: float = DEFAULT_AUDIO_DAYS

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        if self.max_bytes <= 0:
            raise ValueError(f"the audio folder's size bound must be > 0, got {self.max_bytes}")
        if self.max_age_days < 0:
            raise ValueError(f"audio retention days must be >= 0, got {self.max_age_days}")
        self._lock = threading.Lock()

    @classmethod
    def for_store(
        cls,
        target: str | os.PathLike[str],
        max_mb: float = DEFAULT_AUDIO_MB,
        max_age_days: float = DEFAULT_AUDIO_DAYS,
    ) -> AudioKeeper | None:
        """The keeper of an SQLite store's ``<file>.audio`` folder (None for PostgreSQL)."""
        folder = audio_folder_for(target)
        if folder is None:
            return None
        return cls(folder, int(max_mb * 2**20), max_age_days)

    # -------------------------------------------------------------------------- writing
    def keep(
        self, wave: np.ndarray, sample_rate: int, machine: str, section: str, when: datetime
    ) -> str:
        """Write one window's audio; return its file name."""
        stamp = when.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        label = _UNSAFE.sub("-", f"{machine}_{section}")[:80].strip("-.") or "window"
        name = f"{stamp}_{label}_{uuid.uuid4().hex[:8]}.wav"
        self._write(name, _wav_bytes(wave, sample_rate))
        return name

    def keep_reference(self, ref: str, wave: np.ndarray, sample_rate: int) -> str:
        """Keep a copy of the bank clip ``ref`` (once: later calls reuse it); return its name."""
        name = "ref_" + hashlib.sha256(str(ref).encode()).hexdigest()[:24] + ".wav"
        target = self.folder / name
        if target.is_file():
            with contextlib.suppress(OSError):
                os.utime(target)  # recently used: dropped last
            return name
        self._write(name, _wav_bytes(wave, sample_rate))
        return name

    def has_reference(self, ref: str) -> str | None:
        """The name of the kept copy of ``ref`` when there is one."""
        name = "ref_" + hashlib.sha256(str(ref).encode()).hexdigest()[:24] + ".wav"
        return name if (self.folder / name).is_file() else None

    def _write(self, name: str, data: bytes) -> None:
        with self._lock:
            atomic_write_bytes(self.folder / name, data)
            self.prune()

    def prune(self) -> int:
        """Delete the oldest files until the folder fits ``max_bytes`` and ``max_age_days``;
        return how many were deleted."""
        entries = []
        try:
            with os.scandir(self.folder) as it:
                for e in it:
                    if _NAME.match(e.name) and e.is_file(follow_symlinks=False):
                        st = e.stat(follow_symlinks=False)
                        entries.append((st.st_mtime, e.name, st.st_size))
        except FileNotFoundError:
            return 0
        entries.sort()
        total = sum(size for _, _, size in entries)
        horizon = time.time() - self.max_age_days * 86400.0 if self.max_age_days else None
        deleted = 0
        for mtime, name, size in entries:
            too_old = horizon is not None and mtime < horizon
            if total <= self.max_bytes and not too_old:
                break
            with contextlib.suppress(FileNotFoundError):
                (self.folder / name).unlink()
            total -= size
            deleted += 1
        if deleted:
            logger.info("audio folder %s: dropped %d oldest file(s)", self.folder, deleted)
        return deleted

    # -------------------------------------------------------------------------- reading
    def path(self, name: str | None) -> Path:
        """The file of a kept name.

        Raises:
            NotFoundError: not a name this keeper generates, or the file was dropped.
        """
        if not name or not _NAME.match(name) or name.startswith("."):
            raise NotFoundError("no audio was kept for this window")
        p = self.folder / name
        if not p.is_file():
            raise NotFoundError(
                f"the audio of this window ({name}) is no longer kept: the audio folder "
                f"{self.folder} drops its oldest files beyond its size and age bounds"
            )
        return p

    def exists(self, name: str | None) -> bool:
        """Whether ``name`` is a kept file."""
        return (
            bool(name)
            and _NAME.match(str(name)) is not None
            and (self.folder / str(name)).is_file()
        )
