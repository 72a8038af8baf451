"""The scoring service behind the HTTP API: detectors, limits, the score store and alarms.

Transport-free: :mod:`stetho.serving.api` turns requests into calls of :class:`ScoringService`
and its results into JSON. Decisions are the detector's own (``scorer.decide``); scores go to the
store (when one is configured) together with the alarm rule's update, in one transaction that
reads the alarm state from the database (:meth:`~stetho.store.ScoreStore.record`), so a
``stetho monitor`` writing the same store is seen. The last score of every machine/section and
the latest abnormal window (for the dashboard's spectrogram) are also kept in memory.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from stetho.serving.charts import TimelinePoint
from stetho.serving.decode import RequestError
from stetho.serving.files import normalize_section
from stetho.serving.metrics import MachineGauge
from stetho.utils.config import ConfigBase

if TYPE_CHECKING:
    from stetho.serving.registry import DetectorEntry, DetectorRegistry
    from stetho.store import AlarmRule, AlarmTracker, ScoreStore

__all__ = ["AbnormalWindow", "ScoringService", "ServiceLimits"]

logger = logging.getLogger(__name__)

_RECENT = 5000  # scores kept in memory per machine/section


@dataclass
class ServiceLimits(ConfigBase):
    """Limits that keep the service up under abuse (all per process).

    Attributes:
        max_body_mb: Largest request body (MiB); larger ones get 413.
        max_seconds: Longest audio (s), checked from the header before decoding; 413 above.
        max_concurrency: Requests decoding/scoring at once (scoring itself is serialised per
            detector); the others wait.
        max_queue: Requests admitted to wait; beyond ``max_concurrency + max_queue`` 503.
        max_pending_mb: Bodies of admitted requests (MiB, counted as they are received, not by
            their declared Content-Length) beyond which a request gets 503: bounds memory however
            many clients connect.
        queue_timeout: Seconds a request may wait for a scoring slot before 503.
        body_timeout: Seconds to receive a whole request body before 408.
        min_body_rate_kib: After ``body_grace`` seconds a body must arrive at this average rate
            (KiB/s, counted from the end of the grace period) or it is cut with 408; 0 disables.
        body_grace: Seconds before ``min_body_rate_kib`` applies.
        header_timeout: Seconds to receive a request's headers before the connection is closed
            (separate from ``body_timeout``: kept short, so slow-header clients cannot hold the
            connection slots).
        keepalive_timeout: Seconds an idle keep-alive connection is kept open.
        max_connections: Open connections beyond which a new one gets 503 and is closed.
        backlog: Listen backlog of the socket.
    """

    max_body_mb: float = 50.0
    max_seconds: float = 600.0
    max_concurrency: int = 2
    max_queue: int = 256
    max_pending_mb: float = 256.0
    queue_timeout: float = 30.0
    body_timeout: float = 30.0
    min_body_rate_kib: float = 64.0
    body_grace: float = 5.0
    header_timeout: float = 10.0
    keepalive_timeout: float = 5.0
    max_connections: int = 1000
    backlog: int = 1024

    def __post_init__(self) -> None:
        positive = ("max_body_mb", "max_seconds", "max_pending_mb", "queue_timeout")
        for name in (*positive, "body_timeout", "header_timeout", "keepalive_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_concurrency < 1 or self.max_queue < 0 or self.max_connections < 1:
            raise ValueError("max_concurrency and max_connections must be >= 1, max_queue >= 0")
        if self.backlog < 1:
            raise ValueError(f"backlog must be >= 1, got {self.backlog}")
        if not (self.min_body_rate_kib >= 0 and self.body_grace >= 0):
            raise ValueError(
                f"min_body_rate_kib and body_grace must be >= 0, got {self.min_body_rate_kib} "
                f"and {self.body_grace}"
            )

    @property
    def max_body_bytes(self) -> int:
        """``max_body_mb`` in bytes."""
        return int(self.max_body_mb * 2**20)


@dataclass(frozen=True)
class AbnormalWindow:
    """The latest window of a machine that was scored anomalous (kept for the dashboard)."""

    time: datetime
    machine: str
    section: str
    wave: np.ndarray  # (N,) float32 at ``sample_rate``
    sample_rate: int
    score: float
    threshold: float | None


class ScoringService:
    """Detectors + optional store + alarm tracker, shared by all requests of one process.

    Args:
        registry: The detectors, by name.
        limits: Request limits.
        store: Where scores and alarms are kept (None: memory only, no history).
        alarm_rule: The rule that opens/closes alarms (default ``AlarmRule()``); needs a store.
    """

    def __init__(
        self,
        registry: DetectorRegistry,
        limits: ServiceLimits | None = None,
        store: ScoreStore | None = None,
        alarm_rule: Any = None,
    ) -> None:
        self.registry = registry
        self.limits = limits or ServiceLimits()
        self.store = store
        self.tracker: AlarmTracker | None = None
        self.alarm_rule: AlarmRule | None = None
        if store is not None:
            from stetho.store import AlarmRule, AlarmTracker

            self.alarm_rule = alarm_rule or AlarmRule()
            self.tracker = AlarmTracker(store, self.alarm_rule)
        self._write_lock = threading.Lock()
        self._last: dict[tuple[str, str], MachineGauge] = {}
        self._abnormal: dict[tuple[str, str], AbnormalWindow] = {}
        #: recent scores per key for the dashboard when there is no store
        self.recent: dict[tuple[str, str], deque[TimelinePoint]] = {}

    # -- keys --------------------------------------------------------------------------------
    def resolve(
        self, machine: str | None, section: str | None, detector: str | None
    ) -> tuple[DetectorEntry, tuple[str, str]]:
        """The detector and (machine, section) a request asks for.

        Raises:
            RequestError: 400 missing parameters, 404 unknown detector or key.
        """
        sec = None if section is None else normalize_section(section)
        try:
            entry = self.registry.for_key(machine or "", sec or "", detector)
        except LookupError as err:
            raise RequestError(404, str(err.args[0])) from None
        keys = entry.keys
        valid = ", ".join(f"{m}/{s}" for m, s in keys) or "none"
        if machine is None or sec is None:
            if len(keys) != 1:
                missing = [n for n, v in (("machine", machine), ("section", sec)) if v is None]
                raise RequestError(
                    400,
                    f"missing query parameter(s) {', '.join(missing)}: use "
                    f"?machine=<m>&section=<XX>; valid machine/section of detector "
                    f"{entry.name!r}: {valid}",
                )
            machine = keys[0][0] if machine is None else machine
            sec = keys[0][1] if sec is None else sec
        key = (machine, sec)
        if key not in keys:
            raise RequestError(
                404,
                f"unknown machine/section {key[0]!r}/{key[1]!r} for detector {entry.name!r}; "
                f"valid: {valid}",
            )
        return entry, key

    # -- scoring -----------------------------------------------------------------------------
    def score(
        self,
        entry: DetectorEntry,
        key: tuple[str, str],
        wave: np.ndarray,
        seconds: float,
        source: str = "http",
    ) -> dict[str, Any]:
        """Score one waveform (at the detector's rate), record it and update alarms.

        Raises:
            RequestError: 400 when the model cannot score the audio (e.g. too short).
        """
        machine, section = key
        entry.refresh()
        with entry.lock:  # scorer, threshold and identity of one version
            scorer, ident, version = entry.scorer, entry.detector_id, entry.version
            if key not in list(scorer.keys):
                raise RequestError(
                    404, f"detector {entry.name!r} no longer has {machine}/{section}"
                )
            try:
                score = float(scorer.score_waveforms([wave], machine, section)[0])
            except ValueError as err:
                raise RequestError(
                    400,
                    f"cannot score the audio ({wave.shape[0]} samples at "
                    f"{scorer.sample_rate} Hz): {err}",
                ) from err
            thr = scorer.thresholds.get(key)
            # the detector decides (its own rule), serving never compares with the threshold
            decision = None if thr is None else int(scorer.decide([score], key)[0])
        # a key without a fitted threshold (+inf: never anomalous) reports none
        threshold = None if thr is None or not math.isfinite(thr) else float(thr)
        now = datetime.now(UTC)
        alarm = self._record(
            (ident, version), key, now, seconds, score, threshold, decision, source
        )
        if decision == 1:
            self._abnormal[key] = AbnormalWindow(
                now, machine, section, wave, int(scorer.sample_rate), score, threshold
            )
        return {
            "score": score,
            "decision": decision,
            "threshold": threshold,
            "machine": machine,
            "section": section,
            "seconds": seconds,
            "detector": entry.name,
            "detector_id": ident,
            "detector_version": version,
            "time": now.isoformat(),
            "alarm": alarm,
        }

    def _record(
        self,
        identity: tuple[str, int],
        key: tuple[str, str],
        now: datetime,
        seconds: float,
        score: float,
        threshold: float | None,
        decision: int | None,
        source: str,
    ) -> str | None:
        event = None
        with self._write_lock:
            if self.store is not None and self.alarm_rule is not None:
                from stetho.store import ScoreRow

                row = ScoreRow(
                    time=now,
                    machine=key[0],
                    section=key[1],
                    source=source,
                    window_start=0.0,
                    window_end=float(seconds),
                    score=score,
                    threshold=threshold,
                    decision=decision,
                    detector_id=identity[0],
                    detector_version=identity[1],
                )
                _, (event,) = self.store.record([row], self.alarm_rule)
                if event:  # the store logs the event itself
                    logger.info("alarm %s for %s/%s (score %.4f)", event, *key, score)
            prev = self._last.get(key)
            alarm_open = prev.alarm_open if prev else False
            if event is not None:
                alarm_open = event == "opened"
            self.recent.setdefault(key, deque(maxlen=_RECENT)).append(
                TimelinePoint(now, score, threshold, decision)
            )
            self._last[key] = MachineGauge(
                key[0], key[1], score, threshold, decision, now, alarm_open
            )
        return event

    # -- state -------------------------------------------------------------------------------
    def machine_states(self) -> list[MachineGauge]:
        """Latest state per machine/section: from the store when there is one, else memory."""
        if self.store is None:
            return [self._last[k] for k in sorted(self._last)]
        out = []
        for st in self.store.machines():
            last = st.last
            out.append(
                MachineGauge(
                    machine=st.machine,
                    section=st.section,
                    score=None if last is None else float(last.score),
                    threshold=None if last is None or last.threshold is None else last.threshold,
                    decision=None if last is None else last.decision,
                    time=None if last is None else last.time,
                    alarm_open=st.open_alarm is not None,
                )
            )
        return out

    def latest_abnormal(self, machine: str, section: str) -> AbnormalWindow | None:
        """The latest abnormal window scored by this process for (machine, section)."""
        return self._abnormal.get((machine, section))

    def require_store(self) -> ScoreStore:
        """The store, or a 503 naming the option that enables history."""
        if self.store is None:
            raise RequestError(
                503,
                "this server keeps no score history: start it with --db PATH_OR_URL "
                "(e.g. --db runs/plant.db or --db postgresql://user@host/db)",
            )
        return self.store

    def close(self) -> None:
        """Close the store."""
        if self.store is not None:
            self.store.close()
