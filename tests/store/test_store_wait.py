"""Waiting for a database server that is still starting (monitor and serve start-up)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from stetho.store import ScoreStore, StoreError, StoreUnreachableError
from tests.store.conftest import _free_port, server_starting


def _closed_url() -> str:
    return f"postgresql://stetho:pw@127.0.0.1:{_free_port()}/stetho"  # nobody listens there


def test_a_server_that_does_not_answer_is_unreachable_and_fails_at_once_by_default() -> None:
    pytest.importorskip("psycopg")
    t0 = time.monotonic()
    with pytest.raises(StoreUnreachableError, match="running and reachable"):
        ScoreStore.open(_closed_url())
    assert time.monotonic() - t0 < 5.0


def test_open_keeps_trying_for_wait_seconds_and_logs_each_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("psycopg")
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(StoreUnreachableError):
        ScoreStore.open(_closed_url(), wait_seconds=2.5)
    took = time.monotonic() - t0
    assert 2.4 <= took < 20.0
    waits = [r.getMessage() for r in caplog.records if "trying again in" in r.getMessage()]
    assert len(waits) >= 2 and "1 s" in waits[0]  # 1 s, then 2 s (cut to what is left)


def test_a_stop_event_ends_the_wait_early() -> None:
    pytest.importorskip("psycopg")
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    t0 = time.monotonic()
    with pytest.raises(StoreUnreachableError):
        ScoreStore.open(_closed_url(), wait_seconds=60.0, stop=stop)
    assert time.monotonic() - t0 < 10.0


def test_the_store_opens_once_the_server_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = server_starting(monkeypatch, answers_from=3)
    store = ScoreStore.open(tmp_path / "s.db", wait_seconds=30.0)
    store.close()
    assert len(calls) == 3 and calls[2] - calls[0] >= 2.9  # waited 1 s, then 2 s


def test_other_store_errors_are_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def newer(cls: type[ScoreStore], target: str, **kw: object) -> ScoreStore:
        raise StoreError(f"{target}: written by a newer stetho")

    monkeypatch.setattr(ScoreStore, "_open_once", classmethod(newer))
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="newer"):
        ScoreStore.open(tmp_path / "s.db", wait_seconds=30.0)
    assert time.monotonic() - t0 < 1.0


def test_serve_db_wait_is_passed_to_the_store(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from stetho.cli.main import main

    seen: list[float] = []

    def unreachable(cls: type[ScoreStore], target: str, **kw: object) -> ScoreStore:
        raise StoreUnreachableError(f"{target}: connection refused")

    real_open = ScoreStore.open.__func__  # type: ignore[attr-defined]

    def recording(cls: type[ScoreStore], target: str, **kw: float) -> ScoreStore:
        seen.append(kw.get("wait_seconds", 0.0))
        return real_open(cls, target, **kw)

    monkeypatch.setattr(ScoreStore, "_open_once", classmethod(unreachable))
    monkeypatch.setattr(ScoreStore, "open", classmethod(recording))
    assert main(["serve", "--db", _closed_url(), "--db-wait", "0", "--port", "0"]) == 1
    assert "connection refused" in capsys.readouterr().err and seen == [0.0]
    assert main(["serve", "--db", _closed_url(), "--db-wait", "1.2", "--port", "0"]) == 1
    assert seen == [0.0, 1.2]
