"""The alarm rule: k of the last n windows above threshold opens an alarm; hysteresis closes it.

>>> tracker = AlarmTracker(store, AlarmRule(k=3, n=5, clear_k=0))   # doctest: +SKIP
>>> for row in rows:
...     event = tracker.update(row)          # "opened", "closed" or None   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass

from stetho.store.rows import AlarmRow, ScoreRow
from stetho.store.store import ScoreStore
from stetho.utils.config import ConfigBase, ConfigError

__all__ = ["AlarmRule", "AlarmTracker"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlarmRule(ConfigBase):
    """When an alarm opens and closes (per machine/section).

    An alarm opens when at least ``k`` of the last ``n`` windows are anomalous (decision 1), and
    closes when at most ``clear_k`` of the last ``n`` are; ``clear_k < k`` gives hysteresis, so a
    machine hovering at the threshold does not open and close alarms at every window.

    Attributes:
        k: Anomalous windows (of the last ``n``) that open an alarm.
        n: Length of the window history.
        clear_k: At most this many anomalous windows (of the last ``n``) close the alarm.
    """

    k: int = 3
    n: int = 5
    clear_k: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n:
            raise ConfigError(f"alarm rule needs 1 <= k <= n, got k={self.k}, n={self.n}")
        if not 0 <= self.clear_k < self.k:
            raise ConfigError(
                f"alarm rule needs 0 <= clear_k < k (hysteresis), got clear_k={self.clear_k}, "
                f"k={self.k}"
            )


@dataclass
class _KeyState:
    history: deque[tuple[bool, float]]  # (anomalous, score) of the last n windows
    alarm: AlarmRow | None
    peak: float = float("-inf")
    count: int = 0


class AlarmTracker:
    """Applies an :class:`AlarmRule` to score rows and persists alarm events in the store.

    One tracker per process, shared by all sources (thread-safe). On the first row of a
    (machine, section) the tracker resumes from the store: an alarm left open by a previous run
    stays open (and is closed by this one), and the window history is refilled with the last
    ``n - 1`` stored scores older than the row.
    """

    def __init__(self, store: ScoreStore, rule: AlarmRule) -> None:
        self.store = store
        self.rule = rule
        self._states: dict[tuple[str, str], _KeyState] = {}
        self._lock = threading.Lock()

    def is_open(self, machine: str, section: str) -> bool:
        """Whether an alarm of (machine, section) is open (as far as this tracker knows)."""
        state = self._states.get((machine, section))
        return state is not None and state.alarm is not None

    def _resume(self, row: ScoreRow) -> _KeyState:
        n = self.rule.n
        history: deque[tuple[bool, float]] = deque(maxlen=n)
        if n > 1:  # the windows stored before this one
            for p in self.store.scores(row.machine, row.section, end=row.time, limit=n - 1):
                history.append((p.decision == 1, p.score))
        alarm = self.store.open_alarm_of(row.machine, row.section)
        state = _KeyState(history=history, alarm=alarm)
        if alarm is not None:
            state.peak, state.count = alarm.peak_score, alarm.n_windows
            logger.info(
                "resuming open alarm %d of %s/%s (opened %s)",
                alarm.id,
                row.machine,
                row.section,
                alarm.opened.isoformat(),
            )
        return state

    def update(self, row: ScoreRow) -> str | None:
        """Take one scored window into account.

        Returns:
            ``"opened"`` when the row opens an alarm, ``"closed"`` when it closes one, else None.
        """
        key = (row.machine, row.section)
        with self._lock:
            state = self._states.get(key)
            if state is None:
                state = self._states[key] = self._resume(row)
            anomalous = row.decision == 1
            state.history.append((anomalous, float(row.score)))
            n_above = sum(a for a, _ in state.history)
            if state.alarm is None:
                if n_above < self.rule.k:
                    return None
                above = [s for a, s in state.history if a]
                state.peak, state.count = max(above), len(above)
                state.alarm = self.store.open_alarm(row, state.peak, state.count)
                logger.warning(
                    "ALARM opened: %s/%s, %d of the last %d windows above threshold (peak %.4g)",
                    row.machine,
                    row.section,
                    n_above,
                    len(state.history),
                    state.peak,
                )
                return "opened"
            if anomalous:
                state.peak = max(state.peak, float(row.score))
                state.count += 1
            if n_above <= self.rule.clear_k:
                self.store.update_alarm(
                    state.alarm.id, peak_score=state.peak, n_windows=state.count, closed=row.time
                )
                logger.warning("alarm closed: %s/%s", row.machine, row.section)
                state.alarm = None
                return "closed"
            if anomalous:
                self.store.update_alarm(
                    state.alarm.id, peak_score=state.peak, n_windows=state.count
                )
            return None
