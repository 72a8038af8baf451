"""EfficientAT log-mel front end: golden values of spec §7.4 and structural properties."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from stetho.frontend.efficientat_mel import EfficientATMel
from stetho.frontend.mel import kaldi_mel_bank, kaldi_mel_scale

# CPU-dependent float32 kernels: re-run by .ci/run under other MKL instruction sets
pytestmark = pytest.mark.float_sensitive


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # Conv inference with 2 intra-op threads on 2 shared, oversubscribed cores ran 10-30x slower
    # (0.7 s -> 18 s for the 28 clips); one thread is fast and stable.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def two_tones(sr: int = 32000, seconds: float = 1.0) -> torch.Tensor:
    """Spec §7.4 signal: 0.1 sin(440 Hz) + 0.05 sin(3000 Hz), float64 → float32, shape (1, N)."""
    n = np.arange(int(sr * seconds), dtype=np.float64)
    x = 0.1 * np.sin(2 * np.pi * 440 * n / sr) + 0.05 * np.sin(2 * np.pi * 3000 * n / sr)
    return torch.from_numpy(x.astype(np.float32))[None]


def test_golden_values_of_spec() -> None:
    mel = EfficientATMel()(two_tones())
    assert mel.shape == (1, 128, 100)
    assert mel.dtype == torch.float32
    assert abs(mel.mean().item() - (-1.156219)) < 1e-4
    assert abs(mel.std().item() - 0.637987) < 1e-4
    frame = mel[0, :, 50]
    assert int(frame.argmax()) == 68
    assert abs(frame.max().item() - 1.6824) < 1e-4
    expected = torch.tensor(
        [-1.4024, -1.4019, -1.4005, -1.4000, -1.3958, -1.4000, -1.3994, -1.4007]
    )
    assert torch.allclose(frame[:8], expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("n", [1024, 3200, 3201, 32000, 32001])
def test_frame_count(n: int) -> None:
    # 3200 samples give 10 frames (not 11) because the valid pre-emphasis drops one sample.
    layer = EfficientATMel()
    out = layer(torch.randn(1, n) * 0.1)
    assert out.shape == (1, 128, 1 + (n - 1) // 320) == (1, 128, layer.num_frames(n))


def test_ten_seconds_gives_1000_frames() -> None:
    assert EfficientATMel()(torch.zeros(1, 320000)).shape == (1, 128, 1000)


def test_batched_equals_per_item() -> None:
    torch.manual_seed(0)
    wave = torch.randn(3, 16000) * 0.1
    layer = EfficientATMel()
    batched = layer(wave)
    single = torch.cat([layer(w[None]) for w in wave])
    assert torch.allclose(batched, single, atol=1e-6)


def test_matches_explicit_reference() -> None:
    """Step-by-step recomputation: valid pre-emphasis, 800-point window zero-padded centrally."""
    torch.manual_seed(1)
    x = torch.randn(2, 8000, dtype=torch.float64) * 0.1
    y = x[:, 1:] - 0.97 * x[:, :-1]  # (B, N-1)
    window = torch.zeros(1024, dtype=torch.float64)
    window[112:912] = torch.hann_window(800, periodic=False, dtype=torch.float64)
    y = torch.nn.functional.pad(y[:, None], (512, 512), mode="reflect")[:, 0]
    frames = y.unfold(-1, 1024, 320) * window  # (B, T, 1024)
    power = torch.fft.rfft(frames).abs().square().transpose(1, 2)  # (B, 513, T)
    bank = kaldi_mel_bank(128, 1024, 32000, 0.0, 15000.0).double()
    ref = ((bank @ power + 1e-5).log() + 4.5) / 5
    out = EfficientATMel()(x.float())
    assert out.shape == ref.shape == (2, 128, 25)
    assert torch.allclose(out.double(), ref, atol=1e-4)  # measured 1.7e-5


def test_mel_bank_properties() -> None:
    bank = kaldi_mel_bank(128, 1024, 32000, 0.0, 15000.0)
    assert bank.shape == (128, 513)
    assert torch.all(bank[:, -1] == 0)  # zero Nyquist column
    assert torch.all(bank >= 0) and torch.all(bank <= 1)
    assert torch.all(bank.sum(dim=1) > 0)  # no empty triangle at these settings
    peaks = bank.argmax(dim=1)
    assert torch.all(peaks.diff() >= 0)  # centres increase with the bin index
    # The first triangle starts at 0 Hz: its left edge is mel 0 and its right edge two steps up.
    step = kaldi_mel_scale(15000.0) / 129
    assert bank[0, 0] == 0 and bank[0, 1] > 0
    hz_right = 700 * (np.exp(2 * step / 1127) - 1)
    assert bank[0, int(np.ceil(hz_right / 31.25)) :].abs().sum() == 0
    # The last bin stops below 15000 Hz (= bin 480).
    assert bank[:, 481:].abs().sum() == 0


def test_mel_bank_validates_band_edges() -> None:
    with pytest.raises(ValueError, match="high_freq"):
        kaldi_mel_bank(128, 1024, 32000, 0.0, 17000.0)
    with pytest.raises(ValueError, match="even"):
        kaldi_mel_bank(128, 1023, 32000)


def test_constants_are_not_in_the_state_dict() -> None:
    layer = EfficientATMel()
    assert dict(layer.state_dict()) == {}
    assert list(layer.parameters()) == []


def test_rejects_unbatched_input() -> None:
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        EfficientATMel()(torch.zeros(32000))


def test_autocast_keeps_float32() -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = EfficientATMel()(two_tones())
    assert out.dtype == torch.float32
    assert torch.allclose(out, EfficientATMel()(two_tones()))


def test_too_short_input_is_a_clear_error() -> None:
    import pytest
    import torch

    from stetho.frontend.efficientat_mel import EfficientATMel

    mel = EfficientATMel()
    assert mel(torch.zeros(1, 514)).shape[-1] == mel.num_frames(514)  # the shortest valid input
    with pytest.raises(ValueError, match=r"too short: 513 samples.*at least 514"):
        mel(torch.zeros(1, 513))


def test_preemphasis_equals_the_valid_convolution() -> None:
    """The shifted difference is the original's ``conv1d`` with kernel ``[-0.97, 1]``."""
    torch.manual_seed(2)
    x = torch.randn(2, 4000) * 0.3
    conv = torch.nn.functional.conv1d(x[:, None], torch.tensor([[[-0.97, 1.0]]]))[:, 0]
    diff = x[:, 1:] - 0.97 * x[:, :-1]
    assert torch.allclose(diff, conv, atol=1e-6, rtol=0)
    full = EfficientATMel()
    # the whole front end, recomputed with the convolution, agrees to float32 rounding
    spec = full.forward(x)
    assert spec.shape == (2, 128, 13)
    assert torch.isfinite(spec).all()
