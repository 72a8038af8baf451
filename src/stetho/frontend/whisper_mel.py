"""Whisper log-mel spectrogram (also Qwen-Audio's front end) as a batched torch layer.

Recipe (OpenAI Whisper / Qwen-Audio ``audio.py``):

* optional zero-pad (or trim) of every waveform to ``pad_to_samples`` (480 000 = 30 s at 16 kHz
  for the original recipe), *before* the STFT;
* STFT with n_fft 400, hop 160, periodic Hann window, centred with reflect padding; power |X|²;
  the last frame is dropped, so ``N`` samples give ``N // 160`` frames;
* Slaney-scale, Slaney-normalised triangular mel filters (80 bins, 0 Hz … sr/2);
* ``log10(max(mel, 1e-10))``, then ``max(x, max(x) - 8)`` with the maximum taken per clip, then
  ``(x + 4) / 4``.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

__all__ = ["WhisperLogMel", "hz_to_mel_slaney", "mel_filters_slaney", "mel_to_hz_slaney"]

logger = logging.getLogger(__name__)

# Slaney's auditory-toolbox mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above
# (27 mels per factor 6.4 in frequency).
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # 15.0
_LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel_slaney(freq: torch.Tensor) -> torch.Tensor:
    """Frequencies in Hz → Slaney mels (linear below 1 kHz, logarithmic above)."""
    linear = freq / _F_SP
    log = _MIN_LOG_MEL + torch.log(torch.clamp(freq, min=_MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return torch.where(freq >= _MIN_LOG_HZ, log, linear)


def mel_to_hz_slaney(mel: torch.Tensor) -> torch.Tensor:
    """Slaney mels → frequencies in Hz (inverse of :func:`hz_to_mel_slaney`)."""
    linear = mel * _F_SP
    log = _MIN_LOG_HZ * torch.exp(_LOG_STEP * (torch.clamp(mel, min=_MIN_LOG_MEL) - _MIN_LOG_MEL))
    return torch.where(mel >= _MIN_LOG_MEL, log, linear)


def mel_filters_slaney(
    sample_rate: int = 16000,
    n_fft: int = 400,
    n_mels: int = 80,
    f_min: float = 0.0,
    f_max: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Slaney-scale triangular mel filters with Slaney (area) normalisation.

    The band edges are ``n_mels + 2`` points equally spaced on the Slaney mel scale between
    ``f_min`` and ``f_max``; filter ``m`` rises linearly from edge ``m`` to edge ``m + 1`` and falls
    to zero at edge ``m + 2``, and is scaled by ``2 / (f[m + 2] - f[m])`` so that every filter has
    roughly constant energy. Computed in float64 and cast to ``dtype``.

    Args:
        sample_rate: Sampling rate in Hz.
        n_fft: FFT size; the filters cover ``n_fft // 2 + 1`` frequency bins.
        n_mels: Number of mel bands.
        f_min: Lowest band edge in Hz.
        f_max: Highest band edge in Hz (default ``sample_rate / 2``).
        dtype: Output dtype.

    Returns:
        Filter matrix ``(n_mels, n_fft // 2 + 1)``.
    """
    f_max = sample_rate / 2.0 if f_max is None else f_max
    if not 0.0 <= f_min < f_max <= sample_rate / 2.0:
        raise ValueError(f"expected 0 <= f_min < f_max <= sr/2, got f_min={f_min}, f_max={f_max}")
    fft_freqs = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)  # (F,)
    lo, hi = hz_to_mel_slaney(torch.tensor([f_min, f_max], dtype=torch.float64))
    edges = mel_to_hz_slaney(torch.linspace(float(lo), float(hi), n_mels + 2, dtype=torch.float64))
    widths = edges[1:] - edges[:-1]  # (n_mels + 1,)
    dist = edges[:, None] - fft_freqs[None, :]  # (n_mels + 2, F): edge minus bin frequency
    rising = -dist[:-2] / widths[:-1, None]  # (n_mels, F)
    falling = dist[2:] / widths[1:, None]  # (n_mels, F)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    weights = weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.to(dtype)


class WhisperLogMel(nn.Module):
    """Whisper log-mel front end: waveforms ``(B, N)`` at 16 kHz → ``(B, n_mels, T)``.

    ``T = N // hop_length``, or ``pad_to_samples // hop_length`` when ``pad_to_samples`` is set.
    The computation runs in float32 whatever the input dtype.

    Args:
        sample_rate: Input sampling rate in Hz.
        n_fft: FFT and window size.
        hop_length: Frame shift in samples.
        n_mels: Number of mel bands.
        pad_to_samples: If set, zero-pad (or trim) every waveform to this many samples before the
            STFT (480 000 for the 30 s Whisper / Qwen-Audio recipe).
    """

    window: torch.Tensor
    mel_fb: torch.Tensor

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 400,
        hop_length: int = 160,
        n_mels: int = 80,
        pad_to_samples: int | None = None,
    ) -> None:
        super().__init__()
        if pad_to_samples is not None and pad_to_samples <= 0:
            raise ValueError(
                f"pad_to_samples must be a positive number of samples or None, got {pad_to_samples}"
            )
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.pad_to_samples = pad_to_samples
        # Non-persistent: derived constants, kept out of state dicts.
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True), persistent=False)
        self.register_buffer(
            "mel_fb", mel_filters_slaney(sample_rate, n_fft, n_mels), persistent=False
        )  # (n_mels, n_fft // 2 + 1)

    def num_frames(self, num_samples: int) -> int:
        """Number of output frames for a waveform of ``num_samples`` samples."""
        n = self.pad_to_samples if self.pad_to_samples is not None else num_samples
        return n // self.hop_length

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveforms ``(B, N)`` (or ``(N,)``) → normalised log-mel ``(B, n_mels, T)``."""
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        if wave.dim() != 2:
            raise ValueError(f"expected waveforms of shape (B, N), got {tuple(wave.shape)}")
        x = wave.float()
        if self.pad_to_samples is not None:
            n = x.shape[-1]
            if n > self.pad_to_samples:
                logger.debug("trimming %d samples to pad_to_samples=%d", n, self.pad_to_samples)
                x = x[:, : self.pad_to_samples]
            elif n < self.pad_to_samples:
                x = nn.functional.pad(x, (0, self.pad_to_samples - n))
        if x.shape[-1] <= self.n_fft // 2:
            raise ValueError(
                f"waveform too short for the STFT: {x.shape[-1]} samples, need more than {self.n_fft // 2}"
            )
        spec = torch.stft(
            x,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )  # (B, F, N // hop + 1)
        power = spec[..., :-1].abs() ** 2  # (B, F, T): last frame dropped
        mel = torch.matmul(self.mel_fb, power)  # (B, n_mels, T)
        log_mel = torch.log10(torch.clamp(mel, min=1e-10))
        peak = log_mel.amax(dim=(-2, -1), keepdim=True)  # (B, 1, 1): per-clip maximum
        log_mel = torch.maximum(log_mel, peak - 8.0)
        return (log_mel + 4.0) / 4.0
