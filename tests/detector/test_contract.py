"""One contract, every kind: each saved detector kind scores, decides, calibrates, explains its
nearest clip, saves and loads the same way, through `stetho.load_detector`, the CLI and the API.

Real clips from ``$STETHO_SHARED`` (slider id_00 normals of DCASE 2020 as the bank).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import stetho
from stetho import StethoError
from stetho.cli import main
from stetho.data import scan_dataset
from stetho.detector import BaseDetector, Detector
from stetho.detector.autoencoder import AutoencoderDetector
from stetho.detector.ensemble import EnsembleDetector
from tests.conftest import shared_root

pytestmark = [pytest.mark.shared, pytest.mark.slow]

KINDS = ["fewshot", "knn-frozen", "autoencoder", "onnx-fewshot", "onnx-knn"]


@pytest.fixture(scope="module")
def slider(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    root = shared_root() / "data" / "dcase2020t2_extra"
    if not root.is_dir():
        pytest.skip(f"real clips not found under {root} (set STETHO_SHARED)")
    table = scan_dataset(root)
    train = sorted((c for c in table if c.machine == "slider" and c.split == "train"),
                   key=lambda c: c.name)  # fmt: skip
    test = [c for c in table if c.machine == "slider" and c.split == "test" and c.section == "00"]
    assert len(train) >= 30 and test, "slider id_00 clips missing from the shared data"
    return {"bank": train[:12], "calib": train[12:20], "test": [c.path for c in test][:4]}


def _build(kind: str, slider: dict, folder: Path) -> Path:
    from stetho.config import ExperimentConfig
    from stetho.pipelines.recipes import default_config

    bank = slider["bank"]
    if kind in ("fewshot", "onnx-fewshot"):
        det: BaseDetector = EnsembleDetector(default_config()).fit(bank)
    elif kind in ("knn-frozen", "onnx-knn"):
        from stetho.backbones import create_backbone
        from stetho.model.heads import ProxyHead
        from stetho.model.labels import ClassMap

        cfg = ExperimentConfig(recipe="finetune").override(
            ["backbone.name=logmel", "finetune.strategy=frozen", "backend.metric=euclidean"]
        )
        backbone = create_backbone("logmel")
        head = ProxyHead(backbone.embed_dim, 1, cfg.head)
        det = Detector(cfg, backbone, head, ClassMap(classes=["slider"])).fit(bank)
    else:
        from stetho.baselines import AEBaselineConfig, train_ae_baseline

        model = train_ae_baseline(bank, AEBaselineConfig(epochs=2))
        det = AutoencoderDetector(model)
    det.save(folder / "torch")
    if kind.startswith("onnx"):
        from stetho.deploy import export_onnx

        export_onnx(stetho.load_detector(folder / "torch"), folder / "edge")
        return folder / "edge"
    return folder / "torch"


@pytest.fixture(scope="module", params=KINDS)
def saved(request: pytest.FixtureRequest, slider: dict, tmp_path_factory) -> tuple[str, Path]:
    folder = tmp_path_factory.mktemp(request.param)
    return request.param, _build(request.param, slider, folder)


def test_every_path_scores_a_clip_the_same(saved: tuple[str, Path], slider: dict) -> None:
    kind, folder = saved
    det = stetho.load_detector(folder)
    assert isinstance(det, BaseDetector)
    desc = det.describe()
    assert desc["kind"] == ("onnx" if kind.startswith("onnx") else kind.split("-")[0])
    assert (
        desc["id"]
        and desc["version"] == 1
        and desc["keys"] == [{"machine": "slider", "section": "00"}]
    )
    clip = slider["test"][0]
    api = det.score_files([clip], "slider", "00")
    wave, _ = stetho.data.load_audio(clip, sr=det.sample_rate)
    np.testing.assert_allclose(det.score_waveforms(wave, "slider", "00"), api, atol=1e-6)
    # decisions: one path, and the normalised score agrees with it
    thr = det.thresholds[("slider", "00")]
    assert det.decide(api, "slider/00")[0] == int(api[0] > thr)
    norm = det.normalise(api, ("slider", "00"))
    assert bool(norm[0] > 1.0) == bool(api[0] > thr)
    # the CLI's detect: the same score in its CSV
    out = folder.parent / f"detect-{kind}.csv"
    code = main(["detect", "--detector", str(folder), str(clip), "--machine", "slider",
                 "--section", "00", "--csv", str(out)])  # fmt: skip
    assert code == 0
    import csv

    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1 and abs(float(rows[0]["score"]) - api[0]) <= 1e-6
    assert int(rows[0]["decision"]) == int(api[0] > thr)


def test_save_load_round_trip_is_exact(saved: tuple[str, Path], slider: dict, tmp_path) -> None:
    _, folder = saved
    det = stetho.load_detector(folder)
    copy = det.save(tmp_path / "copy")
    again = stetho.load_detector(copy)
    a = det.score_files(slider["test"], "slider", "00")
    b = again.score_files(slider["test"], "slider", "00")
    np.testing.assert_array_equal(a, b)
    assert again.thresholds == det.thresholds
    assert again.describe()["id"] == det.describe()["id"]


def test_nearest_names_a_bank_recording(saved: tuple[str, Path], slider: dict) -> None:
    kind, folder = saved
    det = stetho.load_detector(folder)
    feats = det.embed_files(slider["test"][:2])
    near = det.nearest(feats, ("slider", "00"))
    assert len(near) == 2
    if kind == "autoencoder":
        assert near == [None, None]  # no bank: explanations fall back (and say so)
        return
    names = {Path(c.path).name for c in slider["bank"]}
    assert all(n is not None and Path(str(n.ref)).name in names for n in near)


def test_calibrate_new_version_and_refusals(
    saved: tuple[str, Path], slider: dict, tmp_path
) -> None:
    kind, folder = saved
    work = tmp_path / "det"
    shutil.copytree(folder, work)
    key = ("slider", "00")
    det = stetho.load_detector(work)
    before = dict(det.thresholds)
    # one recording, or silence: refused, and the folder still loads unchanged
    with pytest.raises(StethoError, match="at least 2"):
        det.calibrate({key: [slider["calib"][0].path]})
    silent = []
    for i in range(5):
        p = tmp_path / f"silent_{i}.wav"
        import soundfile as sf

        sf.write(p, np.zeros(16000 * 2, dtype=np.float32), 16000)
        silent.append(p)
    if kind != "autoencoder":  # the baseline retrains on silence for minutes: checked below
        with pytest.raises(StethoError, match="silent or identical"):
            det.calibrate({key: silent})
    assert det.thresholds == before and det.version == 1
    # the CLI: exit 2, and the folder still loads as the old version
    one = [str(slider["calib"][0].path)]
    assert main(["calibrate", str(work), *one, "--machine", "slider", "--section", "00"]) == 2
    assert main(["calibrate", str(work), str(tmp_path), "--machine", "slider"]) == 2  # silence
    assert stetho.load_detector(work).thresholds == before
    assert stetho.load_detector(work).version == 1
    if kind == "autoencoder":
        with pytest.raises(StethoError, match="mode replace"):
            det.calibrate({key: [c.path for c in slider["calib"]]}, mode="add")
        return
    code = main(["calibrate", str(work), *[str(c.path) for c in slider["calib"]],
                 "--machine", "slider", "--section", "00"])  # fmt: skip
    assert code == 0
    new = stetho.load_detector(work)
    assert new.version == 2 and new.describe()["id"] == det.describe()["id"]
    assert np.isfinite(new.thresholds[key])
    meta = json.loads((work / "config.json").read_text())
    assert meta["version"] == 2 and meta["calibrations"][-1]["keys"] == {"slider/00": 8}


def test_unknown_machine_is_a_not_found_error(saved: tuple[str, Path], slider: dict) -> None:
    _, folder = saved
    det = stetho.load_detector(folder)
    with pytest.raises(StethoError, match="no model for pump/00") as info:
        det.score_files(slider["test"][:1], "pump", "00")
    assert info.value.http_status == 404


def test_watch_serve_monitor_explain_noise_on_every_kind(
    saved: tuple[str, Path], slider: dict, tmp_path: Path, monkeypatch, capsys
) -> None:
    """The README's commands on each kind: one clip scores the same through watch (its WAV on
    stdin), serve (a real HTTP server), monitor (a watched folder) and the API; explain and
    ``evaluate --noise`` run."""
    import io
    import re
    import sys

    import httpx

    from stetho.serving import (
        BackgroundServer,
        DetectorEntry,
        DetectorRegistry,
        ScoringService,
        ServiceLimits,
        create_app,
    )
    from stetho.serving.monitor import Monitor
    from stetho.serving.monitor_config import load_monitor_config
    from stetho.store import ScoreStore

    kind, folder = saved
    clip = Path(slider["test"][0])
    api = float(stetho.load_detector(folder).score_files([clip], "slider", "00")[0])
    # watch: the WAV on stdin, one window the length of the clip
    seconds = f"{sf.info(str(clip)).duration}"
    stdin = io.TextIOWrapper(io.BytesIO(clip.read_bytes()))
    monkeypatch.setattr(sys, "stdin", stdin)
    capsys.readouterr()
    assert main(["watch", "--detector", str(folder), "--machine", "slider", "--section", "00",
                 "--window", seconds, "--hop", seconds]) == 0  # fmt: skip
    got = [float(v) for v in re.findall(r"score (-?[0-9.eE+-]+)", capsys.readouterr().out)]
    assert got and abs(got[0] - api) <= 1e-5
    # serve: the same clip over HTTP, decided and normalised by the detector
    det = stetho.load_detector(folder)
    service = ScoringService(DetectorRegistry([DetectorEntry("plant", det, folder)]))
    with BackgroundServer(create_app(service), ServiceLimits()) as url:
        r = httpx.post(f"{url}/v1/score", params={"machine": "slider", "section": "00"},
                       content=clip.read_bytes(), timeout=120)  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert abs(float(body["score"]) - api) <= 1e-6
    assert body["decision"] == int(det.decide([api], ("slider", "00"))[0])
    # monitor: a watched folder scores the clip into the store
    inbox = tmp_path / "in"
    inbox.mkdir()
    cfg_path = tmp_path / "monitor.yaml"
    cfg_path.write_text(
        f"detector: {folder}\ndb: {tmp_path / 'plant.db'}\npoll_seconds: 0.1\nsources:\n"
        "  - {kind: folder, path: in, machine: slider, section: '00', settle_seconds: 0}\n"
    )
    ScoreStore.open(tmp_path / "plant.db").close()  # schema first: no race with the reader below
    monitor = Monitor(load_monitor_config(cfg_path))
    import threading

    worker = threading.Thread(target=monitor.run, daemon=True)
    worker.start()
    shutil.copy(clip, inbox / clip.name)
    rows: list = []
    for _ in range(600):
        with ScoreStore.open(tmp_path / "plant.db") as store:
            rows = store.scores("slider")
        if rows:
            break
        import time

        time.sleep(0.2)
    monitor.stop()
    worker.join(timeout=120)
    assert rows and abs(float(rows[0].score) - api) <= 1e-6
    # explain and evaluate --noise: exit 0, the nearest normal recording named (or why not)
    capsys.readouterr()
    assert main(["explain", str(clip), "--detector", str(folder), "--machine", "slider",
                 "--section", "00", "--out", str(tmp_path / "why")]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert ("no bank clip" in text) if kind == "autoencoder" else ("normal_id_00_" in text)
    data = shared_root() / "data" / "dcase2020t2_extra"
    noise = shared_root() / "data" / "mimii_8ch"
    assert main(["evaluate", "--noise", str(noise), "--snr", "10", "--detector", str(folder),
                 "--data", str(data)]) == 0  # fmt: skip
