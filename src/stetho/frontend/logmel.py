"""stetho's weight-free log-mel spectrogram in dB (Slaney mel scale), as a batched torch layer.

The front end of the ``logmel`` backbone (no parameters, no weights): power STFT (``n_fft`` 1024,
hop 512, periodic Hann window, centred with **reflect** padding), a Slaney-style mel bank (linear
below 1 kHz, logarithmic above, area-normalised triangles; 128 bins from 0 Hz to Nyquist), then
``10 · log10(max(mel, 1e-10))`` (a −100 dB floor), all in float32.

It is *not* the DCASE autoencoder baselines' feature, although the parameters are the same: the
baselines (librosa ≥ 0.10) pad with zeros and floor at ``float eps`` (−156.5 dB), in float64; that
feature is :mod:`stetho.frontend.librosa_mel`. The two agree away from the first and last frames
and from near-silent bins.

Example:
    >>> LogMel()(torch.zeros(1, 16000)).shape   # 1 s at 16 kHz
    torch.Size([1, 128, 32])
"""

from __future__ import annotations

import torch
from torch import nn

from stetho.frontend.mel import centred_stft, hz_to_mel_slaney, mel_to_hz_slaney, slaney_mel_bank

# The Slaney helpers live in :mod:`stetho.frontend.mel`; re-exported for existing importers.
__all__ = ["LogMel", "hz_to_mel_slaney", "mel_to_hz_slaney", "slaney_mel_bank"]


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
            spec = centred_stft(wave.float(), self.window, self.n_fft, self.hop_length)
            power = spec.real.square() + spec.imag.square()
            mel = torch.matmul(self.mel_bank, power)  # (B, n_mels, T)
            return 10.0 * torch.log10(torch.clamp(mel, min=self.amin))

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, hop_length={self.hop_length}, "
            f"n_mels={self.n_mels}"
        )
