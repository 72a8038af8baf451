"""Per-utterance waveform normalisation (Wav2Vec2's ``do_normalize``)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["WaveformNorm"]


class WaveformNorm(nn.Module):
    """Zero mean, unit variance per utterance: ``(x - mean) / sqrt(var + eps)``.

    The variance is the population variance (divide by N), as in Wav2Vec2's feature extractor.
    Statistics are computed in float32 (or the input's precision if higher).

    Args:
        eps: Added to the variance before the square root.
    """

    def __init__(self, eps: float = 1e-7) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveforms ``(B, N)`` (or any ``(..., N)``) → normalised waveforms of the same shape."""
        x = wave if wave.dtype == torch.float64 else wave.float()
        mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
        var = x.var(dim=-1, keepdim=True, unbiased=False)  # (..., 1)
        return (x - mean) / torch.sqrt(var + self.eps)
