"""Limits and edge cases of the HTTP service on a real server (uvicorn in a thread, 127.0.0.1):
slow declared bodies (#22 item 5), extreme dates, 500s and corrupted stores (#22 item 6),
unknown machines, alarm order and metrics (#24 item 6), decisions by the detector (#22).

Raw-socket clients are few (six) and every wait is bounded; no bound is tight.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import stetho
from stetho.data import ClipTable
from stetho.detector import Detector
from stetho.serving import (
    BackgroundServer,
    DetectorEntry,
    DetectorRegistry,
    ScoringService,
    ServiceLimits,
    create_app,
)
from stetho.store import AlarmRule, ScoreRow, ScoreStore
from tests.badinput import EXTREME_DATES, SLOW_BODIES, corrupt_sqlite

T0 = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)


def _wait_for(pred: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _read_reply(sock: socket.socket) -> bytes:
    out = b""
    try:
        while chunk := sock.recv(4096):
            out += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return out


def test_slow_declared_bodies_hold_no_admission(
    detector: Detector, serving_data: tuple[Path, ClipTable], tmp_path: Path
) -> None:
    """Five 50 MiB + one 6 MiB declared bodies sent at 1 byte/s filled the 256 MiB budget
    (reserved by Content-Length): every other upload got 503 for the whole body timeout."""
    entry = DetectorEntry("main", detector, tmp_path / "main")
    # default body cap (50 MiB) and budget (256 MiB); a body timeout far above the rate's cut
    limits = ServiceLimits(body_timeout=300.0, body_grace=10.0, min_body_rate_kib=64.0)
    app = create_app(ScoringService(DetectorRegistry([entry]), limits))
    _, table = serving_data
    clip = next(iter(table.filter(split="test", machine="fan"))).path.read_bytes()
    with BackgroundServer(app, limits) as url:
        host, port = url.removeprefix("http://").split(":")
        slow = []
        for length in SLOW_BODIES.values():
            s = socket.create_connection((host, int(port)), timeout=120)
            s.sendall(
                b"POST /v1/score?machine=fan&section=00 HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: audio/wav\r\n" + f"Content-Length: {length}\r\n\r\n".encode() + b"R"
            )
            slow.append(s)
        stop = threading.Event()

        def trickle() -> None:  # one byte a second each, for at most 2 minutes
            for _ in range(120):
                if stop.wait(1.0):
                    return
                for s in slow:
                    with contextlib.suppress(OSError):  # cut by the server: fine
                        s.sendall(b"I")

        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        t0 = time.monotonic()
        try:
            admission = app.state.admission
            _wait_for(lambda: admission.admitted == len(slow), "the slow requests' admission")
            assert admission.pending < 2**20  # what arrived is held, not what was declared
            with httpx.Client(base_url=url, timeout=120) as client:
                codes = [
                    client.post("/v1/score?machine=fan&section=00", content=clip).status_code
                    for _ in range(4)
                ]
            assert codes == [200] * 4
            replies = [_read_reply(s) for s in slow]  # cut by the minimum rate, then closed
        finally:
            stop.set()
            sender.join(10)
            for s in slow:
                s.close()
        for reply in replies:
            assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
            assert b"slower than 64 KiB/s" in reply and b"connection: close" in reply.lower()
        assert time.monotonic() - t0 < limits.body_timeout  # not held for the body timeout
        _wait_for(lambda: admission.admitted == 0 and admission.pending == 0, "admission freed")


def _store_with_history(path: Path) -> ScoreStore:
    store = ScoreStore.open(path)
    rows = [
        ScoreRow(
            T0 + timedelta(minutes=i),
            "pump",
            "01",
            "folder:/in",
            0.0,
            10.0,
            2.0 if d else 0.1,
            1.0,
            d,
            "det",
            1,
        )
        for i, d in enumerate([1, 0, 1, 0])
    ]
    _, events = store.record(rows, AlarmRule(k=1, n=1, clear_k=0))
    assert events == ["opened", "closed", "opened", "closed"]
    return store


@pytest.fixture()
def history(tmp_path: Path) -> Iterator[tuple[httpx.Client, ScoringService]]:
    service = ScoringService(DetectorRegistry(), store=_store_with_history(tmp_path / "s.db"))
    with (
        BackgroundServer(create_app(service), service.limits) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield client, service
    service.close()


def test_extreme_dates_unknown_machines_and_alarm_order(
    history: tuple[httpx.Client, ScoringService],
) -> None:
    client, _ = history
    for text in EXTREME_DATES:
        for route in ("/v1/machines/pump/scores", "/v1/machines/pump/daily", "/v1/alarms"):
            for bound in ("from", "to"):
                got = client.get(route, params={bound: text})
                assert got.status_code == 200, (route, bound, text, got.text)
    early, late = EXTREME_DATES[0], EXTREME_DATES[1]
    rows = client.get("/v1/machines/pump/scores", params={"from": early, "to": late}).json()
    assert len(rows["scores"]) == 4
    assert client.get("/v1/machines/pump/scores", params={"to": early}).json()["scores"] == []

    for route in ("/v1/machines/no-such-machine/scores", "/v1/machines/no-such-machine/daily"):
        got = client.get(route)
        assert got.status_code == 404 and "unknown machine 'no-such-machine'" in got.json()["error"]
        assert "pump" in got.json()["error"]  # the known ones are listed

    alarms = client.get("/v1/alarms").json()["alarms"]
    assert len(alarms) == 2
    assert [a["opened"] for a in alarms] == sorted((a["opened"] for a in alarms), reverse=True)


def test_a_500_closes_the_connection_and_shows_no_sql(
    history: tuple[httpx.Client, ScoringService], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, service = history
    assert service.store is not None

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("boom\n[SQL: SELECT secret FROM scores]")

    monkeypatch.setattr(service.store, "machines", broken)
    got = client.get("/v1/machines")
    assert got.status_code == 500 and got.headers["connection"] == "close"
    assert "boom" in got.json()["error"] and "SELECT" not in got.text
    assert client.get("/healthz").status_code == 200  # the client reconnects cleanly


def test_a_corrupted_store_answers_503_without_sql(tmp_path: Path) -> None:
    path = tmp_path / "plant.db"
    with ScoreStore.open(path) as store:
        store.add_scores(
            [
                ScoreRow(T0 + timedelta(seconds=i), "fan", "00", "t", 0.0, 1.0, 0.5, 1.0, 0, "d", 1)
                for i in range(3000)
            ]
        )
    corrupt_sqlite(path)
    service = ScoringService(DetectorRegistry(), store=ScoreStore.open(path))
    with (
        BackgroundServer(create_app(service), service.limits) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        for route in ("/v1/machines", "/v1/machines/fan/scores", "/v1/machines/fan/daily"):
            got = client.get(route)
            assert got.status_code == 503, (route, got.text)
            err = got.json()["error"]
            assert "cannot be read" in err and "malformed" in err and "--check" in err
            assert "SELECT" not in got.text and "[SQL" not in got.text
        assert client.get("/metrics").status_code == 200  # a scrape never fails
    service.close()


def test_metrics_parse_with_build_info_and_default_collectors(
    history: tuple[httpx.Client, ScoringService],
) -> None:
    client, _ = history
    assert client.get("/v1/machines").status_code == 200
    got = client.get("/metrics")
    assert got.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(got.text)}
    (build,) = families["stetho_build_info"].samples
    assert build.labels["version"] == stetho.__version__ and build.value == 1.0
    for name in ("process_resident_memory_bytes", "python_gc_objects_collected", "python_info"):
        assert families[name].samples, name
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    alarm = {s.labels["machine"]: s.value for s in families["stetho_alarm_open"].samples}
    assert alarm == {"pump": 0.0}
    requests = families["stetho_http_requests"].samples
    assert any(
        s.labels == {"method": "GET", "route": "/v1/machines", "status": "200"} for s in requests
    )


class _Inverted:
    """A scorer whose own rule is the opposite of ``score > threshold``: serving must ask it."""

    def __init__(self, inner: Detector) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def decide(self, scores: Any, key: Any) -> np.ndarray:
        return 1 - np.asarray(self._inner.decide(scores, key))


def test_the_service_takes_decisions_from_the_detector(
    detector: Detector, serving_data: tuple[Path, ClipTable], tmp_path: Path
) -> None:
    entry = DetectorEntry("main", _Inverted(detector), tmp_path / "main")  # type: ignore[arg-type]
    service = ScoringService(DetectorRegistry([entry]), store=ScoreStore.open(tmp_path / "s.db"))
    _, table = serving_data
    clip = next(iter(table.filter(split="test", machine="fan"))).path
    with (
        BackgroundServer(create_app(service), service.limits) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        got = client.post("/v1/score?machine=fan&section=00", content=clip.read_bytes()).json()
    own = int(detector.decide([got["score"]], ("fan", "00"))[0])
    assert got["decision"] == 1 - own
    assert service.store is not None
    (row,) = service.store.scores("fan")
    assert row.decision == 1 - own
    service.close()
