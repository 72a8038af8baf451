"""Several saved detectors served by name (``--detector fan=runs/fan/detector``)."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stetho.detector.scorer import Scorer

__all__ = [
    "DetectorEntry",
    "DetectorHandle",
    "DetectorRegistry",
    "LoadedDetector",
    "parse_detector_spec",
]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def parse_detector_spec(spec: str) -> tuple[str, Path]:
    """``NAME=DIR`` → ``(NAME, DIR)``; a plain ``DIR`` is named after its folder.

    Raises:
        ValueError: an empty or invalid name (letters, digits, ``_ . -``; at most 64).
    """
    name, sep, folder = spec.partition("=")
    if not sep:
        path = Path(spec)
        name = path.name if path.name != "detector" or not path.parent.name else path.parent.name
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip("_.-") or "default"
        return name[:64], path
    if not _NAME.match(name):
        raise ValueError(
            f"invalid detector name {name!r} in {spec!r}: use letters, digits, '_', '.', '-' "
            "(at most 64, starting with a letter or digit)"
        )
    if not folder:
        raise ValueError(f"missing folder in --detector {spec!r} (expected NAME=DIR)")
    return name, Path(folder)


@dataclass(frozen=True)
class LoadedDetector:
    """One loaded version of a detector, with the lock that serialises its scoring.

    It offers what :class:`~stetho.serving.stream.StreamScorer` needs from a detector, so a
    stream scores through the lock.
    """

    scorer: Scorer
    id: str
    version: int
    lock: threading.Lock

    @property
    def keys(self) -> list[tuple[str, str]]:
        return list(self.scorer.keys)

    @property
    def sample_rate(self) -> int:
        return int(self.scorer.sample_rate)

    @property
    def thresholds(self) -> dict[tuple[str, str], float]:
        return dict(self.scorer.thresholds)

    def window_seconds(self) -> float | None:
        return self.scorer.window_seconds()

    def score_waveforms(
        self, waves: Any, machine: str, section: str, sample_rate: int | None = None
    ) -> Any:
        with self.lock:
            return self.scorer.score_waveforms(waves, machine, section, sample_rate)

    def nearest_ref(self, wave: Any, key: tuple[str, str]) -> str | None:
        """Path of the normal bank clip nearest to ``wave`` (at :attr:`sample_rate`) as the
        detector recorded it; None when it keeps none (or the window cannot be embedded)."""
        try:
            with self.lock:
                nearest = self.scorer.nearest(self.scorer.embed_waveforms([wave]), key)[0]
        except Exception as err:  # a nicety: the window is stored without it
            logger.warning("nearest bank clip of a %s/%s window: %s", *key, err)
            return None
        return None if nearest is None else nearest.ref

    def decide(self, scores: Any, key: tuple[str, str]) -> Any:
        """The detector's own decisions (M,) int for ``scores`` of ``key``."""
        return self.scorer.decide(scores, key)

    def normalise(self, scores: Any, key: tuple[str, str]) -> Any:
        """The detector's normalised scores (1.0 = the threshold)."""
        return self.scorer.normalise(scores, key)


@dataclass
class DetectorEntry:
    """The one holder of a served or monitored detector folder: name, identity, the loaded
    version and the lock serialising model access; reloads the folder when ``stetho calibrate``
    replaces it.

    Attributes:
        name: The name clients use (``?detector=NAME``).
        scorer: The loaded detector (``None``: loaded on first use, see :meth:`current`).
        path: Its folder.
        detector_id: Stable identity from ``describe()["id"]`` (folder name when absent).
        version: ``describe()["version"]`` (1 when absent); +1 per ``stetho calibrate``.
        loader: ``loader(path) -> Scorer``; with it :meth:`refresh` / :meth:`reload` pick up a
            folder replaced on disk (e.g. by ``stetho calibrate``) without a restart.
        reload_seconds: How often :meth:`refresh` looks at the folder.
    """

    name: str
    scorer: Scorer | None
    path: Path
    detector_id: str = ""
    version: int = 1
    loader: Callable[[Path], Scorer] | None = field(default=None, repr=False)
    reload_seconds: float = 10.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self._signature = _signature(self.path) if self.scorer is not None else None
        if self.scorer is not None:
            self._set_identity()
        self._checked = time.monotonic()

    def _set_identity(self) -> None:
        from stetho.detector import identity

        assert self.scorer is not None
        self.detector_id, self.version = identity(self.scorer, self.path)

    def current(self) -> LoadedDetector:
        """The loaded version (loading the folder on first use).

        Raises:
            DetectorError: the folder cannot be loaded (a monitor source using it fails and is
                retried).
        """
        if self.scorer is None:
            self.reload()
        assert self.scorer is not None
        return LoadedDetector(self.scorer, self.detector_id, self.version, self.lock)

    def reload(self) -> bool:
        """Load the folder again now if it changed since the last load; True when a new version
        is used. Errors propagate (the caller decides whether to keep the loaded version)."""
        if self.loader is None:
            return False
        sig = _signature(self.path)
        if self.scorer is not None and sig == self._signature:
            return False
        scorer = self.loader(self.path)
        old = None if self.scorer is None else self.version
        with self.lock:
            self.scorer = scorer
            self._set_identity()
        self._signature = sig
        if old is not None:
            logger.warning("detector %r reloaded: version %d -> %d", self.name, old, self.version)
        return True

    def refresh(self) -> bool:
        """:meth:`reload` at most every ``reload_seconds``; a folder that cannot be loaded is
        logged and the loaded version kept. True when a new version is now used."""
        now = time.monotonic()
        if self.loader is None or now - self._checked < self.reload_seconds:
            return False
        self._checked = now
        try:
            return self.reload()
        except Exception as err:  # keep serving the loaded version
            logger.error(
                "cannot reload detector %s (keeping version %d): %s", self.path, self.version, err
            )
            return False

    @property
    def keys(self) -> list[tuple[str, str]]:
        """(machine, section) pairs it scores."""
        return list(self.current().keys)

    def describe(self) -> dict[str, Any]:
        """The detector's own summary plus name, folder, id and version."""
        out = dict(self.current().scorer.describe())
        out.update(name=self.name, path=str(self.path), id=self.detector_id, version=self.version)
        return out


class DetectorHandle(DetectorEntry):
    """A monitor's :class:`DetectorEntry`: loaded on first use, reloaded whenever it changed.

    Args:
        path: The detector folder.
        load: ``load(path) -> Scorer`` (e.g. :func:`stetho.load_detector` with a device).
    """

    def __init__(self, path: str | Path, load: Callable[[Path], Scorer]) -> None:
        super().__init__(Path(path).name, None, Path(path), loader=load, reload_seconds=0.0)


def _signature(folder: Path) -> tuple[int, int] | None:
    try:
        st = (folder / "config.json").stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


class DetectorRegistry:
    """Named detectors; the first one added is the default."""

    def __init__(self, entries: Iterable[DetectorEntry] = ()) -> None:
        self._entries: dict[str, DetectorEntry] = {}
        for e in entries:
            self.add(e)

    def add(self, entry: DetectorEntry) -> None:
        """Register ``entry``; a duplicate name is an error."""
        if entry.name in self._entries:
            raise ValueError(
                f"two detectors named {entry.name!r}: name them with --detector NAME=DIR"
            )
        self._entries[entry.name] = entry

    def __iter__(self) -> Iterator[DetectorEntry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def names(self) -> list[str]:
        """Detector names in registration order."""
        return list(self._entries)

    def get(self, name: str | None) -> DetectorEntry:
        """The detector called ``name``, or the default one when ``name`` is None.

        Raises:
            LookupError: no detectors, or an unknown name (the message lists the known ones).
        """
        if not self._entries:
            raise LookupError("this server has no detectors: start it with --detector NAME=DIR")
        if name is None:
            return next(iter(self._entries.values()))
        try:
            return self._entries[name]
        except KeyError:
            raise LookupError(
                f"unknown detector {name!r}; known: {', '.join(self._entries)}"
            ) from None

    def for_key(self, machine: str, section: str, name: str | None) -> DetectorEntry:
        """The detector to score (machine, section): ``name`` if given, else the first that
        has the key, else the default (whose error then lists its keys)."""
        if name is not None:
            return self.get(name)
        for e in self._entries.values():
            if (machine, section) in e.keys:
                return e
        return self.get(None)
