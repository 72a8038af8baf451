"""Proxy tasks that also learn when the training clips form one class.

The paper's proxy task classifies normal clips by (machine, section, attributes) with ArcFace.
With one machine and no attributes there is one class, softmax over one logit is 1, and the
cross-entropy is exactly 0: nothing is learned. :func:`build_proxy_task` detects this (fewer than
two classes, or one class holding more than ``max_class_share`` of the clips), logs a warning and,
with ``train.proxy="auto"``, switches to a self-supervised objective (not in the paper):

* ``"transforms"``: every proxy class is split into the untouched clips plus one class per
  waveform transformation (speed, pitch, spectral tilt, time reversal) applied on the fly to the
  normal clips. Label of clip class ``b`` under variant ``v`` (0 = untouched) is ``b·V + v``.
* ``"outlier"``: outlier exposure; the clips of a folder of *other* sounds
  (``outlier_dir``) form one extra class, as many per epoch as there are training clips.

::

    task = build_proxy_task(train_clips, "auto", ProxyConfig())
    task.kind, len(task.class_map)        # ("transforms", 5) for one machine without attributes
    y = task.label(base_label=0, variant=2)

Transforms are deterministic (fixed parameters; the random crop is the only randomness, drawn by
the dataset from its per-sample generator). Each keeps the output length and the RMS of its input,
so loudness alone never gives the class away.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from stetho.model.labels import ClassMap, ClipLike, build_class_map, class_id
from stetho.utils.config import ConfigBase, ConfigError

__all__ = [
    "AUDIO_SUFFIXES",
    "OUTLIER_CLASS",
    "PROXY_KINDS",
    "TRANSFORMS",
    "ProxyConfig",
    "ProxyKind",
    "ProxyTask",
    "apply_transform",
    "build_proxy_task",
    "find_outlier_files",
    "source_length",
]

logger = logging.getLogger(__name__)

ProxyKind = Literal["auto", "attributes", "transforms", "outlier"]
#: Valid values of ``train.proxy``.
PROXY_KINDS: tuple[str, ...] = ("auto", "attributes", "transforms", "outlier")
#: Names of the waveform transformations of the ``"transforms"`` objective.
TRANSFORMS: tuple[str, ...] = (
    "speed_up",
    "speed_down",
    "pitch_up",
    "pitch_down",
    "tilt_up",
    "tilt_down",
    "reverse",
)
#: Class id of the outlier-exposure class.
OUTLIER_CLASS = "*outlier*"
#: File suffixes read from ``outlier_dir``.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
_IDENTITY = "none"
_TILT_REF_HZ = 1000.0  # tilt pivot: gain 0 dB at 1 kHz
_TILT_FLOOR_HZ = 50.0  # below this the tilt gain stays constant (no infinite gain at DC)


@dataclass
class ProxyConfig(ConfigBase):
    """Settings of the self-supervised proxy objectives (all not in the paper).

    Attributes:
        transforms: Transformations that become extra classes for ``"transforms"``; any of
            ``speed_up, speed_down`` (resampling: pitch and tempo together, like a machine running
            faster or slower), ``pitch_up, pitch_down`` (phase-vocoder pitch shift, tempo kept),
            ``tilt_up, tilt_down`` (spectral tilt around 1 kHz), ``reverse`` (time reversal).
        speed_factor: Speed ratio of ``speed_up`` (``speed_down`` uses its inverse).
        semitones: Pitch shift of ``pitch_up`` / ``pitch_down``.
        tilt_db_per_octave: Gain slope of ``tilt_up`` (``tilt_down`` uses its negative).
        outlier_dir: Folder of other sounds (searched recursively for .wav/.flac/.ogg) whose
            clips form the outlier class of ``"outlier"``.
        max_class_share: The attribute task is degenerate when one class holds more than this
            share of the training clips (or there is only one class).
    """

    transforms: list[str] = field(
        default_factory=lambda: ["speed_up", "speed_down", "tilt_up", "tilt_down"]
    )
    speed_factor: float = 1.06
    semitones: float = 1.0
    tilt_db_per_octave: float = 3.0
    outlier_dir: str | None = None
    max_class_share: float = 0.95

    def __post_init__(self) -> None:
        bad = [t for t in self.transforms if t not in TRANSFORMS]
        if bad:
            raise ConfigError(
                f"train.proxy_options.transforms: unknown {bad}; valid: {list(TRANSFORMS)}"
            )
        if len(set(self.transforms)) != len(self.transforms):
            raise ConfigError("train.proxy_options.transforms lists a transformation twice")
        if self.speed_factor <= 1.0:
            raise ConfigError(
                f"train.proxy_options.speed_factor must be > 1, got {self.speed_factor}"
            )
        if self.semitones <= 0 or self.tilt_db_per_octave <= 0:
            raise ConfigError("train.proxy_options.semitones / tilt_db_per_octave must be > 0")
        if not 0.5 <= self.max_class_share <= 1.0:
            raise ConfigError(
                f"train.proxy_options.max_class_share must be in [0.5, 1], got {self.max_class_share}"
            )


# -- waveform transformations -------------------------------------------------------------------
def _speed_ratio(name: str, cfg: ProxyConfig) -> float:
    """Source samples consumed per output sample (> 1 = faster / higher)."""
    if name == "speed_up":
        return cfg.speed_factor
    if name == "speed_down":
        return 1.0 / cfg.speed_factor
    return 1.0


def source_length(name: str, n: int, cfg: ProxyConfig) -> int:
    """Samples of input that transformation ``name`` needs to produce ``n`` samples."""
    if name not in TRANSFORMS and name != _IDENTITY:
        raise ValueError(f"unknown transformation {name!r}; valid: {list(TRANSFORMS)}")
    return max(1, round(n * _speed_ratio(name, cfg)))


def _resample(x: np.ndarray, n: int) -> np.ndarray:
    """Band-limited (FFT) resampling of ``x`` to exactly ``n`` samples."""
    if x.shape[0] == n:
        return x
    from scipy.signal import resample

    return np.asarray(resample(x.astype(np.float64), n), dtype=np.float64)


def _stretch(x: np.ndarray, n_out: int, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """Phase-vocoder time stretch of ``x`` to ``n_out`` samples (pitch kept)."""
    if n_out == x.shape[0]:
        return x
    if x.shape[0] < n_fft:  # too short for the vocoder: keep the pitch change only
        return np.resize(x, n_out)
    win = torch.hann_window(n_fft, dtype=torch.float64)
    spec = torch.stft(
        torch.from_numpy(x.astype(np.float64)), n_fft, hop, window=win, return_complex=True
    )  # (F, T)
    rate = x.shape[0] / n_out  # analysis frames advanced per synthesis frame
    steps = torch.arange(0, spec.shape[1] - 1, rate, dtype=torch.float64)
    idx = steps.floor().long()
    frac = (steps - idx).unsqueeze(0)  # (1, T')
    left, right = spec[:, idx], spec[:, idx + 1]
    mag = (1 - frac) * left.abs() + frac * right.abs()
    omega = torch.linspace(0, math.pi * hop, spec.shape[0], dtype=torch.float64).unsqueeze(1)
    dphi = right.angle() - left.angle() - omega
    dphi = dphi - 2 * math.pi * torch.round(dphi / (2 * math.pi)) + omega
    phase = torch.cat([spec[:, :1].angle(), dphi[:, :-1]], dim=1).cumsum(dim=1)
    out = torch.istft(torch.polar(mag, phase), n_fft, hop, window=win, length=n_out)
    return out.numpy()


def _tilt(x: np.ndarray, sample_rate: int, db_per_octave: float) -> np.ndarray:
    """Gain of ``db_per_octave · log2(f / 1 kHz)`` dB at frequency ``f`` (constant below 50 Hz)."""
    spec = np.fft.rfft(x.astype(np.float64))
    freqs = np.fft.rfftfreq(x.shape[0], d=1.0 / sample_rate)
    octaves = np.log2(np.maximum(freqs, _TILT_FLOOR_HZ) / _TILT_REF_HZ)
    return np.fft.irfft(spec * 10.0 ** (db_per_octave * octaves / 20.0), n=x.shape[0])


def apply_transform(
    name: str, wave: np.ndarray, n: int, sample_rate: int, cfg: ProxyConfig
) -> np.ndarray:
    """Apply transformation ``name`` to ``wave`` (``source_length(name, n)`` samples) → ``(n,)``.

    ``"none"`` returns the input. The output has the RMS of the input (float32).

    Raises:
        ValueError: unknown transformation or wrong input length.
    """
    need = source_length(name, n, cfg)
    if wave.ndim != 1 or wave.shape[0] != need:
        raise ValueError(f"{name}: expected a ({need},) waveform for {n} samples, got {wave.shape}")
    x = wave.astype(np.float64)
    if name == _IDENTITY:
        y = x
    elif name in ("speed_up", "speed_down"):
        y = _resample(x, n)
    elif name in ("pitch_up", "pitch_down"):
        ratio = 2.0 ** ((1 if name == "pitch_up" else -1) * cfg.semitones / 12.0)
        y = _resample(_stretch(x, max(1, round(n * ratio))), n)  # longer, then sped up: pitch ×r
    elif name in ("tilt_up", "tilt_down"):
        slope = cfg.tilt_db_per_octave if name == "tilt_up" else -cfg.tilt_db_per_octave
        y = _tilt(x, sample_rate, slope)
    else:  # reverse
        y = x[::-1]
    rms_in = math.sqrt(float(np.mean(x * x)))
    rms_out = math.sqrt(float(np.mean(y * y)))
    if rms_out > 0.0:
        y = y * (rms_in / rms_out)
    return np.ascontiguousarray(y, dtype=np.float32)


# -- the task --------------------------------------------------------------------------------
def find_outlier_files(folder: str | Path) -> list[Path]:
    """Audio files under ``folder`` (recursive, sorted).

    Raises:
        FileNotFoundError: the folder does not exist or holds no audio files.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"train.proxy_options.outlier_dir {str(root)!r} is not a folder; point it to a "
            "folder of other sounds (other machines, background recordings)"
        )
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise FileNotFoundError(
            f"train.proxy_options.outlier_dir {str(root)!r} holds no {'/'.join(AUDIO_SUFFIXES)} files"
        )
    return files


@dataclass
class ProxyTask:
    """The resolved proxy task: classes, variants per clip and outlier files.

    Attributes:
        kind: ``"attributes"``, ``"transforms"`` or ``"outlier"``.
        base: The paper's classes (machine/section/attributes) of the training clips.
        variants: ``["none", *transforms]`` (``["none"]`` without transformations).
        outliers: Files of the outlier class (empty unless ``kind == "outlier"``).
        config: The proxy settings.
        class_map: Proxy classes in label order: ``base × variants`` (then the outlier class).
    """

    kind: str
    base: ClassMap
    variants: list[str]
    outliers: list[Path] = field(default_factory=list)
    config: ProxyConfig = field(default_factory=ProxyConfig)
    class_map: ClassMap = field(init=False)

    def __post_init__(self) -> None:
        if not self.variants or self.variants[0] != _IDENTITY:
            raise ValueError(f"variants must start with {_IDENTITY!r}, got {self.variants}")
        names = [
            b if v == _IDENTITY else f"{b}+{v}" for b in self.base.classes for v in self.variants
        ]
        if self.outliers:
            names.append(OUTLIER_CLASS)
        self.class_map = ClassMap(classes=names)

    @property
    def outlier_label(self) -> int | None:
        """Label of the outlier class (``None`` without outliers)."""
        return len(self.base) * len(self.variants) if self.outliers else None

    def label(self, base_label: int, variant: int) -> int:
        """Label of a clip of class ``base_label`` under variant ``variant`` (0 = untouched)."""
        return base_label * len(self.variants) + variant

    def num_samples(self, n_clips: int) -> int:
        """Samples per epoch: every clip under every variant, plus ``n_clips`` outlier samples."""
        return n_clips * len(self.variants) + (n_clips if self.outliers else 0)

    def locate(self, index: int, n_clips: int) -> tuple[int, int] | None:
        """``(clip index, variant)`` of sample ``index``, or ``None`` for an outlier sample."""
        if index < n_clips * len(self.variants):
            return index % n_clips, index // n_clips
        if index < self.num_samples(n_clips):
            return None
        raise IndexError(f"sample {index} out of range ({self.num_samples(n_clips)} samples)")

    def outlier_file(self, seed: int, epoch: int, index: int) -> Path:
        """The outlier file of outlier sample ``index`` in ``epoch`` (seeded, process-free)."""
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index), 0x0071E5])
        return self.outliers[int(rng.integers(len(self.outliers)))]


def _degenerate(clips: Sequence[ClipLike], base: ClassMap, max_share: float) -> str | None:
    """Why the attribute task cannot train (``None`` if it can)."""
    counts = Counter(class_id(c) for c in clips)
    if len(base) < 2:
        return (
            f"the training clips form one proxy class ({base.classes[0]!r}, {len(clips)} clips): "
            "the ArcFace loss is exactly 0 and nothing would be learned"
        )
    top, n_top = counts.most_common(1)[0]
    share = n_top / len(clips)
    if share > max_share:
        return (
            f"one proxy class ({top!r}) holds {share:.1%} of the {len(clips)} training clips "
            f"(> {max_share:.0%}): the classification is nearly trivial"
        )
    return None


def build_proxy_task(
    clips: Sequence[ClipLike],
    kind: str = "auto",
    cfg: ProxyConfig | None = None,
    *,
    trains: bool = True,
) -> ProxyTask:
    """Resolve ``train.proxy`` for these training clips.

    Args:
        clips: Normal training clips.
        kind: ``"auto"`` (the paper's attribute classes when they can train, else
            ``"transforms"``, or ``"outlier"`` when ``outlier_dir`` is set), ``"attributes"``,
            ``"transforms"`` or ``"outlier"``.
        cfg: Proxy settings.
        trains: Whether the task will be trained; ``False`` (``train.epochs=0``) logs the
            switch at INFO level instead of warning.

    Returns:
        The :class:`ProxyTask`; for ``"attributes"`` its class map is ``build_class_map(clips)``.

    Raises:
        ValueError: unknown kind; ``"attributes"`` with a single class; ``"transforms"`` without
            transformations.
        FileNotFoundError: ``"outlier"`` without a usable ``outlier_dir``.
    """
    cfg = cfg if cfg is not None else ProxyConfig()
    if kind not in PROXY_KINDS:
        raise ValueError(f"unknown train.proxy {kind!r}; valid: {list(PROXY_KINDS)}")
    clips = list(clips)
    base = build_class_map(clips)
    problem = _degenerate(clips, base, cfg.max_class_share)
    if kind == "auto":
        kind = "attributes" if problem is None else "outlier" if cfg.outlier_dir else "transforms"
        if problem is not None:
            logger.log(
                logging.WARNING if trains else logging.INFO,
                "%s; using the self-supervised proxy task train.proxy=%r instead (not in the "
                "paper). Set train.proxy to 'transforms' or 'outlier' (with "
                "train.proxy_options.outlier_dir) to choose it explicitly.",
                problem,
                kind,
            )
    elif kind == "attributes" and problem is not None:
        if len(base) < 2:
            raise ValueError(
                f"train.proxy='attributes' cannot train: {problem}. Use train.proxy='auto' or "
                "'transforms' (self-supervised), or import the clips with --attributes"
            )
        logger.warning("%s; training on it anyway because train.proxy='attributes'", problem)
    if kind == "attributes":
        return ProxyTask("attributes", base, [_IDENTITY], config=cfg)
    if kind == "transforms":
        if not cfg.transforms:
            raise ValueError("train.proxy='transforms' needs train.proxy_options.transforms")
        return ProxyTask("transforms", base, [_IDENTITY, *cfg.transforms], config=cfg)
    if cfg.outlier_dir is None:
        raise FileNotFoundError(
            "train.proxy='outlier' needs train.proxy_options.outlier_dir (a folder of other sounds)"
        )
    files = find_outlier_files(cfg.outlier_dir)
    own = {Path(p).resolve() for p in (getattr(c, "path", None) for c in clips) if p is not None}
    files = [f for f in files if f.resolve() not in own]
    if not files:
        raise FileNotFoundError(
            f"train.proxy_options.outlier_dir {cfg.outlier_dir!r} holds only training clips"
        )
    logger.info("outlier exposure: %d files from %s", len(files), cfg.outlier_dir)
    return ProxyTask("outlier", base, [_IDENTITY], outliers=files, config=cfg)
