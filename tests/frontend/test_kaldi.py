"""Kaldi fbank: golden values of the spec (§4.4), frame counts, batching, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stetho.frontend.kaldi import (
    FBANK_MEAN,
    FBANK_STD,
    KaldiFbank,
    KaldiFbankConfig,
    beats_fbank_normalise,
)
from stetho.frontend.mel import kaldi_mel_bank
from stetho.utils.config import ConfigError

LN_FLT_EPS = math.log(np.finfo(np.float32).eps)  # -15.942385


def two_tones(n: int = 16000, sr: int = 16000) -> torch.Tensor:
    """0.1·sin(2π·440 t) + 0.05·sin(2π·3000 t), computed in float64, cast to float32."""
    t = np.arange(n, dtype=np.float64)
    x = 0.1 * np.sin(2 * np.pi * 440 * t / sr) + 0.05 * np.sin(2 * np.pi * 3000 * t / sr)
    return torch.from_numpy(x.astype(np.float32))


@pytest.fixture(scope="module")
def golden_fbank() -> torch.Tensor:
    return KaldiFbank()(two_tones() * 32768)[0]  # (98, 128)


def test_golden_summary(golden_fbank: torch.Tensor) -> None:
    f = golden_fbank
    assert f.shape == (98, 128)
    assert f.dtype == torch.float32
    assert abs(f.mean().item() - 6.087514) < 1e-4
    assert abs(f.std().item() - 6.424705) < 1e-4


@pytest.mark.parametrize(
    ("frame", "bins", "expected"),
    [
        (0, slice(0, 8), [6.1516, 3.3204, 6.7638, -15.9424, 6.2149, 3.2362, 4.5946, 4.5877]),
        (
            50,
            slice(20, 28),
            [16.3922, 20.6671, 21.0936, 21.6067, 21.1583, 18.9176, 17.0912, 15.0385],
        ),
        (
            50,
            slice(120, 128),
            [-1.9992, -2.1996, -2.4178, -2.5880, -2.7743, -2.9471, -3.0683, -3.1283],
        ),
    ],
)
def test_golden_values(
    golden_fbank: torch.Tensor, frame: int, bins: slice, expected: list[float]
) -> None:
    got = golden_fbank[frame, bins]
    # the spec lists 4 decimals; measured max deviation 4.9e-5, within the 1e-4
    torch.testing.assert_close(got, torch.tensor(expected), atol=1e-4, rtol=0)


def test_golden_argmax(golden_fbank: torch.Tensor) -> None:
    assert int(golden_fbank[50].argmax()) == 84
    assert abs(golden_fbank[50, 84].item() - 24.4903) < 1e-4


def test_empty_bin_quirk(golden_fbank: torch.Tensor) -> None:
    # bin 3 has no FFT bin inside its triangle at 128 bins: always ln(FLT_EPSILON)
    bank = kaldi_mel_bank(128, 512, 16000.0, 20.0, 0.0)
    assert bank.shape == (128, 257)
    assert bank[3].abs().sum() == 0
    assert (bank.abs().sum(dim=1) > 0).sum() == 127
    assert torch.all(bank[:, -1] == 0)  # Nyquist column
    assert torch.allclose(golden_fbank[:, 3], torch.full((98,), LN_FLT_EPS), atol=1e-6)
    assert abs(LN_FLT_EPS - (-15.942385)) < 1e-6
    norm = beats_fbank_normalise(golden_fbank)
    assert abs(norm[0, 3].item() - (-2.39170)) < 1e-4


def test_normalise_constants() -> None:
    x = torch.tensor([FBANK_MEAN, FBANK_MEAN + 2 * FBANK_STD])
    torch.testing.assert_close(beats_fbank_normalise(x), torch.tensor([0.0, 1.0]))
    assert (FBANK_MEAN, FBANK_STD) == (15.41663, 6.55582)


@pytest.mark.parametrize("n", [400, 401, 559, 560, 16000, 16001, 160000])
def test_frame_count(n: int) -> None:
    fb = KaldiFbank()
    out = fb(torch.randn(1, n))
    assert out.shape == (1, 1 + (n - 400) // 160, 128)
    assert fb.num_frames(n) == out.shape[1]


def test_ten_seconds_gives_998_frames() -> None:
    assert KaldiFbank().num_frames(160000) == 998


def test_too_short_raises() -> None:
    with pytest.raises(ValueError, match="at least 400 samples"):
        KaldiFbank()(torch.randn(2, 399))


def test_bad_rank_raises() -> None:
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        KaldiFbank()(torch.randn(1, 2, 1000))


def test_batched_equals_per_clip() -> None:
    torch.manual_seed(0)
    wave = torch.randn(3, 8000) * 3000
    wave[1] = two_tones(8000) * 32768
    fb = KaldiFbank()
    batched = fb(wave)
    for i in range(3):
        assert torch.equal(batched[i], fb(wave[i])[0])


def test_silence_is_finite_floor() -> None:
    out = KaldiFbank()(torch.zeros(2, 4000))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.full_like(out, LN_FLT_EPS))


def test_gradients_flow_and_are_finite() -> None:
    wave = (torch.randn(2, 2000) * 1000).requires_grad_(True)
    KaldiFbank()(wave).sum().backward()
    assert wave.grad is not None
    assert torch.isfinite(wave.grad).all() and wave.grad.abs().sum() > 0


def test_float32_under_autocast() -> None:
    wave = two_tones(4000) * 32768
    ref = KaldiFbank()(wave)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = KaldiFbank()(wave)
    assert out.dtype == torch.float32
    assert torch.equal(out, ref)


def test_float64_input_close_to_float32() -> None:
    wave = two_tones(4000) * 32768
    out64 = KaldiFbank()(wave.double())
    assert out64.dtype == torch.float64
    # float32 FFT round-off dominates the weakest bins (≈ 40 dB below the tones): loose bound there
    torch.testing.assert_close(out64.float(), KaldiFbank()(wave), atol=5e-2, rtol=0)


def test_buffers_not_in_state_dict() -> None:
    assert KaldiFbank().state_dict() == {}


def test_mel_banks_are_triangles() -> None:
    bank = kaldi_mel_bank(40, 512, 16000.0, 20.0, 0.0)
    assert bank.min() >= 0 and bank.max() <= 1
    for row in bank:
        nz = torch.nonzero(row).flatten()
        assert len(nz) > 0
        assert torch.all(nz[1:] - nz[:-1] == 1)  # contiguous support
        peak = int(row.argmax())
        assert torch.all(row[nz[0] : peak + 1].diff() >= 0) and torch.all(
            row[peak : nz[-1] + 1].diff() <= 0
        )


def test_no_snip_edges_frames() -> None:
    cfg = KaldiFbankConfig(snip_edges=False)
    fb = KaldiFbank(cfg)
    x = torch.randn(1, 4000)
    out = fb(x)
    assert out.shape[1] == (4000 + 80) // 160
    # centred frame k starts at 160k - 120 = 40 + 160(k - 1): frame k of x equals snipped frame
    # k - 1 of x[40:] whenever it lies inside the signal
    ref = KaldiFbank()(x[:, 40:])
    torch.testing.assert_close(
        out[:, 1 : ref.shape[1] + 1][:, :20], ref[:, :20], atol=1e-4, rtol=1e-5
    )
    # frame 0 uses reflected samples: x[119..0] then x[0..279]
    frame0 = torch.cat([x[0, :120].flip(0), x[0, :280]]).unsqueeze(0)
    torch.testing.assert_close(out[:, 0], KaldiFbank()(frame0)[:, 0], atol=1e-4, rtol=1e-5)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="window"):
        KaldiFbankConfig(window="kaiser")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="low_freq"):
        KaldiFbankConfig(low_freq=9000.0)
    cfg = KaldiFbankConfig()
    assert (cfg.window_size, cfg.window_shift, cfg.padded_window_size) == (400, 160, 512)
    assert KaldiFbankConfig.from_dict(cfg.to_dict()) == cfg
