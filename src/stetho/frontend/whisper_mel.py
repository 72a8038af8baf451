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

import torch
from torch import nn

from stetho.frontend.mel import centred_stft, slaney_mel_bank

__all__ = ["WhisperLogMel"]

logger = logging.getLogger(__name__)


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
            "mel_fb", slaney_mel_bank(n_mels, n_fft, sample_rate), persistent=False
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
        # always float32, also under autocast (bf16 log-mels would be off by up to ~1e-2)
        with torch.autocast(device_type=x.device.type, enabled=False):
            spec = centred_stft(x, self.window, self.n_fft, self.hop_length)  # (B, F, N//hop + 1)
            # |X|² as OpenAI's audio.py computes it (re² + im² differs in the last bit); last
            # frame dropped.
            power = spec[..., :-1].abs() ** 2  # (B, F, T)
            mel = torch.matmul(self.mel_fb, power)  # (B, n_mels, T)
            log_mel = torch.log10(torch.clamp(mel, min=1e-10))
            peak = log_mel.amax(dim=(-2, -1), keepdim=True)  # (B, 1, 1): per-clip maximum
            log_mel = torch.maximum(log_mel, peak - 8.0)
            return (log_mel + 4.0) / 4.0
