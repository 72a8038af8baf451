"""The README's plant path on the default detector, end to end, on real recordings of one slider:

import → train → detect → watch (WAV piped in) → monitor → serve → calibrate → export → explain →
report. One clip scores the same (≤ 1e-6) through detect, watch, serve, monitor and the Python
API, and every figure the report and explain promise is drawn.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import stetho
from stetho.cli import main
from stetho.store import ScoreStore
from tests.conftest import shared_root

pytestmark = [pytest.mark.shared, pytest.mark.slow]


def _stetho(*args: str) -> list[str]:
    return [sys.executable, "-m", "stetho", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    extra = shared_root() / "data" / "dcase2020t2_extra" / "dev_data" / "slider"
    mini = shared_root() / "data" / "dcase2020t2_mini" / "dev_data" / "slider"
    if not extra.is_dir() or not mini.is_dir():
        pytest.skip(f"real slider clips not found under {shared_root()} (set STETHO_SHARED)")
    root = tmp_path_factory.mktemp("plant")
    normals = sorted((extra / "train").glob("normal_id_00_*.wav"))
    dirs = {name: root / name for name in ("rec", "held", "faulty", "after_repair", "inbox")}
    for d in dirs.values():
        d.mkdir()
    for p in normals[:30]:
        shutil.copy(p, dirs["rec"] / p.name)
    for p in [*normals[30:36], *sorted(mini.glob("test/normal_id_00_*.wav"))]:
        shutil.copy(p, dirs["held"] / f"{p.parent.parent.name}_{p.name}")
    for p in [*sorted(mini.glob("test/anomaly_id_00_*.wav")), *extra.glob("test/anomaly_id_00_*")]:
        shutil.copy(p, dirs["faulty"] / f"{p.parent.parent.parent.name}_{p.name}")
    for p in normals[40:52]:  # 12: enough for α = 0.1, too few for a threshold below the top
        shutil.copy(p, dirs["after_repair"] / p.name)
    return {"root": root, **dirs}


def test_plant_path_on_the_default_detector(plant: dict[str, Path], capsys) -> None:
    root = plant["root"]
    data, run = root / "data" / "plant", root / "runs" / "plant"
    # 1. import, 2. train (the default: no --config)
    assert main(["data", "import", str(data), "--machine", "slider", "--train", str(plant["rec"]),
                 "--test-normal", str(plant["held"]),
                 "--test-anomaly", str(plant["faulty"])]) == 0  # fmt: skip
    assert main(["train", "--data", str(data), "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "learnt from 30 normal recording(s)" in out and "Known-faulty test clips caught" in out
    assert out.index("learnt from") < out.index("Evaluation of the test clips")  # words first
    det_dir = run / "detector"
    det = stetho.load_detector(det_dir)
    assert det.kind == "fewshot" and det.keys == [("slider", "00")]
    key = ("slider", "00")
    clip = sorted(plant["faulty"].iterdir())[0]
    api = float(det.score_files([clip], *key)[0])

    # 3. detect
    assert main(["detect", str(clip), "--detector", str(det_dir), "--machine", "slider",
                 "--section", "00", "--csv", str(root / "d.csv")]) == 0  # fmt: skip
    row = next(csv.DictReader((root / "d.csv").open()))
    assert abs(float(row["score"]) - api) <= 1e-6

    # 4. watch: the WAV piped in, one window the length of the clip
    wave, sr = sf.read(clip, dtype="float32")
    seconds = len(wave) / sr
    proc = subprocess.run(
        _stetho(
            "watch",
            "--detector",
            str(det_dir),
            "--machine",
            "slider",
            "--section",
            "00",
            "--window",
            f"{seconds}",
            "--hop",
            f"{seconds}",
        ),
        input=clip.read_bytes(),
        capture_output=True,
        env=_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    got = [float(m) for m in re.findall(rb"score\s+(-?[0-9.eE+-]+)", proc.stdout)]
    assert got and abs(got[0] - api) <= 1e-5, proc.stdout.decode()

    # 5. monitor: a folder source scores the clip into the store
    cfg = root / "monitor.yaml"
    cfg.write_text(
        f"detector: {det_dir}\ndb: {root / 'plant.db'}\npoll_seconds: 0.2\nstatus_seconds: 0\n"
        f"sources:\n  - {{kind: folder, path: {plant['inbox']}, machine: slider, section: '00', "
        "settle_seconds: 0}\n"
    )
    mon = subprocess.Popen(_stetho("monitor", str(cfg)), env=_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        shutil.copy(clip, root / "incoming.wav")
        (root / "incoming.wav").rename(plant["inbox"] / clip.name)
        deadline = time.monotonic() + 300
        rows: list = []
        while time.monotonic() < deadline and not rows:
            if (root / "plant.db").exists():
                with ScoreStore.open(root / "plant.db") as store:
                    rows = store.scores("slider")
            time.sleep(0.5)
        assert rows, "the monitor stored no score"
        assert abs(float(rows[0].score) - api) <= 1e-6
    finally:
        mon.send_signal(signal.SIGTERM)
        mon.communicate(timeout=300)

    # 6. serve: the same clip over HTTP
    import httpx

    srv = subprocess.Popen(
        _stetho(
            "serve",
            "--detector",
            f"slider={det_dir}",
            "--port",
            "0",
            "--db",
            str(root / "serve.db"),
        ),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert srv.stdout is not None
        url = re.search(r"http://127\.0\.0\.1:\d+", srv.stdout.readline())
        assert url, "serve printed no URL"
        r = httpx.post(f"{url.group(0)}/v1/score", params={"machine": "slider", "section": "00"},
                       content=clip.read_bytes(), timeout=300)  # fmt: skip
        assert r.status_code == 200, r.text
        assert abs(float(r.json()["score"]) - api) <= 1e-6
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.communicate(timeout=60)

    # 7. calibrate after a repair: version 2, same id; plain words on what 12 recordings give
    capsys.readouterr()
    assert main(["calibrate", str(det_dir), str(plant["after_repair"]), "--machine", "slider",
                 "--section", "00"]) == 0  # fmt: skip
    said = capsys.readouterr().out
    assert "learnt from 12 normal recording(s)" in said
    assert "threshold is the highest of their own scores" in said and "19 or more" in said
    new = stetho.load_detector(det_dir)
    assert new.version == 2 and new.detector_id == det.detector_id

    # 8. export: the ONNX folder scores like the detector
    assert main(["export", str(det_dir), str(root / "edge")]) == 0
    edge = stetho.load_detector(root / "edge")
    np.testing.assert_allclose(
        edge.score_files([clip], *key), new.score_files([clip], *key), atol=1e-4
    )

    # 9. explain: time, frequency and the nearest normal recording by name
    capsys.readouterr()
    assert main(["explain", str(clip), "--detector", str(det_dir), "--machine", "slider",
                 "--section", "00", "--out", str(root / "explain")]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert re.search(r"normal_id_00_\d+\.wav", text), text
    assert list((root / "explain").glob("*.png"))

    # 10. report: labels found from the run, every figure drawn
    assert main(["report", str(run), "--out", str(root / "report")]) == 0
    html = (root / "report" / "report.html").read_text()
    pngs = list((root / "report").rglob("*.png"))
    assert len(pngs) >= 3 and "histogram" in html.lower()
    json.dumps(det.describe())  # describe() stays JSON-ready
