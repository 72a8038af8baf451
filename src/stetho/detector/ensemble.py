"""Few-shot ensemble detector: several (feature, back-end) members, normalised, combined, saved.

Built for one machine and tens of normal clips, without training::

    det = EnsembleDetector(cfg).fit(train_clips)          # cfg.ensemble lists the members
    det.score_files(paths, "fan", "00")                   # (M,) higher = more anomalous
    det.save("runs/x/detector"); stetho.load_detector("runs/x/detector")   # identical scores

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

import itertools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from stetho.backbones import resolve_checkpoint
from stetho.backbones.features import FeatureConfig, FeatureExtractor
from stetho.data import Clip, load_audio
from stetho.data.names import Key
from stetho.detector.artifact import DetectorError
from stetho.detector.base import BaseDetector, CalibrationMode, Nearest
from stetho.scoring.bank import BankBackend
from stetho.scoring.ensemble import EnsembleConfig, MemberConfig, combine_scores
from stetho.scoring.selection import choose_members, pseudo_anomaly
from stetho.utils.config import ConfigError
from stetho.utils.io import sha256_file

__all__ = [
    "ENSEMBLE_FORMAT",
    "EnsembleConfig",
    "EnsembleDetector",
    "MemberConfig",
    "combine_scores",
]

logger = logging.getLogger(__name__)

ENSEMBLE_FORMAT = "stetho-ensemble"
#: 2: detector id and version, held-out scores, bank clip names (version 1 still loads)
_FORMAT_VERSION = 2


@dataclass
class _KeyModel:
    """Fitted state of one (machine, section)."""

    domains: list[str]
    backends: dict[str, list[BankBackend]]  # domain -> one per member
    weights: list[float]
    choice: dict[str, Any] = field(default_factory=dict)
    refs: dict[str, list[str]] = field(default_factory=dict)  # domain -> bank clip paths


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


class EnsembleDetector(BaseDetector):
    """A fitted few-shot ensemble (the default kind of ``stetho train``).

    Args:
        cfg: The experiment config; ``cfg.ensemble`` must be set (``cfg.threshold`` is used too).
        device: Where the feature backbones run.
    """

    kind: ClassVar[str] = "fewshot"
    format: ClassVar[str] = ENSEMBLE_FORMAT
    format_version: ClassVar[int] = _FORMAT_VERSION

    def __init__(self, cfg: Any, *, device: str = "cpu", **identity: Any) -> None:
        if getattr(cfg, "ensemble", None) is None:
            raise ConfigError("EnsembleDetector needs a config with an `ensemble` section")
        super().__init__(cfg.threshold, **identity)
        self.cfg = cfg
        self.ens: EnsembleConfig = cfg.ensemble
        self.device = device
        self.models: dict[Key, _KeyModel] = {}
        self._extractors: dict[tuple[str, str | None, str], FeatureExtractor] = {}
        self._dims: list[int] | None = None

    # -- features ----------------------------------------------------------------------------
    def _extractor(self, fc: FeatureConfig) -> FeatureExtractor:
        key = fc.source_key()
        if key not in self._extractors:
            self._extractors[key] = FeatureExtractor(fc, device=self.device)
        return self._extractors[key]

    @property
    def sample_rate(self) -> int:
        """Highest rate among the members' backbones (inputs are resampled per member)."""
        return max(self._member_rate(m) for m in self.ens.members)

    def _member_rate(self, m: MemberConfig) -> int:
        return self._extractor(m.feature).sample_rate

    def _member_features(self, m: MemberConfig, waves: list[np.ndarray]) -> np.ndarray:
        fx = self._extractor(m.feature)
        return FeatureExtractor(m.feature, backbone=fx.backbone, device=self.device).extract(waves)

    def _features(self, waves: Sequence[np.ndarray], sr: int) -> list[np.ndarray]:
        """Per member, features ``(B, D_m)`` of waveforms at rate ``sr``."""
        import soxr

        out = []
        cache: dict[int, list[np.ndarray]] = {}
        for m in self.ens.members:
            rate = self._member_rate(m)
            if rate not in cache:
                cache[rate] = [
                    w if rate == sr else np.asarray(soxr.resample(w, sr, rate, quality="HQ"))
                    for w in waves
                ]
            out.append(self._member_features(m, cache[rate]))
        self._dims = [f.shape[1] for f in out]
        return out

    def embed(self, waves: list[np.ndarray]) -> np.ndarray:
        """Member features of waveforms at :attr:`sample_rate`, side by side ``(B, ΣD_m)``."""
        if not waves:
            return np.zeros((0, sum(self._dims or [0])))
        return np.concatenate(self._features(waves, self.sample_rate), axis=1)

    def _split(self, feats: np.ndarray) -> list[np.ndarray]:
        if self._dims is None:
            raise DetectorError("features must come from this detector's embed()")
        bounds = np.cumsum([0, *self._dims])
        return [feats[:, a:b] for a, b in itertools.pairwise(bounds)]

    def _load(self, path: str | os.PathLike[str]) -> np.ndarray:
        wave, _ = load_audio(path, sr=self.sample_rate)
        return np.asarray(wave, dtype=np.float32)

    # -- fitting -----------------------------------------------------------------------------
    def _fit_key(
        self, key: Key, clips: list[Clip], mode: CalibrationMode, progress: bool
    ) -> np.ndarray:
        waves = [self._load(c.path) for c in clips]
        feats = self._features(waves, self.sample_rate)
        if mode == "add" and key in self.models:
            return self._add_bank(key, clips, feats)
        groups = _domain_groups(clips, self.ens)
        backends = {
            d: [BankBackend(m.backend).fit(f[idx]) for m, f in zip(self.ens.members, feats)]
            for d, idx in groups.items()
        }
        refs = {d: [str(Path(clips[i].path).absolute()) for i in idx] for d, idx in groups.items()}
        model = _KeyModel(sorted(groups), backends, [1.0] * len(self.ens.members), refs=refs)
        loo = self._loo_member_scores(model, groups, feats)  # (K, N)
        pseudo = self._pseudo_scores(model, groups, waves)
        choice = choose_members([m.name for m in self.ens.members], list(loo), pseudo,
                                self.ens.selection)  # fmt: skip
        weights = choice["weights"]
        assert isinstance(weights, dict)
        model.weights = [float(weights[m.name]) for m in self.ens.members]
        choice["bank_clips"] = {d: len(idx) for d, idx in groups.items()}
        model.choice = choice
        self.models[key] = model
        logger.info("%s/%s: %s", *key, choice["reason"])
        return combine_scores(loo, np.array(model.weights), self.ens.combine)

    def _add_bank(self, key: Key, clips: list[Clip], feats: list[np.ndarray]) -> np.ndarray:
        """Calibration "add": the new recordings become one more domain bank of ``key``."""
        model = self.models[key]
        name = f"calibration-{self.version + 1}"
        new = [BankBackend(m.backend).fit(f) for m, f in zip(self.ens.members, feats)]
        loo = np.stack([be.loo_scores() for be in new])  # (K, N)
        for d in model.domains:  # min with the old banks, as when scoring
            for j, be in enumerate(model.backends[d]):
                loo[j] = np.minimum(loo[j], be.score(feats[j]))
        model.domains = [*model.domains, name]
        model.backends[name] = new
        model.refs[name] = [str(Path(c.path).absolute()) for c in clips]
        model.choice.setdefault("bank_clips", {})[name] = len(clips)
        held = combine_scores(loo, np.array(model.weights), self.ens.combine)
        old = self.held_out.get(key)
        # old rows' held-out scores are not lowered by the new bank: a slightly high threshold
        return held if old is None else np.concatenate([old.scores, held])

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

    def _forget(self, key: Key) -> None:
        self.models.pop(key, None)

    def _key_state(self, keys: list[Key]) -> Any:
        return {k: self.models.get(k) for k in keys}

    def _set_key_state(self, state: Any) -> None:
        for k, model in state.items():
            if model is None:
                self.models.pop(k, None)
            else:
                self.models[k] = model

    # -- scoring -----------------------------------------------------------------------------
    @property
    def keys(self) -> list[Key]:
        """Fitted (machine, section) keys."""
        return sorted(self.models)

    def member_scores(self, waves: Sequence[np.ndarray], key: Key, sr: int) -> np.ndarray:
        """Per-member z-scores ``(K, B)`` of waveforms at rate ``sr`` (min over domain banks)."""
        k = self.require_key(key)
        return self._member_scores(self._features(waves, sr), k)

    def _member_scores(self, feats: list[np.ndarray], key: Key) -> np.ndarray:
        model = self.models[key]
        out = np.full((len(self.ens.members), feats[0].shape[0]), np.inf)
        for d in model.domains:
            for j, be in enumerate(model.backends[d]):
                out[j] = np.minimum(out[j], be.score(feats[j]))
        return out

    def score_features(self, feats: np.ndarray, key: Key) -> np.ndarray:
        """Fused member z-scores (M,) of :meth:`embed` features (min over domain banks)."""
        if not len(feats):
            return np.zeros(0)
        scores = self._member_scores(self._split(np.asarray(feats)), key)
        return combine_scores(scores, np.array(self.models[key].weights), self.ens.combine)

    def nearest(self, feats: np.ndarray, key: Key) -> list[Nearest | None]:
        """Nearest bank clip of each row, in the standardised space of the heaviest member."""
        model = self.models[key]
        j = int(np.argmax(model.weights))
        member = self._split(np.asarray(feats))[j]
        out: list[Nearest | None] = [None] * member.shape[0]
        for d in model.domains:
            be = model.backends[d][j]
            if be.bank.shape[0] == 0:
                continue
            z = be.std(member)
            dist = np.sqrt(((z[:, None, :] - be.bank[None, :, :]) ** 2).sum(-1))  # (M, N)
            idx = dist.argmin(1)
            refs = model.refs.get(d, [])
            for i, r in enumerate(idx):
                best = out[i]
                if best is None or dist[i, r] < best.distance:
                    ref = refs[r] if r < len(refs) else None
                    out[i] = Nearest(ref, float(dist[i, r]), d)
        return out

    def choices(self) -> dict[str, dict[str, Any]]:
        """What the label-free choice kept per ``machine/section`` and why (JSON-ready)."""
        return {f"{m}/{s}": self.models[(m, s)].choice for m, s in self.keys}

    def _describe_kind(self) -> dict[str, Any]:
        return {
            "backbone": "+".join(dict.fromkeys(m.feature.backbone for m in self.ens.members)),
            "members": [
                f"{m.name}: {m.feature.label()} {m.backend.label()}" for m in self.ens.members
            ],
            "choice": self.choices(),
        }

    # -- persistence -------------------------------------------------------------------------
    def _write_parts(self, folder: Path) -> dict[str, Any]:
        import torch
        from safetensors.torch import save_file

        tensors: dict[str, torch.Tensor] = {}
        for (m, s), model in sorted(self.models.items()):
            for d in model.domains:
                for j, be in enumerate(model.backends[d]):
                    for name, arr in be.state().items():
                        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64))
                        tensors[f"{m}/{s}/{d}/{j}/{name}"] = t
        save_file(tensors, str(folder / "banks.safetensors"))
        return {
            "experiment": self.cfg.to_dict(),
            "checkpoints": self._checkpoints(),
            "keys": {
                f"{m}/{s}": {
                    "domains": mod.domains,
                    "weights": mod.weights,
                    "choice": mod.choice,
                    "bank_clips": mod.refs,
                }
                for (m, s), mod in sorted(self.models.items())
            },
        }

    def _checkpoints(self) -> dict[str, dict[str, str]]:
        out = {}
        for m in self.ens.members:
            if m.feature.checkpoint is not None:
                path = resolve_checkpoint(m.feature.checkpoint)
                out[m.name] = {"path": str(Path(path).resolve()), "sha256": sha256_file(path)}
        return out

    @classmethod
    def load(  # type: ignore[override]
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
        det = super().load(directory, device=device, checkpoint=checkpoint)
        assert isinstance(det, EnsembleDetector)
        return det

    @classmethod
    def _read_parts(
        cls, folder: Path, meta: dict[str, Any], options: dict[str, Any]
    ) -> EnsembleDetector:
        from stetho.config import ExperimentConfig
        from stetho.detector.files import read_safetensors

        src = folder
        for name in ("banks.safetensors", "thresholds.json"):
            if not (src / name).is_file():
                raise DetectorError(f"{src}: missing {name}")
        try:
            cfg = ExperimentConfig.from_dict(meta["experiment"])
            keys = dict(meta["keys"])
        except (KeyError, TypeError, ValueError) as err:
            raise DetectorError(
                f"{src / 'config.json'}: invalid ensemble config ({err!r})"
            ) from err
        for m in cfg.ensemble.members if cfg.ensemble else []:
            info = meta.get("checkpoints", {}).get(m.name)
            if info is not None:
                where = options.get("checkpoint")
                m.feature.checkpoint = str(_verified(info, where, m.feature.checkpoint))
        det = cls(cfg, device=options.get("device", "cpu"))
        state = read_safetensors(src / "banks.safetensors")
        for key_text, info in keys.items():
            machine, _, section = key_text.rpartition("/")
            det.models[(machine, section)] = _read_key(src, key_text, info, state, det.ens)
        det._dims = _member_dims(det)
        # finite, or refused (ensemble scores are standardised: they may be negative)
        det._read_thresholds(src, nonnegative=False)
        return det


def _read_key(
    src: Path, key_text: str, info: dict[str, Any], state: dict[str, Any], ens: EnsembleConfig
) -> _KeyModel:
    backends: dict[str, list[BankBackend]] = {}
    try:
        for d in info["domains"]:
            backends[d] = []
            for j, m in enumerate(ens.members):
                prefix = f"{key_text}/{d}/{j}/"
                arrays = {k[len(prefix):]: v.numpy() for k, v in state.items()
                          if k.startswith(prefix)}  # fmt: skip
                for name, arr in arrays.items():
                    if not np.isfinite(arr).all() and name != "loo_raw":
                        raise DetectorError(
                            f"{src / 'banks.safetensors'}: {prefix}{name} contains NaN or "
                            "infinite values; the folder is damaged (fit the detector again)"
                        )
                backends[d].append(BankBackend.from_state(m.backend, arrays))
        return _KeyModel(
            list(info["domains"]), backends, [float(w) for w in info["weights"]],
            dict(info.get("choice", {})),
            {str(d): [str(p) for p in v] for d, v in dict(info.get("bank_clips", {})).items()},
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as err:
        raise DetectorError(
            f"{src / 'banks.safetensors'}: bank {key_text} is incomplete or invalid ({err!r})"
        ) from err


def _member_dims(det: EnsembleDetector) -> list[int] | None:
    for model in det.models.values():
        for d in model.domains:
            return [int(be.std.mean.shape[0]) if be.std.mean is not None else 0
                    for be in model.backends[d]]  # fmt: skip
    return None


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
