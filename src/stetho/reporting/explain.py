"""Why did a clip score high? Score over time, score over frequency, and the nearest normal clip.

::

    import stetho
    from stetho.reporting import explain_file, plot_explanation

    det = stetho.load_detector("runs/x/detector")     # any kind: few-shot, k-NN, autoencoder
    ex = explain_file(det, "fan/test/section_00_target_test_anomaly_0003.wav")
    ex.peak_seconds(), ex.peak_band_hz(), ex.nearest_name
    png = plot_explanation(ex)          # spectrogram with both curves, nearest normal beside it

* **Time**: the clip is cut into sliding windows (``window_seconds``, default 1 s, hop half a
  window). Each window is scored on its own by the detector (its models describe whole clips,
  so window scores compare windows with each other, not with the clip's score), and each window is also *made normal* (its STFT frames replaced as for the
  bands below) and the whole clip re-scored: the window whose replacement lowers the score most
  is the reported peak (on synthetic bursts it localises about 3× better than the highest window
  score; not in the paper).
* **Frequency**: the mel axis (Slaney scale, 0 Hz to Nyquist) is split into ``n_bands`` groups
  of equal mel width; for each group the clip's STFT bins in that group are replaced by the same
  bins of its nearest normal clip (or, when the detector has no bank clip — the autoencoder —
  or that clip cannot be read, by their own median magnitude over time), resynthesised and
  re-scored. Importance = score − replaced score:
  positive when making the band normal makes the clip look normal, i.e. the band carries what
  the detector objects to (occlusion with a normal infill; not in the paper). Zeroing a band
  instead would make every band look important to log-spectrum models.
* **Nearest normal**: the bank clip closest to the clip's features, as the detector's
  :meth:`~stetho.detector.BaseDetector.nearest` names it (its recording path; older folders know
  the bank only, and kinds without a bank — the autoencoder — have none: "no bank clip").

Everything goes through the detector contract (``embed_waveforms``, ``score_features``,
``score_waveforms``, ``nearest``, ``thresholds``), so it works for every kind and backbone.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stetho.data import load_audio
from stetho.data.names import place_file
from stetho.detector import BaseDetector
from stetho.frontend.librosa_mel import hz_to_mel, log_mel_spectrogram, mel_to_hz

__all__ = [
    "Explanation",
    "band_edges_hz",
    "band_replace",
    "explain_file",
    "explain_waveform",
    "replace_regions",
    "resolve_key",
]

logger = logging.getLogger(__name__)

_STFT_FFT = 1024  # band-stop STFT size at the detector's rate (hop a quarter of it)


@dataclass
class Explanation:
    """Where in time and frequency a clip is anomalous, and its nearest normal clip.

    Attributes:
        name: Clip name (file name, or what the caller passed).
        machine, section: The memory banks used.
        sample_rate: Rate of ``wave`` and of every analysis (the detector's).
        score: Anomaly score of the whole clip.
        threshold: Decision threshold of the machine/section (None when the detector has none).
        window_seconds, hop_seconds: Sliding-window length and hop.
        window_starts: (W,) window start times in seconds.
        window_scores: (W,) anomaly score of each window on its own.
        time_scores: (W,) clip score with each window made normal (all frequencies).
        band_edges: (G + 1,) band-group edges in Hz (equal width on the mel scale).
        band_scores: (G,) clip score with each band group replaced by normal content.
        band_fill: ``"nearest"`` (bands filled from the nearest normal clip) or ``"median"``
            (from the clip's own median spectrum).
        spectrogram: (n_mels, T) log-mel in dB of the clip (128 Slaney bands, hop 512).
        nearest_name: File name of the nearest normal bank clip (None when unknown).
        nearest_path: Its recorded path (None when unknown).
        nearest_domain, nearest_distance: The bank it is in and its distance (both None when
            the detector has no bank clip to compare with, e.g. the autoencoder baseline).
        nearest_spectrogram: Its log-mel in dB when the file could be read, else None.
        normalised: The clip's normalised score (1.0 = the threshold; None without one).
    """

    name: str
    machine: str
    section: str
    sample_rate: int
    score: float
    threshold: float | None
    window_seconds: float
    hop_seconds: float
    window_starts: np.ndarray
    window_scores: np.ndarray
    time_scores: np.ndarray
    band_edges: np.ndarray
    band_scores: np.ndarray
    spectrogram: np.ndarray
    duration: float
    band_fill: str = "nearest"
    nearest_name: str | None = None
    nearest_path: str | None = None
    nearest_domain: str | None = None
    nearest_distance: float | None = None
    nearest_spectrogram: np.ndarray | None = field(default=None, repr=False)
    normalised: float | None = None

    @property
    def band_importance(self) -> np.ndarray:
        """(G,) score − score with the band made normal; the largest is the most suspect band."""
        return self.score - self.band_scores

    @property
    def time_importance(self) -> np.ndarray:
        """(W,) score − score with the window made normal; the largest is the most suspect."""
        return self.score - self.time_scores

    @property
    def peak_window(self) -> int:
        """Index of the highest-scoring window."""
        return int(np.argmax(self.window_scores))

    @property
    def peak_occluded_window(self) -> int:
        """Index of the window whose normal infill lowers the clip score most."""
        return int(np.argmax(self.time_importance))

    @property
    def time_localised(self) -> bool:
        """Whether making some window normal lowers the score (else it spans the clip)."""
        return bool(self.time_importance.max() > 0)

    @property
    def band_localised(self) -> bool:
        """Whether making some band group normal lowers the score."""
        return bool(self.band_importance.max() > 0)

    @property
    def peak_band(self) -> int:
        """Index of the most important band group."""
        return int(np.argmax(self.band_importance))

    def peak_seconds(self) -> tuple[float, float]:
        """(start, end) in seconds of the most suspect window (largest :attr:`time_importance`;
        it localises better than the highest window score, see ``docs/reports.md``)."""
        start = float(self.window_starts[self.peak_occluded_window])
        return start, min(start + self.window_seconds, self.duration)

    def peak_band_hz(self) -> tuple[float, float]:
        """(low, high) Hz of the most important band group."""
        g = self.peak_band
        return float(self.band_edges[g]), float(self.band_edges[g + 1])

    def summary(self) -> str:
        """One paragraph for people: when, at which frequencies, compared with which clip."""
        t0, t1 = self.peak_seconds()
        f0, f1 = self.peak_band_hz()
        thr = "" if self.threshold is None else f" (threshold {self.threshold:.4g})"
        if self.normalised is not None:
            thr = f" = {self.normalised:.2f} normalised (1 = threshold {self.threshold:.4g})"
        if self.threshold is not None and not math.isfinite(self.threshold):
            thr = " (no threshold fitted: never called anomalous)"
        return (
            f"{self.name} [{self.machine}/{self.section}]: score {self.score:.4g}{thr}; "
            f"{self._time_text(t0, t1)} and {self._band_text(f0, f1)}; {self.nearest_text()}"
        )

    def _time_text(self, t0: float, t1: float) -> str:
        """Where in time, or that no single window stands out (the anomaly spans the clip)."""
        w0 = float(self.window_starts[self.peak_window])
        w1 = min(w0 + self.window_seconds, self.duration)
        highest = f"highest window score {self.window_scores.max():.4g} at {w0:.2f}-{w1:.2f} s"
        if self.time_localised:
            return (
                f"most anomalous {t0:.2f}-{t1:.2f} s (making it normal lowers the score by "
                f"{self.time_importance.max():.4g}; {highest})"
            )
        return (
            f"no single {self.window_seconds:g} s stretch stands out (making any one of them "
            f"normal does not lower the score: what is unusual spans the clip; {highest})"
        )

    def _band_text(self, f0: float, f1: float) -> str:
        """Which band, or that no single band stands out."""
        if self.band_localised:
            return (
                f"{f0:.0f}-{f1:.0f} Hz (making it normal lowers the score by "
                f"{self.band_importance.max():.4g})"
            )
        return "no single band stands out (making any one band normal does not lower the score)"

    def nearest_text(self) -> str:
        """The nearest normal clip in words (or why there is none)."""
        if self.nearest_domain is None:
            return (
                "no bank clip: this detector keeps no normal recordings to compare with, so "
                "bands and windows were made normal from the clip's own median spectrum"
            )
        dist = "" if self.nearest_distance is None else f", distance {self.nearest_distance:.4g}"
        if self.nearest_name:
            return f"nearest normal clip: {self.nearest_name} ({self.nearest_domain} bank{dist})"
        return (
            f"nearest normal: a clip of the {self.nearest_domain} bank{dist} (this detector "
            "does not record its clips' names)"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (no spectrograms)."""
        return {
            "name": self.name,
            "machine": self.machine,
            "section": self.section,
            "sample_rate": self.sample_rate,
            "score": self.score,
            "normalised": self.normalised,
            "threshold": self.threshold,
            "window_seconds": self.window_seconds,
            "hop_seconds": self.hop_seconds,
            "window_starts": self.window_starts.tolist(),
            "window_scores": self.window_scores.tolist(),
            "time_scores": self.time_scores.tolist(),
            "time_importance": self.time_importance.tolist(),
            "band_edges_hz": self.band_edges.tolist(),
            "band_scores": self.band_scores.tolist(),
            "band_importance": self.band_importance.tolist(),
            "band_fill": self.band_fill,
            "peak_seconds": list(self.peak_seconds()),
            "peak_band_hz": list(self.peak_band_hz()),
            "time_localised": self.time_localised,
            "band_localised": self.band_localised,
            "nearest": {
                "name": self.nearest_name,
                "path": self.nearest_path,
                "domain": self.nearest_domain,
                "distance": self.nearest_distance,
            },
        }


def band_edges_hz(sample_rate: int, n_bands: int) -> np.ndarray:
    """(n_bands + 1,) edges in Hz of ``n_bands`` groups of equal Slaney-mel width, 0 … Nyquist."""
    if n_bands < 1:
        raise ValueError(f"n_bands must be >= 1, got {n_bands}")
    top = float(hz_to_mel(sample_rate / 2.0))
    edges = np.asarray(mel_to_hz(np.linspace(0.0, top, n_bands + 1)), dtype=np.float64)
    edges[0], edges[-1] = 0.0, sample_rate / 2.0
    return edges


def replace_regions(
    wave: np.ndarray,
    sample_rate: int,
    regions: list[tuple[float, float, float, float]],
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """Copies of ``wave`` (N,) with one time-frequency region made normal each: (R, N) float32.

    STFT (Hann, 1024 / hop 256 at ``sample_rate``); the bins of region ``(t0, t1, f0, f1)``
    (frame centres in ``[t0, t1)`` s, frequencies in ``[f0, f1)`` Hz; an upper edge at or past
    the clip end / Nyquist includes it) are replaced by the same bins of ``reference`` (a normal
    clip, looped or cropped to the length of ``wave``) or, without a reference, by their own
    median magnitude over time (phase kept), which removes what is transient there; then the
    inverse STFT (overlap-add, so region edges are smooth) to the original length.
    """
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    n = x.shape[0]
    n_fft = min(_STFT_FFT, 1 << int(np.log2(max(16, n))))  # short clips: smaller FFT
    hop = n_fft // 4
    win = torch.hann_window(n_fft)

    def stft(y: torch.Tensor) -> torch.Tensor:
        return torch.stft(y, n_fft, hop, window=win, center=True, return_complex=True)  # (K, T)

    spec = stft(x)
    if reference is not None:
        ref = np.asarray(reference, dtype=np.float32)
        ref = np.tile(ref, -(-n // max(1, ref.size)))[:n]  # looped / cropped to N
        fill = stft(torch.as_tensor(ref))
    else:
        mag = spec.abs()
        fill = torch.polar(mag.median(dim=1, keepdim=True).values.expand_as(mag), spec.angle())
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)  # (K,)
    times = np.arange(spec.shape[1]) * hop / sample_rate  # (T,) frame centres
    nyq, end = sample_rate / 2.0, n / sample_rate
    out = []
    for t0, t1, f0, f1 in regions:
        in_f = (freqs >= f0) & ((freqs < f1) | (f1 >= nyq))
        in_t = (times >= t0) & ((times < t1) | (t1 >= end))
        sel = torch.as_tensor(in_f[:, None] & in_t[None, :])  # (K, T)
        mixed = torch.where(sel, fill, spec)
        out.append(torch.istft(mixed, n_fft, hop, window=win, center=True, length=n))
    return torch.stack(out).numpy().astype(np.float32)


def band_replace(
    wave: np.ndarray,
    sample_rate: int,
    bands: list[tuple[float, float]],
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """Copies (len(bands), N) of ``wave`` with one frequency band made normal each, over the
    whole clip (see :func:`replace_regions`)."""
    return replace_regions(
        wave, sample_rate, [(0.0, math.inf, lo, hi) for lo, hi in bands], reference
    )


def _windows(n: int, sr: int, window_seconds: float, hop_seconds: float) -> np.ndarray:
    """Start samples (W,) of windows covering ``n`` samples (the last one ends at ``n``)."""
    win = max(1, round(window_seconds * sr))
    hop = max(1, round(hop_seconds * sr))
    if n <= win:
        return np.zeros(1, dtype=np.int64)
    starts = list(range(0, n - win + 1, hop))
    if starts[-1] + win < n:
        starts.append(n - win)
    return np.asarray(starts, dtype=np.int64)


def _spectrogram(wave: np.ndarray, sr: int) -> np.ndarray:
    return log_mel_spectrogram(np.asarray(wave, dtype=np.float64), sr).astype(np.float32)


def explain_waveform(
    detector: BaseDetector,
    wave: np.ndarray,
    machine: str,
    section: str,
    sample_rate: int | None = None,
    *,
    name: str = "clip",
    window_seconds: float | None = None,
    hop_seconds: float | None = None,
    n_bands: int = 8,
    load_nearest: bool = True,
    reference: np.ndarray | None = None,
    max_windows: int = 64,
) -> Explanation:
    """Explain the anomaly score of one mono waveform (see the module docstring for the method).

    Args:
        detector: A fitted detector of any kind with a model of ``(machine, section)``.
        wave: Mono waveform (N,) in [-1, 1].
        machine, section: The model to score against.
        sample_rate: Rate of ``wave`` (resampled to the detector's); None = already at it.
        name: Name shown in figures.
        window_seconds: Sliding-window length (default: the detector's scoring window, else
            1 s; at most the clip).
        hop_seconds: Window hop (default: half a window).
        n_bands: Band groups of equal mel width.
        load_nearest: Read the nearest normal clip's audio (its spectrogram, and the band
            infill unless ``reference`` is given); False (or a detector without bank clips)
            fills bands from the clip's own median.
        reference: Normal waveform at the detector's rate to fill bands from, instead of the
            nearest normal clip.
        max_windows: Cap on the number of windows (the hop grows for long recordings). Cost:
            one short scoring per window plus one whole-clip scoring per window and per band.

    Raises:
        KeyError: The detector has no model of ``(machine, section)`` (a
            :class:`~stetho.utils.errors.NotFoundError`).
    """
    key = detector.require_key((machine, section))
    sr = detector.sample_rate
    x = np.asarray(wave, dtype=np.float32)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"expected a non-empty mono waveform (N,), got shape {x.shape}")
    if sample_rate is not None and int(sample_rate) != sr:
        import soxr

        x = np.asarray(soxr.resample(x, int(sample_rate), sr, quality="HQ"), dtype=np.float32)
    duration = x.shape[0] / sr
    win_s = window_seconds or detector.window_seconds() or 1.0
    win_s = min(float(win_s), duration)
    hop_s = float(hop_seconds) if hop_seconds else win_s / 2.0
    if max_windows and (duration - win_s) / hop_s + 1 > max_windows:  # long recordings
        hop_s = (duration - win_s) / (max_windows - 1)
        logger.info("%s: %.0f s long, window hop raised to %.2f s", name, duration, hop_s)
    starts = _windows(x.shape[0], sr, win_s, hop_s)
    w = max(1, round(win_s * sr))
    segments = np.stack([x[s : s + w] for s in starts])  # (W, w)
    feats = detector.embed_waveforms(x)  # rows = 1 clip (kind-specific features)
    score = float(detector.score_features(feats, key)[0])
    window_scores = detector.score_waveforms(segments, machine, section)  # (W,)
    near = detector.nearest(feats, key)[0]  # None: the kind has no bank clips
    ref_wave = None
    if near is not None and near.ref and load_nearest:
        try:
            ref_wave = load_audio(near.ref, sr=sr)[0]
        except Exception as err:  # a moved clip: name it, fill bands from the clip itself
            logger.warning("nearest normal clip %s not readable (%s)", near.ref, err)
    fill_with = reference if reference is not None else ref_wave
    edges = band_edges_hz(sr, n_bands)
    replaced = band_replace(x, sr, list(itertools.pairwise(edges)), fill_with)  # (G, N)
    band_scores = detector.score_waveforms(replaced, machine, section)  # (G,)
    regions = [(t / sr, t / sr + win_s, 0.0, math.inf) for t in starts.tolist()]
    made_normal = replace_regions(x, sr, regions, fill_with)  # (W, N)
    time_scores = detector.score_waveforms(made_normal, machine, section)  # (W,)
    return Explanation(
        name=name,
        machine=machine,
        section=section,
        sample_rate=sr,
        score=score,
        threshold=detector.thresholds.get(key),
        window_seconds=win_s,
        hop_seconds=hop_s,
        window_starts=starts / sr,
        window_scores=np.asarray(window_scores, dtype=np.float64),
        time_scores=np.asarray(time_scores, dtype=np.float64),
        band_edges=edges,
        band_scores=np.asarray(band_scores, dtype=np.float64),
        spectrogram=_spectrogram(x, sr),
        duration=duration,
        band_fill="median" if fill_with is None else "nearest",
        nearest_path=near.ref if near is not None else None,
        nearest_name=Path(near.ref).name if near is not None and near.ref else None,
        nearest_domain=near.domain if near is not None else None,
        nearest_distance=float(near.distance) if near is not None else None,
        nearest_spectrogram=None if ref_wave is None else _spectrogram(ref_wave, sr),
        normalised=_normalised(detector, score, key),
    )


def _normalised(detector: BaseDetector, score: float, key: tuple[str, str]) -> float | None:
    value = float(detector.normalise([score], key)[0])
    return value if math.isfinite(value) else None


def resolve_key(
    detector: BaseDetector,
    path: str | os.PathLike[str],
    machine: str | None = None,
    section: str | None = None,
) -> tuple[str, str]:
    """(machine, section) for a clip, by the rule every command uses
    (:func:`stetho.data.names.place_file`).

    Raises:
        PlacementError: not determinable, or the detector has no model of it (a ``ValueError``).
    """
    return place_file(path, detector.keys, machine, section)


def explain_file(
    detector: BaseDetector,
    path: str | os.PathLike[str],
    machine: str | None = None,
    section: str | None = None,
    **kwargs: Any,
) -> Explanation:
    """:func:`explain_waveform` of an audio file; machine/section as :func:`resolve_key`."""
    machine, section = resolve_key(detector, path, machine, section)
    wave, _ = load_audio(path, sr=detector.sample_rate)
    return explain_waveform(detector, wave, machine, section, name=Path(path).name, **kwargs)
