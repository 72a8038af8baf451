"""``stetho monitor``: watch several sources, score rolling windows, store scores, raise alarms.

::

    cfg = load_monitor_config("monitor.yaml")
    Monitor(cfg).run()                      # until Ctrl-C / SIGTERM (or every stream ended)

Each source runs in its own thread; an exception in one source is logged, shown in the status
line and the source is restarted after ``retry_seconds`` (doubling up to 5 minutes), while the
others go on. Every batch of windows is written to the store together with the source's resume
position and the alarm rule's update in one transaction (:meth:`~stetho.store.ScoreStore.record`):
the alarm state is read from the database, so a ``stetho serve`` writing the same store is seen.
Decisions are the detector's own (``scorer.decide``). The status line is written when it changed
(at most every ``status_seconds``) and once at the end.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from stetho.serving.history import detector_name
from stetho.serving.monitor_config import MonitorConfig, load_monitor_config
from stetho.serving.service import keep_window_audio, reference_to_keep
from stetho.serving.sources import (
    BaseSource,
    DetectorHandle,
    LoadedDetector,
    Window,
    make_source,
)
from stetho.store import AlarmTracker, AudioKeeper, ScoreRow, ScoreStore, StoreError

__all__ = ["Monitor", "SourceStats", "load_monitor_config"]

logger = logging.getLogger(__name__)

#: Longest wait before a failed source is retried.
MAX_RETRY_SECONDS = 300.0
#: Seconds between checks whether a detector folder was replaced.
RELOAD_CHECK_SECONDS = 10.0
#: Seconds between retention runs.
RETENTION_EVERY_SECONDS = 3600.0
#: Attempts to write a batch before the source is failed (and restarted from its position).
WRITE_ATTEMPTS = 3


@dataclass
class SourceStats:
    """What the status line shows of a source."""

    state: str = "starting"
    windows: int = 0
    last_score: float | None = None
    last_decision: int | None = None
    errors: int = 0
    alarms_opened: int = 0
    alarms_closed: int = 0


class Monitor:
    """Watches the sources of a :class:`MonitorConfig` and records their scores.

    Args:
        cfg: The configuration (paths already resolved, see :func:`load_monitor_config`).
        store: An open store (default: opened from ``cfg.db`` in :meth:`run`, closed after).
        stdin: Stream for the ``stdin`` source (default: ``sys.stdin.buffer``).
        load: ``load(folder) -> Scorer`` (default: :func:`stetho.detector.load_detector` on
            ``cfg.device``).
    """

    def __init__(
        self,
        cfg: MonitorConfig,
        store: ScoreStore | None = None,
        *,
        stdin: IO[bytes] | None = None,
        load: Callable[[Path], Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self._own_store = store is None
        self.store = store
        self._stdin = stdin
        if load is None:

            def load(path: Path) -> Any:
                from stetho.detector import load_detector

                return load_detector(path, device=cfg.device)

        self.handles: dict[str, DetectorHandle] = {}
        for s in cfg.sources:
            path = str(s.detector or cfg.detector)
            if path not in self.handles:
                self.handles[path] = DetectorHandle(path, load)
        self.stats: dict[str, SourceStats] = {s.label: SourceStats() for s in cfg.sources}
        self.stop_event = threading.Event()
        self.tracker: AlarmTracker | None = None
        self._threads: list[threading.Thread] = []
        self._stats_lock = threading.Lock()
        self._last_status: str | None = None
        #: where the audio of anomalous windows is kept (default: the SQLite store's folder)
        self.audio: AudioKeeper | None = None

    # ----------------------------------------------------------------------------- running
    def check(self) -> list[str]:
        """Problems that would stop sources now (store unreachable or corrupted, detector not
        loadable, unknown key, missing folder, no sound-card support); empty when every source
        can start. The store's integrity check reads the whole database."""
        problems = self._check_store()
        for s in self.cfg.sources:
            handle = self.handles[str(s.detector or self.cfg.detector)]
            try:
                det = handle.current()
            except Exception as err:
                problems.append(f"{s.label}: detector {handle.path} cannot be loaded: {err}")
                continue
            if (s.machine, str(s.section)) not in det.keys:
                valid = ", ".join(f"{m}/{k}" for m, k in det.keys)
                problems.append(
                    f"{s.label}: detector {handle.path} has no model for {s.machine}/"
                    f"{s.section}; valid keys: {valid}"
                )
            if s.kind == "folder" and not Path(str(s.path)).is_dir():
                problems.append(f"{s.label}: no such folder {s.path}")
            if s.kind == "soundcard":
                try:
                    import sounddevice  # noqa: F401
                except (ImportError, OSError) as err:
                    problems.append(
                        f"{s.label}: pip install 'stetho[sounddevice]' and PortAudio ({err})"
                    )
        return problems

    def _check_store(self) -> list[str]:
        try:
            store = self.store if self.store is not None else ScoreStore.open(self.cfg.db)
        except StoreError as err:
            return [f"store: {err}"]
        try:
            return [f"store: {p}" for p in store.check()]
        finally:
            if store is not self.store:
                store.close()

    def stop(self) -> None:
        """Ask every source to stop (:meth:`run` returns soon after)."""
        self.stop_event.set()

    def run(self, status: Callable[[str], None] | None = None) -> int:
        """Watch until :meth:`stop` (or every source ended); returns the number of failures.

        Args:
            status: Called with the status line every ``status_seconds`` (default: logged).
        """
        if self.store is None:
            self.store = ScoreStore.open(
                self.cfg.db, wait_seconds=self.cfg.store_wait_seconds, stop=self.stop_event
            )
        store = self.store
        self.tracker = AlarmTracker(store, self.cfg.alarm)
        if self.audio is None:  # anomalous windows' audio next to the store (SQLite)
            self.audio = AudioKeeper.for_store(store.database)
        for path, handle in self.handles.items():
            try:
                det = handle.current()
                logger.info("detector %s: id %s version %d", path, det.id, det.version)
            except Exception as err:  # its sources fail (and retry); the others go on
                logger.error("detector %s cannot be loaded: %s", path, err)
        sources = [self._make(s) for s in self.cfg.sources]
        self._threads = [
            threading.Thread(target=self._run_source, args=(src,), name=src.name, daemon=True)
            for src in sources
        ]
        for t in self._threads:
            t.start()
        say = status or (lambda line: logger.info("%s", line))
        try:
            self._main_loop(say)
        finally:
            self.stop_event.set()
            for t in self._threads:
                t.join(timeout=10.0)
            try:
                if self.cfg.status_seconds:  # after the sources stopped: their final counts
                    self._say_if_changed(say)
            finally:
                if self._own_store:
                    store.close()
                    self.store = None
        return sum(s.errors for s in self.stats.values())

    def _main_loop(self, say: Callable[[str], None]) -> None:
        now = time.monotonic()
        next_status = now + self.cfg.status_seconds if self.cfg.status_seconds else float("inf")
        next_reload = now + RELOAD_CHECK_SECONDS
        next_retention = now
        while not self.stop_event.is_set() and any(t.is_alive() for t in self._threads):
            now = time.monotonic()
            if now >= next_retention and self.cfg.retention_days:
                next_retention = now + RETENTION_EVERY_SECONDS
                try:
                    assert self.store is not None
                    self.store.apply_retention(self.cfg.retention_days)
                except Exception as err:
                    logger.error("retention failed: %s", err)
            if now >= next_reload and self.cfg.reload_detectors:
                next_reload = now + RELOAD_CHECK_SECONDS
                self.reload_detectors()
            if now >= next_status:
                next_status = now + self.cfg.status_seconds
                self._say_if_changed(say)
            self.stop_event.wait(min(0.5, self.cfg.poll_seconds))

    def _say_if_changed(self, say: Callable[[str], None]) -> None:
        """Write the status line when it differs from the last one written (state changes,
        not the same line every interval)."""
        line = self.status_line()
        if line != self._last_status:
            say(line)
            self._last_status = line

    def reload_detectors(self) -> None:
        """Reload detector folders replaced since they were loaded (e.g. by ``stetho calibrate``)."""
        for path, handle in self.handles.items():
            try:
                handle.reload()
            except Exception as err:  # a half-copied folder: keep the loaded version
                logger.error("detector %s changed but cannot be loaded: %s", path, err)

    def _make(self, s: Any) -> BaseSource:
        kwargs: dict[str, Any] = {
            "window_seconds": self.cfg.window_seconds,
            "hop_seconds": self.cfg.hop_seconds,
            "poll_seconds": self.cfg.poll_seconds,
            "last_position": self._last_position,
        }
        if s.kind == "stdin":
            kwargs["stream"] = self._stdin
        return make_source(s, self.handles[str(s.detector or self.cfg.detector)], **kwargs)

    def _last_position(self, source: str) -> str | None:
        assert self.store is not None
        return self.store.last_position(source)

    def _run_source(self, src: BaseSource) -> None:
        stats = self.stats[src.name]
        delay = self.cfg.retry_seconds
        while not self.stop_event.is_set():
            stats.state = "running"
            windows_before = stats.windows
            try:
                src.detector()  # fail early on an unloadable detector or an unknown key
                src.run(self._record, self.stop_event)
            except Exception as err:
                stats.errors += 1
                stats.state = f"FAILED: {err}"
                if stats.windows > windows_before:
                    delay = self.cfg.retry_seconds  # it worked for a while: retry soon
                logger.error(
                    "source %s failed: %s; restarting in %.3g s",
                    src.name,
                    err,
                    delay,
                    exc_info=logger.isEnabledFor(logging.DEBUG),
                )
                self.stop_event.wait(delay)
                delay = min(2 * delay, MAX_RETRY_SECONDS)
                continue
            stats.state = "stopped" if self.stop_event.is_set() else "ended"
            return

    # ----------------------------------------------------------------------------- recording
    def _record(
        self,
        src: BaseSource,
        det: LoadedDetector,
        windows: list[Window],
        position: str | None,
    ) -> None:
        """Store a source's windows, its position and the alarm rule's update (one transaction)."""
        assert self.store is not None
        thr = det.thresholds.get(src.key)
        decisions: list[int | None] = [None] * len(windows)
        normalised: list[float | None] = [None] * len(windows)
        if thr is not None and windows:  # the detector decides, with its own rule
            decided = det.scorer.decide([float(w.score) for w in windows], src.key)
            decisions = [int(d) for d in decided]
            z = det.scorer.normalise([float(w.score) for w in windows], src.key)
            normalised = [float(v) if math.isfinite(v) else None for v in z]
        rows = []
        for w, decision, z_score in zip(windows, decisions, normalised):
            anomalous = decision == 1 and w.wave is not None
            ref = det.nearest_ref(w.wave, src.key) if anomalous else None
            row = ScoreRow(
                time=w.time,
                machine=src.machine,
                section=src.section,
                source=w.source or src.name,
                window_start=float(w.t_start),
                window_end=float(w.t_end),
                score=float(w.score),
                threshold=thr,
                decision=decision,
                detector_id=det.id,
                detector_version=det.version,
                detector_name=detector_name(src.handle.path),
                normalised=z_score,
                nearest_ref=ref,
            )
            near = reference_to_keep(self.audio, ref, det.sample_rate)
            rows.append(keep_window_audio(self.audio, row, w.wave, det.sample_rate, near))
        positions = {src.name: position} if position is not None else None
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                _, events = self.store.record(rows, self.cfg.alarm, positions=positions)
                break
            except Exception as err:
                if attempt == WRITE_ATTEMPTS or self.stop_event.is_set():
                    raise
                logger.warning("source %s: store write failed (%s); retrying", src.name, err)
                self.stop_event.wait(2.0**attempt)
        stats = self.stats[src.name]
        for event in events:
            if event == "opened":
                stats.alarms_opened += 1
            elif event == "closed":
                stats.alarms_closed += 1
        if rows:
            stats.windows += len(rows)
            stats.last_score, stats.last_decision = rows[-1].score, rows[-1].decision

    def status_line(self) -> str:
        """One line: each source's state, windows, last score and decision; open alarms."""
        parts = []
        for s in self.cfg.sources:
            st = self.stats[s.label]
            if st.last_score is None:
                last = "no score yet"
            else:
                flag = {1: "ANOMALY", 0: "normal", None: "-"}[st.last_decision]
                last = f"last {st.last_score:.4g} {flag}"
            state = "" if st.state == "running" else f" [{st.state}]"
            parts.append(f"{s.machine}/{s.section} {s.label}: {st.windows} win, {last}{state}")
        try:
            open_alarms = sorted(
                f"{s.machine}/{s.section}"
                for s in self.cfg.sources
                if self.tracker is not None and self.tracker.is_open(s.machine, str(s.section))
            )
            alarms = ", ".join(dict.fromkeys(open_alarms)) or "none"
        except StoreError:  # logged where the sources write; the status line goes on
            alarms = "unknown (the store cannot be read)"
        parts.append(f"open alarms: {alarms}")
        return " | ".join(parts)
