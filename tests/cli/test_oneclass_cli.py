"""A user's folder of one machine: ``stetho data import`` (no attributes) → ``stetho train``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stetho.cli import main
from stetho.detector.detector import Detector

SR = 16000
#: the fine-tuning config that spells out the defaults (logmel + ArcFace head)
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"


def _write(folder: Path, n: int, f0: float, seed: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    t = np.arange(SR) / SR
    for i in range(n):
        hum = sum(np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 6.3)) / h for h in (1, 2, 3))
        wave = 0.2 * hum + 0.02 * rng.standard_normal(SR)
        sf.write(folder / f"take_{i}.wav", wave.astype(np.float32), SR)
    return folder


def test_import_then_train_learns_from_one_machine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    normal = _write(tmp_path / "normal", 8, 120.0, 0)
    held_out = _write(tmp_path / "held_out", 2, 120.0, 1)
    faulty = _write(tmp_path / "faulty", 2, 180.0, 2)
    data, out = tmp_path / "data", tmp_path / "run"
    code = main(
        ["data", "import", str(data), "--machine", "pump", "--train", str(normal),
         "--test-normal", str(held_out), "--test-anomaly", str(faulty), "--copy"]
    )  # fmt: skip
    assert code == 0
    code = main(
        ["train", "--config", str(DEFAULT_CONFIG), "--data", str(data), "--out", str(out),
         "--set", "train.epochs=3",
         "train.tensorboard=false", "train.lr=1e-2", "data.crop_seconds=0.5"]
    )  # fmt: skip
    assert code == 0
    assert "run written to" in capsys.readouterr().out
    with open(out / "train" / "metrics.csv", newline="") as fh:
        losses = [float(r["loss"]) for r in csv.DictReader(fh) if r["kind"] == "epoch"]
    assert len(losses) == 3 and min(losses) > 0.05
    classes = json.loads((out / "train" / "class_map.json").read_text())["classes"]
    assert classes[0] == "pump/00" and len(classes) == 5
    config = json.loads((out / "train" / "config.json").read_text())
    assert config["train"]["proxy"] == "auto"
    det = Detector.load(out / "detector")
    assert det.class_map.classes == classes and det.head.num_classes == 5
    scores = det.score_files(
        sorted(faulty.glob("*.wav")) + sorted(held_out.glob("*.wav")), "pump", "00"
    )
    assert scores.shape == (4,) and np.all(np.isfinite(scores))
