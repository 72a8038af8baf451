"""CED's mel front-end: a pure-torch equivalent of torchaudio's ``MelSpectrogram`` + ``AmplitudeToDB``.

CED (Dinkel et al., ICASSP 2024) feeds its transformer a 64-bin HTK mel spectrogram in decibels::

    power = |STFT(wave)|²                   # periodic Hann 512, hop 160, centre reflect padding
    mel   = power @ fb                      # HTK triangles, no area normalisation, 0–8000 Hz
    dB    = 10·log10(max(mel, 1e-10))       # reference 1.0
    dB    = max(dB, max(dB) − 120)          # 120 dB floor

The filter bank is computed in float32 with the same operation order as torchaudio, so it equals
the ``front_end.0.mel_scale.fb`` buffer stored in the original checkpoints. torchaudio takes the max
of the floor over the *whole batch*; here it is per example by default (what the official
one-clip-at-a-time inference computes) and batch-shared with ``batchwise_top_db=True``.

Example:
    >>> mel = CEDMel()
    >>> mel(torch.zeros(2, 16000)).shape
    torch.Size([2, 64, 101])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from stetho.frontend.mel import centred_stft
from stetho.utils.config import ConfigBase, ConfigError

__all__ = ["CEDMel", "CEDMelConfig", "amplitude_to_db", "htk_mel_filterbank"]


@dataclass
class CEDMelConfig(ConfigBase):
    """Settings of the CED mel front-end (defaults = the released CED models).

    Attributes:
        sample_rate: Input rate in Hz.
        n_fft: FFT size; gives ``n_fft // 2 + 1`` frequency bins.
        win_length: Periodic Hann window length (zero-padded centrally to ``n_fft``).
        hop_length: Frame shift in samples; ``T = 1 + N // hop_length``.
        f_min: Lowest mel edge in Hz.
        f_max: Highest mel edge in Hz.
        n_mels: Number of mel bins.
        top_db: Dynamic range kept below the maximum in dB (``None``: no floor).
        amin: Power floor before the logarithm.
        batchwise_top_db: Share one maximum across the batch (torchaudio's behaviour on batched
            input) instead of one per example.
    """

    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 512
    hop_length: int = 160
    f_min: float = 0.0
    f_max: float = 8000.0
    n_mels: int = 64
    top_db: float | None = 120.0
    amin: float = 1e-10
    batchwise_top_db: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.win_length <= self.n_fft:
            raise ConfigError(f"win_length must be in 1..n_fft={self.n_fft}, got {self.win_length}")
        if self.hop_length <= 0:
            raise ConfigError(f"hop_length must be positive, got {self.hop_length}")
        if not 0.0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ConfigError(
                f"expected 0 <= f_min < f_max <= sample_rate/2 = {self.sample_rate / 2}, "
                f"got f_min={self.f_min}, f_max={self.f_max}"
            )
        if self.top_db is not None and self.top_db < 0:
            raise ConfigError(f"top_db must be non-negative or None, got {self.top_db}")


def htk_mel_filterbank(
    n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int
) -> torch.Tensor:
    """HTK-scale triangular mel filters without normalisation, in float32.

    The FFT bins lie at ``linspace(0, sample_rate // 2, n_freqs)``; the ``n_mels + 2`` filter
    edges are equally spaced on ``m(f) = 2595·log10(1 + f/700)`` between ``f_min`` and ``f_max``.
    Filter ``k`` rises from edge ``k`` to edge ``k+1`` and falls to edge ``k+2``.

    Returns:
        ``(n_freqs, n_mels)`` weights, so that ``mel = power.T @ fb``.
    """
    f32 = torch.float32
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=f32)  # (n_freqs,)
    m_min = 2595.0 * math.log10(1.0 + f_min / 700.0)
    m_max = 2595.0 * math.log10(1.0 + f_max / 700.0)
    m_pts = torch.linspace(m_min, m_max, n_mels + 2, dtype=f32)  # (n_mels + 2,)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)  # filter edges in Hz
    f_diff = f_pts[1:] - f_pts[:-1]  # (n_mels + 1,)
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)  # (n_freqs, n_mels + 2): f_k - f
    rising = (-1.0 * slopes[:, :-2]) / f_diff[:-1]  # (f - f_k) / (f_{k+1} - f_k)
    falling = slopes[:, 2:] / f_diff[1:]  # (f_{k+2} - f) / (f_{k+2} - f_{k+1})
    return torch.minimum(rising, falling).clamp_min(0.0)  # (n_freqs, n_mels)


def amplitude_to_db(
    power: torch.Tensor, top_db: float | None = 120.0, amin: float = 1e-10, batchwise: bool = False
) -> torch.Tensor:
    """Power → decibels (reference 1.0) with an optional ``top_db`` floor.

    Args:
        power: ``(B, F, T)`` (or ``(F, T)``) non-negative power values.
        top_db: Values more than ``top_db`` below the maximum are raised to ``max − top_db``.
        amin: Floor applied before the logarithm.
        batchwise: Use one maximum over the whole batch (torchaudio) instead of one per example.
    """
    db = 10.0 * torch.log10(torch.clamp(power, min=amin))
    if top_db is None:
        return db
    if batchwise or db.dim() < 3:
        peak = db.amax()  # one scalar for everything
    else:
        peak = db.amax(dim=(-2, -1), keepdim=True)  # (B, 1, 1)
    return torch.maximum(db, peak - top_db)


class _PowerSpectrogram(nn.Module):
    """|STFT|² with a periodic Hann window (persistent buffer ``window``)."""

    window: torch.Tensor

    def __init__(self, n_fft: int, win_length: int, hop_length: int) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        self.register_buffer("window", torch.hann_window(win_length, periodic=True))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        # wave: (B, N) float32 -> (B, n_fft // 2 + 1, 1 + N // hop)
        window = self.window.to(device=wave.device, dtype=torch.float32)
        spec = centred_stft(wave, window, self.n_fft, self.hop_length, self.win_length)
        # |X|^2 as torchaudio's Spectrogram computes it (abs().pow(2), not re² + im²)
        return spec.abs().pow(2.0)


class _MelScale(nn.Module):
    """Applies the HTK filter bank stored in the persistent buffer ``fb`` (n_freqs, n_mels)."""

    fb: torch.Tensor

    def __init__(self, fb: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("fb", fb)

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        # power: (B, n_freqs, T) -> (B, n_mels, T)
        fb = self.fb.to(device=power.device, dtype=torch.float32)
        return torch.matmul(power.transpose(-1, -2), fb).transpose(-1, -2)


class CEDMel(nn.Module):
    """Waveform → CED dB mel spectrogram, always computed in float32.

    Submodules ``spectrogram`` (buffer ``window``) and ``mel_scale`` (buffer ``fb``) carry the
    same buffer names as the original model, so a backbone holding this layer as ``front_end[0]``
    loads ``front_end.0.spectrogram.window`` and ``front_end.0.mel_scale.fb`` strictly.

    Args:
        cfg: Front-end settings; defaults to :class:`CEDMelConfig()`.
    """

    def __init__(self, cfg: CEDMelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else CEDMelConfig()
        c = self.cfg
        n_freqs = c.n_fft // 2 + 1
        self.spectrogram = _PowerSpectrogram(c.n_fft, c.win_length, c.hop_length)
        self.mel_scale = _MelScale(
            htk_mel_filterbank(n_freqs, c.f_min, c.f_max, c.n_mels, c.sample_rate)
        )

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` input samples: ``1 + N // hop_length``."""
        return 1 + num_samples // self.cfg.hop_length

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Compute the dB mel spectrogram.

        Args:
            wave: ``(B, N)`` (or ``(N,)``) waveform at ``cfg.sample_rate``; ``N > n_fft // 2``
                (reflect padding needs it).

        Returns:
            ``(B, n_mels, 1 + N // hop_length)`` float32 (``(n_mels, T)`` for 1-D input).
        """
        if wave.dim() not in (1, 2):
            raise ValueError(
                f"expected a waveform of shape (B, N) or (N,), got {tuple(wave.shape)}"
            )
        if wave.shape[-1] <= self.cfg.n_fft // 2:
            raise ValueError(
                f"waveform too short: {wave.shape[-1]} samples; need more than "
                f"{self.cfg.n_fft // 2} for the centred STFT"
            )
        squeeze = wave.dim() == 1
        x = wave.unsqueeze(0) if squeeze else wave  # (B, N)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            power = self.spectrogram(x)  # (B, n_fft//2+1, T)
            mel = self.mel_scale(power)  # (B, n_mels, T)
            db = amplitude_to_db(
                mel, self.cfg.top_db, self.cfg.amin, batchwise=self.cfg.batchwise_top_db
            )
        return db.squeeze(0) if squeeze else db

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"sample_rate={c.sample_rate}, n_fft={c.n_fft}, hop={c.hop_length}, n_mels={c.n_mels}, "
            f"top_db={c.top_db}, batchwise_top_db={c.batchwise_top_db}"
        )
