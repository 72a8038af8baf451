"""The API in-process (uvicorn in a thread, 127.0.0.1, free port): scoring, errors, metrics.

The same routes run as a real ``stetho serve`` process in ``test_service_process.py``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import soxr
from fastapi import FastAPI

import stetho
from stetho.data import ClipTable, load_audio
from stetho.detector import Detector
from stetho.serving import (
    BackgroundServer,
    DetectorEntry,
    DetectorRegistry,
    ScoringService,
    ServiceLimits,
    create_app,
    parse_detector_spec,
    score_paths,
)

Running = tuple[httpx.Client, ScoringService]


def _serve(service: ScoringService, app: FastAPI | None = None) -> Iterator[Running]:
    app = create_app(service) if app is None else app
    with BackgroundServer(app, service.limits) as url:
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client, service


@pytest.fixture()
def running(detector: Detector, tmp_path: Path) -> Iterator[Running]:
    entry = DetectorEntry("main", detector, tmp_path / "main")
    limits = ServiceLimits(max_body_mb=0.25, max_seconds=5.0)
    yield from _serve(ScoringService(DetectorRegistry([entry]), limits))


def _wav(wave: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def _json_error(resp: httpx.Response, status: int) -> str:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    return str(resp.json()["error"])


def test_scores_equal_the_detector_and_the_old_routes_still_work(
    running: Running, detector: Detector, serving_data: tuple[Path, ClipTable]
) -> None:
    client, _ = running
    assert client.get("/health").json() == {"status": "ok"}
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["detectors"] == ["main"]
    info = client.get("/info").json()
    assert info["keys"] == [
        {"machine": "fan", "section": "00"},
        {"machine": "valve", "section": "00"},
    ]
    assert info["stetho_version"] == stetho.__version__

    _, table = serving_data
    clip = next(iter(table.filter(split="test", machine="valve", label="anomaly")))
    want = float(detector.score_files([clip.path], "valve", "00")[0])
    for path in ("/v1/score", "/score"):
        out = client.post(f"{path}?machine=valve&section=00", content=clip.path.read_bytes())
        assert out.status_code == 200, out.text
        got = out.json()
        assert abs(got["score"] - want) <= 1e-6
        assert (got["machine"], got["section"], got["detector"]) == ("valve", "00", "main")
        assert got["threshold"] == detector.thresholds[("valve", "00")]
        assert got["decision"] == int(got["score"] > got["threshold"])
        assert got["seconds"] == pytest.approx(1.0)

    # multipart upload with the key as form fields
    files = {"file": (clip.path.name, clip.path.read_bytes(), "audio/wav")}
    got = client.post("/v1/score", files=files, data={"machine": "valve", "section": "0"})
    assert got.status_code == 200 and abs(got.json()["score"] - want) <= 1e-6

    # stereo FLAC at another rate: channel 0 resampled like `stetho detect` does it
    wave, sr = load_audio(clip.path)
    up = soxr.resample(wave, sr, 22050, quality="HQ")
    flac = _wav(np.stack([up, np.zeros_like(up)], axis=1), 22050, "FLAC")
    got = client.post("/v1/score?machine=valve&section=section_00", content=flac).json()
    back = np.clip(
        soxr.resample(sf.read(io.BytesIO(flac), dtype="float32")[0][:, 0], 22050, sr, quality="HQ"),
        -1,
        1,
    )
    assert abs(got["score"] - float(detector.score_waveforms([back], "valve", "00")[0])) <= 1e-6


def test_raw_pcm_scores_like_the_stream_decoder(
    running: Running, detector: Detector, serving_data: tuple[Path, ClipTable]
) -> None:
    client, _ = running
    _, table = serving_data
    clip = next(iter(table.filter(split="test", machine="fan")))
    wave, sr = load_audio(clip.path)
    pcm16 = np.round(wave * 32767).astype("<i2")
    stereo = np.stack([pcm16, np.zeros_like(pcm16)], axis=1).tobytes()
    got = client.post(
        f"/v1/score?machine=fan&section=00&rate={sr}&format=int16&channels=2&channel=0",
        content=stereo,
        headers={"content-type": "application/octet-stream"},
    )
    assert got.status_code == 200, got.text
    want = float(detector.score_waveforms([pcm16.astype(np.float32) / 32768.0], "fan", "00")[0])
    assert abs(got.json()["score"] - want) <= 1e-6

    err = _json_error(
        client.post(f"/v1/score?machine=fan&section=00&rate={sr}", content=b"abc"), 400
    )
    assert "whole number" in err
    err = _json_error(client.post("/v1/score?machine=fan&section=00&rate=5", content=b"ab"), 400)
    assert "rate must be in" in err
    err = _json_error(
        client.post(f"/v1/score?machine=fan&section=00&rate={sr}&format=int8", content=b"ab"), 400
    )
    assert "unknown PCM format" in err
    nan = np.full(1600, np.nan, dtype="<f4").tobytes()
    err = _json_error(
        client.post(f"/v1/score?machine=fan&section=00&rate={sr}&format=float32", content=nan), 400
    )
    assert "NaN" in err
    long = np.zeros(sr * 6, dtype="<i2").tobytes()  # 6 s > max_seconds=5
    assert "limit of 5 s" in _json_error(
        client.post(f"/v1/score?machine=fan&section=00&rate={sr}", content=long), 413
    )


def test_every_error_is_json(running: Running, serving_data: tuple[Path, ClipTable]) -> None:
    client, _ = running
    _, table = serving_data
    wav = next(iter(table.filter(split="test"))).path.read_bytes()

    err = _json_error(client.post("/v1/score?machine=fan", content=wav), 400)
    assert "section" in err and "fan/00, valve/00" in err
    err = _json_error(client.post("/v1/score?machine=pump&section=00", content=wav), 404)
    assert "'pump'" in err and "valid: fan/00, valve/00" in err
    err = _json_error(client.post("/v1/score?detector=nope", content=wav), 404)
    assert "unknown detector 'nope'" in err and "main" in err
    assert "cannot decode" in _json_error(
        client.post("/v1/score?machine=fan&section=00", content=b"definitely not audio"), 415
    )
    curl_default = {"content-type": "application/x-www-form-urlencoded"}  # curl --data-binary
    ok = client.post("/v1/score?machine=fan&section=00", content=wav, headers=curl_default)
    assert ok.status_code == 200, ok.text
    assert "Content-Type" in _json_error(
        client.post(
            "/v1/score?machine=fan&section=00",
            content=wav,
            headers={"content-type": "application/json"},
        ),
        415,
    )
    short = _wav(np.zeros(100, np.float32), 16000)  # 6 ms: decodable, too short for the model
    err = _json_error(client.post("/v1/score?machine=fan&section=00", content=short), 400)
    assert "cannot score" in err and "100 samples" in err
    truncated = wav[: len(wav) // 2]  # header declares more data than present: like `detect`
    assert "truncated" in _json_error(
        client.post("/v1/score?machine=fan&section=00", content=truncated), 400
    )
    nan = _wav(np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    assert "NaN" in _json_error(client.post("/v1/score?machine=fan&section=00", content=nan), 400)
    assert "exceeds the limit" in _json_error(
        client.post("/v1/score?machine=fan&section=00", content=b"x" * (300 * 1024)), 413
    )
    long = _wav(np.zeros(16000 * 6, np.float32), 16000, "FLAC")  # small body, 6 s > 5 s
    assert "limit of 5 s" in _json_error(
        client.post("/v1/score?machine=fan&section=00", content=long), 413
    )
    assert "/v1/score" in _json_error(client.get("/nowhere"), 404)
    for method in ("PUT", "DELETE", "GET"):
        err = _json_error(client.request(method, "/v1/score"), 405)
        assert "POST" in err and method in err
    assert _json_error(client.delete("/healthz"), 405).startswith("/healthz accepts GET")
    assert "channels" in _json_error(client.post("/v1/score?channels=0", content=wav), 422)
    err = _json_error(client.post("/v1/score", files={"f": ("x", b"")}), 400)  # key check first
    assert client.get("/healthz").status_code == 200  # still healthy after all that


def test_several_named_detectors_and_metrics(
    detector: Detector, single_key_detector: Detector, serving_data: tuple[Path, ClipTable]
) -> None:
    registry = DetectorRegistry(
        [
            DetectorEntry("both", detector, Path("runs/both")),
            DetectorEntry("fan-only", single_key_detector, Path("runs/fan")),
        ]
    )
    with pytest.raises(ValueError, match="two detectors named 'both'"):
        registry.add(DetectorEntry("both", detector, Path("x")))
    _, table = serving_data
    clip = next(iter(table.filter(split="test", machine="fan")))
    for client, _ in _serve(ScoringService(registry)):
        listed = client.get("/v1/detectors").json()["detectors"]
        assert [d["name"] for d in listed] == ["both", "fan-only"]
        assert listed[1]["keys"] == [{"machine": "fan", "section": "00"}]
        assert listed[0]["id"] == detector.describe()["id"] and listed[0]["version"] == 1
        got = client.post("/v1/score?detector=fan-only", content=clip.path.read_bytes()).json()
        want = float(single_key_detector.score_files([clip.path], "fan", "00")[0])
        assert got["detector"] == "fan-only" and abs(got["score"] - want) <= 1e-6
        assert (got["machine"], got["section"]) == ("fan", "00")  # its only key

        text = client.get("/metrics").text
        assert 'stetho_scores_total{detector="fan-only",machine="fan",section="00"} 1.0' in text
        assert f'stetho_last_score{{machine="fan",section="00"}} {got["score"]!r}' in text
        assert 'stetho_alarm_open{machine="fan",section="00"} 0.0' in text
        assert 'stetho_http_request_duration_seconds_count{route="/v1/score"} 1.0' in text
        assert (
            'stetho_http_requests_total{method="GET",route="/v1/detectors",status="200"} 1.0'
            in text
        )
        machines = client.get("/v1/machines").json()["machines"]
        # every key a served detector knows is listed, valve/00 never scored
        assert [(m["machine"], m["score"], m["state"]) for m in machines] == [
            ("fan", got["score"], "normal" if got["decision"] == 0 else "anomalous"),
            ("valve", None, "no scores yet"),
        ]
        assert [m["detector_name"] for m in machines] == ["fan-only", "both"]
        assert "no score history" in _json_error(client.get("/v1/alarms"), 503)
        assert client.get("/openapi.json").json()["paths"]["/v1/score"]["post"]


def test_detector_specs() -> None:
    assert parse_detector_spec("fan=runs/a/detector") == ("fan", Path("runs/a/detector"))
    assert parse_detector_spec("runs/pump/detector") == ("pump", Path("runs/pump/detector"))
    assert parse_detector_spec("runs/x") == ("x", Path("runs/x"))
    with pytest.raises(ValueError, match="invalid detector name"):
        parse_detector_spec("a b=runs/x")
    with pytest.raises(ValueError, match="missing folder"):
        parse_detector_spec("fan=")
    with pytest.raises(ValueError, match="max_body_mb"):
        ServiceLimits(max_body_mb=0)


def _wait_in_progress(client: httpx.Client, n: int) -> None:
    deadline = time.monotonic() + 60
    while f"stetho_scoring_in_progress {n:.1f}" not in client.get("/metrics").text:
        assert time.monotonic() < deadline, "the request never reached scoring"
        time.sleep(0.05)


def _wait(pred: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_saturation_gives_503_json_and_recovers(
    detector: Detector, serving_data: tuple[Path, ClipTable], tmp_path: Path
) -> None:
    entry = DetectorEntry("main", detector, tmp_path / "main")
    limits = ServiceLimits(max_concurrency=1, max_queue=1, queue_timeout=2.0)
    _, table = serving_data
    body = next(iter(table.filter(split="test", machine="fan"))).path.read_bytes()
    params = {"machine": "fan", "section": "00"}
    app = create_app(ScoringService(DetectorRegistry([entry]), limits))
    for client, _ in _serve(app.state.service, app):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:
            entry.lock.acquire()  # the model is busy: the first request holds the only slot
            try:
                first = pool.submit(client.post, "/v1/score", params=params, content=body)
                _wait_in_progress(client, 1)
                queued = pool.submit(client.post, "/v1/score", params=params, content=body)
                _wait(lambda: app.state.admission.admitted == 2, "the second admission")
                refused = client.post("/v1/score", params=params, content=body)  # 1 + 1 in
                assert "server busy" in _json_error(refused, 503)
                assert refused.headers["retry-after"] == "1"
                assert "no scoring slot free within 2 s" in _json_error(queued.result(), 503)
            finally:
                entry.lock.release()
            assert first.result().status_code == 200
        assert client.post("/v1/score", params=params, content=body).status_code == 200
        assert 'stetho_rejected_total{reason="busy"} 1.0' in client.get("/metrics").text


def test_dashboard_only_server_shows_what_another_process_stored(store_url: str) -> None:
    """On SQLite and on a real PostgreSQL server (skipped when none can start)."""
    from datetime import UTC, datetime, timedelta

    from stetho.store import AlarmRule, AlarmTracker, ScoreRow, ScoreStore

    writer = ScoreStore.open(store_url)  # e.g. `stetho monitor` writing windows of a folder source
    tracker = AlarmTracker(writer, AlarmRule(k=2, n=3))
    t0 = datetime.now(UTC) - timedelta(hours=1)
    events = []
    for i, score in enumerate([0.1, 0.2, 0.9, 0.95, 0.1, 0.1, 0.1]):
        row = ScoreRow(
            time=t0 + timedelta(minutes=i),
            machine="pump",
            section="01",
            source="folder:/data/in",
            window_start=10.0 * i,
            window_end=10.0 * i + 10,
            score=score,
            threshold=0.5,
            decision=int(score > 0.5),
            detector_id="abc",
            detector_version=2,
        )
        writer.add_scores([row])
        events.append(tracker.update(row))
    assert events == [None, None, None, "opened", None, None, "closed"]
    writer.close()

    service = ScoringService(DetectorRegistry(), store=ScoreStore.open(store_url))
    for client, _ in _serve(service):
        assert "no detectors" in _json_error(client.post("/v1/score", content=b"x"), 404)
        (machine,) = client.get("/v1/machines").json()["machines"]
        assert (machine["machine"], machine["section"], machine["score"]) == ("pump", "01", 0.1)
        assert machine["n_scores"] == 7 and machine["source"] == "folder:/data/in"
        assert machine["alarm_open"] is False and machine["open_alarm"] is None
        rows = client.get(
            "/v1/machines/pump/scores",
            params={"from": (t0 + timedelta(minutes=2)).isoformat(), "section": "1"},
        ).json()["scores"]
        assert [r["score"] for r in rows] == [0.9, 0.95, 0.1, 0.1, 0.1]
        (alarm,) = client.get("/v1/alarms").json()["alarms"]
        assert alarm["machine"] == "pump" and alarm["closed"] is not None
        assert alarm["detector_version"] == 2 and alarm["peak_score"] == 0.95
        assert client.get("/v1/alarms", params={"open_only": True}).json()["alarms"] == []
        days = client.get("/v1/machines/pump/daily").json()["days"]
        assert sum(d["n"] for d in days) == 7
        assert "ISO 8601" in _json_error(client.get("/v1/alarms", params={"to": "soon"}), 422)
        metrics = client.get("/metrics").text
        assert 'stetho_last_score{machine="pump",section="01"} 0.1' in metrics
        assert 'stetho_alarm_open{machine="pump",section="01"} 0.0' in metrics
        page = client.get("/")  # its content is tested with the dashboard
        assert page.status_code == 200 and "pump" in page.text
    service.close()


def test_admission_is_bounded_by_pending_bytes(
    detector: Detector, serving_data: tuple[Path, ClipTable], tmp_path: Path
) -> None:
    entry = DetectorEntry("main", detector, tmp_path / "main")
    limits = ServiceLimits(max_concurrency=1, max_queue=100, max_body_mb=0.1, max_pending_mb=0.1)
    _, table = serving_data
    body = next(iter(table.filter(split="test", machine="fan"))).path.read_bytes()  # 32 KB
    params = {"machine": "fan", "section": "00"}
    app = create_app(ScoringService(DetectorRegistry([entry]), limits))
    for client, _ in _serve(app.state.service, app):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(4) as pool:
            entry.lock.acquire()
            try:
                held = [
                    pool.submit(client.post, "/v1/score", params=params, content=body)
                    for _ in range(3)  # 3 × 32 KB received of the 100 KiB budget
                ]
                _wait_in_progress(client, 1)
                _wait(lambda: app.state.admission.pending == 3 * len(body), "3 bodies in")
                refused = client.post("/v1/score", params=params, content=body)
                assert "MiB" in _json_error(refused, 503)
            finally:
                entry.lock.release()
            assert [f.result().status_code for f in held] == [200] * 3


def test_http_decodes_like_detect_loud_float_clip(
    running: Running, detector: Detector, serving_data: tuple[Path, ClipTable], tmp_path: Path
) -> None:
    """#13 item 6: a ×1e6 float clip is clipped to [-1, 1] over HTTP exactly as by detect."""
    client, _ = running
    _, table = serving_data
    wave, sr = load_audio(next(iter(table.filter(split="test", machine="fan"))).path)
    loud = tmp_path / "loud.wav"
    sf.write(loud, wave * 1e6, sr, subtype="FLOAT")
    (rec,) = score_paths(detector, [loud], machine="fan", section="00")
    got = client.post("/v1/score?machine=fan&section=00", content=loud.read_bytes())
    assert got.status_code == 200 and rec.score is not None
    assert abs(got.json()["score"] - rec.score) <= 1e-6
    clipped = float(detector.score_waveforms([np.clip(wave * 1e6, -1, 1)], "fan", "00")[0])
    assert abs(rec.score - clipped) <= 1e-6


def test_connection_cap_and_malformed_requests_get_json(tmp_path: Path) -> None:
    import socket

    limits = ServiceLimits(max_connections=2, header_timeout=30)
    service = ScoringService(DetectorRegistry(), limits)
    server = BackgroundServer(create_app(service), limits)
    with server as url:
        host, port = url.removeprefix("http://").split(":")

        def raw(data: bytes) -> bytes:
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(data)
                out = b""
                while chunk := s.recv(4096):
                    out += chunk
                return out

        reply = raw(b"NONSENSE\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 400") and b"application/json" in reply
        assert b'"error": "invalid HTTP request' in reply
        idle = [socket.create_connection((host, int(port))) for _ in range(2)]
        state = server.server.server_state
        _wait(lambda: len(state.connections) == 2, "the idle connections")
        got = httpx.get(url + "/healthz", timeout=10)
        assert got.status_code == 503 and "too many open connections" in got.json()["error"]
        for s in idle:
            s.close()
        _wait(lambda: not state.connections, "the idle connections to close")
        assert httpx.get(url + "/healthz", timeout=10).status_code == 200


def test_a_calibrated_folder_is_picked_up_without_restart(
    detector: Detector, serving_data: tuple[Path, ClipTable], tmp_path: Path
) -> None:
    from stetho.detector import calibrate

    folder = detector.save(tmp_path / "det")
    entry = DetectorEntry("main", Detector.load(folder), folder, loader=Detector.load)
    entry.reload_seconds = 0.0
    _, table = serving_data
    fan = list(table.filter(machine="fan"))
    body = fan[0].path.read_bytes()
    for client, _ in _serve(ScoringService(DetectorRegistry([entry]))):
        first = client.post("/v1/score?machine=fan&section=00", content=body).json()
        assert first["detector_version"] == 1
        new = calibrate(Detector.load(folder), {("fan", "00"): [c.path for c in fan[1:]]})
        new.save(folder)  # what `stetho calibrate DETECTOR NORMAL_DIR` does in place
        second = client.post("/v1/score?machine=fan&section=00", content=body).json()
        assert second["detector_version"] == 2 and second["detector_id"] == first["detector_id"]
        want = float(new.score_files([fan[0].path], "fan", "00")[0])
        assert abs(second["score"] - want) <= 1e-6
        assert second["threshold"] == new.thresholds[("fan", "00")]
        assert client.get("/v1/detectors").json()["detectors"][0]["version"] == 2


def test_accepted_connections_disable_nagle() -> None:
    """Without TCP_NODELAY every response waited ~40 ms for the client's delayed ACK."""
    import socket

    limits = ServiceLimits()
    server = BackgroundServer(create_app(ScoringService(DetectorRegistry())), limits)
    with server as url, httpx.Client(base_url=url) as client:
        assert client.get("/healthz").status_code == 200  # keep-alive: the connection stays
        (conn,) = server.server.server_state.connections
        sock = conn.transport.get_extra_info("socket")  # type: ignore[attr-defined]
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
