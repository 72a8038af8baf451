"""Cheap, weight-free *views* of a clip for the few-shot detector: frame-wise tokens from one STFT.

Every view starts from the same power STFT as :mod:`stetho.frontend.logmel` (periodic Hann,
centred, reflect padding) and returns tokens ``(B, L, D)`` whose per-dimension statistics over
``L`` (mean, std, max) are the clip's feature vector (see :mod:`stetho.backbones.logmel_stats`):

* ``logmel``: ``10 · log10(mel power + 1e-10)`` per frame, on the Slaney or the HTK mel scale
  (:func:`mel_bank`). With 128 bands at 16 kHz the two differ little: HTK
  (``2595 · log10(1 + f/700)``, unnormalised triangles) has finer bands at the bottom (15 vs 10
  centres below 250 Hz) and slightly coarser ones above 1.5 kHz; a per-band gain (the
  triangles' normalisation) is removed by per-dimension standardisation anyway.
* ``cepstrum``: the first ``n_ceps`` coefficients of the orthonormal DCT-II of the log-mel frame
  (MFCC-like): a decorrelated, smoothed spectral envelope.
* ``shape``: spectral centroid, bandwidth (kHz), roll-off at 85 % of the magnitude (kHz),
  flatness (dB) and the spectral contrast of 7 octave bands (dB, peak minus valley quantile).
* ``modulation``: temporal modulation spectrum: the log-mel bands merged into ``mod_bands``
  groups, each group's dB envelope (mean removed, Hann-tapered) in windows of ``mod_window``
  frames (hop half a window) Fourier-transformed over time; its power (dB) in octave modulation
  bands from 0.5 Hz to the frame-rate Nyquist. One token per window.

Not in the paper: the paper uses one log-mel front-end; these views are stetho's few-shot
extension (issue #23). All arithmetic is float32 in torch, batched.

Example:
    >>> view_tokens(torch.zeros(1, 16000), "cepstrum").shape   # 1 s at 16 kHz  # doctest: +SKIP
    torch.Size([1, 32, 20])
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import torch

from stetho.frontend.mel import (
    centred_stft,
    hz_to_mel_slaney,
    mel_to_hz_slaney,
    triangular_mel_bank,
)

__all__ = [
    "VIEWS",
    "dct_matrix",
    "hz_to_mel_htk",
    "mel_bank",
    "mel_to_hz_htk",
    "modulation_tokens",
    "shape_tokens",
    "view_dim",
]

View = Literal["logmel", "cepstrum", "shape", "modulation"]
#: Known views.
VIEWS: tuple[str, ...] = ("logmel", "cepstrum", "shape", "modulation")

#: Octave edges (Hz) of the spectral-contrast bands (the first band is everything below 200 Hz).
CONTRAST_EDGES = (0.0, 200.0, 400.0, 800.0, 1600.0, 3200.0, 6400.0)
#: Fraction of a band's bins averaged for its peak and its valley (spectral contrast).
CONTRAST_QUANTILE = 0.02
#: Octave modulation bands (Hz): [0.5, 1), [1, 2), [2, 4), [4, 8), [8, Nyquist].
MOD_EDGES = (0.5, 1.0, 2.0, 4.0, 8.0)


def hz_to_mel_htk(freq: torch.Tensor | float) -> torch.Tensor:
    """Hz → HTK mel ``2595 · log10(1 + f / 700)`` in float64."""
    f = torch.as_tensor(freq, dtype=torch.float64)
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_to_hz_htk(mel: torch.Tensor | float) -> torch.Tensor:
    """HTK mel → Hz (inverse of :func:`hz_to_mel_htk`) in float64."""
    m = torch.as_tensor(mel, dtype=torch.float64)
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_bank(
    n_mels: int,
    n_fft: int,
    sample_rate: float,
    f_min: float = 0.0,
    f_max: float | None = None,
    scale: Literal["slaney", "htk"] = "htk",
    normalise: bool = False,
) -> torch.Tensor:
    """Triangular mel filters ``(n_mels, n_fft // 2 + 1)`` float32, evaluated in Hz.

    ``n_mels + 2`` edges equally spaced on the mel ``scale`` between ``f_min`` and ``f_max``;
    filter ``m`` rises from edge ``m`` to ``m + 1`` and falls to 0 at ``m + 2`` (librosa's
    construction). ``normalise`` scales each to unit area in Hz (librosa ``norm="slaney"``);
    unnormalised triangles peak at 1 (librosa ``norm=None``).

    Raises:
        ValueError: band edges outside ``0 <= f_min < f_max <= sr/2`` or an unknown scale.
    """
    if scale not in ("slaney", "htk"):
        raise ValueError(f"unknown mel scale {scale!r}; use 'slaney' or 'htk'")
    to_mel, to_hz = (
        (hz_to_mel_htk, mel_to_hz_htk) if scale == "htk" else (hz_to_mel_slaney, mel_to_hz_slaney)
    )
    bank = triangular_mel_bank(n_mels, n_fft, sample_rate, f_min, f_max, to_mel, to_hz, normalise)
    return bank.to(torch.float32)


def dct_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Orthonormal DCT-II basis ``(n_out, n_in)`` float32 (``scipy.fft.dct(norm="ortho")`` rows)."""
    k = torch.arange(n_out, dtype=torch.float64)[:, None]
    n = torch.arange(n_in, dtype=torch.float64)[None, :]
    basis = torch.cos(math.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    basis[0] /= math.sqrt(2.0)
    return basis.to(torch.float32)


def power_stft(wave: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """Power spectrogram ``(B, n_fft // 2 + 1, T)`` float32 of waveforms ``(B, N)``."""
    window = torch.hann_window(n_fft, periodic=True, device=wave.device)
    spec = centred_stft(wave.float(), window, n_fft, hop_length)
    return spec.real.square() + spec.imag.square()


def shape_tokens(power: torch.Tensor, sample_rate: float) -> torch.Tensor:
    """Spectral-shape tokens ``(B, T, 11)`` of a power spectrogram ``(B, K, T)``.

    Columns: centroid, bandwidth, roll-off (kHz, from the magnitude spectrum as librosa does),
    flatness (dB, of the power spectrum) and 7 octave-band contrasts (dB).
    """
    k = power.shape[1]
    freq = torch.linspace(0.0, sample_rate / 2, k, device=power.device)[None, :, None] / 1000.0
    mag = power.clamp_min(0).sqrt()
    total = mag.sum(1, keepdim=True).clamp_min(1e-10)
    centroid = (freq * mag).sum(1, keepdim=True) / total  # (B, 1, T)
    bandwidth = (((freq - centroid) ** 2 * mag).sum(1, keepdim=True) / total).sqrt()
    cum = mag.cumsum(1) / total
    roll_idx = (cum < 0.85).sum(1, keepdim=True).clamp_max(k - 1)
    rolloff = freq.expand_as(mag).gather(1, roll_idx)
    p = power.clamp_min(1e-10)
    flatness = 10.0 * (p.log().mean(1, keepdim=True) - p.mean(1, keepdim=True).log()) / math.log(10)
    cols = [centroid, bandwidth, rolloff, flatness]
    hz = torch.linspace(0.0, sample_rate / 2, k)
    edges = [e for e in CONTRAST_EDGES if e < sample_rate / 2] + [sample_rate / 2 + 1.0]
    for lo, hi in itertools.pairwise(edges):
        idx = torch.nonzero((hz >= lo) & (hz < hi)).flatten()
        band = power[:, idx.to(power.device)].clamp_min(1e-10).sort(dim=1).values  # (B, n, T)
        q = max(1, round(CONTRAST_QUANTILE * band.shape[1]))
        peak, valley = band[:, -q:].mean(1, keepdim=True), band[:, :q].mean(1, keepdim=True)
        cols.append(10.0 * torch.log10(peak / valley))
    return torch.cat(cols, dim=1).transpose(1, 2)


def modulation_tokens(
    logmel: torch.Tensor, frame_rate: float, bands: int = 16, window: int = 64
) -> torch.Tensor:
    """Temporal-modulation tokens ``(B, W, bands · 5)`` of log-mel frames ``(B, F, T)`` in dB.

    The ``F`` bands are merged into ``bands`` contiguous groups (mean dB); each group's envelope
    is cut into windows of ``window`` frames (hop ``window // 2``; one window of all frames when
    the clip is shorter), mean-removed, Hann-tapered and Fourier-transformed; the token of a
    window is its power in the octave modulation bands :data:`MOD_EDGES` (dB, mean per band).
    """
    b, _f, t = logmel.shape
    groups = torch.tensor_split(logmel, bands, dim=1)
    env = torch.stack([g.mean(1) for g in groups], dim=1)  # (B, bands, T)
    win = min(window, t)
    env = env.unfold(-1, win, max(1, win // 2))  # (B, bands, W, win)
    env = env - env.mean(-1, keepdim=True)
    env = env * torch.hann_window(win, periodic=False, device=env.device)
    spec = torch.fft.rfft(env, dim=-1)
    power = spec.real.square() + spec.imag.square()  # (B, bands, W, win // 2 + 1)
    mod_hz = torch.fft.rfftfreq(win, d=1.0 / frame_rate)
    edges = [*MOD_EDGES, frame_rate / 2 + 1e-6]
    cols = []
    for lo, hi in itertools.pairwise(edges):
        sel = (mod_hz >= lo) & (mod_hz < hi)
        if not bool(sel.any()):  # window too short to resolve this band: nearest bin
            sel = torch.zeros_like(sel)
            sel[int(torch.argmin((mod_hz - lo).abs()))] = True
        cols.append(power[..., sel.to(power.device)].mean(-1))  # (B, bands, W)
    out = 10.0 * torch.log10(torch.stack(cols, dim=-1).clamp_min(1e-10))  # (B, bands, W, 5)
    return out.permute(0, 2, 1, 3).reshape(b, out.shape[2], -1)


def view_dim(view: str, n_mels: int, n_ceps: int, mod_bands: int) -> int:
    """Token size of ``view``."""
    return {
        "logmel": n_mels,
        "cepstrum": n_ceps,
        "shape": 4 + len(CONTRAST_EDGES),
        "modulation": mod_bands * len(MOD_EDGES),
    }[view]
