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

import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

import stetho
from stetho.backbones import Backbone, create_backbone, resolve_checkpoint
from stetho.backbones.checkpoint import cache_dir
from stetho.config import ExperimentConfig
from stetho.data import Clip
from stetho.data.names import Key
from stetho.detector.artifact import (
    DetectorError,
    check_replaceable,
    publish_folder,
    read_meta,
)
from stetho.detector.embedding import WaveInput, as_waveform_list, embed_waveform_list
from stetho.detector.files import (
    BANK_CLIPS,
    load_state,
    read_bank_clips,
    read_safetensors,
    read_thresholds,
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
from stetho.scoring.grouped import decisions_by_key, scores_by_key
from stetho.scoring.knn import DomainKNNScorer
from stetho.scoring.threshold import decide_for_key, fit_threshold
from stetho.utils.io import atomic_write_text, sha256_file


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


class Detector:
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
        self.cfg = cfg
        self.backbone = backbone
        self.head = head
        self.class_map = class_map
        self.scorer = scorer if scorer is not None else DomainKNNScorer(cfg.backend)
        self.thresholds: dict[Key, float] = dict(thresholds or {})
        self.adapter_state = adapter_state
        self.device = torch.device(device)
        self._loader = waveform_loader
        self.detector_id = detector_id or uuid.uuid4().hex
        self.version = int(version)
        self.calibrations: list[dict[str, Any]] = list(calibrations or [])
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

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary: id, version, keys, thresholds, backbone, sample rate, stetho version."""
        return {
            "kind": "knn-detector",
            "id": self.detector_id,
            "version": self.version,
            "keys": [{"machine": m, "section": s} for m, s in self.keys],
            "thresholds": {f"{m}/{s}": float(t) for (m, s), t in sorted(self.thresholds.items())},
            "backbone": self.cfg.backbone.name,
            "sample_rate": int(self.sample_rate),
            "stetho_version": stetho.__version__,
        }

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

    def _as_list(self, waves: WaveInput, sample_rate: int | None) -> list[torch.Tensor]:
        return as_waveform_list(waves, sample_rate, self.sample_rate)

    def embed_waveforms(self, waves: WaveInput, sample_rate: int | None = None) -> np.ndarray:
        """k-NN embeddings (B, E) of mono waveforms.

        Args:
            waves: ``(N,)``, ``(B, N)`` or a list of ``(N_i,)`` arrays in [-1, 1].
            sample_rate: Their rate; resampled (soxr HQ) to :attr:`sample_rate` if different.
                ``None`` = already at :attr:`sample_rate`.
        """
        return self._embed_list(self._as_list(waves, sample_rate))

    def embed_files(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        progress: bool = False,
        num_workers: int = 0,
    ) -> np.ndarray:
        """k-NN embeddings (M, E) of audio files (decoded and resampled to :attr:`sample_rate`).

        Args:
            paths: Audio files.
            progress: Show a progress bar.
            num_workers: Threads that decode and resample the next files while the model
                embeds the current ones (0 = decode in this process). Same embeddings either way.

        Raises:
            AudioError: a file cannot be decoded or holds no samples (the message names it).
        """
        from stetho.data import AudioError
        from stetho.data.prefetch import decode_files

        out = np.zeros((len(paths), self.embed_dim), dtype=np.float32)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(paths), desc="embedding", leave=False, dynamic_ncols=True)
        idx: list[int] = []
        waves: list[torch.Tensor] = []
        decoded = decode_files(
            paths, self.sample_rate, num_workers=num_workers, loader=self._loader
        )
        for n, (i, wave, error) in enumerate(decoded, start=1):
            if wave is None:
                raise AudioError(error or f"cannot decode {paths[i]}")
            idx.append(i)
            waves.append(torch.from_numpy(wave))
            if len(waves) == _CLIP_CHUNK or n == len(paths):
                out[idx] = self._embed_named([paths[j] for j in idx], waves)
                if bar is not None:
                    bar.update(len(waves))
                idx, waves = [], []
        if bar is not None:
            bar.close()
        return out

    def _embed_named(
        self, paths: Sequence[str | os.PathLike[str]], waves: list[torch.Tensor]
    ) -> np.ndarray:
        """:meth:`_embed_list`; audio the model cannot take (e.g. too short) names its file."""
        try:
            return self._embed_list(waves)
        except ValueError:
            sr = self.sample_rate
            for path, wave in zip(paths, waves):
                try:
                    self._embed_list([wave])
                except ValueError as err:
                    n = int(wave.shape[0])
                    raise ValueError(
                        f"{path}: cannot score this audio ({n} samples = {n / sr:.3g} s at "
                        f"{sr} Hz): {err}"
                    ) from err
            raise

    def embed_clips(self, clips: Sequence[Clip], *, progress: bool = False) -> np.ndarray:
        """k-NN embeddings (M, E) of clips."""
        return self.embed_files([c.path for c in clips], progress=progress)

    # -- fitting -----------------------------------------------------------------------------
    def fit(
        self,
        clips: Iterable[Clip],
        *,
        fit_thresholds: bool = True,
        replace: bool = True,
        progress: bool = False,
    ) -> Detector:
        """Build the memory banks (and thresholds) from normal training clips.

        Args:
            clips: Normal training clips; banks are per (machine, section) and domain.
            fit_thresholds: Also fit the decision thresholds on leave-one-out training scores.
            replace: Replace all banks (default); ``False`` adds/refits only the keys in ``clips``.
            progress: Show a progress bar while embedding.

        Returns:
            ``self``.
        """
        clips = list(clips)
        if not clips:
            raise ValueError("Detector.fit needs at least one training clip")
        bad = [c.name for c in clips if c.label == "anomaly" or c.split == "test"]
        if bad:
            raise ValueError(f"Detector.fit takes normal training clips only; got e.g. {bad[:3]}")
        emb = self.embed_clips(clips, progress=progress)
        self.scorer.fit(
            emb,
            [c.key for c in clips],
            [c.domain for c in clips],
            replace=replace,
            refs=[str(Path(c.path).absolute()) for c in clips],
        )
        if replace:
            self.thresholds = {}
        if fit_thresholds:
            self.fit_thresholds(sorted({c.key for c in clips}))
        return self

    def fit_thresholds(self, keys: Sequence[Key] | None = None) -> dict[Key, float]:
        """(Re)fit thresholds from the leave-one-out scores of the banks' own clips."""
        loo = self.scorer.score_fitted(leave_one_out=True)
        fitted_keys = self.scorer.fitted_keys()
        for key in keys if keys is not None else sorted(set(fitted_keys)):
            vals = np.array([s for s, k in zip(loo, fitted_keys) if k == key])
            try:
                self.thresholds[key] = fit_threshold(vals, self.cfg.threshold)
            except ValueError as err:
                logger.warning("%s/%s: %s; threshold set to +inf (never anomalous)", *key, err)
                self.thresholds[key] = float("inf")
        return dict(self.thresholds)

    # -- scoring -----------------------------------------------------------------------------
    def score_embeddings(self, emb: np.ndarray, machine: str, section: str) -> np.ndarray:
        """Anomaly scores (M,) of k-NN embeddings (M, E) of one machine/section."""
        return self.scorer.score(emb, (machine, section))

    def score_waveforms(
        self, waves: WaveInput, machine: str, section: str, sample_rate: int | None = None
    ) -> np.ndarray:
        """Anomaly scores (B,) of waveforms of one machine/section (higher = more anomalous)."""
        self.scorer.require_key((machine, section))  # fail before the expensive embedding
        return self.score_embeddings(self.embed_waveforms(waves, sample_rate), machine, section)

    def score_files(
        self,
        paths: Sequence[str | os.PathLike[str]],
        machine: str,
        section: str,
        *,
        progress: bool = False,
        num_workers: int = 0,
    ) -> np.ndarray:
        """Anomaly scores (M,) of audio files of one machine/section.

        ``num_workers`` processes decode the next files while the model runs (see
        :meth:`embed_files`).
        """
        self.scorer.require_key((machine, section))
        emb = self.embed_files(paths, progress=progress, num_workers=num_workers)
        return self.score_embeddings(emb, machine, section)

    def score_clips(
        self, clips: Iterable[Clip], *, progress: bool = False
    ) -> dict[Key, dict[str, float]]:
        """Scores grouped as ``{(machine, section): {file name: score}}``."""
        return scores_by_key(
            clips, lambda paths, key: self.score_files(paths, *key, progress=progress)
        )

    def decide(self, scores: np.ndarray | Sequence[float], key: Key | str) -> np.ndarray:
        """Decisions (M,) int, 1 = anomalous (``score > threshold`` of ``key``)."""
        return decide_for_key(self.thresholds, scores, key)

    def decisions(self, scores: dict[Key, dict[str, float]]) -> dict[Key, dict[str, int]]:
        """Decisions for grouped scores, in the same layout."""
        return decisions_by_key(scores, self.decide)

    # -- persistence -------------------------------------------------------------------------
    def _checkpoint_info(self) -> tuple[str | None, str | None]:
        spec = self.cfg.backbone.checkpoint
        if spec is None:
            return None, None
        path = resolve_checkpoint(spec)
        return str(Path(path).resolve()), sha256_file(path)

    def _needs_full_backbone(self) -> bool:
        return self.cfg.backbone.checkpoint is None or self.cfg.finetune.strategy == "full"

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the detector folder (atomically replacing an existing detector folder).

        The folder and its files get the permissions of the process umask.

        Returns:
            The folder.

        Raises:
            DetectorError: ``directory`` exists but is a file or a non-empty folder that is not a
                saved detector (it is never overwritten), or the backbone has unmerged LoRA layers.
        """
        dest = Path(directory)
        if _has_lora(self.backbone):
            raise DetectorError(
                "merge the LoRA layers (Detector.from_training(merge=True)) before saving"
            )
        check_replaceable(dest, DETECTOR_FORMAT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        ckpt_path, ckpt_sha = self._checkpoint_info()
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        try:
            weights: dict[str, str | None] = {"backbone": None, "adapter": None}
            if self._needs_full_backbone():
                write_safetensors(_state_for_file(self.backbone), tmp / "backbone.safetensors")
                weights["backbone"] = "backbone.safetensors"
            if self.adapter_state is not None:
                write_safetensors(
                    {k: v.detach().cpu().contiguous() for k, v in self.adapter_state.items()},
                    tmp / "adapter.safetensors",
                )
                weights["adapter"] = "adapter.safetensors"
            write_safetensors(_state_for_file(self.head), tmp / "head.safetensors")
            write_safetensors(self.scorer.state_dict(), tmp / "backend.safetensors")
            write_bank_clips(tmp / BANK_CLIPS, self.scorer)
            thresholds = [
                {"machine": m, "section": s, "threshold": float(t)}
                for (m, s), t in sorted(self.thresholds.items())
            ]
            atomic_write_text(
                tmp / "thresholds.json",
                json.dumps(
                    {"config": self.cfg.threshold.to_dict(), "thresholds": thresholds}, indent=2
                )
                + "\n",
            )
            meta = {
                "format": DETECTOR_FORMAT,
                "format_version": _FORMAT_VERSION,
                "id": self.detector_id,
                "version": self.version,
                "calibrations": self.calibrations,
                "stetho_version": stetho.__version__,
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
                "head": {
                    "in_dim": int(self.head.in_dim),
                    "num_classes": int(self.head.num_classes),
                },
                "embedding_dim": self.embed_dim,
                "weights": weights,
                "keys": [f"{m}/{s}" for m, s in self.keys],
            }
            atomic_write_text(tmp / "config.json", json.dumps(meta, indent=2) + "\n")
            publish_folder(tmp, dest, DETECTOR_FORMAT)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info("detector saved to %s", dest)
        return dest

    @classmethod
    def load(
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
                off). Only the caller can grant this: the folder's own ``config.json`` is
                ignored on this point.

        Raises:
            DetectorError: missing, damaged or altered files (named), wrong or newer format,
                invalid thresholds, or a checkpoint whose SHA-256 differs.
        """
        src = Path(directory)
        meta = read_meta(src, DETECTOR_FORMAT, _FORMAT_VERSION)
        cfg_path = src / "config.json"
        try:
            cfg = ExperimentConfig.from_dict(meta["experiment"])
            binfo = dict(meta["backbone"])
            weights = dict(meta["weights"])
            class_map = ClassMap.from_dict(meta["class_map"])
            head_dims = (int(meta["head"]["in_dim"]), int(meta["head"]["num_classes"]))
        except (KeyError, TypeError, ValueError) as err:
            raise DetectorError(f"{cfg_path}: invalid detector config ({err!r})") from err
        if cfg.backbone.trust_checkpoint and not trust_checkpoint:
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
        backbone = cls._load_backbone(src, cfg, binfo, weights, checkpoint, trust_checkpoint)
        head = ProxyHead(*head_dims, cfg.head)
        load_state(head, src / "head.safetensors")
        scorer = DomainKNNScorer(cfg.backend)
        load_state(scorer, src / "backend.safetensors")
        read_bank_clips(src / BANK_CLIPS, scorer)
        thresholds = read_thresholds(src / "thresholds.json")
        adapter = read_safetensors(src / weights["adapter"]) if weights.get("adapter") else None
        backbone.eval()
        head.eval()
        return cls(
            cfg,
            backbone,
            head,
            class_map,
            scorer=scorer,
            thresholds=thresholds,
            adapter_state=adapter,
            device=device,
            # folders saved before detector identities existed: the folder name, version 1
            detector_id=str(meta.get("id") or src.resolve().name),
            version=int(meta.get("version", 1)),
            calibrations=list(meta.get("calibrations", [])),
        )

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

        try:
            if weights.get("backbone"):
                backbone = create_backbone(binfo["name"], checkpoint=None, **binfo["extra_config"])
                load_state(backbone, src / weights["backbone"], strict=True)
            else:
                path = cls._verified_checkpoint(binfo, cfg, checkpoint)
                kwargs = dict(cfg.backbone.overrides)
                if trust:
                    kwargs["trust_checkpoint"] = True
                backbone = create_backbone(binfo["name"], checkpoint=str(path), **kwargs)
                if weights.get("adapter"):
                    apply_finetuning(backbone, cfg.finetune)
                    load_lora_state_dict(backbone, read_safetensors(src / weights["adapter"]))
                    merge_lora(backbone)
        except CheckpointError as err:
            raise DetectorError(f"{src}: cannot load the backbone checkpoint: {err}") from err
        except (KeyError, TypeError) as err:
            raise DetectorError(
                f"{src / 'config.json'}: invalid backbone settings ({err!r})"
            ) from err
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
