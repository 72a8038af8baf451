"""Where the dashboard reads its data: the service's views (the JSON API's own models, so the
page and the API never disagree) and the audio the service keeps next to the store."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from stetho.serving.api.models import Alarm, Machine, WindowDetail, WindowSummary
from stetho.utils.errors import StethoError

if TYPE_CHECKING:
    from stetho.serving.service import ScoringService

__all__ = ["DashboardSource"]

logger = logging.getLogger(__name__)

_FIT_LOOKBACK = timedelta(days=7)
_MAX_WINDOWS = 50_000  # read per machine/section for one chart


class DashboardSource:
    """The dashboard's reads of one service (detectors, store, kept audio)."""

    def __init__(self, service: ScoringService) -> None:
        self.service = service

    @property
    def has_store(self) -> bool:
        """Whether there is a score store (history, alarms, windows by id)."""
        return self.service.store is not None

    def detector_names(self) -> list[str]:
        """The served detectors' names."""
        return list(self.service.registry.names)

    def machines(self) -> list[Machine]:
        """Every known machine/section (detectors' keys and stored ones), sorted."""
        from stetho.serving.views import machines_view

        return sorted(machines_view(self.service), key=lambda m: (m.machine, m.section))

    def windows(
        self, machine: str, section: str, start: datetime | None, end: datetime | None
    ) -> list[WindowSummary]:
        """A machine/section's windows in ``[start, end)``, oldest first."""
        from stetho.serving.views import windows_view

        rows = windows_view(
            self.service, machine, section, start, end, _MAX_WINDOWS, newest_first=False
        )
        return [w for w in rows if w.id is not None or not self.has_store]

    def windows_in(
        self, machines: list[Machine], start: datetime, end: datetime
    ) -> dict[tuple[str, str], list[WindowSummary]]:
        """Windows of every machine in ``[start, end]``."""
        return {
            (m.machine, m.section): self.windows(m.machine, m.section, start, end + _EPS)
            for m in machines
        }

    def recent_windows(
        self, machines: list[Machine], now: datetime
    ) -> dict[tuple[str, str], list[WindowSummary]]:
        """Windows of the week before the latest window of all machines (for a fitted range)."""
        last = [m.time for m in machines if m.time is not None]
        if not last:
            return {(m.machine, m.section): [] for m in machines}
        latest = max(last)
        return self.windows_in(machines, latest - _FIT_LOOKBACK, latest)

    def alarms(self, machine: str | None = None) -> list[Alarm]:
        """Alarms, newest first (none without a store)."""
        if not self.has_store:
            return []
        from stetho.serving.views import alarms_view

        return alarms_view(self.service, machine=machine)

    def alarm(self, alarm_id: int) -> Alarm | None:
        """One alarm, or None."""
        return next((a for a in self.alarms() if a.id == alarm_id), None)

    def window(self, window_id: int) -> WindowDetail | None:
        """One stored window with its nearest clip and audio URLs, or None."""
        if not self.has_store:
            return None
        from stetho.serving.views import window_view

        try:
            return window_view(self.service, window_id)
        except StethoError as err:
            if getattr(err, "http_status", 0) == 404:
                return None
            raise

    def audio(self, window: WindowDetail, nearest: bool = False) -> tuple[np.ndarray, int] | None:
        """The mono waveform kept for a window (or for its nearest normal clip), read where the
        API's audio URL serves it from; None when it is not kept."""
        url = window.nearest_audio_url if nearest else window.audio_url
        keeper, store = self.service.audio, self.service.store
        if url is None or keeper is None or store is None or window.id is None:
            return None
        row = store.window(window.id)
        name = None if row is None else (row.nearest_audio if nearest else row.audio)
        if name is None or not keeper.exists(name):
            return None
        import soundfile as sf

        try:
            wave, rate = sf.read(keeper.path(name), dtype="float32", always_2d=True)
        except (RuntimeError, OSError) as err:  # dropped by retention meanwhile, or damaged
            logger.info("dashboard: audio of window %s not readable: %s", window.id, err)
            return None
        return wave[:, 0], int(rate)


_EPS = timedelta(microseconds=1)
