"""The scoring service behind the HTTP API: detectors, limits, the score store and alarms.

Transport-free: :mod:`stetho.serving.api` turns requests into calls of :class:`ScoringService`
and its results into JSON. One window is scored through the detector contract: features once,
the raw score, the detector's own decision (``decide``), its normalised score (``normalise``)
and, for an anomalous window, the nearest normal bank clip (``nearest``). The window is one
:class:`~stetho.store.ScoreRow`; it goes to the store (when one is configured) together with the
alarm rule's update, in one transaction that reads the alarm state from the database
(:meth:`~stetho.store.ScoreStore.record`), so a ``stetho monitor`` writing the same store is
seen. The audio of anomalous windows (and a copy of their nearest bank clip) is kept in the
store's audio folder (:class:`~stetho.store.audio.AudioKeeper`). The last window of every
machine/section and the latest abnormal one (for the dashboard's spectrogram) are also kept in
memory.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stetho.data.names import normalize_section
from stetho.serving.decode import RequestError
from stetho.serving.metrics import MachineGauge
from stetho.store.rows import ScoreRow
from stetho.utils.config import ConfigBase

if TYPE_CHECKING:
    from stetho.serving.registry import DetectorEntry, DetectorRegistry
    from stetho.store import AlarmRule, AlarmTracker, ScoreStore
    from stetho.store.audio import AudioKeeper

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
    """The latest window of a machine that was scored anomalous, with its audio (for the
    dashboard's spectrogram): the stored record plus the waveform."""

    row: ScoreRow
    wave: np.ndarray  # (N,) float32 at ``sample_rate``
    sample_rate: int

    @property
    def time(self) -> datetime:
        return self.row.time

    @property
    def machine(self) -> str:
        return self.row.machine

    @property
    def section(self) -> str:
        return self.row.section

    @property
    def score(self) -> float:
        return self.row.score

    @property
    def threshold(self) -> float | None:
        return self.row.threshold


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


class ScoringService:
    """Detectors + optional store + alarm tracker, shared by all requests of one process.

    Args:
        registry: The detectors, by name.
        limits: Request limits.
        store: Where scores and alarms are kept (None: memory only, no history).
        alarm_rule: The rule that opens/closes alarms (default ``AlarmRule()``); needs a store.
        audio: Where the audio of anomalous windows is kept: an
            :class:`~stetho.store.audio.AudioKeeper`, ``"auto"`` (default: the SQLite store's
            ``<file>.audio`` folder, none for PostgreSQL or without a store) or None (no audio).
    """

    def __init__(
        self,
        registry: DetectorRegistry,
        limits: ServiceLimits | None = None,
        store: ScoreStore | None = None,
        alarm_rule: Any = None,
        audio: AudioKeeper | str | None = "auto",
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
        if audio == "auto":
            from stetho.store.audio import AudioKeeper

            audio = None if store is None else AudioKeeper.for_store(store.database)
        elif isinstance(audio, str):
            raise ValueError(f"audio must be an AudioKeeper, 'auto' or None, got {audio!r}")
        self.audio: AudioKeeper | None = audio
        self._write_lock = threading.Lock()
        self._last: dict[tuple[str, str], ScoreRow] = {}
        self._alarm_open: dict[tuple[str, str], bool] = {}
        self._abnormal: dict[tuple[str, str], AbnormalWindow] = {}
        #: recent windows per key (the history when there is no store)
        self.recent: dict[tuple[str, str], deque[ScoreRow]] = {}

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

    def known_keys(self) -> dict[tuple[str, str], str]:
        """Every (machine, section) a served detector scores → the name of the first one."""
        out: dict[tuple[str, str], str] = {}
        for entry in self.registry:
            for key in entry.keys:
                out.setdefault((str(key[0]), str(key[1])), entry.name)
        return out

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

        Args:
            entry: The detector.
            key: (machine, section).
            wave: Mono float32 at the detector's rate.
            seconds: Its duration.
            source: Where it came from (an upload's file name, ``"http"`` when unnamed).

        Returns:
            The window as JSON-ready dict (the fields of :class:`~stetho.store.ScoreRow` that
            the API shows, plus ``seconds``, ``detector``, ``alarm``, ``has_audio``).

        Raises:
            RequestError: 400 when the model cannot score the audio (e.g. too short).
        """
        row, sample_rate, nearest_wave = self._score_window(entry, key, wave, source, seconds)
        row = self._keep_audio(row, wave, sample_rate, nearest_wave)
        row, alarm = self._record(row)
        if row.decision == 1:
            self._abnormal[key] = AbnormalWindow(row, wave, sample_rate)
        return {
            "id": row.id,
            "score": row.score,
            "normalised": row.normalised,
            "decision": row.decision,
            "threshold": row.threshold,
            "machine": row.machine,
            "section": row.section,
            "seconds": seconds,
            "source": row.source,
            "detector": entry.name,
            "detector_name": entry.name,
            "detector_id": row.detector_id,
            "detector_version": row.detector_version,
            "time": row.time.isoformat(),
            "alarm": alarm,
            "nearest_ref": row.nearest_ref,
            "has_audio": row.audio is not None and row.id is not None,
        }

    def _score_window(
        self,
        entry: DetectorEntry,
        key: tuple[str, str],
        wave: np.ndarray,
        source: str,
        seconds: float,
    ) -> tuple[ScoreRow, int, np.ndarray | None]:
        """The scored window (not stored yet), the detector's rate and, for an anomalous
        window, the audio of its nearest normal bank clip (when the detector knows its path)."""
        machine, section = key
        entry.refresh()
        loaded = entry.current()
        with entry.lock:  # scorer, threshold and identity of one version
            scorer, ident, version = loaded.scorer, loaded.id, loaded.version
            if key not in list(scorer.keys):
                raise RequestError(
                    404, f"detector {entry.name!r} no longer has {machine}/{section}"
                )
            sample_rate = int(scorer.sample_rate)
            try:
                feats = scorer.embed_waveforms([wave])
                score = float(scorer.score_features(feats, key)[0])
            except ValueError as err:
                raise RequestError(
                    400,
                    f"cannot score the audio ({wave.shape[0]} samples at "
                    f"{scorer.sample_rate} Hz): {err}",
                ) from err
            thr = scorer.thresholds.get(key)
            # the detector decides (its own rule), serving never compares with the threshold
            decision = None if thr is None else int(scorer.decide([score], key)[0])
            normalised = _finite(float(scorer.normalise([score], key)[0]))
            nearest = scorer.nearest(feats, key)[0] if decision == 1 else None
        ref = None if nearest is None else nearest.ref
        nearest_wave = reference_to_keep(self.audio, ref, sample_rate)
        row = ScoreRow(
            time=datetime.now(UTC),
            machine=machine,
            section=section,
            source=source,
            window_start=0.0,
            window_end=float(seconds),
            score=score,
            # a key without a fitted threshold (+inf: never anomalous) reports none
            threshold=_finite(None if thr is None else float(thr)),
            decision=decision,
            detector_id=ident,
            detector_version=version,
            detector_name=entry.name,
            normalised=normalised,
            nearest_ref=ref,
        )
        return row, sample_rate, nearest_wave

    def _keep_audio(
        self, row: ScoreRow, wave: np.ndarray, sample_rate: int, nearest: np.ndarray | None
    ) -> ScoreRow:
        """``row`` with the names of its kept audio (anomalous windows, with a store)."""
        return keep_window_audio(self.audio, row, wave, sample_rate, nearest)

    def _record(self, row: ScoreRow) -> tuple[ScoreRow, str | None]:
        """Store ``row`` and apply the alarm rule; return it with its id, and the event."""
        key = (row.machine, row.section)
        event = None
        with self._write_lock:
            if self.store is not None and self.alarm_rule is not None:
                (new_id,), (event,) = self.store.record([row], self.alarm_rule)
                row = replace(row, id=new_id)
                if event:  # the store logs the event itself
                    logger.info("alarm %s for %s/%s (score %.4f)", event, *key, row.score)
            if event is not None:
                self._alarm_open[key] = event == "opened"
            self.recent.setdefault(key, deque(maxlen=_RECENT)).append(row)
            self._last[key] = row
        return row, event

    # -- state -------------------------------------------------------------------------------
    def machine_states(self) -> list[MachineGauge]:
        """State per machine/section: every key a served detector knows (never scored: no
        score) and every key in the store (or scored by this process without one)."""
        known = self.known_keys()
        out: dict[tuple[str, str], MachineGauge] = {}
        if self.store is None:
            for key, last in self._last.items():
                out[key] = _gauge(last, self._alarm_open.get(key, False), known.get(key, ""))
        else:
            for st in self.store.machines():
                key = (st.machine, st.section)
                name = known.get(key, "")
                if st.last is None:
                    out[key] = MachineGauge(
                        st.machine, st.section, None, None, None, None, True, None, name
                    )
                else:
                    out[key] = _gauge(st.last, st.open_alarm is not None, name)
        for key, name in known.items():
            out.setdefault(
                key, MachineGauge(key[0], key[1], None, None, None, None, False, None, name)
            )
        return [out[k] for k in sorted(out)]

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


def _gauge(row: ScoreRow, alarm_open: bool, served: str) -> MachineGauge:
    return MachineGauge(
        machine=row.machine,
        section=row.section,
        score=float(row.score),
        threshold=row.threshold,
        decision=row.decision,
        time=row.time,
        alarm_open=alarm_open,
        normalised=row.normalised,
        detector_name=row.detector_name or served,
    )


def reference_to_keep(
    keeper: AudioKeeper | None, ref: str | None, sample_rate: int
) -> np.ndarray | None:
    """The audio of bank clip ``ref`` when ``keeper`` has no copy of it yet (else None)."""
    if ref is None or keeper is None or keeper.has_reference(ref) is not None:
        return None
    return _load_reference(ref, sample_rate)


def _load_reference(ref: str, sample_rate: int) -> np.ndarray | None:
    """The bank clip ``ref`` at ``sample_rate`` (None, logged, when it cannot be read)."""
    from stetho.data import load_audio

    try:
        wave, _ = load_audio(Path(ref), sample_rate)
        return np.asarray(wave, dtype=np.float32)
    except Exception as err:  # a bank recorded on another machine: the window is still kept
        logger.info("nearest bank clip %s cannot be read here (%s); not kept", ref, err)
        return None


def keep_window_audio(
    keeper: AudioKeeper | None,
    row: ScoreRow,
    wave: np.ndarray | None,
    sample_rate: int,
    nearest: np.ndarray | None = None,
) -> ScoreRow:
    """``row`` with the names of its kept audio: an anomalous window's audio and the copy of its
    nearest bank clip go to ``keeper``'s folder (nothing without a keeper, audio or anomaly).
    A failed write is logged and the window stored without audio."""
    if keeper is None or wave is None or row.decision != 1:
        return row
    try:
        audio = keeper.keep(wave, sample_rate, row.machine, row.section, row.time)
        near = None
        if row.nearest_ref is not None:
            near = keeper.has_reference(row.nearest_ref)
            if near is None and nearest is not None:
                near = keeper.keep_reference(row.nearest_ref, nearest, sample_rate)
    except OSError as err:
        logger.error("cannot keep the audio of %s/%s: %s", row.machine, row.section, err)
        return row
    return replace(row, audio=audio, nearest_audio=near)
