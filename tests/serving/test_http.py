"""HTTP service on 127.0.0.1 (ephemeral port): health, info, scoring and 4xx errors."""

from __future__ import annotations

import io
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

import stetho
from stetho.data import ClipTable, load_audio
from stetho.detector import Detector
from stetho.serving import ScoringHTTPServer, make_server


@pytest.fixture()
def running(detector: Detector) -> Iterator[ScoringHTTPServer]:
    server = make_server(detector, "127.0.0.1", 0, max_body_mb=0.25)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _request(
    server: ScoringHTTPServer, path: str, body: bytes | None = None, method: str | None = None
) -> tuple[int, dict[str, Any]]:
    assert server.server_address[0] == "127.0.0.1"
    req = urllib.request.Request(server.url + path, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        assert err.headers["Content-Type"] == "application/json"
        return err.code, json.loads(err.read())


def test_health_info_and_scoring(
    running: ScoringHTTPServer, detector: Detector, serving_data: tuple[Path, ClipTable]
) -> None:
    assert _request(running, "/health") == (200, {"status": "ok"})
    status, info = _request(running, "/info")
    assert status == 200
    assert info["keys"] == [
        {"machine": "fan", "section": "00"},
        {"machine": "valve", "section": "00"},
    ]
    assert info["thresholds"] == {f"{m}/{s}": t for (m, s), t in detector.thresholds.items()}
    assert info["backbone"] == "logmel" and info["stetho_version"] == stetho.__version__
    assert info["sample_rate"] == detector.sample_rate

    _, table = serving_data
    clip = next(iter(table.filter(split="test", machine="valve", label="anomaly")))
    want = float(detector.score_files([clip.path], "valve", "00")[0])
    status, out = _request(running, "/score?machine=valve&section=00", clip.path.read_bytes())
    assert status == 200
    assert out["score"] == pytest.approx(want, rel=1e-5, abs=1e-7)
    assert (out["machine"], out["section"]) == ("valve", "00")
    assert out["threshold"] == detector.thresholds[("valve", "00")]
    assert out["decision"] == int(out["score"] > out["threshold"])
    assert out["seconds"] == pytest.approx(1.0)

    # FLAC at another rate, stereo: channel 0 resampled to the detector's rate
    wave, sr = load_audio(clip.path)
    import soxr

    up = soxr.resample(wave, sr, 22050, quality="HQ")
    buf = io.BytesIO()
    sf.write(buf, np.stack([up, np.zeros_like(up)], axis=1), 22050, format="FLAC")
    status, out = _request(running, "/score?machine=valve&section=0", buf.getvalue())
    assert status == 200 and out["section"] == "00"
    back = soxr.resample(sf.read(io.BytesIO(buf.getvalue()), dtype="float32")[0][:, 0], 22050, sr)
    want = float(detector.score_waveforms([back], "valve", "00")[0])
    assert out["score"] == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_bad_requests_get_json_errors(
    running: ScoringHTTPServer, serving_data: tuple[Path, ClipTable]
) -> None:
    _, table = serving_data
    wav = next(iter(table.filter(split="test"))).path.read_bytes()

    status, out = _request(running, "/score?machine=fan", wav)
    assert status == 400 and "section" in out["error"] and "fan/00, valve/00" in out["error"]

    status, out = _request(running, "/score?machine=pump&section=00", wav)
    assert status == 404 and "'pump'" in out["error"] and "valid: fan/00, valve/00" in out["error"]

    status, out = _request(running, "/score?machine=fan&section=00", b"definitely not audio")
    assert status == 400 and "cannot decode" in out["error"]

    short = io.BytesIO()  # 6 ms: decodable, but too short for the model
    sf.write(short, np.zeros(100, np.float32), 16000, format="WAV")
    status, out = _request(running, "/score?machine=fan&section=00", short.getvalue())
    assert status == 400 and "cannot score" in out["error"] and "100 samples" in out["error"]

    status, out = _request(running, "/score?machine=fan&section=00", b"x" * (300 * 1024))
    assert status == 413 and "exceeds the limit" in out["error"]

    status, out = _request(running, "/nowhere")
    assert status == 404 and "/score" in out["error"]

    status, out = _request(running, "/score?machine=fan&section=00")  # GET
    assert status == 405 and "POST" in out["error"]

    # the server is still healthy after all that
    assert _request(running, "/health")[0] == 200


def test_single_key_detector_needs_no_parameters(
    single_key_detector: Detector, serving_data: tuple[Path, ClipTable]
) -> None:
    _, table = serving_data
    clip = next(iter(table.filter(split="test", machine="fan")))
    server = make_server(single_key_detector)  # defaults: 127.0.0.1, free port
    assert server.server_address[0] == "127.0.0.1" and server.server_address[1] > 0
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        status, out = _request(server, "/score", clip.path.read_bytes())
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert status == 200 and (out["machine"], out["section"]) == ("fan", "00")
    want = float(single_key_detector.score_files([clip.path], "fan", "00")[0])
    assert out["score"] == pytest.approx(want, rel=1e-5, abs=1e-7)
    with pytest.raises(ValueError, match="max_body_mb"):
        make_server(single_key_detector, max_body_mb=0)
