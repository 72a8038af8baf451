"""Plain log-mel spectrogram in dB (Slaney mel scale), as a batched torch layer.

The feature of the DCASE autoencoder baselines: power STFT (``n_fft`` 1024, hop 512, periodic
Hann window, centred with reflect padding), a Slaney-style mel bank (linear below 1 kHz,
logarithmic above, area-normalised triangles; 128 bins from 0 Hz to Nyquist), then
``10 · log10(max(mel, 1e-10))``. It has no parameters and is used by the weight-free ``logmel``
backbone.

Example:
    >>> LogMel()(torch.zeros(1, 16000)).shape   # 1 s at 16 kHz
    torch.Size([1, 128, 32])
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["LogMel", "hz_to_mel_slaney", "mel_to_hz_slaney", "slaney_mel_bank"]

_F_SP = 200.0 / 3.0  # Hz per mel in the linear region
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # 15 mel at 1 kHz
_LOGSTEP = math.log(6.4) / 27.0  # log-region step: 27 mel per factor 6.4


def hz_to_mel_slaney(freq: torch.Tensor) -> torch.Tensor:
    """Slaney mel scale: linear (3 mel per 200 Hz) below 1 kHz, logarithmic above."""
    freq = torch.as_tensor(freq, dtype=torch.float64)
    linear = freq / _F_SP
    log = _MIN_LOG_MEL + torch.log(torch.clamp(freq, min=_MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return torch.where(freq >= _MIN_LOG_HZ, log, linear)


def _hz_to_mel_scalar(freq: float) -> float:
    # Python-float version (no tensor), so banks can be built under ``torch.device("meta")``.
    if freq >= _MIN_LOG_HZ:
        return _MIN_LOG_MEL + math.log(freq / _MIN_LOG_HZ) / _LOGSTEP
    return freq / _F_SP


def mel_to_hz_slaney(mel: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hz_to_mel_slaney`."""
    mel = torch.as_tensor(mel, dtype=torch.float64)
    linear = mel * _F_SP
    log = _MIN_LOG_HZ * torch.exp(_LOGSTEP * (torch.clamp(mel, min=_MIN_LOG_MEL) - _MIN_LOG_MEL))
    return torch.where(mel >= _MIN_LOG_MEL, log, linear)


def slaney_mel_bank(
    n_mels: int, n_fft: int, sample_rate: float, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """Area-normalised triangular mel filters on the Slaney scale.

    Filter ``i`` rises linearly from edge ``i`` to edge ``i+1`` and falls to edge ``i+2``, where the
    ``n_mels + 2`` edges are equally spaced in mel between ``f_min`` and ``f_max``; each triangle
    is scaled by ``2 / (f_{i+2} - f_i)`` so that all filters have the same area.

    Args:
        n_mels: Number of filters.
        n_fft: FFT size; the bank covers the ``n_fft // 2 + 1`` one-sided bins.
        sample_rate: Sample rate in Hz.
        f_min: Lower edge in Hz.
        f_max: Upper edge in Hz (default: Nyquist).

    Returns:
        ``(n_mels, n_fft // 2 + 1)`` float32.

    Raises:
        ValueError: on band edges outside ``0 <= f_min < f_max <= sr/2``.
    """
    nyquist = sample_rate / 2
    f_max = nyquist if f_max is None else f_max
    if not 0.0 <= f_min < f_max <= nyquist:
        raise ValueError(
            f"mel band edges must satisfy 0 <= f_min < f_max <= {nyquist} Hz, "
            f"got f_min={f_min}, f_max={f_max}"
        )
    fft_hz = torch.linspace(0.0, nyquist, n_fft // 2 + 1, dtype=torch.float64)  # (K,)
    mel_edges = torch.linspace(
        _hz_to_mel_scalar(f_min), _hz_to_mel_scalar(f_max), n_mels + 2, dtype=torch.float64
    )
    hz_edges = mel_to_hz_slaney(mel_edges)  # (n_mels + 2,)
    width = hz_edges.diff()  # (n_mels + 1,)
    dist = hz_edges[:, None] - fft_hz[None, :]  # (n_mels + 2, K)
    rising = -dist[:-2] / width[:-1, None]
    falling = dist[2:] / width[1:, None]
    bank = torch.clamp(torch.minimum(rising, falling), min=0.0)  # (n_mels, K)
    bank = bank * (2.0 / (hz_edges[2:] - hz_edges[:-2]))[:, None]
    return bank.float()


class LogMel(nn.Module):
    """Log-mel spectrogram in dB: ``(B, N)`` → ``(B, n_mels, T)``, ``T = 1 + N // hop_length``.

    Args:
        sample_rate: Input rate in Hz.
        n_fft: FFT size (also the window length).
        hop_length: Hop in samples.
        n_mels: Number of mel bins.
        f_min: Lower mel edge in Hz.
        f_max: Upper mel edge in Hz (default: Nyquist).
        amin: Floor applied to the mel power before ``10 · log10`` (1e-10 → −100 dB).
    """

    window: torch.Tensor  # (n_fft,)
    mel_bank: torch.Tensor  # (n_mels, n_fft // 2 + 1)

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 512,
        n_mels: int = 128,
        f_min: float = 0.0,
        f_max: float | None = None,
        amin: float = 1e-10,
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.amin = amin
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True), persistent=False)
        self.register_buffer(
            "mel_bank", slaney_mel_bank(n_mels, n_fft, sample_rate, f_min, f_max), persistent=False
        )  # (n_mels, n_fft // 2 + 1)

    def num_frames(self, num_samples: int) -> int:
        """Number of output frames for ``num_samples`` input samples."""
        return 1 + num_samples // self.hop_length

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveforms ``(B, N)`` → log-mel in dB ``(B, n_mels, T)`` (float32)."""
        if wave.dim() != 2:
            raise ValueError(f"expected a batch of waveforms (B, N), got shape {tuple(wave.shape)}")
        if wave.shape[-1] <= self.n_fft // 2:
            raise ValueError(
                f"waveforms need more than n_fft/2 = {self.n_fft // 2} samples, got {wave.shape[-1]}"
            )
        with torch.autocast(device_type=wave.device.type, enabled=False):
            spec = torch.stft(
                wave.float(),
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                window=self.window,
                center=True,
                pad_mode="reflect",
                return_complex=True,
            )  # (B, n_fft/2 + 1, T)
            power = spec.real.square() + spec.imag.square()
            mel = torch.matmul(self.mel_bank, power)  # (B, n_mels, T)
            return 10.0 * torch.log10(torch.clamp(mel, min=self.amin))

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, hop_length={self.hop_length}, "
            f"n_mels={self.n_mels}"
        )
