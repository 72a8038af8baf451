"""Whisper log-mel front end against transformers' pure-numpy WhisperFeatureExtractor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stetho.frontend.mel import hz_to_mel_slaney, mel_to_hz_slaney, slaney_mel_bank
from stetho.frontend.whisper_mel import WhisperLogMel

# CPU-dependent float32 kernels: re-run by .ci/run under other MKL instruction sets
pytestmark = pytest.mark.float_sensitive

SR = 16000


def _signal(seconds: float, seed: int = 0) -> np.ndarray:
    """A chirp with harmonics and noise: energy across the whole band, not a flat spectrum."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * (150 + 2000 * t) * t) + 0.1 * np.sin(2 * np.pi * 3100 * t)
    x = x + 0.03 * rng.standard_normal(t.size)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def extractor():
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=80, sampling_rate=SR, hop_length=160, n_fft=400)


def _reference(extractor, x: np.ndarray) -> np.ndarray:
    # transformers' numpy path (spectrogram() + mel_filter_bank()): code independent of ours.
    return extractor._np_extract_fbank_features(x[None], "cpu")[0]


def test_slaney_scale_anchor_points() -> None:
    f = torch.tensor([0.0, 500.0, 1000.0, 6400.0], dtype=torch.float64)
    mel = hz_to_mel_slaney(f)
    # Linear part: 3 mels per 200 Hz; 1 kHz = 15 mels; log part: 27 mels per factor 6.4.
    torch.testing.assert_close(mel, torch.tensor([0.0, 7.5, 15.0, 42.0], dtype=torch.float64))
    back = mel_to_hz_slaney(hz_to_mel_slaney(torch.linspace(0, 8000, 101, dtype=torch.float64)))
    torch.testing.assert_close(back, torch.linspace(0, 8000, 101, dtype=torch.float64))


def test_mel_filters_match_transformers_slaney_bank() -> None:
    from transformers.audio_utils import mel_filter_bank

    ref = mel_filter_bank(
        num_frequency_bins=201,
        num_mel_filters=80,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=SR,
        norm="slaney",
        mel_scale="slaney",
    )  # (201, 80)
    ours = slaney_mel_bank(80, 400, SR, dtype=torch.float64).numpy()  # (80, 201)
    assert ours.shape == (80, 201)
    assert np.abs(ours.T - ref).max() < 1e-12
    # Every band is a non-empty triangle: one peak, non-negative.
    assert (ours >= 0).all() and (ours.max(axis=1) > 0).all()


@pytest.mark.parametrize("seconds", [1.3, 2.0, 0.71])
def test_log_mel_matches_whisper_feature_extractor(extractor, seconds: float) -> None:
    x = _signal(seconds)
    ref = _reference(extractor, x)  # (80, N // 160)
    out = WhisperLogMel()(torch.from_numpy(x)[None])[0].numpy()
    assert out.shape == ref.shape == (80, x.size // 160)
    assert np.abs(out - ref).max() < 1e-4


def test_pad_to_30s_matches_extractor_on_padded_signal(extractor) -> None:
    x = _signal(1.3, seed=1)
    ref = _reference(extractor, np.pad(x, (0, 480000 - x.size)))  # (80, 3000)
    out = WhisperLogMel(pad_to_samples=480000)(torch.from_numpy(x)[None])[0].numpy()
    assert out.shape == (80, 3000)
    assert np.abs(out - ref).max() < 1e-4
    # The padding changes the boundary frame (zeros instead of reflection), so the recipe matters.
    unpadded = WhisperLogMel()(torch.from_numpy(x)[None])[0].numpy()
    n = unpadded.shape[-1]
    assert np.abs(unpadded[:, : n - 1] - out[:, : n - 1]).max() < 1e-4
    assert np.abs(unpadded[:, n - 1] - out[:, n - 1]).max() > 1e-3


def test_batch_equals_items_and_per_clip_clamp() -> None:
    quiet = 0.01 * _signal(1.0, seed=2)
    loud = _signal(1.0, seed=3)
    m = WhisperLogMel()
    batch = m(torch.from_numpy(np.stack([quiet, loud])))
    for i, x in enumerate((quiet, loud)):
        torch.testing.assert_close(batch[i], m(torch.from_numpy(x)[None])[0])
    # Dynamic range is clamped to 8 decades below each clip's own maximum: 2 after (x + 4) / 4.
    span = batch.amax(dim=(1, 2)) - batch.amin(dim=(1, 2))
    assert torch.all(span <= 2.0 + 1e-6)
    assert batch[0].max() < batch[1].max() - 0.4  # quiet clip: lower peak (-40 dB ≈ -1)


def test_trim_longer_than_pad_and_dtype() -> None:
    x = torch.from_numpy(_signal(0.5, seed=4))[None]
    m = WhisperLogMel(pad_to_samples=4000)
    out = m(x.half())
    assert out.dtype == torch.float32 and out.shape == (1, 80, 25)
    torch.testing.assert_close(out, m(x.half()[:, :4000]))
    with pytest.raises(ValueError, match="pad_to_samples"):
        WhisperLogMel(pad_to_samples=0)
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        m(torch.zeros(1, 1, 4000))


def test_buffers_not_in_state_dict() -> None:
    assert WhisperLogMel().state_dict() == {}


def test_float32_under_autocast() -> None:
    """The log-mel is computed in float32 even inside a bf16 autocast region."""
    import torch

    from stetho.frontend.whisper_mel import WhisperLogMel

    torch.manual_seed(0)
    wave = torch.randn(2, 16000) * 0.1
    layer = WhisperLogMel()
    ref = layer(wave)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer(wave)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, atol=0, rtol=0)
