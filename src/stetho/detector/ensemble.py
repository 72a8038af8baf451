"""Few-shot ensemble detector: several (feature, back-end) members, normalised, combined, saved.

Built for one machine and tens of normal clips, without training::

    det = EnsembleDetector(cfg).fit(train_clips)          # cfg.ensemble lists the members
    det.score_files(paths, "fan", "00")                   # (M,) higher = more anomalous
    det.save("runs/x/detector"); load_scorer("runs/x/detector")   # identical scores

Per (machine, section) and member: one :class:`~stetho.scoring.bank.BankBackend` per domain bank
(source / target; pooled when a domain has fewer than ``min_domain_bank`` clips). A member's
score is the minimum over its domain banks of the z-scores (each bank normalised by its own
leave-one-out scores, so banks of different sizes compare). Members are combined by the weights
the label-free choice (:mod:`stetho.detector.selection`) gave that key. Thresholds are fitted on
the combined leave-one-out scores of the bank, exactly as for the k-NN detector.

Saved folder (format ``stetho-ensemble``; atomic like every detector)::

    config.json       experiment config, members, keys, per-key choice (weights, proxy AUCs, why)
    banks.safetensors every back-end's arrays (float64)
    thresholds.json   decision thresholds per machine/section
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import stetho
from stetho.backbones import resolve_checkpoint
from stetho.backbones.features import FeatureConfig, FeatureExtractor
from stetho.data import Clip, group_by_key, load_audio
from stetho.detector.artifact import DetectorError, check_replaceable, publish_folder, read_meta
from stetho.scoring.bank import BankBackend
from stetho.scoring.ensemble import EnsembleConfig, MemberConfig, combine_scores
from stetho.scoring.grouped import decisions_by_key, scores_by_key
from stetho.scoring.selection import choose_members, pseudo_anomaly
from stetho.scoring.threshold import ThresholdConfig, decide_for_key, fit_threshold
from stetho.utils.config import ConfigError
from stetho.utils.io import atomic_write_text, sha256_file

__all__ = [
    "ENSEMBLE_FORMAT",
    "EnsembleConfig",
    "EnsembleDetector",
    "MemberConfig",
    "combine_scores",
]

logger = logging.getLogger(__name__)

ENSEMBLE_FORMAT = "stetho-ensemble"
_FORMAT_VERSION = 1
Key = tuple[str, str]


@dataclass
class _KeyModel:
    """Fitted state of one (machine, section)."""

    domains: list[str]
    backends: dict[str, list[BankBackend]]  # domain -> one per member
    weights: list[float]
    choice: dict[str, Any] = field(default_factory=dict)


def _domain_groups(clips: list[Clip], cfg: EnsembleConfig) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(clips):
        groups.setdefault(c.domain or "source", []).append(i)
    if (
        not cfg.domain_banks
        or len(groups) < 2
        or min(map(len, groups.values())) < cfg.min_domain_bank
    ):
        return {"all": list(range(len(clips)))}
    return groups


class EnsembleDetector:
    """A fitted few-shot ensemble (implements :class:`~stetho.detector.Scorer`).

    Args:
        cfg: The experiment config; ``cfg.ensemble`` must be set (``cfg.threshold`` is used too).
        device: Where the feature backbones run.
    """

    def __init__(self, cfg: Any, *, device: str = "cpu") -> None:
        if getattr(cfg, "ensemble", None) is None:
            raise ConfigError("EnsembleDetector needs a config with an `ensemble` section")
        self.cfg = cfg
        self.ens: EnsembleConfig = cfg.ensemble
        self.threshold_cfg: ThresholdConfig = cfg.threshold
        self.device = device
        self.models: dict[Key, _KeyModel] = {}
        self.thresholds: dict[Key, float] = {}
        self._extractors: dict[tuple[str, str | None, str], FeatureExtractor] = {}

    # -- features ----------------------------------------------------------------------------
    def _extractor(self, fc: FeatureConfig) -> FeatureExtractor:
        key = fc.source_key()
        if key not in self._extractors:
            self._extractors[key] = FeatureExtractor(fc, device=self.device)
        return self._extractors[key]

    @property
    def sample_rate(self) -> int:
        """Highest rate among the members' backbones (inputs are resampled per member)."""
        return max(self._extractor(m.feature).sample_rate for m in self.ens.members)

    def _features(self, waves: Sequence[np.ndarray], sr: int) -> list[np.ndarray]:
        """Per member, features ``(B, D_m)`` of waveforms at rate ``sr``."""
        import soxr

        out = []
        cache: dict[int, list[np.ndarray]] = {}
        for m in self.ens.members:
            fx = self._extractor(m.feature)
            rate = fx.sample_rate
            if rate not in cache:
                cache[rate] = [
                    w if rate == sr else np.asarray(soxr.resample(w, sr, rate, quality="HQ"))
                    for w in waves
                ]
            fx_m = FeatureExtractor(m.feature, backbone=fx.backbone, device=self.device)
            out.append(fx_m.extract(cache[rate]))
        return out

    def _load(self, path: str | os.PathLike[str]) -> np.ndarray:
        wave, _ = load_audio(path, sr=self.sample_rate)
        return np.asarray(wave, dtype=np.float32)

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, clips: Iterable[Clip], *, progress: bool = False) -> EnsembleDetector:
        """Fit banks, the label-free choice and thresholds from normal training clips."""
        clips = list(clips)
        if not clips:
            raise ValueError("EnsembleDetector.fit needs at least one training clip")
        bad = [c.name for c in clips if c.label == "anomaly" or c.split == "test"]
        if bad:
            raise ValueError(f"fit takes normal training clips only; got e.g. {bad[:3]}")
        items = list(group_by_key(clips).items())
        if progress:
            from tqdm.auto import tqdm

            items = list(tqdm(items, desc="fitting banks", leave=False, dynamic_ncols=True))
        for key, group in items:
            self._fit_key(key, group)
        return self

    def _fit_key(self, key: Key, group: list[Clip]) -> None:
        waves = [self._load(c.path) for c in group]
        feats = self._features(waves, self.sample_rate)
        groups = _domain_groups(group, self.ens)
        backends = {
            d: [BankBackend(m.backend).fit(f[idx]) for m, f in zip(self.ens.members, feats)]
            for d, idx in groups.items()
        }
        model = _KeyModel(sorted(groups), backends, [1.0] * len(self.ens.members))
        loo = self._loo_member_scores(model, groups, feats)  # (K, N)
        pseudo = self._pseudo_scores(model, groups, waves)
        choice = choose_members(
            [m.name for m in self.ens.members],
            list(loo),
            pseudo,
            self.ens.selection,
        )
        weights = choice["weights"]
        assert isinstance(weights, dict)
        model.weights = [float(weights[m.name]) for m in self.ens.members]
        choice["bank_clips"] = {d: len(idx) for d, idx in groups.items()}
        model.choice = choice
        self.models[key] = model
        logger.info("%s/%s: %s", *key, choice["reason"])
        combined = combine_scores(loo, np.array(model.weights), self.ens.combine)
        try:
            self.thresholds[key] = fit_threshold(combined, self.threshold_cfg)
        except ValueError as err:
            logger.warning("%s/%s: %s; threshold set to +inf (never anomalous)", *key, err)
            self.thresholds[key] = float("inf")

    def _loo_member_scores(
        self, model: _KeyModel, groups: dict[str, list[int]], feats: list[np.ndarray]
    ) -> np.ndarray:
        """(K, N) leave-one-out member scores: own domain bank left-one-out, min over domains."""
        n = feats[0].shape[0]
        out = np.full((len(self.ens.members), n), np.inf)
        for d, idx in groups.items():
            for j, be in enumerate(model.backends[d]):
                out[j, idx] = np.minimum(out[j, idx], be.loo_scores())
                mine = set(idx)
                rest = [i for i in range(n) if i not in mine]
                if rest:
                    out[j, rest] = np.minimum(out[j, rest], be.score(feats[j][rest]))
        return out

    def _pseudo_scores(
        self, model: _KeyModel, groups: dict[str, list[int]], waves: list[np.ndarray]
    ) -> list[dict[str, np.ndarray]]:
        sel = self.ens.selection
        out: list[dict[str, np.ndarray]] = [{} for _ in self.ens.members]
        if not sel.enabled or len(waves) < sel.min_bank or len(self.ens.members) < 2:
            return out
        # perturb up to max_clips bank clips, evenly spread over the domains' rows
        order = [(d, pos, i) for d, idx in groups.items() for pos, i in enumerate(idx)]
        pick = np.linspace(0, len(order) - 1, min(sel.max_clips, len(order))).round().astype(int)
        chosen = [order[p] for p in sorted(set(pick.tolist()))]
        for kind_no, kind in enumerate(sel.kinds):
            fake = [
                pseudo_anomaly(waves[i], self.sample_rate, kind, seed=sel.seed + 1000 * kind_no + i)
                for _, _, i in chosen
            ]
            feats = self._features(fake, self.sample_rate)
            for j in range(len(self.ens.members)):
                scores = np.full(len(chosen), np.inf)
                for d in groups:
                    own = np.array([pos if dd == d else -1 for dd, pos, _ in chosen])
                    scores = np.minimum(scores, model.backends[d][j].score_without(feats[j], own))
                out[j][kind] = scores
        return out

    # -- scoring -----------------------------------------------------------------------------
    @property
    def keys(self) -> list[Key]:
        """Fitted (machine, section) keys."""
        return sorted(self.models)

    def require_key(self, key: Key) -> _KeyModel:
        """The fitted model of ``key`` (``KeyError`` listing the fitted keys otherwise)."""
        key = (str(key[0]), str(key[1]))
        if key not in self.models:
            fitted = ", ".join(f"{m}/{s}" for m, s in self.keys) or "none"
            raise KeyError(f"no model for {key[0]}/{key[1]}; fitted keys: {fitted}")
        return self.models[key]

    def window_seconds(self) -> float | None:
        """No preferred stream window (clips are scored whole)."""
        return None

    def member_scores(self, waves: Sequence[np.ndarray], key: Key, sr: int) -> np.ndarray:
        """Per-member z-scores ``(K, B)`` of waveforms at rate ``sr`` (min over domain banks)."""
        model = self.require_key(key)
        feats = self._features(waves, sr)
        out = np.full((len(self.ens.members), len(waves)), np.inf)
        for d in model.domains:
            for j, be in enumerate(model.backends[d]):
                out[j] = np.minimum(out[j], be.score(feats[j]))
        return out

    def score_waveforms(
        self,
        waves: np.ndarray | Sequence[np.ndarray],
        machine: str,
        section: str,
        sample_rate: int | None = None,
    ) -> np.ndarray:
        """Anomaly scores (B,) of mono waveforms (``(N,)``, ``(B, N)`` or a list) in [-1, 1]."""
        key = (str(machine), str(section))
        model = self.require_key(key)
        arr = [waves] if isinstance(waves, np.ndarray) and waves.ndim == 1 else list(waves)
        items = []
        for w in arr:
            a = np.asarray(w)
            if a.ndim != 1 or a.size == 0 or not np.issubdtype(a.dtype, np.floating):
                raise ValueError(
                    "each waveform must be a non-empty 1-D float array in [-1, 1], got "
                    f"shape {a.shape} dtype {a.dtype}"
                )
            items.append(a.astype(np.float32))
        sr = int(sample_rate) if sample_rate is not None else self.sample_rate
        scores = self.member_scores(items, key, sr)
        return combine_scores(scores, np.array(model.weights), self.ens.combine)

    def score_files(
        self,
        paths: Sequence[str | os.PathLike[str]],
        machine: str,
        section: str,
        *,
        progress: bool = False,
    ) -> np.ndarray:
        """Anomaly scores (M,) of audio files of one machine/section."""
        self.require_key((machine, section))
        out = np.empty(len(paths))
        step = 16
        starts = range(0, len(paths), step)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="scoring", leave=False, dynamic_ncols=True)  # type: ignore[assignment]
        for s in starts:
            waves = [self._load(p) for p in paths[s : s + step]]
            out[s : s + len(waves)] = self.score_waveforms(waves, machine, section)
        return out

    def score_clips(
        self, clips: Iterable[Clip], *, progress: bool = False
    ) -> dict[Key, dict[str, float]]:
        """Scores grouped as ``{(machine, section): {file name: score}}``."""
        return scores_by_key(
            clips, lambda paths, key: self.score_files(paths, *key, progress=progress)
        )

    def decide(self, scores: np.ndarray | Sequence[float], key: Key | str) -> np.ndarray:
        """Decisions (M,) int, 1 = anomalous (``score > threshold``)."""
        return decide_for_key(self.thresholds, scores, key)

    def decisions(self, scores: dict[Key, dict[str, float]]) -> dict[Key, dict[str, int]]:
        """Decisions for grouped scores, in the same layout."""
        return decisions_by_key(scores, self.decide)

    def choices(self) -> dict[str, dict[str, Any]]:
        """What the label-free choice kept per ``machine/section`` and why (JSON-ready)."""
        return {f"{m}/{s}": self.models[(m, s)].choice for m, s in self.keys}

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary: keys, thresholds, members, choice, sample rate, version."""
        return {
            "kind": "ensemble-detector",
            "keys": [{"machine": m, "section": s} for m, s in self.keys],
            "thresholds": {f"{m}/{s}": float(t) for (m, s), t in sorted(self.thresholds.items())},
            "backbone": "+".join(dict.fromkeys(m.feature.backbone for m in self.ens.members)),
            "members": [
                f"{m.name}: {m.feature.label()} {m.backend.label()}" for m in self.ens.members
            ],
            "choice": self.choices(),
            "sample_rate": int(self.sample_rate),
            "stetho_version": stetho.__version__,
        }

    # -- persistence -------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the detector folder atomically (an existing detector folder is replaced)."""
        import torch
        from safetensors.torch import save_file

        dest = Path(directory)
        check_replaceable(dest, ENSEMBLE_FORMAT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        try:
            tensors: dict[str, torch.Tensor] = {}
            for (m, s), model in sorted(self.models.items()):
                for d in model.domains:
                    for j, be in enumerate(model.backends[d]):
                        for name, arr in be.state().items():
                            t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64))
                            tensors[f"{m}/{s}/{d}/{j}/{name}"] = t
            save_file(tensors, str(tmp / "banks.safetensors"))
            thresholds = [
                {"machine": m, "section": s, "threshold": float(t)}
                for (m, s), t in sorted(self.thresholds.items())
            ]
            atomic_write_text(
                tmp / "thresholds.json",
                json.dumps({"config": self.threshold_cfg.to_dict(), "thresholds": thresholds},
                           indent=2) + "\n",
            )  # fmt: skip
            meta = {
                "format": ENSEMBLE_FORMAT,
                "format_version": _FORMAT_VERSION,
                "stetho_version": stetho.__version__,
                "experiment": self.cfg.to_dict(),
                "checkpoints": self._checkpoints(),
                "keys": {
                    f"{m}/{s}": {
                        "domains": mod.domains,
                        "weights": mod.weights,
                        "choice": mod.choice,
                    }
                    for (m, s), mod in sorted(self.models.items())
                },
            }
            atomic_write_text(tmp / "config.json", json.dumps(meta, indent=2) + "\n")
            publish_folder(tmp, dest, ENSEMBLE_FORMAT)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info("ensemble detector saved to %s", dest)
        return dest

    def _checkpoints(self) -> dict[str, dict[str, str]]:
        out = {}
        for m in self.ens.members:
            if m.feature.checkpoint is not None:
                path = resolve_checkpoint(m.feature.checkpoint)
                out[m.name] = {"path": str(Path(path).resolve()), "sha256": sha256_file(path)}
        return out

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        device: str = "cpu",
        checkpoint: str | os.PathLike[str] | None = None,
    ) -> EnsembleDetector:
        """Rebuild a saved ensemble; it gives identical scores.

        Args:
            directory: The folder written by :meth:`save`.
            device: Where the feature backbones run.
            checkpoint: Location of a pretrained member's weights if they moved since saving
                (SHA-256 checked).

        Raises:
            DetectorError: missing files, wrong format or a checkpoint whose SHA-256 differs.
        """
        from stetho.config import ExperimentConfig
        from stetho.detector.files import read_safetensors, read_thresholds

        src = Path(directory)
        meta = read_meta(src, ENSEMBLE_FORMAT, _FORMAT_VERSION)
        for name in ("banks.safetensors", "thresholds.json"):
            if not (src / name).is_file():
                raise DetectorError(f"{src}: missing {name}")
        cfg = ExperimentConfig.from_dict(meta["experiment"])
        for m in cfg.ensemble.members if cfg.ensemble else []:
            info = meta.get("checkpoints", {}).get(m.name)
            if info is not None:
                m.feature.checkpoint = str(_verified(info, checkpoint, m.feature.checkpoint))
        det = cls(cfg, device=device)
        state = read_safetensors(src / "banks.safetensors")
        members = det.ens.members
        for key_text, info in meta["keys"].items():
            machine, _, section = key_text.rpartition("/")
            backends: dict[str, list[BankBackend]] = {}
            for d in info["domains"]:
                backends[d] = []
                for j, m in enumerate(members):
                    prefix = f"{key_text}/{d}/{j}/"
                    arrays = {k[len(prefix):]: v.numpy() for k, v in state.items()
                              if k.startswith(prefix)}  # fmt: skip
                    backends[d].append(BankBackend.from_state(m.backend, arrays))
            det.models[(machine, section)] = _KeyModel(
                list(info["domains"]), backends, [float(w) for w in info["weights"]],
                dict(info.get("choice", {})),
            )  # fmt: skip
        # finite, or refused (ensemble scores are standardised: they may be negative)
        det.thresholds = read_thresholds(src / "thresholds.json", nonnegative=False)
        return det


def _verified(
    info: dict[str, str], override: str | os.PathLike[str] | None, spec: str | None
) -> Path:
    where = override if override is not None else info.get("path") or spec
    try:
        path = Path(resolve_checkpoint(str(where)))
    except Exception:
        try:  # the recorded absolute path moved: the configured spec (e.g. a cache file name)
            path = Path(resolve_checkpoint(str(spec)))
        except Exception as err:
            raise DetectorError(
                f"backbone checkpoint {where} not found ({err}); pass --checkpoint PATH, or "
                "fetch the registered weights with `stetho backbones fetch NAME`"
            ) from err
    got = sha256_file(path)
    if info.get("sha256") and got != info["sha256"]:
        raise DetectorError(
            f"checkpoint {path} has SHA-256 {got}, but the detector was built with {info['sha256']}"
        )
    return path
