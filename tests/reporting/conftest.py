"""Fixtures of the reporting tests: a tiny weight-free detector fitted on synthetic machine hum."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stetho.backbones import create_backbone
from stetho.config import ExperimentConfig
from stetho.data import scan_dataset
from stetho.detector import Detector
from stetho.model.heads import HeadConfig, ProxyHead
from stetho.model.labels import ClassMap

SR = 16000
SECONDS = 4.0


def hum(rng: np.random.Generator, seconds: float = SECONDS, sr: int = SR) -> np.ndarray:
    """A stationary 'machine': harmonics of ~120 Hz plus low-passed noise, random jitter."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120.0 * (1 + 0.01 * rng.standard_normal())
    x = sum(
        (0.3 / k)
        * (1 + 0.05 * rng.standard_normal())
        * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.3))
        for k in range(1, 6)
    )
    noise = rng.standard_normal(t.size)
    noise = np.convolve(noise, np.ones(4) / 4, mode="same")  # gentle low-pass
    return (x + 0.02 * noise).astype(np.float32)


def tone_burst(
    n: int, start_s: float, length_s: float, freq: float, amp: float = 0.1, sr: int = SR
) -> np.ndarray:
    """A Hann-shaped sine burst (N,) of ``freq`` Hz from ``start_s`` for ``length_s``."""
    out = np.zeros(n, dtype=np.float32)
    a, m = int(start_s * sr), int(length_s * sr)
    t = np.arange(m) / sr
    out[a : a + m] = amp * np.hanning(m) ** 0.25 * np.sin(2 * np.pi * freq * t)
    return out


def tiny_detector() -> Detector:
    """Weight-free ``logmel`` backbone, identity head: embeddings are log-mel statistics."""
    cfg = ExperimentConfig(name="tiny").override(["backbone.name=logmel", "head.embed_dim=null"])
    backbone = create_backbone("logmel")
    head = ProxyHead(backbone.embed_dim, 1, HeadConfig(embed_dim=None))
    return Detector(cfg, backbone, head, ClassMap(classes=["none"]))


def write_dataset(root: Path, n_train: int = 12, n_test: int = 4, seed: int = 0) -> Path:
    """A one-machine DCASE tree (``fan`` section 00): normal train clips, normal and burst tests."""
    rng = np.random.default_rng(seed)
    base = root / "dev_data" / "raw" / "fan"
    for split in ("train", "test"):
        (base / split).mkdir(parents=True, exist_ok=True)
    for i in range(n_train):
        dom = "source" if i < n_train - 2 else "target"
        sf.write(base / "train" / f"section_00_{dom}_train_normal_{i:04d}_a_1.wav", hum(rng), SR)
    for dom in ("source", "target"):
        for i in range(n_test):
            sf.write(base / "test" / f"section_00_{dom}_test_normal_{i:04d}_a_1.wav", hum(rng), SR)
            x = hum(rng)
            x += tone_burst(x.size, rng.uniform(0.5, 3.0), 0.5, rng.uniform(2000, 4000))
            sf.write(
                base / "test" / f"section_00_{dom}_test_anomaly_{i:04d}_a_{1 + i % 2}.wav", x, SR
            )
    return root


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic one-machine dataset."""
    return write_dataset(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="session")
def fitted_detector(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny detector fitted on the synthetic train clips, saved; returns its folder."""
    table = scan_dataset(synth_root)
    det = tiny_detector().fit(table.filter(split="train"))
    return det.save(tmp_path_factory.mktemp("det") / "detector")


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ``stetho demo`` folder (two machines, 1 s clips, one epoch) with a noise curve."""
    from stetho.pipelines import run_demo
    from stetho.reporting import evaluate_under_noise

    out = tmp_path_factory.mktemp("demo")
    run_demo(
        out,
        machines=("fan", "valve"),
        seconds=1.0,
        n_train_source=8,
        n_train_target=3,
        n_test_per_group=3,
        overrides=["train.epochs=1"],
        progress=False,
    )
    noise = out / "noise"
    noise.mkdir()
    sf.write(noise / "white.wav", 0.1 * np.random.default_rng(3).standard_normal(8000), SR)
    det = Detector.load(out / "run" / "detector")
    curve = evaluate_under_noise(det, out / "data", noise, [10, 0], progress=False)
    curve.write(out / "run" / "robustness")
    return out
