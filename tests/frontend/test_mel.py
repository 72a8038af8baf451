"""Shared mel banks and STFT (``stetho.frontend.mel``) and the front-ends that use them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stetho.frontend.efficientat_mel import EfficientATMel
from stetho.frontend.kaldi import KaldiFbank, KaldiFbankConfig
from stetho.frontend.librosa_mel import BaselineFeatureConfig, log_mel_spectrogram, mel_filters
from stetho.frontend.logmel import LogMel
from stetho.frontend.mel import (
    centred_stft,
    hz_to_mel_slaney,
    kaldi_mel_bank,
    kaldi_mel_scale,
    mel_to_hz_slaney,
    slaney_mel_bank,
)
from stetho.frontend.whisper_mel import WhisperLogMel
from stetho.utils.config import ConfigError

# CPU-dependent float32 kernels: re-run by .ci/run under other MKL instruction sets
pytestmark = pytest.mark.float_sensitive


def test_slaney_bank_is_float64_cast_to_the_requested_dtype() -> None:
    b64 = slaney_mel_bank(80, 400, 16000, dtype=torch.float64)
    b32 = slaney_mel_bank(80, 400, 16000)
    assert b64.dtype == torch.float64 and b32.dtype == torch.float32
    assert torch.equal(b64.float(), b32)
    # the numpy baseline bank is the same float64 bank
    np.testing.assert_array_equal(mel_filters(16000, 400, 80), b64.numpy())


def test_slaney_bank_matches_an_independent_numpy_formula() -> None:
    # librosa's recipe written out with numpy (not the torch code under test)
    sr, n_fft, n_mels, f_lo, f_hi = 22050, 512, 40, 50.0, 8000.0

    def to_mel(f: np.ndarray) -> np.ndarray:
        return np.where(
            f >= 1000, 15 + np.log(np.maximum(f, 1000) / 1000) * 27 / np.log(6.4), f * 0.015
        )

    def to_hz(m: np.ndarray) -> np.ndarray:
        return np.where(m >= 15, 1000 * np.exp((m - 15) * np.log(6.4) / 27), m / 0.015)

    edges = to_hz(np.linspace(to_mel(np.array(f_lo)), to_mel(np.array(f_hi)), n_mels + 2))
    fft_hz = np.linspace(0, sr / 2, n_fft // 2 + 1)
    ref = np.zeros((n_mels, fft_hz.size))
    for m in range(n_mels):
        lo, c, hi = edges[m : m + 3]
        tri = np.minimum((fft_hz - lo) / (c - lo), (hi - fft_hz) / (hi - c))
        ref[m] = np.maximum(tri, 0) * 2 / (hi - lo)
    ours = slaney_mel_bank(n_mels, n_fft, sr, f_lo, f_hi, dtype=torch.float64).numpy()
    assert np.abs(ours - ref).max() < 1e-12
    with pytest.raises(ValueError, match="f_max"):
        slaney_mel_bank(n_mels, n_fft, sr, 0.0, 12000.0)


def test_slaney_scale_accepts_floats_and_round_trips() -> None:
    assert hz_to_mel_slaney(1000.0).dtype == torch.float64
    assert float(hz_to_mel_slaney(1000.0)) == pytest.approx(15.0)
    assert float(mel_to_hz_slaney(42.0)) == pytest.approx(6400.0)
    f = torch.linspace(0, 16000, 321, dtype=torch.float64)
    torch.testing.assert_close(mel_to_hz_slaney(hz_to_mel_slaney(f)), f, rtol=1e-12, atol=1e-9)


def test_kaldi_bank_is_float32_and_close_to_a_float64_evaluation() -> None:
    bank = kaldi_mel_bank(128, 1024, 32000.0, 0.0, 15000.0)
    assert bank.dtype == torch.float32 and bank.shape == (128, 513)
    # the same triangles in float64: the float32 op order only moves the last bits
    mel = torch.tensor([kaldi_mel_scale(31.25 * k) for k in range(512)], dtype=torch.float64)
    lo, hi = kaldi_mel_scale(0.0), kaldi_mel_scale(15000.0)
    edges = lo + (hi - lo) / 129 * torch.arange(130, dtype=torch.float64)
    up = (mel[None] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    down = (edges[2:, None] - mel[None]) / (edges[2:, None] - edges[1:-1, None])
    ref = torch.clamp(torch.minimum(up, down), min=0.0)
    assert (bank[:, :-1].double() - ref).abs().max() < 1e-4
    assert torch.all(bank[:, -1] == 0)
    # BEATs' defaults: high_freq 0 means Nyquist
    assert torch.equal(
        kaldi_mel_bank(128, 512, 16000.0, 20.0, 0.0),
        kaldi_mel_bank(128, 512, 16000.0, 20.0, 8000.0),
    )


def test_kaldi_config_rejects_an_odd_fft_size() -> None:
    # 401 samples without rounding to a power of two: Kaldi asserts an even padded window
    with pytest.raises(ConfigError, match="even"):
        KaldiFbankConfig(frame_length_ms=25.0625, round_to_power_of_two=False)
    cfg = KaldiFbankConfig(frame_length_ms=32.0, round_to_power_of_two=False)  # 512: fine
    assert KaldiFbank(cfg)(torch.randn(1, 4000)).shape == (1, 1 + (4000 - 512) // 160, 128)


def test_centred_stft_equals_explicit_framing() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3000, dtype=torch.float64)
    window = torch.hann_window(300, periodic=False, dtype=torch.float64)
    spec = centred_stft(x, window, 512, 128, 300)
    assert spec.shape == (2, 257, 1 + 3000 // 128) and spec.is_complex()
    padded = torch.nn.functional.pad(x[:, None], (256, 256), mode="reflect")[:, 0]
    full = torch.zeros(512, dtype=torch.float64)
    full[106:406] = window  # centred in the FFT frame
    ref = torch.fft.rfft(padded.unfold(-1, 512, 128) * full).transpose(1, 2)
    torch.testing.assert_close(spec, ref)


def test_logmel_is_not_the_dcase_baseline_feature() -> None:
    # Same parameters, but reflect padding and a -100 dB floor (the baseline: zeros and float eps)
    y = (np.random.default_rng(0).standard_normal(24000) * 0.1).astype(np.float32)
    ours = LogMel()(torch.from_numpy(y)[None])[0].double().numpy()  # (128, 47)
    zero_pad = log_mel_spectrogram(y, 16000)
    reflect = log_mel_spectrogram(y, 16000, BaselineFeatureConfig(pad_mode="reflect"))
    assert ours.shape == zero_pad.shape == (128, 47)
    assert np.abs(ours[:, 1:-1] - zero_pad[:, 1:-1]).max() < 1e-3  # dB, float32 vs float64
    assert np.abs(ours[:, 0] - zero_pad[:, 0]).max() > 1.0  # the padding differs at the edges
    assert np.abs(ours - reflect).max() < 1e-3
    silence = np.zeros(16000)
    assert LogMel()(torch.zeros(1, 16000)).min().item() == pytest.approx(-100.0)
    assert log_mel_spectrogram(silence, 16000).min() == pytest.approx(10 * math.log10(2.0**-52))


@pytest.mark.parametrize("layer", [LogMel, WhisperLogMel, EfficientATMel, KaldiFbank])
def test_front_ends_build_on_the_meta_device(layer: type[torch.nn.Module]) -> None:
    # describe_backbones builds every model under torch.device("meta"): no bank may read a tensor
    with torch.device("meta"):
        module = layer()
    bank = next(b for name, b in module.named_buffers() if name != "window")
    assert bank.is_meta and bank.dim() == 2
