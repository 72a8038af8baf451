"""What every monitor source shares: scored windows, the shared detector handle, the base class.

See :mod:`stetho.serving.sources` for the sources themselves.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from stetho.serving.monitor_config import SourceConfig
from stetho.serving.registry import DetectorHandle, LoadedDetector
from stetho.serving.stream import StreamScorer
from stetho.utils.errors import StethoError

if TYPE_CHECKING:
    pass

__all__ = [
    "BaseSource",
    "DetectorHandle",
    "LoadedDetector",
    "Sink",
    "SourceUnavailable",
    "Window",
]

logger = logging.getLogger(__name__)


class SourceUnavailable(StethoError, RuntimeError):
    """A source cannot run here (e.g. no sound-card support installed); the message says why."""

    exit_code = 1
    http_status = 503


@dataclass(frozen=True)
class Window:
    """One scored window of a source: when it was recorded, its span and its score; the
    recording it came from (None: the source's stream) and its audio when the source has it
    (kept in the store's audio folder when the window is anomalous)."""

    time: datetime
    t_start: float
    t_end: float
    score: float
    source: str | None = None
    wave: np.ndarray | None = field(default=None, repr=False, compare=False)


#: ``sink(source, detector, windows, position)`` stores the windows and the source's position.
Sink = Callable[["BaseSource", LoadedDetector, list[Window], "str | None"], None]


class BaseSource:
    """What every source shares: its config, detector handle, windowing and stream swaps."""

    def __init__(
        self,
        cfg: SourceConfig,
        handle: DetectorHandle,
        *,
        window_seconds: float | None,
        hop_seconds: float | None,
        poll_seconds: float,
        last_position: Callable[[str], str | None],
    ) -> None:
        self.cfg = cfg
        self.name = cfg.label
        self.machine = cfg.machine
        self.section = str(cfg.section)
        self.handle = handle
        self.window_seconds = cfg.window_seconds or window_seconds
        self.hop_seconds = cfg.hop_seconds or hop_seconds
        self.poll_seconds = poll_seconds
        self.last_position = last_position
        self.det: LoadedDetector | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.machine, self.section)

    def detector(self) -> LoadedDetector:
        """The detector version to score with now (checking that it knows this source's key)."""
        det = self.handle.current()
        if self.key not in det.keys:
            valid = ", ".join(f"{m}/{s}" for m, s in det.keys) or "none"
            raise KeyError(
                f"source {self.name}: detector {self.handle.path} has no model for "
                f"{self.machine}/{self.section}; valid keys: {valid}"
            )
        self.det = det
        return det

    def new_stream(self, input_rate: int) -> StreamScorer:
        return StreamScorer(
            self.detector(),  # type: ignore[arg-type]  # LoadedDetector offers what it uses
            self.machine,
            self.section,
            self.window_seconds,
            self.hop_seconds,
            input_rate,
        )

    def sync_stream(self, stream: StreamScorer) -> LoadedDetector:
        """Point ``stream`` at the current detector version (buffered samples are kept)."""
        det = self.detector()
        if stream.detector is not det:
            stream.detector = det  # type: ignore[assignment]
            stream.threshold = det.thresholds.get(self.key)
        return det

    def run(self, sink: Sink, stop: threading.Event) -> None:
        """Watch the source until ``stop`` is set (or its stream ends)."""
        raise NotImplementedError
