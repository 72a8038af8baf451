"""The score-history store: every score, alarm and source position, in SQLite or PostgreSQL.

>>> store = ScoreStore.open("runs/plant.db")                      # doctest: +SKIP
>>> store.add_scores(rows, positions={"folder:/in": "clip_0042.wav"})  # doctest: +SKIP
>>> store.scores("fan", section="00", start=t0, end=t1)           # doctest: +SKIP

One SQLite file (WAL mode, ``synchronous=NORMAL``) by default; PostgreSQL through a
``postgresql://`` URL (psycopg 3) with the same schema. Every write is one transaction, so a
process killed mid-write leaves either all of a batch (and its source position) or none of it.
:meth:`ScoreStore.record` also applies the alarm rule in that transaction, from the state in the
database (never from a process's memory), so that several processes can write one store.

A database the driver cannot read or write (corrupted pages, a lost server, a lock held too
long) raises :class:`StoreError` (HTTP 503) with the driver's one-line reason, never the SQL;
:meth:`ScoreStore.check` runs an integrity check (``stetho monitor --check``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    case,
    create_engine,
    delete,
    event,
    func,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, SQLAlchemyError

from stetho.store.alarms import AlarmRule, apply_rule, lock_keys
from stetho.store.rows import (
    AlarmRow,
    MachineState,
    ScoreRow,
    StoreError,
    StoreUnreachableError,
    as_utc,
    utc_now,
)
from stetho.store.schema import (
    SCHEMA_VERSION,
    alarm_from,
    alarms,
    migrate,
    positions,
    schema_version,
    score_from,
    score_values,
    scores,
)

__all__ = ["ScoreStore", "database_url"]

logger = logging.getLogger(__name__)

#: Rows deleted per transaction by :meth:`ScoreStore.apply_retention`.
RETENTION_BATCH = 20_000
#: Seconds an SQLite writer waits for another writer's lock before failing.
SQLITE_BUSY_TIMEOUT = 60.0


def database_url(target: str | os.PathLike[str]) -> str:
    """The SQLAlchemy URL for a path, ``sqlite:///…`` or ``postgresql://…`` URL.

    ``postgresql://`` and ``postgres://`` select the psycopg 3 driver.
    """
    s = os.fspath(target)
    if s.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + s.split("://", 1)[1]
    if "://" in s:
        return s
    return "sqlite:///" + str(Path(s).expanduser().absolute())


def _retry_locked(run: Callable[[], Any], seconds: float) -> Any:
    """``run()``, retried while SQLite says the database is locked or busy (up to ``seconds``)."""
    import sqlite3

    deadline = time.monotonic() + seconds
    delay = 0.01
    while True:
        try:
            return run()
        except sqlite3.OperationalError as err:
            text_ = str(err).lower()
            if ("locked" not in text_ and "busy" not in text_) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy's BEGIN events (below) control transactions, not the driver.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
    # switching a new file to WAL needs an exclusive lock and SQLite does not wait for it
    # (busy_timeout does not apply): two processes opening a fresh store at once (serve and
    # monitor started together) retry here instead of failing with "database is locked"
    _retry_locked(lambda: cur.execute("PRAGMA journal_mode=WAL"), SQLITE_BUSY_TIMEOUT)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    # Writers take the lock up front (BEGIN IMMEDIATE): a deferred transaction that upgrades from
    # read to write fails at once with "database is locked" instead of waiting busy_timeout.
    if conn.get_execution_options().get("stetho_write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


class ScoreStore:
    """Score history, alarms and source positions in one database (thread-safe).

    Open with :meth:`open`; the schema is created or migrated on open.
    """

    def __init__(self, engine: Engine, where: str) -> None:
        self.engine = engine
        self.where = where
        #: The SQLite file (its path) or the server URL (password hidden).
        self.database = where
        if engine.dialect.name == "sqlite" and engine.url.database:
            self.database = str(engine.url.database)
        self._lock = threading.Lock()  # SQLite: one writer per process at a time

    # ----------------------------------------------------------------------------- opening
    @classmethod
    def open(
        cls,
        target: str | os.PathLike[str],
        *,
        wait_seconds: float = 0.0,
        stop: threading.Event | None = None,
        **engine_kwargs: Any,
    ) -> ScoreStore:
        """Open (creating and migrating when needed) the store at ``target``.

        Args:
            target: A file path (SQLite), ``sqlite:///path``, or ``postgresql://user@host/db``.
            wait_seconds: How long to keep retrying a database server that does not answer
                (:class:`StoreUnreachableError`: e.g. PostgreSQL still starting beside the
                monitor), with waits of 1, 2, 4 … 30 s, each logged; 0 tries once.
            stop: Set to give up waiting at once.
            **engine_kwargs: Extra :func:`sqlalchemy.create_engine` arguments.

        Raises:
            StoreError: the database cannot be reached (after ``wait_seconds``) or was written
                by a newer stetho.
        """
        deadline = time.monotonic() + max(0.0, wait_seconds)
        delay = 1.0
        while True:
            try:
                return cls._open_once(target, **engine_kwargs)
            except StoreUnreachableError as err:
                left = deadline - time.monotonic()
                if left <= 0 or (stop is not None and stop.is_set()):
                    raise
                pause = min(delay, left)
                logger.warning("%s; trying again in %.0f s", err, pause)
                if (stop or threading.Event()).wait(pause):  # True: stopped while waiting
                    raise
                delay = min(2 * delay, 30.0)

    @classmethod
    def _open_once(cls, target: str | os.PathLike[str], **engine_kwargs: Any) -> ScoreStore:
        """One attempt of :meth:`open`."""
        url = database_url(target)
        try:
            parsed = make_url(url)
        except ArgumentError as err:
            raise StoreError(f"{target}: not a database path or URL ({err})") from err
        where = parsed.render_as_string(hide_password=True)
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            engine_kwargs.setdefault(
                "connect_args", {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT}
            )
            engine = create_engine(parsed, **engine_kwargs)
            event.listen(engine, "connect", _sqlite_connect)
            event.listen(engine, "begin", _sqlite_begin)
        else:
            engine_kwargs.setdefault("pool_pre_ping", True)
            try:
                engine = create_engine(parsed, **engine_kwargs)
            except ImportError as err:
                raise StoreError(
                    f"{where}: the PostgreSQL driver is missing: pip install 'stetho[postgres]' "
                    f"({err})"
                ) from err
            except ArgumentError as err:
                raise StoreError(f"{where}: cannot use this database ({err})") from err
        store = cls(engine, where)
        try:
            if store._schema_version() == SCHEMA_VERSION:  # no write lock when nothing to do
                return store
            with store._write() as conn:
                if engine.dialect.name == "postgresql":  # one migrator at a time
                    conn.execute(text("SELECT pg_advisory_xact_lock(4242170001)"))
                before = migrate(conn, where)
        except StoreError as err:  # the driver's error, without SQL
            engine.dispose()
            raise type(err)(str(err).replace("cannot be read", "cannot be opened")) from err
        except SQLAlchemyError as err:
            engine.dispose()
            raise StoreError(f"{where}: cannot open the score store ({err})") from err
        except BaseException:
            engine.dispose()
            raise
        if before == 0:
            logger.info("created score store %s", where)
        return store

    def _schema_version(self) -> int | None:
        """The database's schema version (None: no schema yet)."""
        with self._read() as conn:
            if not inspect(conn).has_table(schema_version.name):
                return None
            return conn.execute(select(func.max(schema_version.c.version))).scalar()

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return str(self.engine.dialect.name)

    def close(self) -> None:
        """Release the connections (the store cannot be used afterwards)."""
        self.engine.dispose()

    def __enter__(self) -> ScoreStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unavailable(self, doing: str, err: DBAPIError) -> StoreError:
        """A :class:`StoreError` with the driver's first line (no SQL, no parameters)."""
        lines = str(err.orig if err.orig is not None else err).strip().splitlines()
        reason = lines[0] if lines else type(err).__name__
        if self.dialect == "sqlite":
            advice = (
                "check it with `stetho monitor CONFIG --check`; a corrupted file must be "
                "restored from a backup or moved aside (a new one is then created)"
            )
        else:
            advice = "check that the database server is running and reachable"
        unreachable = self.dialect != "sqlite" and isinstance(err, OperationalError)
        cls = StoreUnreachableError if unreachable else StoreError
        return cls(f"{self.where}: the score store cannot be {doing} ({reason}); {advice}")

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction (committed on success, rolled back on any error)."""
        try:
            with self._lock, self.engine.connect() as conn:
                conn = conn.execution_options(stetho_write=True)
                with conn.begin():
                    yield conn
        except DBAPIError as err:
            raise self._unavailable("written", err) from err

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn, conn.begin():
                yield conn
        except DBAPIError as err:
            raise self._unavailable("read", err) from err

    def check(self) -> list[str]:
        """Problems of the database: an integrity check on SQLite (``PRAGMA quick_check``: every
        page and index readable), every table readable on PostgreSQL; empty when healthy.
        Reads the whole file: seconds per GB."""
        try:
            with self._read() as conn:
                if self.dialect == "sqlite":
                    found = [str(r[0]) for r in conn.exec_driver_sql("PRAGMA quick_check")]
                    if found != ["ok"]:
                        shown = "; ".join(found[:5]) + ("; …" if len(found) > 5 else "")
                        return [
                            f"{self.where}: the score store is corrupted ({shown}); restore it "
                            "from a backup or move it aside (a new one is created)"
                        ]
                    return []
                for table in (scores, alarms, positions):
                    conn.execute(select(func.count()).select_from(table)).scalar()
        except StoreError as err:
            return [str(err)]
        return []

    # ------------------------------------------------------------------------------ writes
    def add_scores(
        self, rows: Sequence[ScoreRow], *, positions: Mapping[str, str] | None = None
    ) -> list[int]:
        """Store score rows (and source positions) in one transaction.

        Args:
            rows: The rows (their ``id`` is ignored).
            positions: ``{source: position}`` resume markers written in the same transaction, so
                that a restart never scores a window twice nor skips one.

        Returns:
            The new row ids, in the order of ``rows``.

        Raises:
            ValueError: a row has a naive time or no machine/section.
        """
        values = [score_values(r) for r in rows]
        ids: list[int] = []
        with self._write() as conn:
            if values:  # batched "insertmanyvalues", ids returned in the order of the rows
                stmt = scores.insert().returning(scores.c.id, sort_by_parameter_order=True)
                ids = [int(i) for i in conn.execute(stmt, values).scalars()]
            for source, position in (positions or {}).items():
                self._upsert_position(conn, source, position)
        return ids

    def record(
        self,
        rows: Sequence[ScoreRow],
        rule: AlarmRule,
        *,
        positions: Mapping[str, str] | None = None,
    ) -> tuple[list[int], list[str | None]]:
        """Store score rows (and source positions) and apply the alarm rule, in one transaction.

        The rule's state (the last ``rule.n`` windows and the open alarm of each machine/section)
        is read from the database inside the transaction, under a lock of the machine/section
        (SQLite: the write lock; PostgreSQL: an advisory lock), so that processes writing the
        same machine never miss nor double an alarm.

        Returns:
            The new row ids and, per row, ``"opened"``, ``"closed"`` or None.

        Raises:
            ValueError: a row has a naive time or no machine/section.
            StoreError: the database cannot be written.
        """
        values = [score_values(r) for r in rows]
        ids: list[int] = []
        events: list[str | None] = []
        with self._write() as conn:
            lock_keys(conn, {(r.machine, r.section) for r in rows})
            if values:
                stmt = scores.insert().returning(scores.c.id, sort_by_parameter_order=True)
                ids = [int(i) for i in conn.execute(stmt, values).scalars()]
            for source, position in (positions or {}).items():
                self._upsert_position(conn, source, position)
            for row, new_id in zip(rows, ids):
                events.append(apply_rule(conn, replace(row, id=new_id), rule))
        return ids, events

    def apply_alarm_rule(self, row: ScoreRow, rule: AlarmRule) -> str | None:
        """Apply ``rule`` to a window already stored (see :func:`stetho.store.alarms.apply_rule`).

        Returns:
            ``"opened"``, ``"closed"`` or None.
        """
        with self._write() as conn:
            lock_keys(conn, {(row.machine, row.section)})
            return apply_rule(conn, row, rule)

    def has_machine(self, machine: str) -> bool:
        """Whether any score or alarm of ``machine`` is stored."""
        with self._read() as conn:
            for table in (scores, alarms):
                q = select(table.c.id).where(table.c.machine == machine).limit(1)
                if conn.execute(q).first() is not None:
                    return True
        return False

    def set_position(self, source: str, position: str) -> None:
        """Record where ``source`` was read up to (e.g. a file name or a byte offset)."""
        with self._write() as conn:
            self._upsert_position(conn, source, position)

    def _upsert_position(self, conn: Connection, source: str, position: str) -> None:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            ins: Any = pg_insert(positions)
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            ins = sqlite_insert(positions)
        now = utc_now()
        ins = ins.values(source=str(source), position=str(position), updated=now)
        conn.execute(
            ins.on_conflict_do_update(
                index_elements=[positions.c.source],
                set_={"position": str(position), "updated": now},
            )
        )

    def apply_retention(self, days: float) -> int:
        """Delete score rows older than ``days`` days (alarms are kept); return how many.

        Deletes in batches of :data:`RETENTION_BATCH` rows, one transaction each, so that
        writers are never blocked for long.

        Raises:
            ValueError: ``days`` is not positive.
        """
        if not days > 0:
            raise ValueError(f"retention days must be > 0, got {days}")
        cutoff = utc_now() - timedelta(days=float(days))
        total = 0
        while True:
            batch = (
                select(scores.c.id).where(scores.c.time < cutoff).limit(RETENTION_BATCH)
            ).scalar_subquery()
            with self._write() as conn:
                n = conn.execute(delete(scores).where(scores.c.id.in_(batch))).rowcount
            total += n
            if n < RETENTION_BATCH:
                break
        if total:
            logger.info("retention: deleted %d score row(s) older than %s", total, cutoff)
        return total

    # --------------------------------------------------------------------- alarm writes
    def open_alarm(self, first: ScoreRow, peak_score: float, n_windows: int) -> AlarmRow:
        """Insert an open alarm for ``first``'s machine/section (used by the alarm tracker)."""
        values: dict[str, Any] = {
            "machine": first.machine,
            "section": first.section,
            "opened": as_utc(first.time, "alarm time"),
            "closed": None,
            "peak_score": float(peak_score),
            "n_windows": int(n_windows),
            "detector_id": str(first.detector_id),
            "detector_version": int(first.detector_version),
            "detector_name": first.detector_name,
            "peak_normalised": first.normalised,
        }
        with self._write() as conn:
            new_id = int(
                conn.execute(alarms.insert().values(**values).returning(alarms.c.id)).scalar_one()
            )
        return AlarmRow(id=new_id, **values)

    def update_alarm(
        self,
        alarm_id: int,
        *,
        peak_score: float,
        n_windows: int,
        closed: datetime | None = None,
    ) -> None:
        """Update an alarm's peak score and window count, and close it when ``closed`` is given."""
        values: dict[str, Any] = {"peak_score": float(peak_score), "n_windows": int(n_windows)}
        if closed is not None:
            values["closed"] = as_utc(closed, "alarm close time")
        with self._write() as conn:
            conn.execute(update(alarms).where(alarms.c.id == int(alarm_id)).values(**values))

    # ------------------------------------------------------------------------------ reads
    def scores(
        self,
        machine: str,
        section: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
    ) -> list[ScoreRow]:
        """A machine's scores with ``start <= time < end``, oldest first.

        Args:
            machine: Machine name.
            section: One section, or None for all of the machine's sections.
            start, end: Time range (aware datetimes; None = open).
            limit: Keep only the latest ``limit`` rows of the range (still returned oldest
                first).
        """
        cond = [scores.c.machine == machine]
        if section is not None:
            cond.append(scores.c.section == section)
        if start is not None:
            cond.append(scores.c.time >= as_utc(start, "start"))
        if end is not None:
            cond.append(scores.c.time < as_utc(end, "end"))
        q = select(scores).where(and_(*cond))
        if limit is not None:
            q = q.order_by(scores.c.time.desc(), scores.c.id.desc()).limit(max(0, int(limit)))
            with self._read() as conn:
                return [score_from(r) for r in reversed(conn.execute(q).all())]
        q = q.order_by(scores.c.time, scores.c.id)
        with self._read() as conn:
            return [score_from(r) for r in conn.execute(q)]

    def windows(
        self,
        machine: str | None = None,
        section: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 1000,
        *,
        newest_first: bool = True,
        source: str | None = None,
    ) -> list[ScoreRow]:
        """The latest ``limit`` windows with ``start <= time < end``, newest first (or oldest).

        Args:
            machine, section: Filters (None = all).
            start, end: Time range (aware; None = open).
            limit: Most rows returned (the latest of the range).
            newest_first: Order of the returned rows.
            source: Only windows of this source (exact match).
        """
        cond: list[Any] = []
        if machine is not None:
            cond.append(scores.c.machine == machine)
        if section is not None:
            cond.append(scores.c.section == section)
        if source is not None:
            cond.append(scores.c.source == str(source))
        if start is not None:
            cond.append(scores.c.time >= as_utc(start, "start"))
        if end is not None:
            cond.append(scores.c.time < as_utc(end, "end"))
        q = (
            select(scores)
            .where(and_(True, *cond))
            .order_by(scores.c.time.desc(), scores.c.id.desc())
            .limit(max(0, int(limit)))
        )
        with self._read() as conn:
            rows = [score_from(r) for r in conn.execute(q)]
        return rows if newest_first else rows[::-1]

    def window(self, window_id: int) -> ScoreRow | None:
        """One stored window by id, or None."""
        with self._read() as conn:
            row = conn.execute(select(scores).where(scores.c.id == int(window_id))).first()
        return None if row is None else score_from(row)

    def alarm(self, alarm_id: int) -> AlarmRow | None:
        """One alarm by id, or None."""
        with self._read() as conn:
            row = conn.execute(select(alarms).where(alarms.c.id == int(alarm_id))).first()
        return None if row is None else alarm_from(row)

    def acknowledge_alarm(
        self, alarm_id: int, note: str = "", when: datetime | None = None
    ) -> AlarmRow | None:
        """Mark an alarm acknowledged with ``note`` (again: the latest note and time count).

        Returns:
            The updated alarm, or None when no alarm has this id.
        """
        values = {"ack_time": as_utc(when or utc_now(), "ack time"), "ack_note": str(note)}
        with self._write() as conn:
            n = conn.execute(
                update(alarms).where(alarms.c.id == int(alarm_id)).values(**values)
            ).rowcount
            if not n:
                return None
            row = conn.execute(select(alarms).where(alarms.c.id == int(alarm_id))).one()
        return alarm_from(row)

    def machines(self) -> list[MachineState]:
        """One state per (machine, section) that has scores or alarms, sorted by name."""
        with self._read() as conn:
            groups = conn.execute(
                select(
                    scores.c.machine, scores.c.section, func.count(), func.max(scores.c.time)
                ).group_by(scores.c.machine, scores.c.section)
            ).all()
            open_rows = conn.execute(
                select(alarms).where(alarms.c.closed.is_(None)).order_by(alarms.c.opened)
            ).all()
            open_by_key = {(r.machine, r.section): alarm_from(r) for r in open_rows}
            out: dict[tuple[str, str], MachineState] = {}
            for machine, section, count, _last_time in groups:
                last = conn.execute(
                    select(scores)
                    .where(scores.c.machine == machine, scores.c.section == section)
                    .order_by(scores.c.time.desc(), scores.c.id.desc())
                    .limit(1)
                ).first()
                key = (machine, section)
                out[key] = MachineState(
                    machine=machine,
                    section=section,
                    last=None if last is None else score_from(last),
                    open_alarm=open_by_key.get(key),
                    n_scores=int(count),
                )
            for key, alarm in open_by_key.items():  # scores deleted by retention, alarm open
                out.setdefault(key, MachineState(key[0], key[1], None, alarm, 0))
        return [out[k] for k in sorted(out)]

    def alarms(
        self,
        machine: str | None = None,
        section: str | None = None,
        open_only: bool = False,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        newest_first: bool = False,
    ) -> list[AlarmRow]:
        """Alarms overlapping ``[start, end)``, oldest first (or newest first).

        Args:
            machine, section: Filters (None = all).
            open_only: Only alarms still open.
            start, end: An alarm is returned when it was open at some time in the range.
            newest_first: Latest opened first (as the API lists them).
        """
        cond = []
        if machine is not None:
            cond.append(alarms.c.machine == machine)
        if section is not None:
            cond.append(alarms.c.section == section)
        if open_only:
            cond.append(alarms.c.closed.is_(None))
        if end is not None:
            cond.append(alarms.c.opened < as_utc(end, "end"))
        if start is not None:
            cond.append(or_(alarms.c.closed.is_(None), alarms.c.closed >= as_utc(start, "start")))
        order: tuple[Any, ...] = (alarms.c.opened, alarms.c.id)
        if newest_first:
            order = (alarms.c.opened.desc(), alarms.c.id.desc())
        q = select(alarms).where(and_(True, *cond)).order_by(*order)
        with self._read() as conn:
            return [alarm_from(r) for r in conn.execute(q)]

    def daily_summary(
        self,
        machine: str,
        section: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Per UTC day: ``{"day": "YYYY-MM-DD", "n", "mean", "max", "n_anomalous"}``, oldest first.

        Args:
            machine: Machine name.
            section: One section, or None for all sections of the machine together.
            start, end: Time range of the scores (aware; None = open).
        """
        if self.dialect == "postgresql":
            day: Any = func.to_char(func.timezone("UTC", scores.c.time), "YYYY-MM-DD")
        else:
            day = func.substr(scores.c.time, 1, 10)  # stored as "YYYY-MM-DD HH:MM:SS…" UTC
        cond = [scores.c.machine == machine]
        if section is not None:
            cond.append(scores.c.section == section)
        if start is not None:
            cond.append(scores.c.time >= as_utc(start, "start"))
        if end is not None:
            cond.append(scores.c.time < as_utc(end, "end"))
        day = day.label("day")
        q = (
            select(
                day,
                func.count().label("n"),
                func.avg(scores.c.score).label("mean"),
                func.max(scores.c.score).label("max"),
                func.sum(case((scores.c.decision == 1, 1), else_=0)).label("n_anomalous"),
            )
            .where(and_(*cond))
            .group_by(day)
            .order_by(day)
        )
        with self._read() as conn:
            return [
                {
                    "day": str(r.day),
                    "n": int(r.n),
                    "mean": float(r.mean),
                    "max": float(r.max),
                    "n_anomalous": int(r.n_anomalous or 0),
                }
                for r in conn.execute(q)
            ]

    def last_position(self, source: str) -> str | None:
        """The resume marker last recorded for ``source``, or None."""
        with self._read() as conn:
            return conn.execute(
                select(positions.c.position).where(positions.c.source == str(source))
            ).scalar_one_or_none()

    def open_alarm_of(self, machine: str, section: str) -> AlarmRow | None:
        """The open alarm of one machine/section, or None."""
        with self._read() as conn:
            row = conn.execute(
                select(alarms)
                .where(
                    alarms.c.machine == machine,
                    alarms.c.section == section,
                    alarms.c.closed.is_(None),
                )
                .order_by(alarms.c.opened.desc(), alarms.c.id.desc())
                .limit(1)
            ).first()
        return None if row is None else alarm_from(row)
