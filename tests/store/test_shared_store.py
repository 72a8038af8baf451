"""Several writers on one store (``stetho serve`` + ``stetho monitor``): alarm state comes from the
database, never from a process's memory; corrupted files and extreme dates are clear errors.

#22 item 7: serve closed the monitor's alarm, the monitor then counted new anomalous windows into
the closed alarm and never opened a new one.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from stetho.store import AlarmRule, AlarmTracker, ScoreRow, ScoreStore, StoreError
from tests.badinput import EXTREME_DATES, corrupt_sqlite

T0 = datetime(2026, 5, 1, tzinfo=UTC)
RULE = AlarmRule(k=2, n=3, clear_k=0)


def _row(i: int, anomalous: bool, source: str) -> ScoreRow:
    return ScoreRow(
        T0 + timedelta(seconds=i),
        "fan",
        "00",
        source,
        float(i),
        float(i + 1),
        5.0 + i if anomalous else 0.1,
        1.0,
        int(anomalous),
        "det",
        1,
    )


def _write_with_tracker(store: ScoreStore, tracker: AlarmTracker, row: ScoreRow) -> str | None:
    """What each process did before #22 item 7: store the window, then feed its tracker."""
    (new_id,) = store.add_scores([row])
    return tracker.update(replace(row, id=new_id))


def _write_with_record(store: ScoreStore, _tracker: AlarmTracker, row: ScoreRow) -> str | None:
    """What serve and monitor do now: window and alarm rule in one transaction."""
    _, (event,) = store.record([row], RULE)
    return event


@pytest.mark.parametrize("write", [_write_with_tracker, _write_with_record])
def test_an_alarm_closed_by_one_writer_is_reopened_by_the_other(store_url: str, write) -> None:
    monitor, serve = ScoreStore.open(store_url), ScoreStore.open(store_url)
    try:
        mon_tracker, srv_tracker = AlarmTracker(monitor, RULE), AlarmTracker(serve, RULE)
        events = [write(monitor, mon_tracker, _row(i, True, "monitor")) for i in (0, 1)]
        assert events == [None, "opened"]
        events = [write(serve, srv_tracker, _row(i, False, "http")) for i in (2, 3, 4)]
        assert events == [None, None, "closed"]  # the last 3: 1 1 0, 1 0 0, 0 0 0
        assert not mon_tracker.is_open("fan", "00")  # the monitor sees serve's close
        events = [write(monitor, mon_tracker, _row(i, True, "monitor")) for i in (5, 6, 7)]
        assert events == [None, "opened", None]  # a new alarm, not counted into the closed one
        first, second = monitor.alarms(machine="fan")
        assert first.closed == T0 + timedelta(seconds=4) and first.n_windows == 2
        assert second.closed is None and second.opened == T0 + timedelta(seconds=6)
        assert second.n_windows == 3 and second.peak_score == pytest.approx(12.0)
        assert srv_tracker.is_open("fan", "00") and mon_tracker.is_open("fan", "00")
    finally:
        monitor.close()
        serve.close()


@pytest.mark.parametrize("write", [_write_with_tracker, _write_with_record])
def test_a_late_window_older_than_the_last_close_opens_no_overlapping_alarm(
    store_url: str, write
) -> None:
    """Two writers stamp windows before they store them, so one can arrive after the other has
    closed an alarm that its time falls into; alarms of a machine stay disjoint in time."""
    store = ScoreStore.open(store_url)
    try:
        tracker = AlarmTracker(store, RULE)
        events = [write(store, tracker, _row(i, True, "monitor")) for i in (0, 1)]
        events += [write(store, tracker, _row(i, False, "http")) for i in (3, 4, 5)]
        assert events == [None, "opened", None, None, "closed"]
        # stamped at 2 s (inside the closed alarm), stored only now: its last 3 are 1, 1, 1
        assert write(store, tracker, _row(2, True, "monitor")) is None
        (alarm,) = store.alarms(machine="fan")
        assert alarm.closed == T0 + timedelta(seconds=5)
        # a window after the close still opens a new alarm
        events = [write(store, tracker, _row(i, True, "monitor")) for i in (6, 7)]
        assert events == [None, "opened"]
        first, second = store.alarms(machine="fan")
        assert first.closed is not None and first.closed <= second.opened
    finally:
        store.close()


WRITER = textwrap.dedent(
    """
    import sys
    from dataclasses import replace
    from datetime import UTC, datetime
    from stetho.store import AlarmRule, AlarmTracker, ScoreRow, ScoreStore

    store = ScoreStore.open(sys.argv[1])
    tracker = AlarmTracker(store, AlarmRule(k=2, n=3, clear_k=0))
    source, pattern = sys.argv[2], sys.argv[3]
    for i, c in enumerate(pattern):
        row = ScoreRow(datetime.now(UTC), "fan", "00", source, float(i), float(i + 1),
                       5.0 if c == "1" else 0.1, 1.0, int(c), "det", 1)
        (new_id,) = store.add_scores([row])
        tracker.update(replace(row, id=new_id))
    store.close()
    """
)


def test_two_processes_writing_one_machine_never_overlap_alarms(store_url: str) -> None:
    """Two real processes interleave bursts of anomalous and normal windows of one machine."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    patterns = ("1111000000" * 4, "0000111100" * 4)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, store_url, f"p{k}", pat],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k, pat in enumerate(patterns)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    with ScoreStore.open(store_url) as store:
        assert len(store.scores("fan")) == 80
        found = store.alarms(machine="fan")
    assert found, "no alarm opened"
    assert sum(a.closed is None for a in found) <= 1
    for a, b in itertools.pairwise(found):  # oldest first: each closed before the next opened
        assert a.closed is not None and a.closed <= b.opened, (a, b)


def test_a_corrupted_sqlite_file_fails_the_check_and_reads_are_store_errors(
    tmp_path: Path,
) -> None:
    path = tmp_path / "plant.db"
    with ScoreStore.open(path) as store:
        store.add_scores([_row(i, i % 3 == 0, "t") for i in range(3000)])
        assert store.check() == []
    corrupt_sqlite(path)
    with ScoreStore.open(path) as store:
        problems = store.check()
        assert len(problems) == 1 and "corrupted" in problems[0] and str(path) in problems[0]
        with pytest.raises(StoreError) as info:
            store.scores("fan")
        msg = str(info.value)
        assert "cannot be read" in msg and "malformed" in msg
        assert "SELECT" not in msg and "[SQL" not in msg
        assert info.value.http_status == 503


def test_extreme_range_bounds_are_clamped_not_errors(store_url: str) -> None:
    with ScoreStore.open(store_url) as store:
        store.add_scores([_row(i, False, "t") for i in range(3)])
        early = datetime.fromisoformat(EXTREME_DATES[0])  # before year 1 in UTC
        late = datetime.fromisoformat(EXTREME_DATES[1])  # after year 9999 in UTC
        assert len(store.scores("fan", start=early, end=late)) == 3
        assert store.scores("fan", end=early) == []
        assert len(store.daily_summary("fan", start=early, end=late)) == 1
        assert store.alarms(start=early, end=late) == []


def test_has_machine_and_newest_first(store_url: str) -> None:
    with ScoreStore.open(store_url) as store:
        assert not store.has_machine("fan")
        ids, events = store.record([_row(i, True, "t") for i in range(2)], RULE)
        assert len(ids) == 2 and events == [None, "opened"]
        store.record([_row(i, False, "t") for i in range(2, 5)], RULE)
        store.record([_row(i, True, "t") for i in range(5, 7)], RULE)
        assert store.has_machine("fan") and not store.has_machine("pump")
        oldest = store.alarms()
        assert len(oldest) == 2 and oldest[0].opened < oldest[1].opened
        assert store.alarms(newest_first=True) == oldest[::-1]


def test_unreadable_postgres_gives_a_store_error_without_sql(postgres_url: str) -> None:
    with ScoreStore.open(postgres_url) as store:
        assert store.check() == []
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE scores")
        with pytest.raises(StoreError) as info:
            store.scores("fan")
        assert "cannot be read" in str(info.value) and "SELECT" not in str(info.value)
        assert store.check() and "cannot be read" in store.check()[0]


def _open_at_once(path: str, barrier: Any, out: Any) -> None:
    barrier.wait()  # every process opens the fresh file at the same moment
    try:
        ScoreStore.open(path).close()
        out.put(None)
    except Exception as err:  # reported to the parent, which fails the test
        out.put(repr(err)[:300])


def test_processes_opening_a_new_sqlite_store_at_once_all_succeed(tmp_path: Path) -> None:
    """serve and monitor started together on a new store: switching the new file to WAL must
    wait for the other process (it failed with 'database is locked' about 1 round in 15)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    errors = []
    for i in range(30):
        path = str(tmp_path / f"s{i}.db")
        barrier, out = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_open_at_once, args=(path, barrier, out)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
        errors += [e for e in (out.get(timeout=10) for _ in procs) if e]
    assert not errors, errors[:3]
