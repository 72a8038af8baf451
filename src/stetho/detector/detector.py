# Over 500 lines: the deployable k-NN detector: fit, score, save and load must stay in step.
"""The detector artifact: backbone + head projection + k-NN banks + thresholds, saved and reloaded.

::

    det = Detector.from_training(result).fit(train_clips)      # banks + thresholds
    scores = det.score_files(paths, "fan", "00")               # (M,) higher = more anomalous
    det.decide(scores, ("fan", "00"))                          # 0/1 per file
    det.save("runs/x/detector");  det2 = Detector.load("runs/x/detector")   # identical scores

A clip's embedding is ``head.project(backbone.embed(wave))`` in eval mode; with a scoring window
(``scoring.window_seconds``; 2 s for raw-waveform models by default) the clip is cut into windows
and their embeddings are averaged. Its anomaly score is the k-NN distance of
:class:`~stetho.scoring.DomainKNNScorer` (min over the source and target banks of its
machine/section).

Thresholds: per (machine, section), fitted (gamma, 0.9 quantile by default) on the *leave-one-out*
scores of the training clips: each clip is scored against the banks with itself removed, since
with k = 1 its distance to itself would be 0.

Saved folder (written to a temporary folder, then renamed into place; an existing folder is
replaced only when it is a saved detector, and restored if the rename fails)::

    config.json          every setting, class map, backbone name, checkpoint path + SHA-256, version
    backbone.safetensors full backbone weights (full fine-tuning, or no checkpoint to rebuild from)
    adapter.safetensors  LoRA weights (LoRA runs; merged into the backbone for inference)
    head.safetensors     proxy head (projection + class centres)
    backend.safetensors  k-NN memory banks
    bank_clips.json      path of the training clip behind every bank row (absent in folders
                         saved before it existed; they load, without clip names)
    thresholds.json      decision thresholds per machine/section
    manifest.json        SHA-256 of every other file, checked on load

Nothing is pickled; checkpoints are read with ``weights_only``. A folder never grants itself
trust: ``trust_checkpoint`` in its ``config.json`` is ignored; only the person loading it can allow
a pickled checkpoint (``Detector.load(..., trust_checkpoint=True)``, CLI ``--trust-checkpoint``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from stetho.backbones import (
    Backbone,
    architecture_overrides,
    create_backbone,
    resolve_checkpoint,
)
from stetho.backbones.checkpoint import cache_dir
from stetho.config import ExperimentConfig
from stetho.data import Clip
from stetho.data.names import Key
from stetho.detector.artifact import DetectorError
from stetho.detector.base import BaseDetector, CalibrationMode, Nearest, _Held
from stetho.detector.embedding import embed_waveform_list
from stetho.detector.files import (
    BANK_CLIPS,
    load_state,
    read_bank_clips,
    read_safetensors,
    write_bank_clips,
    write_safetensors,
)
from stetho.model.adapt import (
    apply_finetuning,
    load_lora_state_dict,
    lora_state_dict,
    merge_lora,
)
from stetho.model.heads import ProxyHead
from stetho.model.labels import ClassMap
from stetho.scoring.knn import DomainKNNScorer
from stetho.utils.io import sha256_file


class TrainedParts(Protocol):
    """What a detector is built from: the parts a training run produced.

    :class:`stetho.training.TrainResult` has these attributes; the detector never imports the
    training stage (the arrows point one way: training → detector).
    """

    config: ExperimentConfig
    backbone: Backbone
    head: ProxyHead
    class_map: ClassMap
    device: str


__all__ = [
    "DETECTOR_FORMAT",
    "Detector",
    "DetectorError",
    "TrainedParts",
]

logger = logging.getLogger(__name__)

#: ``config.json`` format tag and version of saved detectors.
DETECTOR_FORMAT = "stetho-detector"
#: 2: ``manifest.json`` with the SHA-256 of every file (version 1 folders still load).
_FORMAT_VERSION = 2
_CLIP_CHUNK = 64  # clips decoded at once when embedding many files


def _state_for_file(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share memory (e.g. BEATs' shared position bias)
    return {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}


class Detector(BaseDetector):
    """A fitted anomaly detector.

    Args:
        cfg: The experiment config (scoring, back-end and threshold settings are read from it).
        backbone: The backbone (fine-tuned; LoRA merged or not).
        head: The trained proxy head (its projection gives the k-NN embedding).
        class_map: Proxy classes the head was trained on.
        scorer: A fitted k-NN scorer (default: a new, unfitted one).
        thresholds: Decision threshold per (machine, section).
        adapter_state: LoRA weights to save in ``adapter.safetensors`` (set by
            :meth:`from_training` for LoRA runs).
        device: Where to run the models.
        waveform_loader: ``loader(path, sample_rate) -> (N,) float32``; default
            :func:`stetho.data.load_audio`.
        detector_id: Stable identity kept across calibrations (default: a new UUID).
        version: 1 for a new detector, +1 per ``stetho calibrate``.
        calibrations: Log of the calibrations that produced this version (saved with it).
    """

    kind: ClassVar[str] = "knn"
    format: ClassVar[str] = DETECTOR_FORMAT
    format_version: ClassVar[int] = _FORMAT_VERSION

    def __init__(
        self,
        cfg: ExperimentConfig,
        backbone: Backbone,
        head: ProxyHead,
        class_map: ClassMap,
        *,
        scorer: DomainKNNScorer | None = None,
        thresholds: dict[Key, float] | None = None,
        adapter_state: dict[str, torch.Tensor] | None = None,
        device: str | torch.device = "cpu",
        waveform_loader: Callable[[Path, int], np.ndarray] | None = None,
        detector_id: str | None = None,
        version: int = 1,
        calibrations: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(
            cfg.threshold, detector_id=detector_id, version=version, calibrations=calibrations
        )
        self.cfg = cfg
        self.backbone = backbone
        self.head = head
        self.class_map = class_map
        self.scorer = scorer if scorer is not None else DomainKNNScorer(cfg.backend)
        self.thresholds = dict(thresholds or {})
        self.adapter_state = adapter_state
        self.device = torch.device(device)
        self._waveform_loader = waveform_loader
        self.backbone.to(self.device)
        self.head.to(self.device)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_training(
        cls, result: TrainedParts, *, merge: bool = True, device: str | None = None
    ) -> Detector:
        """A detector from the parts of a training run (a ``TrainResult``; not yet fitted).

        For LoRA runs the adapter weights are kept for saving and, with ``merge``, folded into
        the backbone (in place: ``result.backbone`` is the merged model afterwards).
        """
        backbone = result.backbone
        adapter = None
        if result.config.finetune.strategy == "lora" and _has_lora(backbone):
            adapter = lora_state_dict(backbone)
            if merge:
                merge_lora(backbone)
        backbone.set_spec_augment(None)
        return cls(
            result.config,
            backbone,
            result.head,
            result.class_map,
            adapter_state=adapter,
            device=device or result.device,
        )

    @property
    def sample_rate(self) -> int:
        """Rate (Hz) the backbone expects; inputs at other rates are resampled."""
        return int(self.backbone.sample_rate)

    @property
    def keys(self) -> list[Key]:
        """(machine, section) pairs with fitted memory banks."""
        return self.scorer.keys

    @property
    def embed_dim(self) -> int:
        """Size of the k-NN embedding."""
        return int(self.head.out_dim)

    def window_seconds(self) -> float | None:
        """Scoring window in seconds (``scoring.window_seconds``), ``None`` for whole clips."""
        return self.cfg.scoring.window_seconds_for(self.cfg.data, self.backbone.input_kind)

    def _describe_kind(self) -> dict[str, Any]:
        return {"backbone": self.cfg.backbone.name, "embedding_dim": self.embed_dim}

    # -- embedding ---------------------------------------------------------------------------
    def _windows(self) -> tuple[int | None, int | None]:
        sec = self.window_seconds()
        if sec is None:
            return None, None
        win = max(1, round(sec * self.sample_rate))
        hop_s = self.cfg.scoring.hop_seconds
        hop = max(1, round(hop_s * self.sample_rate)) if hop_s else max(1, win // 2)
        return win, hop

    @torch.inference_mode()
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Waveforms (b, n) → k-NN embeddings (b, E), float32 on the CPU."""
        emb = self.head.project(self.backbone.embed(x.to(self.device, torch.float32)))
        return emb.float().cpu()

    def _embed_list(self, waves: list[torch.Tensor]) -> np.ndarray:
        self.backbone.eval()
        self.head.eval()
        win, hop = self._windows()
        return embed_waveform_list(
            waves, self._forward, self.embed_dim, self.cfg.scoring.batch_size, win, hop
        )

    def embed(self, waves: list[np.ndarray]) -> np.ndarray:
        """k-NN embeddings (B, E) of mono waveforms at :attr:`sample_rate` (windows averaged)."""
        if not waves:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return self._embed_list([torch.as_tensor(np.asarray(w, dtype=np.float32)) for w in waves])

    def _loader(self) -> Any:
        return self._waveform_loader

    def embed_clips(self, clips: Sequence[Clip], *, progress: bool = False) -> np.ndarray:
        """k-NN embeddings (M, E) of clips."""
        return self.embed_files([c.path for c in clips], progress=progress)

    # -- the contract's kind-specific half ---------------------------------------------------
    def score_features(self, feats: np.ndarray, key: Key) -> np.ndarray:
        """k-NN distance (M,) of embeddings to the key's banks (min over domain banks)."""
        return self.scorer.score(feats, key)

    def score_embeddings(self, emb: np.ndarray, machine: str, section: str) -> np.ndarray:
        """Anomaly scores (M,) of k-NN embeddings (M, E) of one machine/section."""
        return self.score_features(emb, self.require_key((machine, section)))

    def _fit_key(
        self, key: Key, clips: list[Clip], mode: CalibrationMode, progress: bool
    ) -> np.ndarray:
        emb = torch.from_numpy(np.asarray(self.embed_clips(clips, progress=progress)))
        domains: list[str | None] = [
            "target" if mode == "add" and self.scorer.cfg.domain_banks else c.domain for c in clips
        ]
        refs = [str(Path(c.path).absolute()) for c in clips]
        embs = [emb]
        if mode == "add" and key in self.scorer.banks:  # keep the old banks beside the new clips
            for dom, bank in self.scorer.banks[key].items():
                if len(bank):
                    embs.append(bank.embeddings)
                    domains += [dom] * len(bank)
                    old = self.scorer.refs.get(key, {}).get(dom) or [""] * len(bank)
                    refs += list(old)
        self.scorer.fit(torch.cat(embs), [key] * len(domains), domains, replace=False, refs=refs)
        return self.scorer.held_out_scores(key)

    def nearest(self, feats: np.ndarray, key: Key) -> list[Nearest | None]:
        """The bank clip nearest to each embedding (its recording path when known)."""
        return [
            Nearest(n.ref, float(n.distance), n.domain) for n in self.scorer.nearest(feats, key)
        ]

    def _forget(self, key: Key) -> None:
        self.scorer.banks.pop(key, None)
        self.scorer.refs.pop(key, None)

    def _key_state(self, keys: list[Key]) -> Any:
        return {k: (self.scorer.banks.get(k), self.scorer.refs.get(k)) for k in keys}

    def _set_key_state(self, state: Any) -> None:
        for k, (banks, refs) in state.items():
            if banks is None:
                self.scorer.banks.pop(k, None)
            else:
                self.scorer.banks[k] = banks
            if refs is None:
                self.scorer.refs.pop(k, None)
            else:
                self.scorer.refs[k] = refs

    # -- persistence -------------------------------------------------------------------------
    def _checkpoint_info(self) -> tuple[str | None, str | None]:
        spec = self.cfg.backbone.checkpoint
        if spec is None:
            return None, None
        path = resolve_checkpoint(spec)
        return str(Path(path).resolve()), sha256_file(path)

    def _needs_full_backbone(self) -> bool:
        return self.cfg.backbone.checkpoint is None or self.cfg.finetune.strategy == "full"

    def _write_parts(self, folder: Path) -> dict[str, Any]:
        """Weights, head, banks and bank clip names; LoRA must be merged first."""
        if _has_lora(self.backbone):
            raise DetectorError(
                "merge the LoRA layers (Detector.from_training(merge=True)) before saving"
            )
        ckpt_path, ckpt_sha = self._checkpoint_info()
        weights: dict[str, str | None] = {"backbone": None, "adapter": None}
        if self._needs_full_backbone():
            write_safetensors(_state_for_file(self.backbone), folder / "backbone.safetensors")
            weights["backbone"] = "backbone.safetensors"
        if self.adapter_state is not None:
            write_safetensors(
                {k: v.detach().cpu().contiguous() for k, v in self.adapter_state.items()},
                folder / "adapter.safetensors",
            )
            weights["adapter"] = "adapter.safetensors"
        write_safetensors(_state_for_file(self.head), folder / "head.safetensors")
        write_safetensors(self.scorer.state_dict(), folder / "backend.safetensors")
        write_bank_clips(folder / BANK_CLIPS, self.scorer)
        return {
            "experiment": self.cfg.to_dict(),
            "class_map": self.class_map.to_dict(),
            "backbone": {
                "name": self.cfg.backbone.name,
                "checkpoint": ckpt_path,
                "checkpoint_sha256": ckpt_sha,
                "sample_rate": self.sample_rate,
                "embed_dim": int(self.backbone.embed_dim),
                "input_kind": self.backbone.input_kind,
                "extra_config": self.backbone.extra_config(),
            },
            "head": {"in_dim": int(self.head.in_dim), "num_classes": int(self.head.num_classes)},
            "embedding_dim": self.embed_dim,
            "weights": weights,
            "keys": [f"{m}/{s}" for m, s in self.keys],
        }

    @classmethod
    def load(  # type: ignore[override]
        cls,
        directory: str | os.PathLike[str],
        *,
        device: str | torch.device = "cpu",
        checkpoint: str | os.PathLike[str] | None = None,
        trust_checkpoint: bool = False,
    ) -> Detector:
        """Rebuild a detector saved by :meth:`save`; it gives identical scores.

        Every file is checked against the SHA-256 recorded in ``manifest.json`` first.

        Args:
            directory: The detector folder.
            device: Where to run the models.
            checkpoint: Backbone checkpoint location if it moved since saving (its SHA-256 must
                match the recorded one).
            trust_checkpoint: Allow pickled objects in the backbone checkpoint (``weights_only``
                off). Only the caller can grant this: nothing in the folder can.

        Raises:
            DetectorError: missing, damaged or altered files (named), wrong or newer format,
                invalid thresholds, or a checkpoint whose SHA-256 differs.
        """
        det = super().load(
            directory, device=device, checkpoint=checkpoint, trust_checkpoint=trust_checkpoint
        )
        assert isinstance(det, Detector)
        return det

    @classmethod
    def _read_parts(cls, folder: Path, meta: dict[str, Any], options: dict[str, Any]) -> Detector:
        src = folder
        cfg_path = src / "config.json"
        try:
            cfg = ExperimentConfig.from_dict(meta["experiment"])
            binfo = dict(meta["backbone"])
            weights = dict(meta["weights"])
            class_map = ClassMap.from_dict(meta["class_map"])
            head_dims = (int(meta["head"]["in_dim"]), int(meta["head"]["num_classes"]))
        except (KeyError, TypeError, ValueError) as err:
            raise DetectorError(f"{cfg_path}: invalid detector config ({err!r})") from err
        trust = bool(options.get("trust_checkpoint", False))
        if cfg.backbone.trust_checkpoint and not trust:
            logger.warning(
                "%s: ignoring trust_checkpoint in the saved config (a detector folder cannot "
                "grant itself trust); pass trust_checkpoint=True / --trust-checkpoint to allow "
                "a pickled checkpoint you trust",
                cfg_path,
            )
        names = [w for w in weights.values() if w]
        for name in [*names, "head.safetensors", "backend.safetensors", "thresholds.json"]:
            rel = Path(str(name))
            if rel.is_absolute() or ".." in rel.parts:
                raise DetectorError(f"{cfg_path}: weight file {name!r} lies outside the folder")
            if not (src / name).is_file():
                raise DetectorError(f"{src}: missing {name}")
        backbone = cls._load_backbone(src, cfg, binfo, weights, options.get("checkpoint"), trust)
        head = ProxyHead(*head_dims, cfg.head)
        load_state(head, src / "head.safetensors")
        scorer = DomainKNNScorer(cfg.backend)
        load_state(scorer, src / "backend.safetensors")
        _check_bank_dims(src / "backend.safetensors", scorer, int(head.out_dim))
        read_bank_clips(src / BANK_CLIPS, scorer)
        adapter = read_safetensors(src / weights["adapter"]) if weights.get("adapter") else None
        backbone.eval()
        head.eval()
        det = cls(
            cfg,
            backbone,
            head,
            class_map,
            scorer=scorer,
            adapter_state=adapter,
            device=options.get("device", "cpu"),
        )
        det._read_thresholds(src, nonnegative=True)
        for key in det.keys:  # folders saved before held-out scores were kept
            if key not in det.held_out or not det.held_out[key].scores.size:
                fit = det.held_out[key].fit if key in det.held_out else {}
                det.held_out[key] = _Held(scorer.held_out_scores(key), fit)
        return det

    @classmethod
    def _load_backbone(
        cls,
        src: Path,
        cfg: ExperimentConfig,
        binfo: dict[str, Any],
        weights: dict[str, Any],
        checkpoint: str | os.PathLike[str] | None,
        trust: bool,
    ) -> Backbone:
        from stetho.backbones.checkpoint import CheckpointError

        cfg_path = src / "config.json"
        try:
            # dicts read from the folder hold architecture settings only: never trust
            name = binfo["name"]
            arch = architecture_overrides(
                name, binfo.get("extra_config") or {}, source=f"{cfg_path} (backbone.extra_config)"
            )
            if weights.get("backbone"):
                backbone = create_backbone(name, checkpoint=None, **arch)
                load_state(backbone, src / weights["backbone"], strict=True)
            else:
                path = cls._verified_checkpoint(binfo, cfg, checkpoint)
                overrides = architecture_overrides(
                    name,
                    cfg.backbone.overrides,
                    source=f"{cfg_path} (experiment.backbone.overrides)",
                )
                backbone = create_backbone(
                    name, checkpoint=str(path), trust_checkpoint=trust, **overrides
                )
                if weights.get("adapter"):
                    apply_finetuning(backbone, cfg.finetune)
                    load_lora_state_dict(backbone, read_safetensors(src / weights["adapter"]))
                    merge_lora(backbone)
        except CheckpointError as err:
            raise DetectorError(f"{src}: cannot load the backbone checkpoint: {err}") from err
        except (KeyError, TypeError, ValueError) as err:
            raise DetectorError(f"{cfg_path}: invalid backbone settings ({err})") from err
        if backbone.extra_config() != binfo.get("extra_config"):
            logger.warning(
                "%s: rebuilt backbone's architecture settings differ from the saved ones", src
            )
        return backbone

    @staticmethod
    def _verified_checkpoint(
        binfo: dict[str, Any], cfg: ExperimentConfig, override: str | os.PathLike[str] | None
    ) -> Path:
        spec = (
            override if override is not None else binfo.get("checkpoint") or cfg.backbone.checkpoint
        )
        if spec is None:
            raise DetectorError(
                "the detector has neither backbone weights nor a checkpoint to rebuild from"
            )
        try:
            path = resolve_checkpoint(spec)
        except Exception as err:
            raise DetectorError(
                f"backbone checkpoint {spec} not found ({err}); pass checkpoint=... (CLI: "
                f"--checkpoint), or place the file in $STETHO_CACHE ({cache_dir()}) under its "
                f"original name {Path(str(spec)).name!r}"
            ) from err
        want = binfo.get("checkpoint_sha256")
        if want:
            got = sha256_file(path)
            if got != want:
                raise DetectorError(
                    f"checkpoint {path} has SHA-256 {got}, but the detector was built with {want}"
                )
        return Path(path)


def _has_lora(module: torch.nn.Module) -> bool:
    return any(".lora_A." in name for name, _ in module.named_parameters())


def _check_bank_dims(path: Path, scorer: DomainKNNScorer, dim: int) -> None:
    """Refuse banks of another embedding size or with non-finite rows, naming the file."""
    for (m, s), banks in scorer.banks.items():
        for dom, bank in banks.items():
            if not len(bank):
                continue
            if bank.dim != dim:
                raise DetectorError(
                    f"{path}: bank {m}/{s}/{dom} holds {bank.dim}-d embeddings, the model makes "
                    f"{dim}-d ones; the folder is inconsistent (save the detector again)"
                )
            if not bool(torch.isfinite(bank.embeddings).all()):
                raise DetectorError(
                    f"{path}: bank {m}/{s}/{dom} contains NaN or infinite rows; the folder is "
                    "damaged (fit or save the detector again)"
                )
