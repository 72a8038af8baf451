"""The ``Scorer`` protocol: what serving needs from anything that scores machine sounds.

The k-NN :class:`~stetho.detector.Detector` and the autoencoder baseline both implement it, so
``stetho detect``, ``watch`` and ``serve`` work with either. :func:`load_scorer` opens any saved
scorer folder by the ``format`` in its ``config.json``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from stetho.data import Clip
from stetho.data.names import Key
from stetho.detector.artifact import DetectorError, read_json

__all__ = ["Key", "Scorer", "load_scorer"]


@runtime_checkable
class Scorer(Protocol):
    """Anything that turns audio of a known machine/section into anomaly scores.

    Scores are floats, higher = more anomalous; ``decide`` compares them with the per-key
    threshold (``score > threshold`` is anomalous).
    """

    thresholds: dict[Key, float]

    @property
    def keys(self) -> list[Key]:
        """(machine, section) pairs the scorer has a model for."""
        ...

    @property
    def sample_rate(self) -> int:
        """Rate (Hz) the model expects; inputs at other rates are resampled."""
        ...

    def window_seconds(self) -> float | None:
        """Default scoring window for streams (``None``: the scorer has no preference)."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary (keys, thresholds, model name, rate) for APIs and logs."""
        ...

    def score_waveforms(
        self,
        waves: np.ndarray | Sequence[np.ndarray],
        machine: str,
        section: str,
        sample_rate: int | None = None,
    ) -> np.ndarray:
        """Anomaly scores (B,) of waveforms of one machine/section."""
        ...

    def score_files(
        self,
        paths: Sequence[str | os.PathLike[str]],
        machine: str,
        section: str,
        *,
        progress: bool = False,
    ) -> np.ndarray:
        """Anomaly scores (M,) of audio files of one machine/section."""
        ...

    def score_clips(
        self, clips: Iterable[Clip], *, progress: bool = False
    ) -> dict[Key, dict[str, float]]:
        """Scores grouped as ``{(machine, section): {file name: score}}``."""
        ...

    def decide(self, scores: np.ndarray | Sequence[float], key: Key | str) -> np.ndarray:
        """Decisions (M,) int, 1 = anomalous."""
        ...

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the scorer folder atomically; :func:`load_scorer` reads it back."""
        ...


def load_scorer(directory: str | os.PathLike[str], **kwargs: Any) -> Scorer:
    """Open a saved scorer folder of any known format (detector or autoencoder baseline).

    Args:
        directory: The folder written by ``save``.
        **kwargs: Passed to the format's ``load`` (e.g. ``device``, ``checkpoint``,
            ``trust_checkpoint``; the latter two only apply to k-NN detectors).

    Raises:
        DetectorError: not a scorer folder, or an unknown format.
    """
    src = Path(directory)
    cfg_path = src / "config.json"
    if not cfg_path.is_file():
        raise DetectorError(f"{src} is not a detector folder (no config.json)")
    doc = read_json(cfg_path)
    fmt = doc.get("format") if isinstance(doc, dict) else None
    from stetho.detector.detector import DETECTOR_FORMAT, Detector

    if fmt == DETECTOR_FORMAT:
        return Detector.load(src, **kwargs)
    from stetho.detector.ensemble import ENSEMBLE_FORMAT, EnsembleDetector

    if fmt == ENSEMBLE_FORMAT:
        # members read their checkpoints with weights_only, always: nothing to grant
        kwargs.pop("trust_checkpoint", None)
        return EnsembleDetector.load(src, **kwargs)
    from stetho.baselines.autoencoder import FORMAT as AE_FORMAT
    from stetho.baselines.autoencoder import AEBaseline

    if fmt == AE_FORMAT:
        kwargs.pop("checkpoint", None)
        kwargs.pop("trust_checkpoint", None)
        return AEBaseline.load(src, **kwargs)
    raise DetectorError(
        f"{cfg_path}: unknown scorer format {fmt!r} (known: {DETECTOR_FORMAT!r}, "
        f"{ENSEMBLE_FORMAT!r}, {AE_FORMAT!r})"
    )
