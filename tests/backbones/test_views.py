"""Weight-free views of a clip (issue #23): HTK mel, cepstrum, spectral shape, modulation."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from stetho.backbones import create_backbone
from stetho.backbones.features import FeatureConfig, FeatureExtractor, pool_tokens
from stetho.backbones.logmel_stats import LogMelBackbone
from stetho.frontend.logmel import slaney_mel_bank
from stetho.frontend.views import (
    dct_matrix,
    mel_bank,
    modulation_tokens,
    power_stft,
    shape_tokens,
)

SR = 16000


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _htk_reference(n_mels: int, n_fft: int, sr: float) -> np.ndarray:
    """Unnormalised triangles equally spaced on 2595·log10(1 + f/700) from 0 to sr/2 (numpy)."""
    mel = np.linspace(0.0, 2595.0 * math.log10(1 + sr / 2 / 700), n_mels + 2)
    edges = 700.0 * (10 ** (mel / 2595.0) - 1)
    f = np.arange(n_fft // 2 + 1) * sr / n_fft
    out = np.zeros((n_mels, f.size))
    for m in range(n_mels):
        lo, c, hi = edges[m : m + 3]
        out[m] = np.clip(np.minimum((f - lo) / (c - lo), (hi - f) / (hi - c)), 0, None)
    return out


def test_htk_bank_matches_the_formula_and_slaney_option_matches_slaney_bank() -> None:
    got = mel_bank(128, 1024, SR, scale="htk").numpy()
    np.testing.assert_allclose(got, _htk_reference(128, 1024, SR), atol=1e-6)
    assert got.max() == pytest.approx(1.0, abs=0.05)  # unnormalised: peaks near 1
    # HTK's 128 bands are finer than Slaney's at the lowest frequencies (15 vs 10 below 250 Hz)
    centres_htk = (got * np.arange(513)).sum(1) / got.sum(1) * SR / 1024
    slaney = slaney_mel_bank(128, 1024, SR).numpy()
    centres_sl = (slaney * np.arange(513)).sum(1) / slaney.sum(1) * SR / 1024
    assert (centres_htk < 250).sum() >= (centres_sl < 250).sum() + 4
    norm = mel_bank(128, 1024, SR, scale="slaney", normalise=True)
    torch.testing.assert_close(norm, slaney_mel_bank(128, 1024, SR), rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError):
        mel_bank(8, 1024, SR, scale="bark")  # type: ignore[arg-type]


def test_dct_is_orthonormal_dct2() -> None:
    d = dct_matrix(16, 16).double()
    torch.testing.assert_close(d @ d.T, torch.eye(16, dtype=torch.float64), atol=1e-6, rtol=0)
    x = torch.randn(16, dtype=torch.float64)
    n = torch.arange(16, dtype=torch.float64)
    k = 3  # DCT-II coefficient from its definition, orthonormal scaling
    ref = math.sqrt(2 / 16) * (x * torch.cos(math.pi / 16 * (n + 0.5) * k)).sum()
    assert float(d[k] @ x) == pytest.approx(float(ref), abs=1e-6)


def test_shape_of_a_tone_and_of_white_noise() -> None:
    t = torch.arange(2 * SR) / SR
    tone = (0.5 * torch.sin(2 * math.pi * 1000.0 * t))[None]
    noise = 0.1 * torch.randn(1, 2 * SR, generator=torch.Generator().manual_seed(0))
    st = shape_tokens(power_stft(tone, 1024, 512), SR)[0, 5:-5].mean(0)  # inner frames
    sn = shape_tokens(power_stft(noise, 1024, 512), SR)[0, 5:-5].mean(0)
    assert st.shape == (11,)
    assert float(st[0]) == pytest.approx(1.0, abs=0.05)  # centroid (kHz) at the tone
    assert float(st[1]) < 0.2 < float(sn[1])  # narrow vs wide bandwidth
    assert float(sn[0]) == pytest.approx(4.0, abs=0.2)  # white noise: centroid at sr/4
    assert float(sn[2]) == pytest.approx(0.85 * 8.0, abs=0.2)  # 85 % roll-off
    # flatness: exp(E log P) / E P of exponential power values = exp(-γ) → -2.5 dB
    assert float(sn[3]) == pytest.approx(10 * math.log10(math.exp(-0.5772)), abs=0.5)
    assert float(st[3]) < -30.0
    band_1k = 4 + 3  # contrast of the 800-1600 Hz octave: a tone there is a sharp peak
    assert float(st[band_1k]) > float(sn[band_1k]) + 20


def test_modulation_finds_the_rate_of_an_amplitude_modulation() -> None:
    t = torch.arange(8 * SR) / SR
    noise = torch.randn(1, t.numel(), generator=torch.Generator().manual_seed(1))
    am = noise * (1 + 0.9 * torch.sin(2 * math.pi * 5.0 * t))  # 5 Hz: the [4, 8) Hz band
    model = create_backbone("logmel", view="modulation", mel_scale="htk")
    with torch.no_grad():
        tok_am = model.forward_features(0.1 * am)[0]  # (W, 16 · 5)
        tok_flat = model.forward_features(0.1 * noise)[0]
    am_bands = tok_am.reshape(tok_am.shape[0], 16, 5).mean((0, 1))
    flat_bands = tok_flat.reshape(tok_flat.shape[0], 16, 5).mean((0, 1))
    gain = am_bands - flat_bands  # dB gained by the modulation per modulation band
    assert int(gain.argmax()) == 3 and float(gain[3]) > 10.0
    # a clip shorter than one window still gives one token
    short = modulation_tokens(torch.randn(1, 128, 20), 31.25, 16, 64)
    assert short.shape == (1, 1, 80) and torch.isfinite(short).all()


@pytest.mark.parametrize(
    ("over", "dim"),
    [({}, 128), ({"mel_scale": "htk"}, 128), ({"view": "cepstrum"}, 20),
     ({"view": "shape"}, 11), ({"view": "modulation"}, 80)],
)  # fmt: skip
def test_views_through_the_feature_extractor(over: dict[str, Any], dim: int) -> None:
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(3 * SR)).astype(np.float32)
    other = np.convolve(wave, [1.0, 0.9], mode="same").astype(np.float32)  # a brighter clip
    model = create_backbone("logmel", **over)
    assert model.embed_dim == 3 * dim
    fx = FeatureExtractor(FeatureConfig(backbone="logmel", overrides=over, pool="mean+std"))
    feats = fx.extract([wave, other])
    assert feats.shape == (2, 2 * dim) and np.isfinite(feats).all()
    assert not np.allclose(feats[0], feats[1])


def test_default_view_is_unchanged_and_cepstrum_is_dct_of_logmel() -> None:
    wave = 0.1 * torch.randn(1, 2 * SR, generator=torch.Generator().manual_seed(2))
    plain = create_backbone("logmel")
    assert isinstance(plain, LogMelBackbone)
    with torch.no_grad():
        mel = plain.frontend(wave)  # (1, 128, T)
        torch.testing.assert_close(plain.forward_features(wave), mel.transpose(1, 2))
        cep = create_backbone("logmel", view="cepstrum", n_ceps=13).forward_features(wave)
    ref = torch.einsum("kf,bft->btk", dct_matrix(128, 13), mel)
    torch.testing.assert_close(cep, ref, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError):
        create_backbone("logmel", view="wavelet")
    with pytest.raises(ValueError):
        create_backbone("logmel", view="cepstrum", n_ceps=0)


def test_mean_std_pooling() -> None:
    tok = torch.tensor([[[1.0, 0.0], [3.0, 4.0]]])
    torch.testing.assert_close(pool_tokens(tok, "mean+std"), torch.tensor([[2.0, 2.0, 1.0, 2.0]]))
    with pytest.raises(ValueError):
        pool_tokens(tok, "median")
