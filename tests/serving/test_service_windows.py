"""``stetho serve`` as a real process on real clips: trace, hear and acknowledge an alarm.

The served detector is the small test model fitted on real slider recordings (DCASE 2020
slider id_00 training normals). A named recording is posted; it is found by name in
``/v1/windows``; its audio and its nearest normal bank clip are fetched and decode as the
recordings themselves; the alarm it opens is acknowledged; metrics parse.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families

from stetho.data import load_audio, scan_dataset
from stetho.detector import Detector

pytestmark = pytest.mark.shared

N_BANK = 12  # real training normals the served detector is fitted on


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture(scope="module")
def real(
    detector: Detector, shared_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Detector, list[Path], Path, set[str]]]:
    table = scan_dataset(shared_dir / "data" / "dcase2020t2_extra")
    bank = sorted(table.filter(machine="slider", split="train"), key=lambda c: c.name)[:N_BANK]
    if len(bank) < N_BANK:
        pytest.skip("fewer than 12 real slider training clips in the shared folder")
    root = tmp_path_factory.mktemp("real_service")
    det = Detector.load(detector.save(root / "base")).fit(bank)
    det_dir = det.save(root / "slider_detector")
    # candidates: the slider test clips (id_00 is the bank's machine) and other machines' clips
    # posted as slider/00; the detector's own decisions say which are anomalous
    tests = [c.path for c in table.filter(split="test") if c.machine in ("slider", "pump", "fan")]
    decisions = det.decide(det.score_files(tests, "slider", "00"), ("slider", "00"))
    anomalous = [p for p, d in zip(tests, decisions) if d == 1]
    assert len(anomalous) >= 2, f"only {len(anomalous)} of {len(tests)} clips above threshold"
    cmd = [sys.executable, "-m", "stetho", "serve", "--detector", f"plant={det_dir}", "--db",
           str(root / "plant.db"), "--port", "0", "--alarm-k", "2", "--alarm-n", "3"]  # fmt: skip
    stderr = root / "stderr.txt"
    with open(stderr, "w") as err:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=_env(), cwd=root
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match, f"no URL in {line!r}; stderr: {stderr.read_text()}"
        url = match.group(0)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, stderr.read_text()
                time.sleep(0.1)
        yield url, det, anomalous, root, {str(c.path) for c in bank}
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    log = stderr.read_text()
    assert rc == 0 and "Traceback" not in log, log


def test_post_find_hear_and_acknowledge_an_alarm_on_real_clips(
    real: tuple[str, Detector, list[Path], Path, set[str]],
) -> None:
    url, det, anomalous, root, bank = real
    key = {"machine": "slider", "section": "00"}
    never = httpx.get(url + "/v1/machines").json()["machines"]
    assert [(m["machine"], m["state"], m["detector_name"]) for m in never] == [
        ("slider", "no scores yet", "plant")
    ]
    posted = []
    for i, clip in enumerate(anomalous[:2]):
        name = f"line2_slider_{i}.wav"
        got = httpx.post(
            url + "/v1/score",
            files={"file": (name, clip.read_bytes(), "audio/wav")},
            data=key,
            timeout=120,
        )
        assert got.status_code == 200, got.text
        posted.append(got.json())
    assert [p["decision"] for p in posted] == [1, 1]
    assert [p["alarm"] for p in posted] == [None, "opened"]
    want = det.score_files(anomalous[:2], "slider", "00")
    np.testing.assert_allclose([p["score"] for p in posted], want, rtol=0, atol=1e-6)
    z = det.normalise([p["score"] for p in posted], ("slider", "00"))  # of the served scores
    np.testing.assert_allclose([p["normalised"] for p in posted], z, rtol=0, atol=1e-9)

    found = httpx.get(
        url + "/v1/windows", params={"machine": "slider", "source": "line2_slider_1.wav"}
    ).json()["windows"]
    assert [w["id"] for w in found] == [posted[1]["id"]]
    (window,) = found
    assert window["has_audio"] and window["detector_name"] == "plant"
    detail = httpx.get(f"{url}/v1/windows/{window['id']}").json()
    audio = httpx.get(url + detail["audio_url"])
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    wave, rate = sf.read(io.BytesIO(audio.content), dtype="float32")
    assert sf.info(io.BytesIO(audio.content)).subtype == "PCM_16" and rate == det.sample_rate
    clip, _ = load_audio(anomalous[1], det.sample_rate)
    np.testing.assert_allclose(wave, clip, atol=1.5 / 32768)  # the recording, 16-bit
    assert detail["nearest_ref"] in bank  # one of the recordings the detector was fitted on
    near = httpx.get(url + detail["nearest_audio_url"])
    near_wave, _ = sf.read(io.BytesIO(near.content), dtype="float32")
    ref, _ = load_audio(Path(detail["nearest_ref"]), det.sample_rate)
    np.testing.assert_allclose(near_wave, ref, atol=1.5 / 32768)
    refs = {httpx.get(f"{url}/v1/windows/{p['id']}").json()["nearest_ref"] for p in posted}
    kept = [p.name for p in (root / "plant.db.audio").iterdir()]
    assert len(kept) == 2 + len(refs)  # two windows and one copy per distinct nearest clip
    assert all(name.endswith(".wav") and not name.startswith(".") for name in kept)

    (alarm,) = httpx.get(url + "/v1/alarms", params={"machine": "slider"}).json()["alarms"]
    assert alarm["closed"] is None and alarm["windows"] == 2 and alarm["detector_name"] == "plant"
    assert alarm["peak_normalised"] == pytest.approx(max(z), abs=1e-9)
    ack = httpx.post(f"{url}/v1/alarms/{alarm['id']}/ack", json={"note": "checked the rail"})
    assert ack.status_code == 200 and ack.json()["acknowledged"] is True
    (listed,) = httpx.get(url + "/v1/alarms").json()["alarms"]
    assert listed["ack_note"] == "checked the rail" and listed["ack_time"] is not None
    assert httpx.get(url + "/v1/machines/no-such-machine/scores").status_code == 404

    families = {f.name: f for f in text_string_to_metric_families(httpx.get(url + "/metrics").text)}
    (state,) = [
        s for s in families["stetho_machine_state"].samples if s.value == 1.0
    ]  # one state per machine
    assert state.labels == {"machine": "slider", "section": "00", "state": "alarm"}
    print(
        f"{len(anomalous)} real clips above threshold; posted 2, audio {len(audio.content)} B, "
        f"nearest {Path(detail['nearest_ref']).name}"
    )
