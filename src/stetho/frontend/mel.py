"""Shared mel filter banks and the centred STFT of the spectrogram front-ends.

* Slaney mel scale and area-normalised Slaney filters (librosa ``filters.mel`` defaults), used by
  :mod:`~stetho.frontend.logmel`, :mod:`~stetho.frontend.whisper_mel` and
  :mod:`~stetho.frontend.librosa_mel`. Computed in float64 and cast.
* Kaldi-style triangular filters on the ``1127 ln(1 + f/700)`` scale, as ``torchaudio.compliance.
  kaldi`` builds them, used by :mod:`~stetho.frontend.kaldi` (BEATs) and
  :mod:`~stetho.frontend.efficientat_mel`. Computed in float32 in Kaldi's operation order, which is
  what makes both front-ends bit-exact (``backbones.md`` §4.2 step 8, §7.1 step 3).
* :func:`centred_stft`: the centred, reflect-padded complex STFT of the torch front-ends.

Every bank can be built under ``torch.device("meta")``: band edges are taken as Python floats
from CPU tensors, never read back from tensors on the current default device.

Example:
    >>> slaney_mel_bank(128, 1024, 16000).shape
    torch.Size([128, 513])
    >>> kaldi_mel_bank(128, 512, 16000.0, 20.0).shape
    torch.Size([128, 257])
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "centred_stft",
    "hz_to_mel_slaney",
    "kaldi_mel_bank",
    "kaldi_mel_scale",
    "mel_to_hz_slaney",
    "slaney_mel_bank",
    "triangular_mel_bank",
]

# Slaney's auditory-toolbox mel scale: linear below 1 kHz (3 mel per 200 Hz), logarithmic above
# (27 mel per factor 6.4 in frequency).
_F_SP = 200.0 / 3.0  # Hz per mel in the linear region
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # 15 mel at 1 kHz
_LOGSTEP = math.log(6.4) / 27.0


def _float64(x: torch.Tensor | float) -> torch.Tensor:
    # A tensor keeps its device (``as_tensor`` would move it to a ``torch.device`` context's).
    return (
        x.to(torch.float64) if isinstance(x, torch.Tensor) else torch.tensor(x, dtype=torch.float64)
    )


def hz_to_mel_slaney(freq: torch.Tensor | float) -> torch.Tensor:
    """Hz → Slaney mel (librosa ``htk=False``), in float64."""
    freq = _float64(freq)
    linear = freq / _F_SP
    log = _MIN_LOG_MEL + torch.log(torch.clamp(freq, min=_MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return torch.where(freq >= _MIN_LOG_HZ, log, linear)


def mel_to_hz_slaney(mel: torch.Tensor | float) -> torch.Tensor:
    """Slaney mel → Hz (inverse of :func:`hz_to_mel_slaney`), in float64."""
    mel = _float64(mel)
    linear = mel * _F_SP
    log = _MIN_LOG_HZ * torch.exp(_LOGSTEP * (torch.clamp(mel, min=_MIN_LOG_MEL) - _MIN_LOG_MEL))
    return torch.where(mel >= _MIN_LOG_MEL, log, linear)


def slaney_mel_bank(
    n_mels: int,
    n_fft: int,
    sample_rate: float,
    f_min: float = 0.0,
    f_max: float | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Area-normalised triangular mel filters on the Slaney scale (librosa ``norm="slaney"``).

    The ``n_mels + 2`` band edges are equally spaced in Slaney mel between ``f_min`` and ``f_max``;
    filter ``m`` rises linearly from edge ``m`` to edge ``m + 1``, falls to zero at edge ``m + 2``
    and is scaled by ``2 / (f_{m+2} - f_m)`` so that all filters have the same area in Hz. The FFT
    bins lie at ``linspace(0, sr/2, n_fft // 2 + 1)``. Computed in float64, cast to ``dtype``.

    Args:
        n_mels: Number of filters.
        n_fft: FFT size; the bank covers the ``n_fft // 2 + 1`` one-sided bins.
        sample_rate: Sample rate in Hz.
        f_min: Lower edge in Hz.
        f_max: Upper edge in Hz (default: Nyquist).
        dtype: Output dtype.

    Returns:
        ``(n_mels, n_fft // 2 + 1)``.

    Raises:
        ValueError: on band edges outside ``0 <= f_min < f_max <= sr/2``.
    """
    bank = triangular_mel_bank(
        n_mels, n_fft, sample_rate, f_min, f_max, hz_to_mel_slaney, mel_to_hz_slaney, True
    )
    return bank.to(dtype)


def triangular_mel_bank(
    n_mels: int,
    n_fft: int,
    sample_rate: float,
    f_min: float,
    f_max: float | None,
    to_mel: Callable[[torch.Tensor], torch.Tensor],
    to_hz: Callable[[torch.Tensor], torch.Tensor],
    normalise: bool,
) -> torch.Tensor:
    """Triangular filters ``(n_mels, n_fft // 2 + 1)`` float64 on any mel scale, built in Hz.

    ``n_mels + 2`` edges equally spaced on the scale (``to_mel`` / ``to_hz``) between ``f_min``
    and ``f_max``; filter ``m`` rises from edge ``m`` to ``m + 1`` and falls to 0 at ``m + 2``
    (librosa's construction); ``normalise`` scales each to unit area in Hz (``norm="slaney"``),
    otherwise they peak at 1. The one construction behind :func:`slaney_mel_bank` and the HTK
    bank of :func:`stetho.frontend.views.mel_bank`.

    Raises:
        ValueError: on band edges outside ``0 <= f_min < f_max <= sr/2``.
    """
    nyquist = sample_rate / 2
    f_max = nyquist if f_max is None else f_max
    if not 0.0 <= f_min < f_max <= nyquist:
        raise ValueError(
            f"mel band edges must satisfy 0 <= f_min < f_max <= sr/2 = {nyquist} Hz, "
            f"got f_min={f_min}, f_max={f_max}"
        )
    f64 = torch.float64
    mel_lo, mel_hi = to_mel(torch.tensor([f_min, f_max], dtype=f64, device="cpu")).tolist()
    fft_hz = torch.linspace(0.0, nyquist, n_fft // 2 + 1, dtype=f64)  # (K,)
    edges = to_hz(torch.linspace(mel_lo, mel_hi, n_mels + 2, dtype=f64))  # (M + 2,)
    width = edges.diff()  # (M + 1,)
    dist = edges[:, None] - fft_hz[None, :]  # (M + 2, K): edge minus bin frequency
    rising = -dist[:-2] / width[:-1, None]  # (M, K)
    falling = dist[2:] / width[1:, None]  # (M, K)
    bank = torch.clamp(torch.minimum(rising, falling), min=0.0)  # (M, K)
    if normalise:
        bank = bank * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return bank


def kaldi_mel_scale(freq: float) -> float:
    """Kaldi's mel scale ``1127 ln(1 + f / 700)`` of a frequency in Hz."""
    return 1127.0 * math.log(1.0 + freq / 700.0)


def kaldi_mel_bank(
    num_bins: int,
    n_fft: int,
    sample_rate: float,
    low_freq: float = 0.0,
    high_freq: float = 0.0,
) -> torch.Tensor:
    """Kaldi's triangular mel filters in float32, exactly as Kaldi and torchaudio build them.

    The triangles are equally spaced on the ``1127 ln(1 + f/700)`` scale and evaluated on that
    scale at the FFT bin frequencies ``k · sr / n_fft``, ``k = 0 .. n_fft/2 - 1``; the Nyquist bin
    gets a zero column. A filter whose triangle contains no FFT bin is all zeros (BEATs' 128-bin
    bank has one). All arithmetic is float32 in torchaudio's order: evaluating the bin mels in
    another order (or with ``log1p``) moves the log energies by up to 1.5e-4.

    Args:
        num_bins: Number of mel bins.
        n_fft: Padded FFT size (even, as Kaldi asserts).
        sample_rate: Sample rate in Hz.
        low_freq: Lower edge in Hz.
        high_freq: Upper edge in Hz; ``<= 0`` is an offset from Nyquist (0 → Nyquist).

    Returns:
        ``(num_bins, n_fft // 2 + 1)`` float32.

    Raises:
        ValueError: on an odd ``n_fft`` or band edges outside ``0 <= low < high <= sr/2``.
    """
    if n_fft <= 0 or n_fft % 2:
        raise ValueError(f"n_fft must be a positive even number, got {n_fft}")
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not 0.0 <= low_freq < high_freq <= nyquist:
        raise ValueError(
            f"mel band edges must satisfy 0 <= low_freq < high_freq <= {nyquist} Hz, "
            f"got low_freq={low_freq}, high_freq={high_freq}"
        )
    f32 = torch.float32
    mel_low = kaldi_mel_scale(low_freq)
    delta = (kaldi_mel_scale(high_freq) - mel_low) / (num_bins + 1)
    idx = torch.arange(num_bins, dtype=f32).unsqueeze(1)  # (M, 1)
    left = mel_low + idx * delta
    centre = mel_low + (idx + 1.0) * delta
    right = mel_low + (idx + 2.0) * delta
    bin_hz = (sample_rate / n_fft) * torch.arange(n_fft // 2, dtype=f32)  # (K,)
    mel = (1127.0 * (1.0 + bin_hz / 700.0).log()).unsqueeze(0)  # (1, K)
    up = (mel - left) / (centre - left)
    down = (right - mel) / (right - centre)
    bank = torch.clamp(torch.minimum(up, down), min=0.0)  # (M, K)
    return F.pad(bank, (0, 1))  # (M, K + 1): zero Nyquist column


def centred_stft(
    wave: torch.Tensor,
    window: torch.Tensor,
    n_fft: int,
    hop_length: int,
    win_length: int | None = None,
) -> torch.Tensor:
    """One-sided complex STFT of ``(B, N)`` waveforms, centred with reflect padding.

    ``window`` (``win_length`` samples, default ``n_fft``) is zero-padded centrally to ``n_fft``
    by ``torch.stft``. Each caller takes the power itself, the way its reference does (``re² + im²``
    and ``|X|²`` differ in the last bit).

    Returns:
        ``(B, n_fft // 2 + 1, 1 + N // hop_length)`` complex.
    """
    return torch.stft(
        wave,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=win_length,
        window=window,
        center=True,
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    )
