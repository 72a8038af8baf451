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
from tests.numerics import assert_within, log_band_interval, per_bin_error

# CPU-dependent float32 kernels: re-run by .ci/run under other MKL instruction sets
pytestmark = pytest.mark.float_sensitive

LN_FLT_EPS = math.log(np.finfo(np.float32).eps)  # -15.942385


def two_tones(n: int = 16000, sr: int = 16000) -> torch.Tensor:
    """0.1·sin(2π·440 t) + 0.05·sin(2π·3000 t), computed in float64, cast to float32."""
    t = np.arange(n, dtype=np.float64)
    x = 0.1 * np.sin(2 * np.pi * 440 * t / sr) + 0.05 * np.sin(2 * np.pi * 3000 * t / sr)
    return torch.from_numpy(x.astype(np.float32))


@pytest.fixture(scope="module")
def golden_fbank() -> torch.Tensor:
    return KaldiFbank()(two_tones() * 32768)[0]  # (98, 128)


def _reference_frames(wave: np.ndarray) -> np.ndarray:
    """The Kaldi framing of spec §4.4 in float64 numpy: snip edges, DC removal, pre-emphasis with
    the first sample replicated, povey window (symmetric Hann ** 0.85), zero-padded to 512."""
    x = wave.astype(np.float64)
    t = 1 + (len(x) - 400) // 160
    frames = np.stack([x[i * 160 : i * 160 + 400] for i in range(t)])  # (T, 400)
    frames = frames - frames.mean(axis=1, keepdims=True)
    prev = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = frames - 0.97 * prev
    n = np.arange(400)
    frames = frames * (0.5 - 0.5 * np.cos(2 * np.pi * n / 399)) ** 0.85
    return np.pad(frames, ((0, 0), (0, 112)))  # (T, 512)


@pytest.fixture(scope="module")
def fbank_reference() -> tuple[np.ndarray, np.ndarray]:
    """Interval ``[lo, hi]`` (98, 128) the float32 fbank of the two tones must lie in: the
    float64 reference widened by the float32 round-off its conditioning allows
    (:mod:`tests.numerics`). The mel bank is the module's own (tested on its own below)."""
    frames = _reference_frames((two_tones() * 32768).numpy())
    spectrum = np.abs(np.fft.rfft(frames, axis=1))  # (T, 257)
    fb = kaldi_mel_bank(128, 512, 16000.0, 20.0, 0.0).double().numpy().T  # (257, 128)
    return log_band_interval(
        spectrum, fb, per_bin_error(frames, 512), float(np.finfo(np.float32).eps)
    )


def test_golden_summary(golden_fbank: torch.Tensor, fbank_reference: tuple) -> None:
    f = golden_fbank
    assert f.shape == (98, 128)
    assert f.dtype == torch.float32
    lo, hi = fbank_reference
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    # mean and std move by at most the mean / RMS of the per-element bound
    assert abs(f.double().mean().item() - mid.mean()) <= half.mean() + 1e-6
    assert abs(f.double().std().item() - mid.std(ddof=1)) <= np.sqrt((half**2).mean()) + 1e-6
    # the spec's figures (4 decimals, float32 on one CPU) agree with the float64 reference
    assert abs(mid.mean() - 6.087514) < 1e-4 + half.mean()
    assert abs(mid.std(ddof=1) - 6.424705) < 1e-4 + np.sqrt((half**2).mean())


def test_float32_fbank_within_conditioning_of_float64_reference(
    golden_fbank: torch.Tensor, fbank_reference: tuple
) -> None:
    lo, hi = fbank_reference
    assert_within(golden_fbank.double().numpy(), lo, hi, slack=1e-6)
    # the bound is tight where the signal is: the bands around the tones are known to ~1e-5
    assert float((hi - lo)[50, 20:28].max()) < 1e-4
    # and loose only at the float32 noise floor (high bands of this loud two-tone signal)
    assert float((hi - lo)[50, 120:128].min()) > 1e-3


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
    golden_fbank: torch.Tensor,
    fbank_reference: tuple,
    frame: int,
    bins: slice,
    expected: list[float],
) -> None:
    # the spec lists 4 decimals measured in float32 on one CPU: both they and this CPU's result
    # lie within the float64 reference's round-off interval (widened by the 4-decimal rounding)
    lo, hi = (b[frame, bins] for b in fbank_reference)
    assert_within(np.array(expected), lo, hi, slack=5e-5 + 1e-6)
    assert_within(golden_fbank[frame, bins].double().numpy(), lo, hi, slack=1e-6)


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
    # batched and per-clip FFTs may use different kernels (MKL, by CPU): both must lie within the
    # float32 round-off interval of each clip's own float64 reference
    torch.manual_seed(0)
    wave = torch.randn(3, 8000) * 3000
    wave[1] = two_tones(8000) * 32768
    fb = KaldiFbank()
    batched = fb(wave)
    bank = kaldi_mel_bank(128, 512, 16000.0, 20.0, 0.0).double().numpy().T
    floor = float(np.finfo(np.float32).eps)
    for i in range(3):
        frames = _reference_frames(wave[i].numpy())
        spectrum = np.abs(np.fft.rfft(frames, axis=1))
        lo, hi = log_band_interval(spectrum, bank, per_bin_error(frames, 512), floor)
        assert_within(batched[i].double().numpy(), lo, hi, slack=1e-6)
        assert_within(fb(wave[i])[0].double().numpy(), lo, hi, slack=1e-6)


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
