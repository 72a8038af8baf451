"""One machine, no attributes: the proxy dataset's labels and a training run that learns."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from stetho.config import ExperimentConfig
from stetho.data import ClipTable, import_recordings, scan_dataset
from stetho.model.labels import build_class_map
from stetho.model.proxy import ProxyConfig, build_proxy_task
from stetho.training.dataset import ClipDataset
from stetho.training.loop import train

SR = 16000


def _probe(seconds: float) -> np.ndarray:
    """500 Hz + 2 kHz sines under a rising envelope: speed, tilt and reversal all show."""
    t = np.arange(round(seconds * SR)) / SR
    return (0.1 + t / seconds) * (np.sin(2 * np.pi * 500 * t) + np.sin(2 * np.pi * 2000 * t))


def _recordings(folder: Path, n: int, seconds: float, seed: int = 0) -> Path:
    """``n`` machine-like recordings: a hum with harmonics, a little noise (one machine)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SR)) / SR
    for i in range(n):
        f0 = 120 + 3 * rng.standard_normal()
        wave = sum(np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 6.3)) / h for h in (1, 2, 3, 5))
        wave = 0.2 * wave + 0.02 * rng.standard_normal(t.shape[0])
        sf.write(folder / f"rec_{i:02d}.wav", wave.astype(np.float32), SR)
    return folder


@pytest.fixture(scope="module")
def one_machine(tmp_path_factory: pytest.TempPathFactory) -> ClipTable:
    """A ``stetho data import``-ed tree: one machine, one section, no attributes."""
    root = tmp_path_factory.mktemp("oneclass")
    rec = _recordings(root / "recordings", 6, 1.0)
    import_recordings(root / "data", "pump", train=[rec], mode="copy")
    return scan_dataset(root / "data").filter(split="train")


def _which(wave: np.ndarray) -> str:
    """Name the transformation of a probe crop from the signal alone."""
    n = wave.shape[0]
    spec = np.abs(np.fft.rfft(wave * np.hanning(n)))
    freqs = np.fft.rfftfreq(n, 1 / SR)
    low = freqs[np.argmax(np.where(freqs < 1000, spec, 0))]
    if low > 515:
        return "speed_up"
    if low < 485:
        return "speed_down"
    band = lambda f: spec[(freqs > f - 20) & (freqs < f + 20)].max()  # noqa: E731
    tilt_db = 20 * np.log10(band(2000) / band(500))
    if tilt_db > 3:
        return "tilt_up"
    if tilt_db < -3:
        return "tilt_down"
    half = n // 2
    rising = np.sum(wave[half:] ** 2) > np.sum(wave[:half] ** 2)
    return "none" if rising else "reverse"


def test_labels_match_the_transformation_seen_in_the_signal(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.wav", _probe(2.0).astype(np.float32), SR)
    sf.write(tmp_path / "b.wav", 0.5 * _probe(2.0).astype(np.float32), SR)
    import_recordings(tmp_path / "data", "pump", train=[tmp_path / "a.wav", tmp_path / "b.wav"])
    clips = scan_dataset(tmp_path / "data").filter(split="train")
    variants = ["speed_up", "speed_down", "tilt_up", "tilt_down", "reverse"]
    task = build_proxy_task(
        clips, "transforms", ProxyConfig(transforms=variants, tilt_db_per_octave=4.0)
    )
    ds = ClipDataset(clips, SR, crop_samples=SR // 2, seed=3, proxy=task)
    assert len(ds) == 2 * 6
    seen = {}
    for epoch in (0, 1):
        for i in range(len(ds)):
            item = ds[(epoch, i)]
            assert item["wave"].shape == (SR // 2,)
            name = task.class_map.name(item["label"])
            expected = "none" if "+" not in name else name.split("+")[1]
            assert _which(item["wave"].numpy().astype(np.float64)) == expected, (epoch, i, name)
            seen[expected] = seen.get(expected, 0) + 1
    assert seen == {v: 4 for v in ["none", *variants]}


def test_outlier_samples_come_from_the_folder(one_machine: ClipTable, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    t = np.arange(SR) / SR
    sf.write(other / "x.wav", np.sin(2 * np.pi * 3000 * t).astype(np.float32), SR)
    task = build_proxy_task(one_machine, "outlier", ProxyConfig(outlier_dir=str(other)))
    ds = ClipDataset(one_machine, SR, crop_samples=4000, seed=1, proxy=task)
    assert len(ds) == 12
    for i in range(12):
        item = ds[(0, i)]
        spec = np.abs(np.fft.rfft(item["wave"].numpy()))
        peak_hz = np.argmax(spec) * SR / 4000
        if i < 6:
            assert item["label"] == 0 and peak_hz < 1000
        else:
            assert item["label"] == 1 and peak_hz == pytest.approx(3000, abs=5)


def test_attribute_task_reproduces_the_plain_dataset(tmp_path: Path) -> None:
    rec = _recordings(tmp_path / "rec", 3, 1.0)
    import_recordings(tmp_path / "data", "pump", train=[rec], attributes="speed_1")
    import_recordings(tmp_path / "data", "fan", train=[rec])
    clips = scan_dataset(tmp_path / "data").filter(split="train")
    task = build_proxy_task(clips, "auto")
    assert task.kind == "attributes"
    plain = ClipDataset(clips, SR, build_class_map(clips), crop_samples=3000, seed=9)
    proxied = ClipDataset(clips, SR, crop_samples=3000, seed=9, proxy=task)
    assert len(plain) == len(proxied) == 6
    for i in range(6):
        a, b = plain[(2, i)], proxied[(2, i)]
        assert a["label"] == b["label"] and torch.equal(a["wave"], b["wave"])


def _cfg(*extra: str) -> ExperimentConfig:
    return ExperimentConfig().override(
        [
            "backbone.name=logmel",
            "finetune.strategy=frozen",
            "head.embed_dim=16",
            "train.epochs=4",
            "train.batch_size=8",
            "train.lr=3e-2",
            "train.warmup_steps=0",
            "train.schedule=constant",
            "train.tensorboard=false",
            "train.log_every=1",
            "train.device=cpu",
            "data.crop_seconds=0.5",
            *extra,
        ]
    )


def test_one_class_tree_trains_with_a_falling_nonzero_loss(
    one_machine: ClipTable, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        result = train(_cfg(), one_machine, tmp_path / "run", progress=False)
    assert any("one proxy class" in r.getMessage() for r in caplog.records if r.levelno == 30)
    assert len(result.class_map) == 5  # pump/00 + 4 transformations
    losses = [h["loss"] for h in result.history]
    assert all(loss > 0.05 for loss in losses), losses
    assert losses[-1] < losses[0], losses
    with open(tmp_path / "run" / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["kind"] == "epoch"]
    assert [float(r["loss"]) for r in rows] == pytest.approx(losses)
    # the same clips under the paper's task: refused, not a silent zero loss
    with pytest.raises(ValueError, match="exactly 0"):
        train(_cfg("train.proxy=attributes"), one_machine, tmp_path / "paper", progress=False)
