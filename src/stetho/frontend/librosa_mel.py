"""The log-mel features of the DCASE autoencoder baseline, without a librosa dependency.

Re-implements (in numpy, float64) what the baseline computes with
``librosa.feature.melspectrogram(y, sr, n_fft=1024, hop_length=512, n_mels=128, power=2.0)``
followed by ``10 · log10(max(mel, float eps))`` and the 5-frame context vectors
(dcase-protocol.md §3.1):

* centred frames: the signal is padded by ``n_fft // 2`` on both sides. librosa ≥ 0.10 (the
  unpinned dependency of the 2023+ PyTorch baseline) pads with **zeros** (``pad_mode="constant"``,
  the default of ``melspectrogram``/``stft`` since 0.10); librosa ≤ 0.9 used ``"reflect"``.
  Both are available; ``"constant"`` is the default here. ``T = 1 + N // hop_length``.
* periodic Hann window of length ``n_fft``, one-sided FFT, ``|X|^power``;
* Slaney mel filters (linear below 1 kHz, logarithmic above), ``norm="slaney"`` (each triangle
  scaled by ``2 / (f_{i+2} − f_i)``), 128 bins from ``fmin`` to ``fmax`` (default Nyquist): the
  float64 bank of :func:`stetho.frontend.mel.slaney_mel_bank` as a numpy array;
* log: ``(20 / power) · log10(max(mel, sys.float_info.epsilon))``;
* context vectors: ``frames`` consecutive log-mel frames concatenated **frame-major** (dims
  ``[n_mels·t, n_mels·(t+1))`` hold frame ``t``), hop 1 → ``T − frames + 1`` vectors of
  ``n_mels · frames`` dims (a 10 s 16 kHz clip: T = 313 → 309 vectors of 640).

librosa computes in float32; this module computes in float64 (differences are rounding-level).

Example:
    >>> y = np.zeros(16000, dtype=np.float32)
    >>> baseline_vectors(y, 16000).shape     # 1 s: T = 32 frames → 28 vectors
    (28, 640)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from stetho.frontend.mel import hz_to_mel_slaney, mel_to_hz_slaney, slaney_mel_bank
from stetho.utils.config import ConfigBase

__all__ = [
    "EPS",
    "BaselineFeatureConfig",
    "baseline_vectors",
    "context_vectors",
    "hann_window",
    "hz_to_mel",
    "log_mel_spectrogram",
    "mel_filters",
    "mel_to_hz",
    "melspectrogram",
    "power_spectrogram",
]

EPS = sys.float_info.epsilon  # log floor of the baseline (2.220446049250313e-16)

PadMode = Literal["constant", "reflect"]


@dataclass
class BaselineFeatureConfig(ConfigBase):
    """Feature parameters of the DCASE AE baseline (protocol §3.1).

    Attributes:
        n_mels: Mel bins.
        frames: Consecutive frames per context vector.
        n_fft: FFT size = window length.
        hop_length: STFT hop in samples.
        power: Exponent of the magnitude spectrum (2 = power).
        fmin: Lowest mel edge in Hz.
        fmax: Highest mel edge in Hz (None: Nyquist).
        pad_mode: Centre padding: ``"constant"`` (zeros; librosa ≥ 0.10) or ``"reflect"``.
    """

    n_mels: int = 128
    frames: int = 5
    n_fft: int = 1024
    hop_length: int = 512
    power: float = 2.0
    fmin: float = 0.0
    fmax: float | None = None
    pad_mode: PadMode = "constant"

    def __post_init__(self) -> None:
        if min(self.n_mels, self.frames, self.n_fft, self.hop_length) < 1:
            raise ValueError(
                "n_mels, frames, n_fft and hop_length must be >= 1, got "
                f"{self.n_mels}, {self.frames}, {self.n_fft}, {self.hop_length}"
            )
        if self.power <= 0:
            raise ValueError(f"power must be > 0, got {self.power}")

    @property
    def dim(self) -> int:
        """Context-vector size ``n_mels · frames``."""
        return self.n_mels * self.frames


def hz_to_mel(freq: np.ndarray | float) -> np.ndarray:
    """Slaney mel scale (librosa ``htk=False``), numpy float64: :func:`~stetho.frontend.mel.hz_to_mel_slaney`."""
    return hz_to_mel_slaney(torch.as_tensor(freq, dtype=torch.float64, device="cpu")).numpy()


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`, numpy float64."""
    return mel_to_hz_slaney(torch.as_tensor(mel, dtype=torch.float64, device="cpu")).numpy()


def mel_filters(
    sr: float, n_fft: int, n_mels: int = 128, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Slaney-normalised triangular mel filters (librosa ``filters.mel`` defaults), numpy float64.

    See :func:`stetho.frontend.mel.slaney_mel_bank` (same filters, computed in float64).

    Returns:
        ``(n_mels, n_fft // 2 + 1)`` float64.

    Raises:
        ValueError: band edges outside ``0 <= fmin < fmax <= sr / 2``.
    """
    nyquist = sr / 2.0
    if not 0.0 <= fmin < (nyquist if fmax is None else fmax) <= nyquist:
        raise ValueError(
            f"mel band edges must satisfy 0 <= fmin < fmax <= sr/2 = {nyquist} Hz, "
            f"got fmin={fmin}, fmax={fmax}"
        )
    bank = slaney_mel_bank(n_mels, n_fft, sr, fmin, fmax, dtype=torch.float64)
    return bank.cpu().numpy() + 0.0  # (n_mels, K); + 0.0 turns -0.0 into 0.0


def hann_window(n: int) -> np.ndarray:
    """Periodic Hann window ``0.5 − 0.5·cos(2πk/n)``, ``k = 0..n−1`` (scipy ``fftbins=True``)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def power_spectrogram(
    y: np.ndarray,
    n_fft: int = 1024,
    hop_length: int = 512,
    power: float = 2.0,
    *,
    center: bool = True,
    pad_mode: PadMode = "constant",
) -> np.ndarray:
    """``|STFT(y)|^power`` with a periodic Hann window.

    Args:
        y: Mono waveform ``(N,)``.
        n_fft: FFT size = window length.
        hop_length: Hop in samples.
        power: Magnitude exponent.
        center: Pad ``n_fft // 2`` samples on both sides so that frame ``t`` is centred at
            ``y[t · hop_length]``.
        pad_mode: ``"constant"`` (zeros, librosa ≥ 0.10) or ``"reflect"`` (librosa ≤ 0.9).

    Returns:
        ``(n_fft // 2 + 1, T)`` float64; ``T = 1 + N // hop_length`` when centred.

    Raises:
        ValueError: not a 1-D signal, unknown pad mode, or too short.
    """
    x = np.asarray(y, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected a mono waveform (N,), got shape {x.shape}")
    if center:
        if pad_mode not in ("constant", "reflect"):
            raise ValueError(f"pad_mode must be 'constant' or 'reflect', got {pad_mode!r}")
        if pad_mode == "reflect" and x.size <= n_fft // 2:
            raise ValueError(
                f"reflect padding needs more than n_fft/2 = {n_fft // 2} samples, got {x.size}"
            )
        x = np.pad(x, n_fft // 2, mode=pad_mode)
    if x.size < n_fft:
        raise ValueError(f"signal of {x.size} samples is shorter than n_fft = {n_fft}")
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop_length]  # (T, n_fft)
    spec = np.fft.rfft(frames * hann_window(n_fft), axis=-1)  # (T, K) complex128
    mag2 = spec.real**2 + spec.imag**2
    out = mag2 if power == 2.0 else mag2 ** (power / 2.0)
    return np.ascontiguousarray(out.T)  # (K, T)


def melspectrogram(
    y: np.ndarray,
    sr: int,
    n_fft: int = 1024,
    hop_length: int = 512,
    n_mels: int = 128,
    power: float = 2.0,
    fmin: float = 0.0,
    fmax: float | None = None,
    *,
    pad_mode: PadMode = "constant",
) -> np.ndarray:
    """Mel spectrogram ``(n_mels, T)`` float64, as ``librosa.feature.melspectrogram`` (centred)."""
    spec = power_spectrogram(y, n_fft, hop_length, power, center=True, pad_mode=pad_mode)
    return mel_filters(sr, n_fft, n_mels, fmin, fmax) @ spec  # (n_mels, T)


def log_mel_spectrogram(
    y: np.ndarray, sr: int, cfg: BaselineFeatureConfig | None = None
) -> np.ndarray:
    """Baseline log-mel energies ``(20 / power) · log10(max(mel, EPS))``: ``(n_mels, T)`` float64."""
    cfg = cfg or BaselineFeatureConfig()
    mel = melspectrogram(
        y,
        sr,
        cfg.n_fft,
        cfg.hop_length,
        cfg.n_mels,
        cfg.power,
        cfg.fmin,
        cfg.fmax,
        pad_mode=cfg.pad_mode,
    )
    return (20.0 / cfg.power) * np.log10(np.maximum(mel, EPS))


def context_vectors(log_mel: np.ndarray, frames: int = 5, hop: int = 1) -> np.ndarray:
    """Concatenate ``frames`` consecutive frames, frame-major.

    Args:
        log_mel: ``(n_mels, T)``.
        frames: Frames per vector.
        hop: Frame hop between vectors (baseline: 1).

    Returns:
        ``(V, n_mels · frames)`` with ``V = (T − frames) // hop + 1`` (0 rows when ``T < frames``);
        ``out[v, n_mels·t + f] = log_mel[f, v·hop + t]``.
    """
    if log_mel.ndim != 2:
        raise ValueError(f"expected a (n_mels, T) spectrogram, got shape {log_mel.shape}")
    if frames < 1 or hop < 1:
        raise ValueError(f"frames and hop must be >= 1, got {frames}, {hop}")
    n_mels, t = log_mel.shape
    if t < frames:
        return np.empty((0, n_mels * frames), dtype=log_mel.dtype)
    win = np.lib.stride_tricks.sliding_window_view(log_mel, frames, axis=1)  # (M, T-F+1, F)
    win = win[:, ::hop]  # (M, V, F)
    return np.ascontiguousarray(win.transpose(1, 2, 0).reshape(win.shape[1], frames * n_mels))


def baseline_vectors(
    y: np.ndarray, sr: int, cfg: BaselineFeatureConfig | None = None
) -> np.ndarray:
    """Waveform ``(N,)`` → baseline context vectors ``(T − frames + 1, n_mels · frames)`` float32."""
    cfg = cfg or BaselineFeatureConfig()
    lm = log_mel_spectrogram(y, sr, cfg)  # (n_mels, T)
    return context_vectors(lm, cfg.frames).astype(np.float32)
