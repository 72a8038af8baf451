"""Baseline log-mel features: framing, padding, Slaney mel filters, log floor, context vectors."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from stetho.frontend.librosa_mel import (
    EPS,
    BaselineFeatureConfig,
    baseline_vectors,
    context_vectors,
    hann_window,
    hz_to_mel,
    log_mel_spectrogram,
    mel_filters,
    mel_to_hz,
    melspectrogram,
    power_spectrogram,
)

# CPU-dependent float32 kernels: re-run by .ci/run under other MKL instruction sets
pytestmark = pytest.mark.float_sensitive


def test_context_vectors_are_frame_major() -> None:
    n_mels, t = 128, 20
    f_idx, t_idx = np.meshgrid(np.arange(n_mels), np.arange(t), indexing="ij")
    lm = (1000 * t_idx + f_idx).astype(np.float64)  # value encodes (frame, bin)
    v = context_vectors(lm, frames=5)
    assert v.shape == (t - 4, 640)
    for row in (0, 7, t - 5):
        for frame in range(5):
            np.testing.assert_array_equal(
                v[row, 128 * frame : 128 * (frame + 1)], lm[:, row + frame]
            )
    assert context_vectors(lm[:, :4], frames=5).shape == (0, 640)
    assert context_vectors(lm, frames=5, hop=2).shape == (8, 640)


def test_ten_second_clip_gives_313_frames_and_309_vectors() -> None:
    y = np.random.default_rng(0).standard_normal(160000).astype(np.float32) * 0.1
    assert log_mel_spectrogram(y, 16000).shape == (128, 313)
    v = baseline_vectors(y, 16000)
    assert v.shape == (309, 640) and v.dtype == np.float32
    assert BaselineFeatureConfig().dim == 640


def test_slaney_mel_scale_values() -> None:
    assert float(hz_to_mel(1000.0)) == pytest.approx(15.0)
    assert float(hz_to_mel(200.0)) == pytest.approx(3.0)
    assert float(hz_to_mel(6400.0)) == pytest.approx(15.0 + 27.0)  # 27 mel per factor 6.4
    f = np.array([0.0, 100.0, 999.0, 1000.0, 4321.0, 8000.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(f)), f, rtol=1e-12, atol=1e-9)


def test_mel_filter_properties_and_hand_checked_value() -> None:
    w = mel_filters(16000, 1024, 128)
    assert w.shape == (128, 513)
    assert (w >= 0).all() and (w.sum(axis=1) > 0).all()  # no empty filter at 16 kHz / 1024
    # Hand check: top edge 8 kHz = 15 + ln(8)·27/ln(6.4) mel; the 130 edges are equally spaced,
    # so edge 1 = top/129 mel (linear region) = top/129·200/3 Hz ≈ 23.38 Hz, edge 2 = 2·edge 1.
    top = 15.0 + math.log(8.0) * 27.0 / math.log(6.4)
    f1 = top / 129 * 200.0 / 3.0
    f2 = 2 * f1
    bin1, bin2 = 16000 / 1024, 2 * 16000 / 1024  # 15.625 Hz, 31.25 Hz
    assert w[0, 1] == pytest.approx(bin1 / f1 * 2.0 / f2, rel=1e-12)  # ≈ 0.028578
    assert w[0, 2] == pytest.approx((f2 - bin2) / f1 * 2.0 / f2, rel=1e-12)
    assert w[0, 1] == pytest.approx(0.0285778, abs=1e-7)
    assert w[0, 0] == 0.0 and w[0, 3] == 0.0
    # Slaney norm: unit area in Hz for filters much wider than a bin (numerical integral).
    area = w.sum(axis=1) * (16000 / 1024)
    np.testing.assert_allclose(area[60:], 1.0, rtol=3e-2)
    # linear region (< 1 kHz): equal widths → equal peak heights 2/(f_{m+2} - f_m) = 1/f1
    peaks = 1.0 / f1
    assert w[:5].max() <= peaks + 1e-12
    # peak frequencies increase monotonically
    assert (np.diff(w.argmax(axis=1)) >= 0).all()
    with pytest.raises(ValueError, match="fmax"):
        mel_filters(16000, 1024, fmax=9000.0)


def test_mel_filters_agree_with_logmel_frontend() -> None:
    torch = pytest.importorskip("torch")
    from stetho.frontend.logmel import slaney_mel_bank

    ours = mel_filters(16000, 1024, 128)
    theirs = slaney_mel_bank(128, 1024, 16000).to(torch.float64).numpy()  # float32 weights
    assert np.abs(ours - theirs).max() < 1e-7


def test_centre_padding_is_zeros_by_default() -> None:
    y = np.ones(16000)
    p = power_spectrogram(y)  # constant (zero) padding, librosa >= 0.10
    assert p.shape == (513, 1 + 16000 // 512)
    # frame 0 sees the second half of the window: sum of a periodic Hann over n >= 512 = 256.5
    assert hann_window(1024)[512:].sum() == pytest.approx(256.5)
    assert p[0, 0] == pytest.approx(256.5**2)
    # a full frame of ones: DC = sum(w) = 512, first bin = -256 (periodic Hann), others 0
    assert p[0, 10] == pytest.approx(512.0**2)
    assert p[1, 10] == pytest.approx(256.0**2)
    assert p[2, 10] == pytest.approx(0.0, abs=1e-12)
    reflect = power_spectrogram(y, pad_mode="reflect")  # librosa <= 0.9
    assert reflect[0, 0] == pytest.approx(512.0**2)


def test_sine_power_and_log_floor() -> None:
    sr, n = 16000, 16000
    t = np.arange(n) / sr
    y = 0.5 * np.sin(2 * np.pi * 1000.0 * t)  # 1 kHz = FFT bin 64
    p = power_spectrogram(y)
    assert p[64, 10] == pytest.approx((0.5 * 1024 / 4) ** 2, rel=1e-9)  # (A·Σw/2)²
    mel = melspectrogram(y, sr)
    np.testing.assert_allclose(mel[:, 10], mel_filters(sr, 1024) @ p[:, 10], rtol=1e-12)
    # silence → the baseline's floor 10·log10(float eps)
    lm = log_mel_spectrogram(np.zeros(4096), sr)
    assert sys.float_info.epsilon == EPS
    np.testing.assert_allclose(lm, 10 * math.log10(EPS))
    lm_sine = log_mel_spectrogram(y, sr)
    assert lm_sine[:, 10].max() == pytest.approx(10 * np.log10(mel[:, 10].max()))


@pytest.mark.shared
def test_real_dcase_clips_give_the_documented_vector_counts(shared_dir: Path) -> None:
    from stetho.data import load_audio

    raw = shared_dir / "data" / "dcase2023t2_mini" / "dev_data" / "raw"
    fan = sorted((raw / "fan" / "train").glob("*.wav"))
    toycar = sorted((raw / "ToyCar" / "train").glob("*.wav"))
    if not fan or not toycar:
        pytest.skip(f"real fan/ToyCar clips not found under {raw}")
    wave, sr = load_audio(fan[0])  # 10 s at 16 kHz → T = 313 → 309 vectors
    assert (sr, wave.size) == (16000, 160000)
    v = baseline_vectors(wave, sr)
    assert v.shape == (309, 640) and np.isfinite(v).all()
    wave, sr = load_audio(toycar[0])  # 12 s → T = 1 + 192000 // 512 = 376 → 372 vectors
    assert baseline_vectors(wave, sr).shape == (1 + wave.size // 512 - 4, 640)
