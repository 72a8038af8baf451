"""The official DCASE 2023–2025 autoencoder baseline ("DCASE2023T2-AE"), for comparison.

Our own implementation of dcase-protocol.md §3, trained and evaluated on the same data and
metrics as stetho's detectors:

* features (§3.1): baseline log-mel (:mod:`stetho.frontend.librosa_mel`), 5-frame context vectors
  (640 dims, frame-major, hop 1);
* model (§3.2): :class:`DenseAE` 640→128×4→8→128×4→640, every hidden layer (the 8-d bottleneck
  too) Linear + BatchNorm1d(momentum 0.01, eps 1e-3) + ReLU, linear output; MSE loss, Adam 1e-3,
  batch 256, 100 epochs, 10 % of the vectors held out for validation, seed 13711; one model per
  (machine, section), source and target train clips pooled;
* scores (§3.3): ``"mse"`` = mean squared reconstruction error over all vectors and dims of a
  clip; ``"mahala"`` = selective Mahalanobis distance ``min(D_s, D_t)`` of the per-frame 128-d
  residual blocks with covariances Σ_s, Σ_t of the source / target train residuals. With
  ``faithful=True`` D is, as in the baseline code, the mean over all block pairs ``rᵢᵀ Σ⁻¹ rⱼ``,
  which equals ``r̄ᵀ Σ⁻¹ r̄`` (r̄ = mean residual block of the clip); ``faithful=False`` uses the
  mean per-block distance ``mean_i rᵢᵀ Σ⁻¹ rᵢ``. The covariances are accumulated as in the
  baseline: blocks centred per mini-batch, outer products summed and divided by the number of
  *vectors* minus one (a uniform scale that does not change rankings); Σ_t = Σ_s without target
  vectors;
* decision threshold (§3.4): 3-parameter gamma fit, ``ppf(0.9)``, ``score > threshold``
  (:func:`stetho.scoring.threshold.fit_threshold`). ``threshold_samples="batches"`` fits, like
  the 2023 PyTorch baseline (v2.0.1+), per-mini-batch values (MSE: the last epoch's training batch
  losses in train mode + validation batch losses; Mahalanobis: per-batch selective distances over
  the train and validation vectors); ``"clips"`` fits per-clip scores of the training clips (the
  2022 Keras baseline's choice).

Known deviations: the validation split and shuffling use numpy/torch generators seeded with
``seed`` (not sklearn's ``train_test_split`` on the global numpy state), and features are
computed in float64 (librosa: float32), so numbers match the baseline statistically, not bit for
bit.

:class:`AEBaseline` implements :class:`stetho.detector.Scorer` (score mode
``cfg.score_mode``), so ``stetho detect``, ``watch`` and ``serve --detector DIR`` work with a saved
baseline; :func:`stetho.pipelines.run_ae_baseline` is the end-to-end run. Rooms: ``ae_model``
(config, network, Mahalanobis scores), ``ae_training`` (one section's training), this module (the
trained baseline).

Example:
    >>> model = train_ae_baseline(scan_dataset(root).filter(split="train"))   # doctest: +SKIP
    >>> model.score([wave], ("fan", "00"), mode="mahala")                       # doctest: +SKIP
    >>> model.score_files(paths, "fan", "00")                   # cfg.score_mode # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import stetho
from stetho.baselines.ae_model import (
    CONFIG_FILE,
    FORMAT,
    FORMAT_VERSION,
    SCORE_MODES,
    WEIGHTS_FILE,
    AEBaselineConfig,
    AESection,
    DenseAE,
    ScoreMode,
    group_scores,
    mahalanobis_pairwise_mean,
    residuals,
    score_name,
    selective_mahalanobis,
)
from stetho.baselines.ae_training import train_section
from stetho.data import Clip, load_audio
from stetho.data.names import Key, as_key
from stetho.frontend.librosa_mel import baseline_vectors
from stetho.scoring.grouped import scores_by_key
from stetho.scoring.threshold import decide
from stetho.utils.artifact import DetectorError, read_meta, write_folder
from stetho.utils.io import atomic_write_bytes, atomic_write_text

__all__ = [
    "FORMAT",
    "SCORE_MODES",
    "AEBaseline",
    "AEBaselineConfig",
    "AESection",
    "DenseAE",
    "mahalanobis_pairwise_mean",
    "selective_mahalanobis",
    "train_ae_baseline",
]

logger = logging.getLogger(__name__)


def train_ae_baseline(clips: Iterable[Clip], cfg: AEBaselineConfig | None = None) -> AEBaseline:
    """Train one baseline autoencoder per (machine, section) on normal training clips.

    Source and target clips of a section are pooled (target = ``clip.domain == "target"``; clips
    without a domain count as source). Audio is read at its native rate, channel 0.

    Args:
        clips: Training clips (e.g. ``scan_dataset(root).filter(split="train")``); test clips and
            clips labelled anomalous are rejected.
        cfg: Configuration (defaults: protocol §3).

    Returns:
        The trained :class:`AEBaseline`.

    Raises:
        ValueError: no clips, a non-train or anomalous clip, mixed sample rates within a section,
            or clips too short for one context vector.
        AudioError: an unreadable audio file (the message names it).
    """
    cfg = cfg or AEBaselineConfig()
    grouped: dict[Key, list[Clip]] = defaultdict(list)
    for clip in clips:
        if clip.split != "train" or clip.label == "anomaly":
            raise ValueError(
                f"{clip.path}: the AE baseline trains on normal train clips only "
                f"(split={clip.split!r}, label={clip.label!r})"
            )
        grouped[clip.key].append(clip)
    if not grouped:
        raise ValueError("no training clips given")
    sections: dict[Key, AESection] = {}
    for key in sorted(grouped):
        where = f"{key[0]} section {key[1]}"
        vecs: list[np.ndarray] = []
        is_t: list[bool] = []
        rates: set[int] = set()
        for clip in grouped[key]:
            wave, sr = load_audio(clip.path)
            rates.add(sr)
            v = baseline_vectors(wave, sr, cfg.features)  # (V, D)
            if v.shape[0] == 0:
                raise ValueError(
                    f"{clip.path}: too short for one {cfg.features.frames}-frame context vector"
                )
            vecs.append(v)
            is_t.append(clip.domain == "target")
        if len(rates) != 1:
            raise ValueError(f"{where}: training clips have different sample rates {sorted(rates)}")
        sections[key] = train_section(vecs, is_t, rates.pop(), cfg, where)
    return AEBaseline(cfg, sections)


class AEBaseline:
    """Trained AE baselines of several (machine, section) keys; a :class:`stetho.detector.Scorer`.

    The ``Scorer`` methods (``score_waveforms``, ``score_files``, ``score_clips``, ``decide``,
    ``thresholds``) use ``cfg.score_mode`` and ``cfg.faithful``; :meth:`score`,
    :meth:`threshold` and :meth:`decide` also take an explicit ``mode``.
    """

    def __init__(self, cfg: AEBaselineConfig, sections: dict[Key, AESection]) -> None:
        self.cfg = cfg
        self.sections = dict(sorted(sections.items()))

    # -- Scorer: what the model covers --------------------------------------------------------
    @property
    def keys(self) -> list[Key]:
        """Sorted (machine, section) keys."""
        return list(self.sections)

    @property
    def sample_rate(self) -> int:
        """Rate (Hz) of the training clips (of the first section if sections differ)."""
        rates = [sec.sample_rate for sec in self.sections.values()]
        return int(max(set(rates), key=rates.count)) if rates else 16000

    @property
    def thresholds(self) -> dict[Key, float]:
        """Decision threshold per key for ``cfg.score_mode`` (a copy; assign to change)."""
        name = score_name(self.cfg.score_mode, self.cfg.faithful)
        return {key: float(sec.thresholds[name]) for key, sec in self.sections.items()}

    @thresholds.setter
    def thresholds(self, values: dict[Key, float]) -> None:
        name = score_name(self.cfg.score_mode, self.cfg.faithful)
        for key, value in values.items():
            self._section(key).thresholds[name] = float(value)

    def window_seconds(self) -> float | None:
        """No preferred stream window: any length of at least one context vector scores."""
        return None

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary: keys, thresholds, score mode, sample rate, stetho version."""
        return {
            "kind": "ae-baseline",
            "keys": [{"machine": m, "section": s} for m, s in self.keys],
            "thresholds": [
                {"machine": m, "section": s, "threshold": t}
                for (m, s), t in sorted(self.thresholds.items())
            ],
            "score_mode": score_name(self.cfg.score_mode, self.cfg.faithful),
            "sample_rate": self.sample_rate,
            "stetho_version": stetho.__version__,
        }

    def _section(self, key: Key | str) -> AESection:
        key = as_key(key)
        if key not in self.sections:
            valid = ", ".join(f"{m}/{s}" for m, s in self.sections)
            raise KeyError(
                f"no AE baseline for machine {key[0]!r} section {key[1]!r}; valid: {valid}"
            )
        return self.sections[key]

    # -- scoring -------------------------------------------------------------------------------
    def vectors(self, wave: np.ndarray, key: Key, sample_rate: int | None = None) -> np.ndarray:
        """Context vectors ``(V, D)`` of a mono waveform, resampled to the section's rate."""
        sec = self._section(key)
        w = np.asarray(wave, dtype=np.float32).reshape(-1)
        if sample_rate is not None and sample_rate != sec.sample_rate:
            import soxr

            w = soxr.resample(w, sample_rate, sec.sample_rate, quality="HQ").astype(np.float32)
        v = baseline_vectors(w, sec.sample_rate, self.cfg.features)
        if v.shape[0] == 0:
            raise ValueError(
                f"waveform of {w.size} samples is too short for one context vector "
                f"({self.cfg.features.frames} frames at hop {self.cfg.features.hop_length})"
            )
        return v

    def score(
        self,
        waves: Sequence[np.ndarray] | np.ndarray,
        key: Key,
        mode: ScoreMode | None = None,
        *,
        faithful: bool | None = None,
        sample_rate: int | None = None,
    ) -> np.ndarray:
        """Anomaly scores of clips (higher = more anomalous).

        Args:
            waves: Mono waveforms: a ``(B, N)`` array or a sequence of ``(N_i,)`` arrays.
            key: (machine, section) of the clips.
            mode: ``"mse"`` or ``"mahala"`` (selective Mahalanobis); default ``cfg.score_mode``.
            faithful: Mahalanobis reduction (default ``cfg.faithful``); ignored for MSE.
            sample_rate: Rate of ``waves`` (default: the training rate).

        Returns:
            ``(B,)`` float64.
        """
        name = self._score_name(mode, faithful)
        sec = self._section(key)
        items = [waves] if isinstance(waves, np.ndarray) and waves.ndim == 1 else list(waves)
        vecs = [self.vectors(w, key, sample_rate) for w in items]
        if not vecs:
            return np.zeros(0, dtype=np.float64)
        bounds = np.cumsum([0] + [v.shape[0] for v in vecs])
        res = residuals(sec.model, np.concatenate(vecs), self.cfg.device)
        return group_scores(res, bounds.tolist(), sec, self.cfg.features.n_mels)[name]

    def score_waveforms(
        self,
        waves: np.ndarray | Sequence[np.ndarray],
        machine: str,
        section: str,
        sample_rate: int | None = None,
    ) -> np.ndarray:
        """Scores ``(B,)`` of mono waveforms of one machine/section (``cfg.score_mode``)."""
        return self.score(waves, (machine, section), sample_rate=sample_rate)

    def score_files(
        self,
        paths: Iterable[str | os.PathLike[str]],
        machine: str,
        section: str,
        *,
        progress: bool = False,
        mode: ScoreMode | None = None,
        faithful: bool | None = None,
    ) -> np.ndarray:
        """Scores ``(B,)`` of audio files (channel 0, resampled to the training rate)."""
        key = (machine, section)
        sec = self._section(key)
        paths = list(paths)
        if progress:
            from stetho.utils.progress import progress_bar

            paths = list(progress_bar(paths, desc=f"{machine}/{section}"))
        waves = [load_audio(p, sr=sec.sample_rate)[0] for p in paths]
        return self.score(waves, key, mode, faithful=faithful)

    def score_clips(
        self, clips: Iterable[Clip], *, progress: bool = False
    ) -> dict[Key, dict[str, float]]:
        """Scores grouped as ``{(machine, section): {file name: score}}``."""
        return scores_by_key(
            clips, lambda paths, key: self.score_files(paths, *key, progress=progress)
        )

    def threshold(
        self, key: Key | str, mode: ScoreMode | None = None, *, faithful: bool | None = None
    ) -> float:
        """The gamma decision threshold of a section and score mode."""
        return self._section(key).thresholds[self._score_name(mode, faithful)]

    def decide(
        self,
        scores: np.ndarray | Sequence[float],
        key: Key | str,
        mode: ScoreMode | None = None,
        *,
        faithful: bool | None = None,
    ) -> np.ndarray:
        """Decisions ``(B,)`` int: 1 iff score > threshold."""
        return decide(
            np.asarray(scores, dtype=np.float64), self.threshold(key, mode, faithful=faithful)
        )

    def _score_name(self, mode: ScoreMode | None, faithful: bool | None) -> str:
        return score_name(
            self.cfg.score_mode if mode is None else mode,
            self.cfg.faithful if faithful is None else faithful,
        )

    # -- persistence ---------------------------------------------------------------------------
    def save(
        self, directory: str | os.PathLike[str], *, extra: dict[str, Any] | None = None
    ) -> Path:
        """Write ``config.json`` and ``model.safetensors`` as one folder (atomically).

        ``extra`` entries (e.g. a detector's id and version) are added to ``config.json``.

        Raises:
            DetectorError: ``directory`` exists and is not an AE baseline folder (never
                overwritten).
        """
        from safetensors.torch import save as st_save

        dest = Path(directory)
        tensors: dict[str, torch.Tensor] = {}
        meta = []
        for i, ((machine, section), sec) in enumerate(self.sections.items()):
            for name, t in sec.model.state_dict().items():
                tensors[f"{i}.model.{name}"] = t.detach().cpu().contiguous()
            tensors[f"{i}.cov_source"] = torch.from_numpy(np.ascontiguousarray(sec.cov_source))
            tensors[f"{i}.cov_target"] = torch.from_numpy(np.ascontiguousarray(sec.cov_target))
            meta.append(
                {
                    "machine": machine,
                    "section": section,
                    "sample_rate": sec.sample_rate,
                    "thresholds": sec.thresholds,
                    "stats": sec.stats,
                }
            )
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "stetho_version": stetho.__version__,
            "config": self.cfg.to_dict(),
            "sections": meta,
            **(extra or {}),
        }
        with write_folder(dest, FORMAT) as tmp:
            atomic_write_bytes(tmp / WEIGHTS_FILE, st_save(tensors))
            atomic_write_text(tmp / CONFIG_FILE, json.dumps(doc, indent=2) + "\n")
        logger.info("AE baseline saved to %s", dest)
        return dest

    @classmethod
    def load(cls, model_dir: str | os.PathLike[str], device: str | None = None) -> AEBaseline:
        """Load a baseline written by :meth:`save` (optionally onto another device).

        Raises:
            DetectorError: not an AE baseline folder, another format version, or a missing
                weights file (the message names the file).
        """
        from safetensors.torch import load_file

        d = Path(model_dir)
        doc = read_meta(d, FORMAT, FORMAT_VERSION)
        w_path = d / WEIGHTS_FILE
        if not w_path.is_file():
            raise DetectorError(f"not a complete AE baseline folder: {w_path} is missing")
        cfg = AEBaselineConfig.from_dict(doc["config"])
        if device is not None:
            cfg = cfg.replace(device=device)
        try:
            tensors = load_file(str(w_path))
        except Exception as err:  # SafetensorError, OSError: a damaged file
            raise DetectorError(f"{w_path}: not a readable safetensors file ({err})") from err
        try:
            sections = cls._sections(doc, cfg, tensors)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise DetectorError(
                f"{d / 'config.json'} / {w_path.name}: invalid AE baseline ({err!r})"
            ) from err
        for (machine, section), sec in sections.items():
            for name, t in sec.thresholds.items():
                if not np.isfinite(t) or t < 0:  # scores are errors / distances (>= 0)
                    raise DetectorError(
                        f"{d / 'config.json'}: threshold {name} of {machine}/{section} is {t!r}; "
                        "expected a finite number >= 0 (the file is damaged)"
                    )
        return cls(cfg, sections)

    @staticmethod
    def _sections(
        doc: dict[str, Any], cfg: AEBaselineConfig, tensors: dict[str, torch.Tensor]
    ) -> dict[Key, AESection]:
        sections: dict[Key, AESection] = {}
        for i, m in enumerate(doc["sections"]):
            prefix = f"{i}.model."
            model = DenseAE.from_config(cfg)
            model.load_state_dict(
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            )
            model.to(cfg.device).eval()
            sections[(m["machine"], m["section"])] = AESection(
                model=model,
                cov_source=tensors[f"{i}.cov_source"].numpy().astype(np.float64),
                cov_target=tensors[f"{i}.cov_target"].numpy().astype(np.float64),
                thresholds={k: float(v) for k, v in m["thresholds"].items()},
                sample_rate=int(m["sample_rate"]),
                stats=dict(m.get("stats", {})),
            )
        return sections
