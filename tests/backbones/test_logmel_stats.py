"""The weight-free ``logmel`` backbone and its Slaney log-mel front end."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from stetho.backbones import create_backbone, get_entry
from stetho.backbones.logmel_stats import LogMelBackbone
from stetho.frontend.logmel import LogMel, hz_to_mel_slaney, mel_to_hz_slaney, slaney_mel_bank


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # Conv inference with 2 intra-op threads on 2 shared, oversubscribed cores ran 10-30x slower
    # (0.7 s -> 18 s for the 28 clips); one thread is fast and stable.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tone(freq: float, amplitude: float, seconds: float = 2.0, sr: int = 16000) -> torch.Tensor:
    n = torch.arange(int(sr * seconds), dtype=torch.float64)
    return (amplitude * torch.sin(2 * torch.pi * freq * n / sr)).float()[None]  # (1, N)


@pytest.fixture(scope="module")
def model() -> LogMelBackbone:
    m = create_backbone("logmel")
    assert isinstance(m, LogMelBackbone)
    return m


def test_registry_and_no_parameters(model: LogMelBackbone) -> None:
    assert get_entry("logmel").needs_weights is False
    assert list(model.parameters()) == []
    assert dict(model.state_dict()) == {}
    assert model.sample_rate == 16000 and model.embed_dim == 384 and model.input_kind == "fbank"
    assert model.num_layers == 0 and model.lora_target_templates == {}
    assert model.describe()["params"] == 0


def test_rejects_a_checkpoint_and_unknown_overrides() -> None:
    with pytest.raises(ValueError, match="no weights"):
        create_backbone("logmel", checkpoint="weights.pt")
    with pytest.raises(ValueError, match="n_mels"):
        create_backbone("logmel", n_bins=64)


def test_overrides_change_the_embedding_size() -> None:
    small = create_backbone("logmel", n_mels=64)
    assert small.embed_dim == 192
    assert small.embed(torch.zeros(1, 16000)).shape == (1, 192)
    assert create_backbone("logmel", **small.extra_config()).embed_dim == 192


def test_shapes(model: LogMelBackbone) -> None:
    wave = torch.randn(3, 160000) * 0.1  # 10 s
    tokens = model.forward_features(wave)
    assert tokens.shape == (3, 313, 128)  # 1 + 160000 // 512
    emb = model.forward_head(tokens)
    assert emb.shape == (3, 384)
    assert torch.equal(model.embed(wave), emb)
    assert torch.equal(model(wave), emb)
    assert model.frontend.num_frames(16000) == model.forward_features(wave[:, :16000]).shape[1]


def test_pooled_statistics_order() -> None:
    model = create_backbone("logmel", n_mels=2)
    tokens = torch.tensor([[[1.0, 10.0], [3.0, 10.0], [5.0, 40.0]]])  # (1, T=3, F=2)
    emb = model.forward_head(tokens)
    std0 = float(np.std([1.0, 3.0, 5.0]))
    std1 = float(np.std([10.0, 10.0, 40.0]))
    expected = torch.tensor([[3.0, 20.0, std0, std1, 5.0, 40.0]])  # mean | std | max
    assert torch.allclose(emb, expected)


def test_deterministic(model: LogMelBackbone) -> None:
    torch.manual_seed(0)
    wave = torch.randn(2, 32000) * 0.1
    first = model.embed(wave)
    assert torch.equal(model.embed(wave), first)
    assert torch.equal(create_backbone("logmel").embed(wave), first)
    batched_vs_single = torch.cat([model.embed(w[None]) for w in wave])
    assert torch.allclose(batched_vs_single, first, atol=1e-4)


def test_loud_and_quiet_tones_differ(model: LogMelBackbone) -> None:
    loud = model.embed(tone(1000.0, 0.5))
    quiet = model.embed(tone(1000.0, 0.005))
    assert not torch.allclose(loud, quiet)
    # 100x in amplitude is +40 dB in the band that holds the tone; the spread over time is the same.
    band = int(model.forward_features(tone(1000.0, 0.5))[0].mean(0).argmax())
    assert abs(float(loud[0, band] - quiet[0, band]) - 40.0) < 0.05
    assert abs(float(loud[0, 128 + band] - quiet[0, 128 + band])) < 0.05
    # A different pitch moves the peak band.
    other = model.forward_features(tone(3000.0, 0.5))[0].mean(0).argmax()
    assert int(other) > band


def test_silence_is_floored_and_finite(model: LogMelBackbone) -> None:
    emb = model.embed(torch.zeros(1, 16000))
    assert torch.isfinite(emb).all()
    assert torch.allclose(emb[0, :128], torch.full((128,), -100.0))


class ZeroFirstFrames(nn.Module):
    """SpecAugment stand-in: records the axes and zeroes the first 4 frames."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[tuple[int, ...], int, int]] = []

    def forward(self, spec: torch.Tensor, time_dim: int, freq_dim: int) -> torch.Tensor:
        self.calls.append((tuple(spec.shape), time_dim, freq_dim))
        out = spec.clone()
        out.narrow(time_dim, 0, 4).zero_()
        return out


def test_spec_augment_only_in_training() -> None:
    model = create_backbone("logmel")
    wave = tone(440.0, 0.1, seconds=1.0)
    clean = model.forward_features(wave)
    mask = ZeroFirstFrames()
    model.set_spec_augment(mask)
    assert torch.equal(model.forward_features(wave), clean)
    assert mask.calls == []
    model.train()
    augmented = model.forward_features(wave)
    assert mask.calls == [((1, 32, 128), 1, 2)]
    assert torch.all(augmented[:, :4] == 0) and torch.equal(augmented[:, 4:], clean[:, 4:])
    model.eval()
    assert torch.equal(model.forward_features(wave), clean)


# -- front end -------------------------------------------------------------------------------


def test_slaney_scale() -> None:
    hz = torch.tensor([0.0, 200.0, 1000.0, 6400.0, 8000.0])
    mel = hz_to_mel_slaney(hz)
    assert torch.allclose(mel[:4], torch.tensor([0.0, 3.0, 15.0, 42.0], dtype=torch.float64))
    assert torch.allclose(mel_to_hz_slaney(mel), hz.double())


def test_slaney_bank_has_no_empty_filters_and_equal_areas() -> None:
    bank = slaney_mel_bank(128, 1024, 16000)
    assert bank.shape == (128, 513) and bank.dtype == torch.float32
    assert torch.all(bank >= 0)
    assert torch.all((bank > 0).sum(dim=1) >= 2)  # every filter sees at least two FFT bins
    assert torch.all(bank.argmax(dim=1).diff() >= 0)
    wide = (bank > 0).sum(dim=1) >= 10  # area normalisation: sum · bin width ≈ 1
    areas = bank[wide].sum(dim=1) * (8000 / 512)
    assert torch.allclose(areas, torch.ones_like(areas), atol=0.02)
    with pytest.raises(ValueError, match="f_max"):
        slaney_mel_bank(128, 1024, 16000, f_max=9000.0)


def test_logmel_matches_numpy_reference() -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(8000) * 0.1).astype(np.float32)
    padded = np.pad(x.astype(np.float64), 512, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, 1024)[::512]  # (T, 1024)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(1024) / 1024)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2  # (T, 513)
    bank = slaney_mel_bank(128, 1024, 16000).double().numpy()
    ref = 10 * np.log10(np.maximum(power @ bank.T, 1e-10)).T  # (128, T)
    out = LogMel()(torch.from_numpy(x)[None])[0].double().numpy()
    assert out.shape == ref.shape == (128, 16)
    assert np.abs(out - ref).max() < 1e-3  # dB


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        LogMel()(torch.zeros(16000))
    with pytest.raises(ValueError, match="n_fft/2"):
        LogMel()(torch.zeros(1, 100))
