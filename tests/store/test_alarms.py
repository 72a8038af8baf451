"""The k-of-n alarm rule with hysteresis, against a direct re-implementation, and its resumption."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from stetho.store import AlarmRule, AlarmTracker, ScoreRow, ScoreStore
from stetho.utils.config import ConfigError

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def _rows(decisions: list[int], start: int = 0, section: str = "00") -> list[ScoreRow]:
    return [
        ScoreRow(
            T0 + timedelta(seconds=start + i),
            "fan",
            section,
            "t",
            float(start + i),
            float(start + i + 1),
            2.0 + i if d else 0.1,
            1.0,
            d,
            "det",
            1,
        )
        for i, d in enumerate(decisions)
    ]


def _reference(decisions: list[int], k: int, n: int, clear_k: int) -> list[str | None]:
    """Events of the rule, computed from its definition over full prefix slices."""
    out: list[str | None] = []
    is_open = False
    for i in range(len(decisions)):
        above = sum(decisions[max(0, i - n + 1) : i + 1])
        if not is_open and above >= k:
            is_open = True
            out.append("opened")
        elif is_open and above <= clear_k:
            is_open = False
            out.append("closed")
        else:
            out.append(None)
    return out


@pytest.mark.parametrize(("k", "n", "clear_k"), [(3, 5, 0), (3, 5, 1), (1, 1, 0), (2, 4, 1)])
def test_events_match_the_rule_on_random_sequences(
    store_url: str, k: int, n: int, clear_k: int
) -> None:
    rng = np.random.default_rng(k * 100 + n * 10 + clear_k)
    # bursts of anomalies separated by quiet stretches
    decisions = [int(x) for x in (rng.random(120) < np.repeat(rng.random(12), 10))]
    with ScoreStore.open(store_url) as store:
        tracker = AlarmTracker(store, AlarmRule(k=k, n=n, clear_k=clear_k))
        rows = _rows(decisions)
        store.add_scores(rows)
        got = [tracker.update(r) for r in rows]
        assert got == _reference(decisions, k, n, clear_k)
        assert "opened" in got
        n_opened = got.count("opened")
        alarms = store.alarms(machine="fan")
        assert len(alarms) == n_opened
        assert sum(a.closed is None for a in alarms) == n_opened - got.count("closed")


def test_alarm_fields_and_hysteresis(store_url: str) -> None:
    with ScoreStore.open(store_url) as store:
        tracker = AlarmTracker(store, AlarmRule(k=3, n=5, clear_k=1))
        # 3 of 5 above opens at index 4; it stays open at index 8 with 2 of 5 above (< k, the
        # hysteresis), and closes at index 9 with 1 of 5 above (<= clear_k)
        decisions = [0, 1, 0, 1, 1, 0, 1, 0, 0, 0, 0]
        rows = _rows(decisions)
        store.add_scores(rows)  # the tracker reads the windows from the store
        events = [tracker.update(r) for r in rows]
        assert events == _reference(decisions, 3, 5, 1)
        assert events.index("opened") == 4 and events.index("closed") == 9
        (alarm,) = store.alarms()
        assert alarm.opened == rows[4].time and alarm.closed == rows[9].time
        assert alarm.n_windows == 4  # indices 1, 3, 4 (opening history) + 6
        assert alarm.peak_score == pytest.approx(rows[6].score)


def test_a_new_tracker_resumes_an_open_alarm_instead_of_opening_another(store_url: str) -> None:
    with ScoreStore.open(store_url) as store:
        first = _rows([1, 1, 1, 1])
        store.add_scores(first)
        tracker = AlarmTracker(store, AlarmRule(k=3, n=5, clear_k=0))
        assert [tracker.update(r) for r in first] == [None, None, "opened", None]
    with ScoreStore.open(store_url) as store:  # the process restarted
        tracker = AlarmTracker(store, AlarmRule(k=3, n=5, clear_k=0))
        more = _rows([1, 0, 0, 0, 0, 0], start=4)
        ids = store.add_scores(more)
        more = [ScoreRow(**{**r.__dict__, "id": i}) for r, i in zip(more, ids)]
        events = [tracker.update(r) for r in more]
        # history resumed from the store: 1111 + 1 then five 0s close it at the fifth 0
        assert events == [None, None, None, None, None, "closed"]
        (alarm,) = store.alarms()
        assert alarm.closed == more[-1].time and alarm.n_windows == 5


def test_rule_validation() -> None:
    with pytest.raises(ConfigError):
        AlarmRule(k=0)
    with pytest.raises(ConfigError):
        AlarmRule(k=6, n=5)
    with pytest.raises(ConfigError):
        AlarmRule(k=3, clear_k=3)
    assert AlarmRule.from_dict({"k": 2, "n": 3}).clear_k == 0
