"""Score history: every score, alarm event and source position in SQLite or PostgreSQL.

>>> from stetho.store import ScoreStore, ScoreRow, AlarmRule, AlarmTracker
>>> store = ScoreStore.open("runs/plant.db")        # or "postgresql://user@host/db"  # doctest: +SKIP
>>> store.add_scores([row])                                                          # doctest: +SKIP
>>> AlarmTracker(store, AlarmRule(k=3, n=5)).update(row)                              # doctest: +SKIP

A data-layer package: it imports only the standard library, SQLAlchemy, numpy/soundfile (the
kept audio, :mod:`stetho.store.audio`) and ``stetho.utils``.
"""

from stetho.store.alarms import AlarmRule, AlarmTracker
from stetho.store.audio import AudioKeeper, audio_folder_for
from stetho.store.rows import (
    AlarmRow,
    MachineState,
    ScoredWindow,
    ScoreRow,
    StoreError,
    StoreUnreachableError,
    utc_now,
)
from stetho.store.schema import SCHEMA_VERSION
from stetho.store.store import ScoreStore, database_url

__all__ = [
    "SCHEMA_VERSION",
    "AlarmRow",
    "AlarmRule",
    "AlarmTracker",
    "AudioKeeper",
    "MachineState",
    "ScoreRow",
    "ScoreStore",
    "ScoredWindow",
    "StoreError",
    "StoreUnreachableError",
    "audio_folder_for",
    "database_url",
    "utc_now",
]
