"""Kaldi-compatible log mel filter bank (the BEATs front-end) as a batched, pure-torch layer.

Computes what ``torchaudio.compliance.kaldi.fbank`` computes with its default options, for a
whole batch at once and without torchaudio::

    frames = wave.unfold(-1, 400, 160)          # snip_edges: T = 1 + (N - 400) // 160
    frames -= frames.mean(-1)                   # remove DC offset
    frames[j] -= 0.97 * frames[j - 1]           # pre-emphasis (frames[-1] := frames[0])
    frames *= hann(400, periodic=False) ** 0.85 # "povey" window
    power = |rfft(frames, 512)|²                # (B, T, 257)
    fbank = ln(max(power @ mel_bankᵀ, FLT_EPSILON))

The mel bank (:func:`stetho.frontend.mel.kaldi_mel_bank`, shared with EfficientAT) uses Kaldi's
mel scale ``1127·ln(1 + f/700)`` between 20 Hz and Nyquist and is evaluated in float32 with
torchaudio's operation order. Quirk kept on purpose: at 128 bins (BEATs) mel bin 3 contains no
FFT bin, so its filter is all zeros and its output is always ``ln(FLT_EPSILON) = -15.942385``
(real Kaldi would refuse this configuration).

Example:
    >>> fbank = KaldiFbank()
    >>> fbank(torch.zeros(2, 16000)).shape
    torch.Size([2, 98, 128])
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from stetho.frontend.mel import kaldi_mel_bank
from stetho.utils.config import ConfigBase, ConfigError

__all__ = [
    "FBANK_MEAN",
    "FBANK_STD",
    "KaldiFbank",
    "KaldiFbankConfig",
    "beats_fbank_normalise",
    "kaldi_window",
]

#: Mean of BEATs' fbank features (subtracted before the patch embedding).
FBANK_MEAN: float = 15.41663
#: Standard deviation of BEATs' fbank features; BEATs divides by **twice** this value.
FBANK_STD: float = 6.55582

WindowType = Literal["povey", "hanning", "hamming", "rectangular", "blackman"]
_WINDOWS: tuple[str, ...] = ("povey", "hanning", "hamming", "rectangular", "blackman")


@dataclass
class KaldiFbankConfig(ConfigBase):
    """Options of the Kaldi fbank (defaults = ``torchaudio.compliance.kaldi.fbank`` as BEATs calls it).

    Attributes:
        num_mel_bins: Number of triangular mel filters (BEATs: 128).
        sample_frequency: Input rate in Hz.
        frame_length_ms: Frame length in ms (25 ms = 400 samples at 16 kHz).
        frame_shift_ms: Frame shift in ms (10 ms = 160 samples at 16 kHz).
        preemphasis: Pre-emphasis coefficient applied inside each frame.
        remove_dc_offset: Subtract each frame's mean before pre-emphasis.
        window: Window type: ``"povey"`` (Hann^0.85), ``"hanning"``, ``"hamming"``,
            ``"rectangular"`` or ``"blackman"`` (all symmetric, as in Kaldi).
        low_freq: Lower edge of the mel filters in Hz.
        high_freq: Upper edge in Hz; values <= 0 are offsets from Nyquist (0 → Nyquist).
        round_to_power_of_two: Zero-pad each frame to the next power of two for the FFT.
        snip_edges: True: only frames that fit entirely in the signal; False: Kaldi's centred
            frames with reflected edges, ``T = (N + shift // 2) // shift``.
        dither: Standard deviation of Gaussian noise added to every frame (torch RNG); 0 = off.
    """

    num_mel_bins: int = 128
    sample_frequency: float = 16000.0
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    preemphasis: float = 0.97
    remove_dc_offset: bool = True
    window: WindowType = "povey"
    low_freq: float = 20.0
    high_freq: float = 0.0
    round_to_power_of_two: bool = True
    snip_edges: bool = True
    dither: float = 0.0

    def __post_init__(self) -> None:
        if self.num_mel_bins < 3:
            raise ConfigError(f"num_mel_bins must be >= 3, got {self.num_mel_bins}")
        if self.window not in _WINDOWS:
            raise ConfigError(
                f"window {self.window!r} is not a valid choice; expected one of {list(_WINDOWS)}"
            )
        if self.window_size <= 1 or self.window_shift <= 0:
            raise ConfigError(
                f"frame_length_ms={self.frame_length_ms} and frame_shift_ms={self.frame_shift_ms} "
                f"give window {self.window_size} / shift {self.window_shift} samples; expected > 1 / > 0"
            )
        if self.padded_window_size % 2:
            raise ConfigError(
                f"the FFT size {self.padded_window_size} (frame_length_ms={self.frame_length_ms}, "
                "round_to_power_of_two=False) is odd; Kaldi's mel banks need an even padded window"
            )
        nyquist = 0.5 * self.sample_frequency
        high = self.high_freq if self.high_freq > 0 else self.high_freq + nyquist
        if not 0.0 <= self.low_freq < high <= nyquist:
            raise ConfigError(
                f"expected 0 <= low_freq < high_freq <= Nyquist ({nyquist} Hz), got low_freq="
                f"{self.low_freq}, high_freq={self.high_freq} (resolved to {high})"
            )
        if self.dither < 0:
            raise ConfigError(f"dither must be >= 0, got {self.dither}")

    @property
    def window_size(self) -> int:
        """Frame length in samples (Kaldi truncates, e.g. 400 at 16 kHz / 25 ms)."""
        return int(self.sample_frequency * self.frame_length_ms * 0.001)

    @property
    def window_shift(self) -> int:
        """Frame shift in samples (e.g. 160 at 16 kHz / 10 ms)."""
        return int(self.sample_frequency * self.frame_shift_ms * 0.001)

    @property
    def padded_window_size(self) -> int:
        """FFT size: the next power of two of :attr:`window_size`, or the window size itself."""
        n = self.window_size
        return 1 << (n - 1).bit_length() if self.round_to_power_of_two else n

    def num_frames(self, num_samples: int) -> int:
        """Number of frames produced for ``num_samples`` input samples (0 if too short)."""
        if self.snip_edges:
            if num_samples < self.window_size:
                return 0
            return 1 + (num_samples - self.window_size) // self.window_shift
        return (num_samples + self.window_shift // 2) // self.window_shift


def kaldi_window(window: str, size: int) -> torch.Tensor:
    """Symmetric analysis window of ``size`` samples in float32, as Kaldi defines it.

    Raises:
        ValueError: for an unknown window type (the message lists the valid ones).
    """
    if window == "povey":
        return torch.hann_window(size, periodic=False, dtype=torch.float32).pow(0.85)
    if window == "hanning":
        return torch.hann_window(size, periodic=False, dtype=torch.float32)
    if window == "hamming":
        return torch.hamming_window(
            size, periodic=False, alpha=0.54, beta=0.46, dtype=torch.float32
        )
    if window == "rectangular":
        return torch.ones(size, dtype=torch.float32)
    if window == "blackman":
        a = 2 * math.pi / (size - 1)
        n = torch.arange(size, dtype=torch.float32)
        return 0.42 - 0.5 * torch.cos(a * n) + 0.08 * torch.cos(2 * a * n)
    raise ValueError(f"unknown window {window!r}; valid choices: {list(_WINDOWS)}")


def _no_autocast(device_type: str) -> contextlib.AbstractContextManager[object]:
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.autocast(device_type, enabled=False)
    except RuntimeError:  # device types without autocast (e.g. "meta")
        pass
    return contextlib.nullcontext()


class KaldiFbank(nn.Module):
    """Batched Kaldi log mel filter bank, equal to ``torchaudio.compliance.kaldi.fbank``.

    Input ``(B, N)`` or ``(N,)`` waveforms at ``sample_frequency`` (any scale: BEATs passes
    samples multiplied by 2**15); output ``(B, T, num_mel_bins)`` natural-log mel energies with
    ``T = 1 + (N - 400) // 160`` at the defaults. Computed in float32 (float64 inputs stay
    float64) with autocast disabled; differentiable; runs on any device. The window and mel bank
    are non-persistent buffers, so they never appear in a model's ``state_dict``.

    Args:
        cfg: Options; defaults are BEATs' settings.
    """

    window: torch.Tensor
    mel_banks: torch.Tensor

    def __init__(self, cfg: KaldiFbankConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else KaldiFbankConfig()
        c = self.cfg
        self.register_buffer("window", kaldi_window(c.window, c.window_size), persistent=False)
        banks = kaldi_mel_bank(
            c.num_mel_bins, c.padded_window_size, c.sample_frequency, c.low_freq, c.high_freq
        )
        self.register_buffer("mel_banks", banks, persistent=False)  # (M, K + 1)

    def num_frames(self, num_samples: int) -> int:
        """Number of output frames for ``num_samples`` input samples."""
        return self.cfg.num_frames(num_samples)

    def _frames(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, N) → (B, T, window_size) frames."""
        c = self.cfg
        size, shift = c.window_size, c.window_shift
        n = wave.shape[-1]
        if c.snip_edges:
            return wave.unfold(-1, size, shift)
        # Centred frames: frame k starts at k·shift + shift//2 - size//2; out-of-range samples are
        # reflected (s < 0 → -s - 1, s >= N → 2N - 1 - s).
        t = c.num_frames(n)
        start = shift // 2 - size // 2
        idx = start + shift * torch.arange(t, device=wave.device).unsqueeze(1)
        idx = idx + torch.arange(size, device=wave.device)  # (T, size)
        idx = torch.remainder(idx, 2 * n)
        idx = torch.where(idx >= n, 2 * n - 1 - idx, idx)
        return wave[:, idx]  # (B, T, size)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveforms ``(B, N)`` or ``(N,)`` → log mel energies ``(B, T, num_mel_bins)``.

        Raises:
            ValueError: if the input is not 1-D/2-D or is shorter than one frame.
        """
        c = self.cfg
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        if wave.dim() != 2:
            raise ValueError(
                f"KaldiFbank expects a waveform (B, N) or (N,), got shape {tuple(wave.shape)}"
            )
        if c.num_frames(wave.shape[-1]) < 1:
            raise ValueError(
                f"KaldiFbank needs at least {c.window_size} samples (one {c.frame_length_ms} ms frame "
                f"at {c.sample_frequency:g} Hz), got {wave.shape[-1]}"
            )
        dtype = torch.float64 if wave.dtype == torch.float64 else torch.float32
        with _no_autocast(wave.device.type):
            x = self._frames(wave.to(dtype))  # (B, T, W)
            if c.dither > 0.0:
                x = x + c.dither * torch.randn_like(x)
            if c.remove_dc_offset:
                x = x - x.mean(dim=-1, keepdim=True)
            if c.preemphasis != 0.0:
                prev = torch.cat([x[..., :1], x[..., :-1]], dim=-1)  # replicate first sample
                x = x - c.preemphasis * prev
            x = x * self.window.to(dtype)
            pad = c.padded_window_size - c.window_size
            if pad > 0:
                x = F.pad(x, (0, pad))  # (B, T, P)
            power = torch.fft.rfft(x).abs().pow(2.0)  # (B, T, P // 2 + 1)
            mel = torch.matmul(power, self.mel_banks.to(dtype).T)  # (B, T, M)
            eps = torch.finfo(torch.float32).eps  # Kaldi floors at FLT_EPSILON
            return mel.clamp_min(eps).log()

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"num_mel_bins={c.num_mel_bins}, sample_frequency={c.sample_frequency:g}, "
            f"window={c.window_size}/{c.window_shift}, window_type={c.window!r}"
        )


def beats_fbank_normalise(fbank: torch.Tensor) -> torch.Tensor:
    """BEATs' feature normalisation ``(fbank - 15.41663) / (2 × 6.55582)`` (twice the std)."""
    return (fbank - FBANK_MEAN) / (2.0 * FBANK_STD)
