"""The score store on SQLite and on a real PostgreSQL server: writes, queries, retention, migrations."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from stetho.store import SCHEMA_VERSION, ScoreRow, ScoreStore, StoreError, database_url
from stetho.store import store as store_module
from stetho.store.schema import schema_version

T0 = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)


def row(
    i: int,
    *,
    machine: str = "fan",
    section: str = "00",
    t: datetime | None = None,
    score: float | None = None,
    thr: float | None = 1.0,
) -> ScoreRow:
    s = float(i % 7) / 3.0 if score is None else score
    return ScoreRow(
        time=t if t is not None else T0 + timedelta(minutes=10 * i),
        machine=machine,
        section=section,
        source="test",
        window_start=float(i),
        window_end=float(i) + 2.0,
        score=s,
        threshold=thr,
        decision=None if thr is None else int(s > thr),
        detector_id="det-a",
        detector_version=2,
    )


@pytest.fixture
def store(store_url: str):
    s = ScoreStore.open(store_url)
    yield s
    s.close()


def test_rows_round_trip_with_ids_in_order(store: ScoreStore) -> None:
    rows = [row(i) for i in range(5)] + [row(5, thr=None)]
    ids = store.add_scores(rows)
    assert len(ids) == 6 and ids == sorted(ids) and len(set(ids)) == 6
    back = store.scores("fan")
    assert [r.id for r in back] == ids
    for a, b in zip(rows, back):
        assert b == ScoreRow(**{**a.__dict__, "id": b.id})
        assert b.time.tzinfo is not None and b.time.utcoffset() == timedelta(0)
    assert back[-1].threshold is None and back[-1].decision is None


def test_times_in_other_zones_are_stored_as_utc_and_naive_times_refused(store: ScoreStore) -> None:
    cet = timezone(timedelta(hours=1))
    t_local = datetime(2026, 3, 2, 0, 30, tzinfo=cet)  # = 2026-03-01 23:30 UTC
    store.add_scores([row(0, t=t_local)])
    (back,) = store.scores("fan")
    assert back.time == t_local and back.time.tzinfo == UTC and back.time.hour == 23
    with pytest.raises(ValueError, match="time zone"):
        store.add_scores([row(1, t=datetime(2026, 3, 1))])
    with pytest.raises(ValueError, match="time zone"):
        store.scores("fan", start=datetime(2026, 3, 1))


def test_scores_filter_by_section_range_and_limit(store: ScoreStore) -> None:
    store.add_scores([row(i) for i in range(10)] + [row(i, section="01") for i in range(4)])
    store.add_scores([row(i, machine="pump") for i in range(3)])
    assert len(store.scores("fan")) == 14
    assert len(store.scores("fan", section="01")) == 4
    got = store.scores(
        "fan", "00", start=T0 + timedelta(minutes=20), end=T0 + timedelta(minutes=60)
    )
    assert [r.window_start for r in got] == [2.0, 3.0, 4.0, 5.0]  # start inclusive, end exclusive
    latest = store.scores("fan", "00", limit=3)
    assert [r.window_start for r in latest] == [7.0, 8.0, 9.0]  # the latest 3, oldest first
    assert store.scores("nothing") == []


def test_a_failing_batch_writes_nothing_not_even_its_position(store: ScoreStore) -> None:
    store.add_scores([row(0)], positions={"src": "1"})
    bad = [row(1), row(2, t=datetime(2026, 3, 1))]  # the second row has a naive time
    with pytest.raises(ValueError):
        store.add_scores(bad, positions={"src": "3"})
    assert len(store.scores("fan")) == 1
    assert store.last_position("src") == "1"


def test_positions_are_upserted(store: ScoreStore) -> None:
    assert store.last_position("folder:/in") is None
    store.set_position("folder:/in", "a.wav")
    store.add_scores([row(0)], positions={"folder:/in": "b.wav", "stdin": "4096"})
    assert store.last_position("folder:/in") == "b.wav"
    assert store.last_position("stdin") == "4096"


def test_machines_show_last_row_count_and_open_alarm(store: ScoreStore) -> None:
    store.add_scores([row(i) for i in range(4)] + [row(i, section="01") for i in range(2)])
    # a late row with an older time is not the "last" one
    store.add_scores([row(99, t=T0 - timedelta(days=1))])
    alarm = store.open_alarm(row(3), peak_score=2.0, n_windows=3)
    states = {(m.machine, m.section): m for m in store.machines()}
    assert set(states) == {("fan", "00"), ("fan", "01")}
    fan00 = states[("fan", "00")]
    assert fan00.n_scores == 5 and fan00.last is not None and fan00.last.window_start == 3.0
    assert fan00.open_alarm == alarm
    assert states[("fan", "01")].open_alarm is None and states[("fan", "01")].n_scores == 2
    store.update_alarm(alarm.id, peak_score=2.5, n_windows=4, closed=T0 + timedelta(hours=1))
    assert all(m.open_alarm is None for m in store.machines())


def test_alarm_queries_filter_and_overlap(store: ScoreStore) -> None:
    a1 = store.open_alarm(row(0), 1.5, 3)  # opened T0
    store.update_alarm(a1.id, peak_score=1.8, n_windows=4, closed=T0 + timedelta(hours=1))
    a2 = store.open_alarm(row(12), 2.0, 3)  # opened T0 + 2 h, still open
    a3 = store.open_alarm(row(1, machine="pump"), 3.0, 5)
    assert [a.id for a in store.alarms()] == [a1.id, a3.id, a2.id]
    assert [a.id for a in store.alarms(machine="fan")] == [a1.id, a2.id]
    assert [a.id for a in store.alarms(open_only=True)] == [a3.id, a2.id]
    closed = store.alarms(machine="fan")[0]
    assert closed.closed == T0 + timedelta(hours=1) and closed.peak_score == 1.8
    assert closed.n_windows == 4 and closed.detector_version == 2
    # overlap with [start, end)
    win = store.alarms(start=T0 + timedelta(minutes=90), end=T0 + timedelta(hours=3))
    assert [a.id for a in win] == [a3.id, a2.id]  # a1 closed before 90 min
    win = store.alarms(start=T0 + timedelta(minutes=30), end=T0 + timedelta(minutes=60))
    assert [a.id for a in win] == [a1.id, a3.id]  # a3 opened at 10 min, still open


def test_daily_summary_matches_a_direct_computation(store: ScoreStore) -> None:
    rows = [row(i) for i in range(30)] + [row(i, section="01", score=5.0) for i in range(3)]
    store.add_scores(rows)
    got = store.daily_summary("fan", section="00")
    by_day: dict[str, list[ScoreRow]] = {}
    for r in rows[:30]:
        by_day.setdefault(r.time.astimezone(UTC).date().isoformat(), []).append(r)
    assert [g["day"] for g in got] == sorted(by_day)
    assert len(got) == 2  # 22:00 + 290 min crosses midnight UTC
    for g in got:
        ref = by_day[g["day"]]
        assert g["n"] == len(ref)
        assert g["mean"] == pytest.approx(statistics.fmean(r.score for r in ref), abs=1e-12)
        assert g["max"] == pytest.approx(max(r.score for r in ref), abs=1e-12)
        assert g["n_anomalous"] == sum(r.decision == 1 for r in ref)
    assert sum(g["n"] for g in store.daily_summary("fan")) == 33
    day2 = T0.replace(hour=0, minute=0) + timedelta(days=1)
    assert [g["day"] for g in store.daily_summary("fan", "00", start=day2)] == ["2026-03-02"]


def test_retention_deletes_old_scores_in_batches_and_keeps_alarms(
    store: ScoreStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "RETENTION_BATCH", 4)
    now = datetime.now(UTC)
    old = [row(i, t=now - timedelta(days=10, minutes=i)) for i in range(11)]
    new = [row(i, t=now - timedelta(days=1, minutes=i)) for i in range(3)]
    store.add_scores(old + new)
    store.open_alarm(old[0], 2.0, 3)
    with pytest.raises(ValueError):
        store.apply_retention(0)
    assert store.apply_retention(5) == 11
    assert len(store.scores("fan")) == 3
    assert len(store.alarms()) == 1
    assert store.apply_retention(5) == 0


def test_schema_is_versioned_and_a_newer_database_is_refused(store_url: str) -> None:
    s = ScoreStore.open(store_url)
    with s.engine.connect() as conn:
        assert conn.execute(select(schema_version.c.version)).scalars().all() == list(
            range(1, SCHEMA_VERSION + 1)
        )
        conn.execute(schema_version.insert().values(version=SCHEMA_VERSION + 1, applied=T0))
        conn.commit()
    s.close()
    with pytest.raises(StoreError, match="newer"):
        ScoreStore.open(store_url)


def test_reopening_keeps_data_and_does_not_migrate_again(store_url: str) -> None:
    with ScoreStore.open(store_url) as s:
        s.add_scores([row(0)])
    with ScoreStore.open(store_url) as s:
        assert len(s.scores("fan")) == 1
        with s.engine.connect() as conn:
            assert len(conn.execute(select(schema_version)).all()) == SCHEMA_VERSION


def test_sqlite_uses_wal_and_urls_are_normalised(tmp_path) -> None:
    with ScoreStore.open(tmp_path / "sub" / "x.db") as s, s.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    assert database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("sqlite:///a.db") == "sqlite:///a.db"
    assert database_url("rel.db").startswith("sqlite:////")


def test_unreachable_postgres_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="cannot be opened"):
        ScoreStore.open("postgresql://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
