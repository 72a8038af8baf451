"""The alarm rule: k of the last n windows above threshold opens an alarm; hysteresis closes it.

>>> ids, events = store.record(rows, AlarmRule(k=3, n=5, clear_k=0))   # doctest: +SKIP
>>> events                                    # "opened", "closed" or None per row  # doctest: +SKIP

The state of the rule (the last ``n`` windows and the open alarm) is read from the store inside
the transaction that writes the windows, never kept in memory: several processes writing the same
machine (``stetho serve`` and ``stetho monitor`` on one database) see each other's windows and
alarms, and an alarm closed by one is never counted into by another.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, and_, or_, select, text, update

from stetho.store.rows import AlarmRow, ScoreRow, as_utc
from stetho.store.schema import alarm_from, alarms, scores
from stetho.utils.config import ConfigBase, ConfigError

if TYPE_CHECKING:
    from stetho.store.store import ScoreStore

__all__ = ["AlarmRule", "AlarmTracker", "apply_rule", "lock_keys"]

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


def lock_keys(conn: Connection, keys: set[tuple[str, str]]) -> None:
    """Serialise alarm updates of ``keys`` across processes until the transaction ends.

    SQLite needs nothing (a write transaction holds the database's only write lock);
    PostgreSQL takes one transaction-scoped advisory lock per machine/section, in a fixed order.
    """
    if conn.dialect.name != "postgresql":
        return
    for machine, section in sorted(keys):
        digest = hashlib.sha256(f"stetho-alarm\0{machine}\0{section}".encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


def _history(conn: Connection, row: ScoreRow, n: int) -> list[tuple[bool, float, float | None]]:
    """(anomalous, score, normalised) of the last ``n`` stored windows of the row's key up to
    the row itself (by time, then id), oldest first."""
    t = as_utc(row.time, "ScoreRow.time")
    if row.id is None:
        upto = scores.c.time <= t
    else:
        upto = or_(scores.c.time < t, and_(scores.c.time == t, scores.c.id <= int(row.id)))
    q = (
        select(scores.c.decision, scores.c.score, scores.c.normalised)
        .where(scores.c.machine == row.machine, scores.c.section == row.section, upto)
        .order_by(scores.c.time.desc(), scores.c.id.desc())
        .limit(n)
    )
    return [
        (d == 1, float(s), None if z is None else float(z))
        for d, s, z in reversed(conn.execute(q).all())
    ]


def _peak(values: list[float | None], old: float | None = None) -> float | None:
    """The largest known value (None when none is known)."""
    known = [v for v in (*values, old) if v is not None]
    return max(known) if known else None


def _before_last_close(conn: Connection, row: ScoreRow) -> bool:
    """Whether ``row`` is older than the close of its key's latest closed alarm.

    Writers stamp a window before they store it, so with two writers (``serve`` and ``monitor``)
    a window can arrive after the other has closed an alarm its time falls into. Opening a new
    alarm from it would overlap the closed one; alarms of a key stay disjoint and in time order
    instead (the window itself is stored with its decision). Not in the paper.
    """
    closed = conn.execute(
        select(alarms.c.closed)
        .where(
            alarms.c.machine == row.machine,
            alarms.c.section == row.section,
            alarms.c.closed.is_not(None),
        )
        .order_by(alarms.c.closed.desc())
        .limit(1)
    ).scalar()
    return closed is not None and as_utc(row.time, "ScoreRow.time") < closed


def _open_alarm(conn: Connection, machine: str, section: str) -> AlarmRow | None:
    row = conn.execute(
        select(alarms)
        .where(alarms.c.machine == machine, alarms.c.section == section, alarms.c.closed.is_(None))
        .order_by(alarms.c.opened.desc(), alarms.c.id.desc())
        .limit(1)
    ).first()
    return None if row is None else alarm_from(row)


def apply_rule(conn: Connection, row: ScoreRow, rule: AlarmRule) -> str | None:
    """Apply ``rule`` to the stored window ``row`` inside the caller's write transaction.

    The history is the last ``rule.n`` stored windows of the row's machine/section up to the row
    (so the row must be stored first, in this transaction or before); the open alarm is the
    store's. Call :func:`lock_keys` first on PostgreSQL.

    A window older than the key's last alarm close opens no new alarm (see
    :func:`_before_last_close`).

    Returns:
        ``"opened"`` when the row opens an alarm, ``"closed"`` when it closes one, else None.
    """
    history = _history(conn, row, rule.n)
    n_above = sum(a for a, _, _ in history)
    anomalous = row.decision == 1
    alarm = _open_alarm(conn, row.machine, row.section)
    if alarm is None:
        if n_above < rule.k or _before_last_close(conn, row):
            return None
        above = [s for a, s, _ in history if a]
        conn.execute(
            alarms.insert().values(
                machine=row.machine,
                section=row.section,
                opened=as_utc(row.time, "alarm time"),
                closed=None,
                peak_score=max(above),
                n_windows=len(above),
                detector_id=str(row.detector_id),
                detector_version=int(row.detector_version),
                detector_name=str(row.detector_name) or None,
                peak_normalised=_peak([z for a, _, z in history if a]),
            )
        )
        logger.warning(
            "ALARM opened: %s/%s, %d of the last %d windows above threshold (peak %.4g)",
            row.machine,
            row.section,
            n_above,
            len(history),
            max(above),
        )
        return "opened"
    peak, count, peak_z = alarm.peak_score, alarm.n_windows, alarm.peak_normalised
    if anomalous:
        peak, count = max(peak, float(row.score)), count + 1
        z = row.normalised
        peak_z = _peak([None if z is None or not math.isfinite(z) else float(z)], peak_z)
    values: dict[str, object] = {
        "peak_score": peak,
        "n_windows": count,
        "peak_normalised": peak_z,
    }
    event = None
    if n_above <= rule.clear_k:
        values["closed"] = as_utc(row.time, "alarm close time")
        event = "closed"
        logger.warning("alarm closed: %s/%s", row.machine, row.section)
    if anomalous or event:
        conn.execute(update(alarms).where(alarms.c.id == alarm.id).values(**values))
    return event


class AlarmTracker:
    """Applies an :class:`AlarmRule` to windows already in the store.

    Stateless: each :meth:`update` reads the window history and the open alarm from the store
    in one write transaction, so trackers of several processes on one database agree. To write
    windows and apply the rule in one transaction, use :meth:`ScoreStore.record` instead.
    """

    def __init__(self, store: ScoreStore, rule: AlarmRule) -> None:
        self.store = store
        self.rule = rule

    def is_open(self, machine: str, section: str) -> bool:
        """Whether an alarm of (machine, section) is open in the store."""
        return self.store.open_alarm_of(machine, section) is not None

    def update(self, row: ScoreRow) -> str | None:
        """Take one stored window into account (its ``id`` orders windows of the same time).

        Returns:
            ``"opened"`` when the row opens an alarm, ``"closed"`` when it closes one, else None.
        """
        return self.store.apply_alarm_rule(row, self.rule)
