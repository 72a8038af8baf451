"""The state of a training run and how it is set up (models, optimiser, data).

:func:`setup` builds a :class:`TrainState` (seeded, nothing trained); the loop
(:mod:`stetho.training.loop`) moves it along and :mod:`stetho.training.checkpoint` saves and
restores it. :class:`TrainResult` is what :func:`stetho.training.train` returns and
:class:`TrainedModel` what a per-epoch :data:`Validator` sees.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stetho.backbones import Backbone, architecture_overrides, create_backbone
from stetho.config import BackboneConfig, ExperimentConfig, TrainConfig
from stetho.data import Clip, audio_info
from stetho.model.adapt import apply_finetuning, trainable_parameter_count
from stetho.model.heads import ProxyHead
from stetho.model.labels import ClassMap
from stetho.model.proxy import build_proxy_task
from stetho.training.checkpoint import CHECKPOINT_NAME
from stetho.training.dataset import (
    ClipDataset,
    WaveformCache,
    global_batch_sizes,
    resolve_crop_samples,
)
from stetho.training.distributed import DistInfo

__all__ = [
    "StepInfo",
    "TrainResult",
    "TrainState",
    "TrainedModel",
    "Validator",
    "build_backbone",
    "resolve_device",
    "seed_everything",
    "setup",
]

logger = logging.getLogger(__name__)


@dataclass
class StepInfo:
    """What a training callback sees after each optimiser step.

    Attributes:
        epoch: 0-based epoch of the step.
        step: Global number of optimiser steps done so far (1 after the first step).
        step_in_epoch: Steps done in this epoch.
        loss: Loss of the step (averaged over processes).
        lr: Learning rate used for the step.
    """

    epoch: int
    step: int
    step_in_epoch: int
    loss: float
    lr: float


@dataclass(frozen=True)
class TrainedModel:
    """What a :data:`Validator` sees at the end of an epoch.

    The backbone has no SpecAugment during the call; the modules' train/eval modes are restored
    afterwards, so the validator may switch them freely.

    Attributes:
        backbone: The backbone being trained (LoRA unmerged).
        head: The proxy head.
        class_map: Proxy classes of the training clips.
        device: Device the models live on.
        load_waveform: ``load(path, sample_rate) -> (N,) float32`` through the training's
            waveform cache (saves decoding the training clips again).
    """

    backbone: Backbone
    head: ProxyHead
    class_map: ClassMap
    device: torch.device
    load_waveform: Callable[[Path, int], np.ndarray]


#: Per-epoch validation: metrics (e.g. ``val_official_score``) to add to the epoch's record.
Validator = Callable[[TrainedModel], Mapping[str, float]]


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        backbone: The trained backbone (LoRA still unmerged), in eval mode, on ``device``.
        head: The trained proxy head, in eval mode.
        class_map: Proxy classes of the training clips.
        config: The experiment config used.
        out_dir: Training output folder.
        checkpoint: The final resumable checkpoint (``None`` if nothing was trained).
        epochs: Completed epochs.
        steps: Optimiser steps done.
        history: One dict per completed epoch: ``epoch, step, loss, lr, seconds`` and, when
            validated, the validator's metrics (``val_official_score, val_arithmetic_mean``).
        device: Device the models live on.
        trainable_params: Parameters trained (backbone + head), counted before training (a
            detector built from this result may merge LoRA into the backbone afterwards).
    """

    backbone: Backbone
    head: ProxyHead
    class_map: ClassMap
    config: ExperimentConfig
    out_dir: Path
    checkpoint: Path | None
    epochs: int
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    device: str = "cpu"
    trainable_params: int = 0

    @property
    def final_loss(self) -> float | None:
        """Mean training loss of the last epoch (``None`` before any epoch)."""
        return float(self.history[-1]["loss"]) if self.history else None


# -- helpers ----------------------------------------------------------------------------------
def resolve_device(spec: str, info: DistInfo | None = None) -> torch.device:
    """``"auto"`` → ``cuda:<local rank>`` when CUDA is available, else ``cpu``; else ``spec``."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", info.local_rank if info is not None else 0)
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={spec!r} but CUDA is not available; use 'cpu' or 'auto'")
    if device.type == "cuda" and device.index is None and info is not None and info.enabled:
        device = torch.device("cuda", info.local_rank)
    return device


def build_backbone(cfg: BackboneConfig) -> Backbone:
    """``create_backbone`` from a :class:`BackboneConfig` (checkpoint, trust flag, overrides).

    ``cfg`` is the caller's own experiment config: its ``trust_checkpoint`` is the caller's
    decision. Its ``overrides`` hold architecture settings only (``trust_checkpoint`` there is
    refused, so a saved config cannot carry trust along in them).
    """
    overrides = architecture_overrides(cfg.name, cfg.overrides, source="backbone.overrides")
    return create_backbone(
        cfg.name,
        checkpoint=cfg.checkpoint,
        trust_checkpoint=bool(cfg.trust_checkpoint),
        **overrides,
    )


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# -- the state ------------------------------------------------------------------------------
@dataclass
class TrainState:
    """Everything a training run holds: models, optimiser, data and the counters to resume.

    Built by :func:`setup`; the step functions move it along. ``epoch``/``step_in_epoch``/
    ``step``, the running loss of the current epoch and ``history`` are what a checkpoint saves
    besides the weights, the optimiser and the RNG states.
    """

    cfg: ExperimentConfig
    info: DistInfo
    device: torch.device
    out_dir: Path
    class_map: ClassMap
    backbone: Backbone
    head: ProxyHead
    optimizer: torch.optim.Optimizer
    params: list[nn.Parameter]
    cache: WaveformCache
    dataset: ClipDataset
    batch_sizes: list[int]
    warmup: int
    #: whether the checkpoint stores the whole backbone (it cannot be rebuilt from a file)
    full_state: bool
    #: whether the backbone has parameters at all (``logmel`` has none: head-only training)
    has_params: bool
    n_trainable: int
    use_amp: bool
    use_compile: bool
    compile_options: dict[str, Any] = field(default_factory=dict)
    epoch: int = 0
    step_in_epoch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    lr: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)
    #: step of the last checkpoint written or resumed from (``None``: none yet)
    saved_step: int | None = None

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps per epoch."""
        return len(self.batch_sizes)

    @property
    def total_steps(self) -> int:
        """Optimiser steps of the whole run."""
        return self.steps_per_epoch * self.cfg.train.epochs

    @property
    def checkpoint_path(self) -> Path:
        """``out_dir/checkpoint.pt``."""
        return self.out_dir / CHECKPOINT_NAME

    @property
    def backbone_trainable(self) -> bool:
        """Whether any backbone weight trains (else only the head does)."""
        return trainable_parameter_count(self.backbone) > 0


# -- setup ------------------------------------------------------------------------------------
def check_shortest_clip(clips: list[Clip], backbone: Backbone, *, amp: bool = False) -> None:
    """Refuse training clips too short for the backbone, naming the shortest one.

    For whole-clip training (every batch is cut to the shortest clip): the shortest clip (from
    the file headers) is embedded once as silence of its length; a model that cannot take it
    (e.g. shorter than one STFT frame) would otherwise fail in the first step with a message
    naming no file (not in the paper: a usability check). Fixed-length crops are padded, and
    clips too short to score are named when the detector embeds them. ``amp``: probe under the
    training forward's bf16 autocast, as the training step runs.

    Raises:
        ValueError: the shortest clip is too short; the message names it.
    """
    if not clips:
        return
    infos = [(c, audio_info(c.path)) for c in clips]
    clip, info = min(infos, key=lambda ci: ci[1].seconds)
    n = max(1, int(info.frames * backbone.sample_rate // info.samplerate))
    device = next((p.device for p in backbone.parameters()), torch.device("cpu"))
    was_training = backbone.training
    backbone.eval()
    try:
        with (
            torch.no_grad(),
            torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp),
        ):
            backbone.embed(torch.zeros(1, n, device=device))
    except (ValueError, RuntimeError) as err:
        raise ValueError(
            f"{clip.path}: training clip too short for {backbone.__class__.__name__} "
            f"({info.frames} samples = {info.seconds:.3g} s at {info.samplerate} Hz): {err}. "
            "Remove it (or re-record it)"
        ) from err
    finally:
        backbone.train(was_training)


def setup(
    cfg: ExperimentConfig,
    clips: list[Clip],
    out_dir: Path,
    info: DistInfo,
    *,
    backbone_factory: Callable[[BackboneConfig], Backbone] = build_backbone,
    accelerate: bool | None = None,
    compile_options: Mapping[str, Any] | None = None,
) -> TrainState:
    """Build the models (seeded), the optimiser and the data of a run (nothing trained yet)."""
    tc = cfg.train
    device = resolve_device(tc.device, info)
    use_amp, use_compile = _gpu_options(tc, device, accelerate)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    proxy = build_proxy_task(  # warns on a one-class task
        clips, tc.proxy, tc.proxy_options, trains=tc.epochs > 0
    )
    class_map = proxy.class_map
    seed_everything(tc.seed)
    backbone = backbone_factory(cfg.backbone)
    has_params = any(True for _ in backbone.parameters())
    if has_params:
        apply_finetuning(backbone, cfg.finetune)
    else:
        logger.info("backbone %s has no parameters: training the head only", cfg.backbone.name)
    head = ProxyHead(backbone.embed_dim, len(class_map), cfg.head)
    n_trainable = trainable_parameter_count(backbone) + trainable_parameter_count(head)
    if backbone.input_kind == "fbank" and cfg.data.spec_augment is not None:
        from stetho.frontend.specaugment import SpecAugment

        backbone.set_spec_augment(SpecAugment(cfg.data.spec_augment))
    else:
        backbone.set_spec_augment(None)
    backbone.to(device)
    head.to(device)
    params = [p for p in list(backbone.parameters()) + list(head.parameters()) if p.requires_grad]
    params = list({id(p): p for p in params}.values())
    opt_cls = torch.optim.AdamW if tc.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(params, lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay)
    logger.info(
        "training %s (%s): %d trainable backbone + %d head parameters, %d classes, device %s",
        cfg.backbone.name,
        cfg.finetune.strategy if has_params else "head only",
        trainable_parameter_count(backbone),
        trainable_parameter_count(head),
        len(class_map),
        device,
    )
    cache = WaveformCache(cfg.data.cache_mb << 20)
    crop_seconds = cfg.data.crop_seconds_for(backbone.input_kind)
    if crop_seconds is None:  # whole clips: the shortest one sets the length of every batch
        check_shortest_clip(clips, backbone, amp=use_amp)
    crop = resolve_crop_samples(clips, backbone.sample_rate, crop_seconds)
    dataset = ClipDataset(
        clips, backbone.sample_rate, crop_samples=crop, seed=tc.seed, cache=cache, proxy=proxy
    )
    batch_sizes = global_batch_sizes(len(dataset), tc.batch_size, info.world_size)
    if not batch_sizes:
        raise ValueError(
            f"{len(dataset)} training clips are too few for {info.world_size} processes"
        )
    steps_per_epoch = len(batch_sizes)
    warmup = (
        tc.warmup_steps
        if tc.warmup_steps is not None
        else round(tc.warmup_epochs * steps_per_epoch)
    )
    return TrainState(
        cfg=cfg,
        info=info,
        device=device,
        out_dir=out_dir,
        class_map=class_map,
        backbone=backbone,
        head=head,
        optimizer=optimizer,
        params=params,
        cache=cache,
        dataset=dataset,
        batch_sizes=list(batch_sizes),
        warmup=warmup,
        # the whole backbone when its weights cannot be rebuilt from a checkpoint file
        full_state=cfg.backbone.checkpoint is None or cfg.finetune.strategy == "full",
        has_params=has_params,
        n_trainable=n_trainable,
        use_amp=use_amp,
        use_compile=use_compile,
        compile_options=dict(compile_options or {}),
        lr=tc.lr,
    )


def _gpu_options(
    tc: TrainConfig, device: torch.device, accelerate: bool | None
) -> tuple[bool, bool]:
    """``(use bf16 autocast, use torch.compile)``: GPU-only options, logged when ignored."""
    accelerated = device.type == "cuda" if accelerate is None else accelerate
    if tc.amp == "bf16" and not accelerated:
        logger.info("train.amp='bf16' is ignored on %s (GPU only)", device)
    if tc.compile and not accelerated:
        logger.info("train.compile=True is ignored on %s (GPU only)", device)
    return tc.amp == "bf16" and accelerated, tc.compile and accelerated
