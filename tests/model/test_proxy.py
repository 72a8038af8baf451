"""Self-supervised proxy tasks: each transformation does what it says; one-class detection."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stetho.data import Clip
from stetho.model.labels import build_class_map
from stetho.model.proxy import (
    OUTLIER_CLASS,
    TRANSFORMS,
    ProxyConfig,
    apply_transform,
    build_proxy_task,
    source_length,
)
from stetho.utils.config import ConfigError

SR = 16000


def _amp_at(x: np.ndarray, hz: float, sr: int = SR) -> float:
    """Amplitude of the rfft bin nearest ``hz`` (bins are exact for whole cycles)."""
    spec = np.abs(np.fft.rfft(x.astype(np.float64)))
    return float(spec[round(hz * x.shape[0] / sr)])


def _peak_hz(x: np.ndarray, sr: int = SR) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(x.shape[0])))
    return float(np.argmax(spec) * sr / x.shape[0])


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


@pytest.mark.parametrize("name", ["speed_up", "speed_down"])
def test_speed_change_scales_every_frequency_by_the_factor(name: str) -> None:
    cfg = ProxyConfig(speed_factor=1.06)
    n = 16000
    m = source_length(name, n, cfg)
    ratio = 1.06 if name == "speed_up" else 1 / 1.06
    assert abs(m / n - ratio) < 1 / n
    k = 400  # whole cycles in the source window: a 400·SR/m Hz sine
    src = np.sin(2 * np.pi * k * np.arange(m) / m)
    out = apply_transform(name, src, n, SR, cfg)
    assert out.shape == (n,) and out.dtype == np.float32
    # the same cycles in fewer (more) samples: frequency × m/n
    assert _peak_hz(out) == pytest.approx(k * SR / n, abs=1.0)
    assert _peak_hz(out) == pytest.approx(k * SR / m * ratio, rel=2e-3)


@pytest.mark.parametrize(("name", "sign"), [("tilt_up", 1), ("tilt_down", -1)])
def test_tilt_changes_the_balance_by_the_slope_per_octave(name: str, sign: int) -> None:
    cfg = ProxyConfig(tilt_db_per_octave=4.0)
    t = np.arange(SR) / SR
    src = np.sin(2 * np.pi * 500 * t) + np.sin(2 * np.pi * 2000 * t)
    out = apply_transform(name, src, SR, SR, cfg)
    # 2 octaves apart: the 2 kHz / 500 Hz amplitude ratio moves by ±8 dB
    gain_db = 20 * np.log10(_amp_at(out, 2000) / _amp_at(out, 500))
    assert gain_db == pytest.approx(sign * 8.0, abs=1e-6)
    assert _rms(out) == pytest.approx(_rms(src), rel=1e-5)


@pytest.mark.parametrize(("name", "semitones"), [("pitch_up", 1.0), ("pitch_down", 2.0)])
def test_pitch_shift_moves_the_pitch_and_keeps_the_timing(name: str, semitones: float) -> None:
    cfg = ProxyConfig(semitones=semitones)
    n = 2 * SR
    t = np.arange(n) / SR
    envelope = np.exp(-0.5 * ((t - 0.6) / 0.1) ** 2)  # one burst centred at 0.6 s
    src = envelope * np.sin(2 * np.pi * 1000 * t)
    out = apply_transform(name, src, n, SR, cfg).astype(np.float64)
    assert source_length(name, n, cfg) == n
    sign = 1 if name == "pitch_up" else -1
    assert _peak_hz(out) == pytest.approx(1000 * 2 ** (sign * semitones / 12), abs=3.0)
    energy = out**2
    centre = float(np.sum(t * energy) / np.sum(energy))
    assert centre == pytest.approx(0.6, abs=0.02)  # a speed change would move it by ≥ 35 ms


def test_reverse_and_identity() -> None:
    cfg = ProxyConfig()
    src = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    np.testing.assert_allclose(apply_transform("reverse", src, 1000, SR, cfg), src[::-1], atol=1e-6)
    np.testing.assert_array_equal(apply_transform("none", src, 1000, SR, cfg), src)


@pytest.mark.parametrize("name", TRANSFORMS)
def test_every_transform_keeps_length_and_rms_and_changes_the_signal(name: str) -> None:
    cfg = ProxyConfig()
    n = 8000
    rng = np.random.default_rng(1)
    # coloured noise with a slow envelope: every transformation leaves a trace on it
    src = np.cumsum(rng.standard_normal(source_length(name, n, cfg))) * 0.01
    src = (src - src.mean()) * np.linspace(0.2, 1.0, src.shape[0])
    out = apply_transform(name, src, n, SR, cfg)
    assert out.shape == (n,)
    assert _rms(out) == pytest.approx(_rms(src), rel=1e-4)
    ref = np.pad(src, (0, max(0, n - src.shape[0])))[:n]  # the untouched window, zero-padded
    assert np.max(np.abs(out - ref)) > 0.05 * np.max(np.abs(src))
    with pytest.raises(ValueError, match="expected"):
        apply_transform(name, src[:-7], n, SR, cfg)


def test_config_refuses_unknown_transforms() -> None:
    with pytest.raises(ConfigError, match="unknown"):
        ProxyConfig(transforms=["speed_up", "wobble"])
    with pytest.raises(ConfigError, match="speed_factor"):
        ProxyConfig(speed_factor=0.9)


# -- task resolution ----------------------------------------------------------------------------
def _clip(i: int, machine: str = "pump", attributes: str | None = None) -> Clip:
    return Clip(
        path=Path(f"/nowhere/{machine}_{i}.wav"),
        name=f"{machine}_{i}.wav",
        machine=machine,
        section="00",
        domain="source",
        label="normal",
        split="train",
        partition="dev",
        year=2023,
        attributes=attributes,
    )


def test_one_class_warns_and_switches_to_transforms(caplog: pytest.LogCaptureFixture) -> None:
    clips = [_clip(i) for i in range(6)]
    with caplog.at_level(logging.WARNING, logger="stetho.model.proxy"):
        task = build_proxy_task(clips, "auto", ProxyConfig(transforms=["speed_up", "reverse"]))
    assert task.kind == "transforms"
    assert task.class_map.classes == ["pump/00", "pump/00+speed_up", "pump/00+reverse"]
    assert any(
        r.levelno == logging.WARNING
        and "one proxy class" in r.getMessage()
        and "exactly 0" in r.getMessage()
        for r in caplog.records
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="stetho.model.proxy"):
        quiet = build_proxy_task(clips, "auto", trains=False)  # train.epochs=0: nothing to warn
    assert quiet.kind == "transforms" and caplog.records
    assert all(r.levelno == logging.INFO for r in caplog.records)
    assert task.num_samples(6) == 18
    assert [task.locate(i, 6) for i in (0, 5, 6, 17)] == [(0, 0), (5, 0), (0, 1), (5, 2)]
    assert task.label(0, 2) == 2
    with pytest.raises(ValueError, match="cannot train"):
        build_proxy_task(clips, "attributes")


def test_dominant_class_warns(caplog: pytest.LogCaptureFixture) -> None:
    clips = [_clip(i, attributes="a") for i in range(39)] + [_clip(99, attributes="b")]
    with caplog.at_level(logging.WARNING, logger="stetho.model.proxy"):
        task = build_proxy_task(clips, "auto")
    assert task.kind == "transforms" and "97.5%" in caplog.text
    # both attribute classes survive, each split by the transformations
    assert len(task.class_map) == 2 * (1 + len(ProxyConfig().transforms))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="stetho.model.proxy"):
        task = build_proxy_task(clips, "auto", ProxyConfig(max_class_share=0.99))
    assert task.kind == "attributes" and not caplog.records


def test_balanced_attributes_keep_the_papers_task(caplog: pytest.LogCaptureFixture) -> None:
    clips = [_clip(i, attributes="a") for i in range(5)] + [_clip(i, "fan") for i in range(5)]
    with caplog.at_level(logging.WARNING):
        task = build_proxy_task(clips, "auto")
    assert not caplog.records
    assert task.kind == "attributes" and task.variants == ["none"]
    assert task.class_map.classes == build_class_map(clips).classes
    assert task.num_samples(10) == 10 and task.locate(7, 10) == (7, 0)
    forced = build_proxy_task(clips, "transforms", ProxyConfig(transforms=["tilt_up"]))
    assert len(forced.class_map) == 4


def test_outlier_exposure_adds_one_class(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clips = [_clip(i) for i in range(4)]
    with pytest.raises(FileNotFoundError, match="outlier_dir"):
        build_proxy_task(clips, "outlier")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        build_proxy_task(clips, "outlier", ProxyConfig(outlier_dir=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no "):
        build_proxy_task(clips, "outlier", ProxyConfig(outlier_dir=str(tmp_path / "empty")))
    other = tmp_path / "other" / "deep"
    other.mkdir(parents=True)
    for i in range(3):
        sf.write(other / f"o{i}.wav", np.zeros(160, dtype=np.float32), SR)
    cfg = ProxyConfig(outlier_dir=str(tmp_path / "other"))
    with caplog.at_level(logging.WARNING, logger="stetho.model.proxy"):
        task = build_proxy_task(clips, "auto", cfg)  # one class + an outlier folder: outlier
    assert task.kind == "outlier" and "'outlier'" in caplog.text
    assert task.class_map.classes == ["pump/00", OUTLIER_CLASS]
    assert task.outlier_label == 1 and task.num_samples(4) == 8
    assert task.locate(3, 4) == (3, 0) and task.locate(4, 4) is None
    with pytest.raises(IndexError):
        task.locate(8, 4)
    picks = {task.outlier_file(5, e, i) for e in range(4) for i in range(4, 8)}
    assert picks == set(sorted(other.glob("*.wav")))  # 16 seeded draws reach all 3 files
    assert task.outlier_file(5, 1, 6) == task.outlier_file(5, 1, 6)
