"""The ``stetho monitor`` configuration file (YAML or JSON), as typed dataclasses.

::

    detector: runs/fan/detector          # default detector of every source
    db: runs/plant.db                    # or postgresql://user@host/db
    alarm: {k: 3, n: 5, clear_k: 0}
    retention_days: 90
    sources:
      - {kind: folder, path: /data/incoming/fan, machine: fan, section: "00"}
      - {kind: wav, path: /data/live/pump.wav, machine: pump, section: "00", window_seconds: 10}
      - {kind: stdin, machine: valve, rate: 16000, dtype: int16}
      - {kind: soundcard, device: "USB Audio", machine: slider, rate: 48000}

Relative paths (detector, db, source paths) are relative to the folder of the config file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from stetho.serving.files import normalize_section
from stetho.store import AlarmRule
from stetho.utils.config import ConfigBase, ConfigError

__all__ = ["MonitorConfig", "SourceConfig", "load_monitor_config"]

SourceKind = Literal["folder", "wav", "stdin", "soundcard"]


@dataclass
class SourceConfig(ConfigBase):
    """One watched source.

    Attributes:
        kind: ``folder`` (new recordings arrive as files), ``wav`` (one WAV file that keeps
            growing), ``stdin`` (raw PCM on standard input) or ``soundcard`` (a live input device;
            needs ``pip install 'stetho[sounddevice]'`` and PortAudio).
        machine, section: What the source records (its detector must have a model for it).
        name: Source name in the store (default ``"<kind>:<path>"``, ``"stdin"``,
            ``"soundcard:<device>"``); positions are kept per name, so renaming restarts it.
        path: The folder (``folder``) or file (``wav``).
        detector: This source's detector folder (default: the monitor's ``detector``).
        window_seconds, hop_seconds: Rolling windows of streams (default: the monitor's, else the
            detector's scoring window and half of it).
        mode: ``folder`` only: ``file`` scores each recording as one clip (exactly as
            ``stetho detect``); ``windows`` scores rolling windows of each recording.
        recursive: ``folder`` only: also watch sub-folders.
        settle_seconds: ``folder`` only: a file is scored once its size and modification time
            stayed the same for this long (it stopped growing).
        rate, channels, channel, dtype: Raw PCM format (``stdin``) / capture format
            (``soundcard``; ``dtype`` is ignored there).
        device: ``soundcard`` only: device name or index (default: the system's default input).
        block_seconds: Audio read per step of a stream.
    """

    kind: SourceKind
    machine: str
    section: str | int = "00"  # YAML reads `section: 00` as the number 0
    name: str | None = None
    path: str | None = None
    detector: str | None = None
    window_seconds: float | None = None
    hop_seconds: float | None = None
    mode: Literal["file", "windows"] = "file"
    recursive: bool = False
    settle_seconds: float = 2.0
    rate: int = 16000
    channels: int = 1
    channel: int = 0
    dtype: Literal["int16", "int32", "float32"] = "int16"
    device: str | None = None
    block_seconds: float = 0.25

    def __post_init__(self) -> None:
        self.section = normalize_section(self.section)
        if self.kind in ("folder", "wav") and not self.path:
            raise ConfigError(f"a {self.kind!r} source needs a path")
        if self.rate <= 0 or self.channels < 1 or not 0 <= self.channel < self.channels:
            raise ConfigError(
                f"source {self.label}: bad PCM format (rate {self.rate}, channels "
                f"{self.channels}, channel {self.channel})"
            )
        for what in ("window_seconds", "hop_seconds"):
            value = getattr(self, what)
            if value is not None and value <= 0:
                raise ConfigError(f"source {self.label}: {what} must be > 0, got {value}")
        if self.settle_seconds < 0 or self.block_seconds <= 0:
            raise ConfigError(f"source {self.label}: settle_seconds/block_seconds out of range")

    @property
    def label(self) -> str:
        """The source's name in the store and in logs."""
        if self.name:
            return self.name
        if self.kind in ("folder", "wav"):
            return f"{self.kind}:{self.path}"
        if self.kind == "soundcard":
            return f"soundcard:{self.device or 'default'}"
        return "stdin"


@dataclass
class MonitorConfig(ConfigBase):
    """Everything ``stetho monitor`` watches and where it writes.

    Attributes:
        sources: The watched sources (at least one).
        detector: Default detector folder of the sources.
        db: Score store: a file path (SQLite) or a ``postgresql://`` URL.
        alarm: The alarm rule (k of the last n windows anomalous opens; at most ``clear_k``
            closes).
        window_seconds, hop_seconds: Default rolling windows of streams.
        poll_seconds: How often folders and growing files are checked.
        status_seconds: How often the status line is written (0: never).
        retention_days: Delete scores older than this (checked hourly); None keeps everything.
        retry_seconds: First wait before a failed source is restarted (doubles up to 5 min).
        store_wait_seconds: How long the monitor waits at start-up for a database server that
            does not answer yet (PostgreSQL starting beside it), retrying with logged waits.
        device: Where the detectors run (``cpu``, ``cuda``).
        reload_detectors: Pick up a detector folder replaced by ``stetho calibrate`` while running.
    """

    sources: list[SourceConfig] = field(default_factory=list)
    detector: str | None = None
    db: str = "stetho-monitor.db"
    alarm: AlarmRule = field(default_factory=AlarmRule)
    window_seconds: float | None = None
    hop_seconds: float | None = None
    poll_seconds: float = 1.0
    status_seconds: float = 10.0
    retention_days: float | None = None
    retry_seconds: float = 5.0
    store_wait_seconds: float = 60.0
    device: str = "cpu"
    reload_detectors: bool = True

    def __post_init__(self) -> None:
        if not self.sources:
            raise ConfigError("the monitor config lists no sources")
        labels = [s.label for s in self.sources]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ConfigError(f"source names must be unique; repeated: {dup} (set `name:`)")
        if sum(s.kind == "stdin" for s in self.sources) > 1:
            raise ConfigError("only one source can read stdin")
        missing = [s.label for s in self.sources if not (s.detector or self.detector)]
        if missing:
            raise ConfigError(f"no detector for source(s) {missing}: set `detector:`")
        if self.poll_seconds <= 0 or self.retry_seconds <= 0 or self.status_seconds < 0:
            raise ConfigError("poll_seconds and retry_seconds must be > 0, status_seconds >= 0")
        if self.store_wait_seconds < 0:
            raise ConfigError(f"store_wait_seconds must be >= 0, got {self.store_wait_seconds}")
        if self.retention_days is not None and self.retention_days <= 0:
            raise ConfigError(f"retention_days must be > 0 (or null), got {self.retention_days}")

    def resolved(self, base: str | os.PathLike[str]) -> MonitorConfig:
        """A copy with relative detector/db/source paths made relative to ``base``."""

        def fix(p: str | None) -> str | None:
            if p is None or "://" in p:
                return p
            q = Path(p).expanduser()
            return str(q if q.is_absolute() else Path(base) / q)

        sources = [
            s.replace(path=fix(s.path), detector=fix(s.detector))
            if s.kind in ("folder", "wav")
            else s.replace(detector=fix(s.detector))
            for s in self.sources
        ]
        return self.replace(sources=sources, detector=fix(self.detector), db=fix(self.db) or "")


def load_monitor_config(path: str | os.PathLike[str]) -> MonitorConfig:
    """Read a monitor config file (YAML/JSON); relative paths are resolved against its folder.

    Raises:
        ConfigError: unreadable file, unknown key or bad value (the message names the file).
    """
    p = Path(path)
    try:
        return MonitorConfig.load(p).resolved(p.resolve().parent)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{p}: {err}") from err
