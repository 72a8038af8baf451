"""Tables of the score-history store and the versioned migrations that create them.

The database holds a ``schema_version`` table with one row per applied migration. At open,
:func:`migrate` applies the missing steps of :data:`MIGRATIONS` in order, in one transaction, so
that a database is always at a version this code knows. A step is never edited once released;
schema changes are new steps appended to the list.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    Text,
    inspect,
    select,
    text,
)
from sqlalchemy.types import TypeDecorator

from stetho.store.rows import AlarmRow, ScoreRow, StoreError, as_utc

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "UTCDateTime",
    "alarm_from",
    "alarms",
    "metadata",
    "migrate",
    "positions",
    "schema_version",
    "score_from",
    "score_values",
    "scores",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend.

    PostgreSQL stores ``timestamptz``; SQLite stores naive UTC text (which sorts and compares in
    time order), and values read back get their UTC zone again.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"store times must be timezone-aware datetimes, got {value!r}")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


#: 64-bit ids on PostgreSQL; SQLite needs INTEGER for its rowid alias (also 64 bit).
_Id = BigInteger().with_variant(Integer, "sqlite")

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied", UTCDateTime, nullable=False),
)

scores = Table(
    "scores",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("time", UTCDateTime, nullable=False),
    Column("machine", String(200), nullable=False),
    Column("section", String(50), nullable=False),
    Column("source", Text, nullable=False),
    Column("window_start", Float, nullable=False),
    Column("window_end", Float, nullable=False),
    Column("score", Float, nullable=False),
    Column("threshold", Float, nullable=True),
    Column("decision", Integer, nullable=True),
    Column("detector_id", String(200), nullable=False),
    Column("detector_version", Integer, nullable=False),
    # version 2: served name, normalised score, nearest bank clip and kept audio
    Column("detector_name", String(200), nullable=True),
    Column("normalised", Float, nullable=True),
    Column("nearest_ref", Text, nullable=True),
    Column("audio", Text, nullable=True),
    Column("nearest_audio", Text, nullable=True),
    Index("ix_scores_key_time", "machine", "section", "time"),
    Index("ix_scores_time", "time"),
)

alarms = Table(
    "alarms",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("machine", String(200), nullable=False),
    Column("section", String(50), nullable=False),
    Column("opened", UTCDateTime, nullable=False),
    Column("closed", UTCDateTime, nullable=True),
    Column("peak_score", Float, nullable=False),
    Column("n_windows", Integer, nullable=False),
    Column("detector_id", String(200), nullable=False),
    Column("detector_version", Integer, nullable=False),
    # version 2: served name, peak normalised score, acknowledgement
    Column("detector_name", String(200), nullable=True),
    Column("peak_normalised", Float, nullable=True),
    Column("ack_time", UTCDateTime, nullable=True),
    Column("ack_note", Text, nullable=True),
    Index("ix_alarms_key_opened", "machine", "section", "opened"),
)

positions = Table(
    "positions",
    metadata,
    Column("source", Text, primary_key=True),
    Column("position", Text, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
)


def _v1(conn: Connection) -> None:
    """Version 1: scores, alarms and source positions.

    Creates the tables as this code defines them (with the columns of later versions too);
    later steps add only the columns a table lacks, so they are no-ops after this one.
    """
    for table in (scores, alarms, positions):
        table.create(conn)


#: Columns added by version 2 (all nullable: rows written before have none).
_V2_COLUMNS: dict[str, tuple[str, ...]] = {
    "scores": ("detector_name", "normalised", "nearest_ref", "audio", "nearest_audio"),
    "alarms": ("detector_name", "peak_normalised", "ack_time", "ack_note"),
}


def _add_missing_columns(conn: Connection, table: Table, names: tuple[str, ...]) -> None:
    have = {c["name"] for c in inspect(conn).get_columns(table.name)}
    preparer = conn.dialect.identifier_preparer
    for name in names:
        if name in have:
            continue
        column = table.c[name]
        kind = column.type.compile(dialect=conn.dialect)
        conn.execute(
            text(
                f"ALTER TABLE {preparer.format_table(table)} "
                f"ADD COLUMN {preparer.format_column(column)} {kind}"
            )
        )


def _v2(conn: Connection) -> None:
    """Version 2: windows keep the served detector name, the normalised score, the nearest
    normal bank clip and their kept audio; alarms the peak normalised score, the served name
    and an acknowledgement (time and note)."""
    for table in (scores, alarms):
        _add_missing_columns(conn, table, _V2_COLUMNS[table.name])


#: Ordered migration steps; step ``i`` brings the schema to version ``i + 1``.
MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2]
#: The schema version this code reads and writes.
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: Connection, where: str) -> int:
    """Bring the database behind ``conn`` to :data:`SCHEMA_VERSION` (inside the caller's
    transaction); return the version found before.

    Raises:
        StoreError: the database was written by a newer stetho (a newer schema version).
    """
    schema_version.create(conn, checkfirst=True)
    found = conn.execute(select(schema_version.c.version)).scalars().all()
    current = max(found, default=0)
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"{where}: the score store has schema version {current}, newer than this stetho "
            f"understands ({SCHEMA_VERSION}); upgrade stetho to open it"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[version - 1](conn)
        conn.execute(schema_version.insert().values(version=version, applied=datetime.now(UTC)))
    return current


def score_from(row: Row[Any]) -> ScoreRow:
    """A :class:`ScoreRow` from a ``scores`` row."""
    m = row._mapping
    return ScoreRow(
        time=m["time"],
        machine=m["machine"],
        section=m["section"],
        source=m["source"],
        window_start=float(m["window_start"]),
        window_end=float(m["window_end"]),
        score=float(m["score"]),
        threshold=None if m["threshold"] is None else float(m["threshold"]),
        decision=None if m["decision"] is None else int(m["decision"]),
        detector_id=m["detector_id"],
        detector_version=int(m["detector_version"]),
        id=int(m["id"]),
        detector_name=m["detector_name"] or "",
        normalised=_float_or_none(m["normalised"]),
        nearest_ref=m["nearest_ref"],
        audio=m["audio"],
        nearest_audio=m["nearest_audio"],
    )


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def alarm_from(row: Row[Any]) -> AlarmRow:
    """An :class:`AlarmRow` from an ``alarms`` row."""
    m = row._mapping
    return AlarmRow(
        id=int(m["id"]),
        machine=m["machine"],
        section=m["section"],
        opened=m["opened"],
        closed=m["closed"],
        peak_score=float(m["peak_score"]),
        n_windows=int(m["n_windows"]),
        detector_id=m["detector_id"],
        detector_version=int(m["detector_version"]),
        detector_name=m["detector_name"] or "",
        peak_normalised=_float_or_none(m["peak_normalised"]),
        ack_time=m["ack_time"],
        ack_note=m["ack_note"],
    )


def score_values(row: ScoreRow) -> dict[str, Any]:
    """The ``scores`` column values of a row (checked: aware time, machine and section)."""
    if not row.machine or not row.section:
        raise ValueError(f"score rows need a machine and a section, got {row!r}")
    return {
        "time": as_utc(row.time, "ScoreRow.time"),
        "machine": row.machine,
        "section": row.section,
        "source": row.source,
        "window_start": float(row.window_start),
        "window_end": float(row.window_end),
        "score": float(row.score),
        "threshold": None if row.threshold is None else float(row.threshold),
        "decision": None if row.decision is None else int(row.decision),
        "detector_id": str(row.detector_id),
        "detector_version": int(row.detector_version),
        "detector_name": str(row.detector_name) or None,
        "normalised": _finite_or_none(row.normalised),
        "nearest_ref": row.nearest_ref,
        "audio": row.audio,
        "nearest_audio": row.nearest_audio,
    }


def _finite_or_none(value: float | None) -> float | None:
    """``value`` as float; None for None and NaN/inf (no normalised score for the key)."""
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None
