"""The official DCASE autoencoder baseline as a detector kind (one contract with the others).

The model, its training and its saved format live in :mod:`stetho.baselines`; this class makes
it a :class:`~stetho.detector.base.BaseDetector`, so ``detect``, ``watch``, ``serve``,
``monitor``, ``explain``, ``report`` and ``calibrate`` treat it like every other kind:

* features are the waveforms themselves (the baseline cuts its own log-mel context vectors per
  section, at that section's rate);
* the score is the baseline's (``cfg.score_mode``: MSE or selective Mahalanobis);
* thresholds are the baseline's own gamma fit on its training scores (protocol §3.4), kept as the
  DCASE baseline defines them;
* calibration retrains the section's autoencoder on the new normal recordings (there is no
  memory bank to refit); it takes minutes, not seconds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from stetho.baselines.ae_model import FORMAT, FORMAT_VERSION, score_name
from stetho.baselines.ae_training import train_section
from stetho.baselines.autoencoder import AEBaseline
from stetho.data import Clip, load_audio
from stetho.data.names import Key
from stetho.detector.artifact import DetectorError
from stetho.detector.base import BaseDetector, CalibrationMode, _Held
from stetho.frontend.librosa_mel import baseline_vectors

__all__ = ["AutoencoderDetector"]


class AutoencoderDetector(BaseDetector):
    """A trained :class:`~stetho.baselines.AEBaseline` behind the detector contract.

    Args:
        model: The trained baseline (one autoencoder per machine/section).
    """

    kind: ClassVar[str] = "autoencoder"
    format: ClassVar[str] = FORMAT
    format_version: ClassVar[int] = FORMAT_VERSION

    def __init__(self, model: AEBaseline, **identity: Any) -> None:
        super().__init__(model.cfg.threshold, **identity)
        self.model = model
        self.thresholds = dict(model.thresholds)

    @property
    def sample_rate(self) -> int:
        """Rate (Hz) of the training clips."""
        return self.model.sample_rate

    @property
    def keys(self) -> list[Key]:
        """Sorted (machine, section) keys."""
        return self.model.keys

    def embed(self, waves: list[np.ndarray]) -> np.ndarray:
        """The waveforms, one object per clip (the baseline makes its vectors per section)."""
        out = np.empty(len(waves), dtype=object)
        for i, w in enumerate(waves):
            out[i] = np.asarray(w, dtype=np.float32)
            # too short for one context vector: refuse here, so the file gets named
            if baseline_vectors(out[i], self.sample_rate, self.model.cfg.features).shape[0] == 0:
                raise ValueError("too short for one context vector of the autoencoder baseline")
        return out

    def score_features(self, feats: np.ndarray, key: Key) -> np.ndarray:
        """The baseline's anomaly scores (MSE or selective Mahalanobis, ``cfg.score_mode``)."""
        if not len(feats):
            return np.zeros(0)
        return self.model.score(list(feats), key, sample_rate=self.sample_rate)

    def _fit_key(
        self, key: Key, clips: list[Clip], mode: CalibrationMode, progress: bool
    ) -> np.ndarray:
        if mode == "add":
            raise DetectorError(
                "the autoencoder baseline cannot add recordings to its model: calibrate with "
                "--mode replace (retrains the section's autoencoder on the new recordings)"
            )
        rate = self.model.sections[key].sample_rate if key in self.model.sections else None
        vecs, is_t = [], []
        for c in clips:
            wave, sr = load_audio(c.path, sr=rate)
            vecs.append(baseline_vectors(wave, sr, self.model.cfg.features))
            is_t.append(c.domain == "target")
        sec = train_section(vecs, is_t, int(rate or sr), self.model.cfg, f"{key[0]}/{key[1]}")
        self.model.sections[key] = sec
        waves = [load_audio(c.path, sr=self.sample_rate)[0] for c in clips]
        return self.score_features(self.embed(waves), key)

    def _set_threshold(self, key: Key, held: np.ndarray) -> None:
        # the baseline's own gamma threshold (protocol §3.4), fitted while training the section
        name = score_name(self.model.cfg.score_mode, self.model.cfg.faithful)
        self.thresholds[key] = float(self.model.sections[key].thresholds[name])
        method = self.model.cfg.threshold.method
        self.held_out[key] = _Held(np.asarray(held, dtype=np.float64), {"method": method})

    def _forget(self, key: Key) -> None:
        self.model.sections.pop(key, None)

    def _key_state(self, keys: list[Key]) -> Any:
        return {k: self.model.sections.get(k) for k in keys}

    def _set_key_state(self, state: Any) -> None:
        for k, sec in state.items():
            if sec is not None:
                self.model.sections[k] = sec

    def _describe_kind(self) -> dict[str, Any]:
        return {
            "score_mode": score_name(self.model.cfg.score_mode, self.model.cfg.faithful),
            "backbone": "log-mel context vectors (DCASE baseline)",
        }

    # -- persistence: the baseline's own folder layout ---------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the baseline folder with this detector's identity and thresholds."""
        self.model.thresholds = {k: v for k, v in self.thresholds.items() if np.isfinite(v)}
        extra = {
            "kind": self.kind,
            "id": self.detector_id,
            "version": self.version,
            "calibrations": self.calibrations,
            "held_out": {
                f"{m}/{s}": [float(v) for v in h.scores] for (m, s), h in self.held_out.items()
            },
        }
        return self.model.save(directory, extra=extra)

    def _write_parts(self, folder: Path) -> dict[str, Any]:  # pragma: no cover - save() above
        raise NotImplementedError

    @classmethod
    def load(  # type: ignore[override]
        cls, directory: str | os.PathLike[str], *, device: str | None = None
    ) -> AutoencoderDetector:
        """Open a baseline folder (hash-checked)."""
        det = super().load(directory, device=device)
        assert isinstance(det, AutoencoderDetector)
        return det

    @classmethod
    def _read_parts(
        cls, folder: Path, meta: dict[str, Any], options: dict[str, Any]
    ) -> AutoencoderDetector:
        det = cls(AEBaseline.load(folder, device=options.get("device")))
        for text, vals in dict(meta.get("held_out", {})).items():
            machine, _, section = str(text).rpartition("/")
            det.held_out[(machine, section)] = _Held(np.asarray(vals, dtype=np.float64))
        return det
