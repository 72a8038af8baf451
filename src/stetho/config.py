"""The experiment configuration: one typed tree for backbone, fine-tuning, training and scoring.

An :class:`ExperimentConfig` is what a YAML file in ``configs/`` describes and what a saved
detector stores in ``config.json``. Every section has documented defaults; a YAML file only lists
what differs (the paper configs in ``configs/paper/`` give ``backbone``, ``finetune``, ``head`` and
``train``; every other section keeps its defaults)::

    cfg = load_experiment_config("configs/beats_lora.yaml", ["train.lr=1e-4", "backend.k=2"])

Defaults follow the paper (arXiv 2409.07016): Adam, learning rate 5e-5 with a warm-up, batch 8,
30 epochs, ArcFace on attribute classes, LoRA r = 64 on q and v, SpecAugment for spectrogram
models, 2 s crops for raw-waveform models, k-NN (k = 1, cosine) back-end. Values the paper does not
state (warm-up length, decay shape, gradient clipping, seed) are marked "not in the paper".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from stetho.frontend.specaugment import SpecAugmentConfig
from stetho.model.adapt import FinetuneConfig
from stetho.model.heads import HeadConfig
from stetho.scoring.ensemble import EnsembleConfig
from stetho.scoring.knn import KNNConfig
from stetho.scoring.threshold import ThresholdConfig
from stetho.utils.config import ConfigBase, ConfigError

__all__ = [
    "BackboneConfig",
    "DataConfig",
    "ExperimentConfig",
    "ScoringConfig",
    "TrainConfig",
    "load_experiment_config",
]

#: Crop length used for raw-waveform models when ``crop_seconds="auto"`` (the paper's 2 s).
WAVEFORM_SEGMENT_SECONDS = 2.0


@dataclass
class BackboneConfig(ConfigBase):
    """Which pre-trained model to start from.

    Attributes:
        name: Registry name (``stetho backbones`` lists them); default ``"logmel"`` (weight-free,
            runs anywhere).
        checkpoint: Local path, URL or cache file name of the official weights; ``None`` =
            random initialisation (tiny test models) or no weights (``logmel``).
        trust_checkpoint: Allow pickled objects when loading the checkpoint
            (pickled objects are unpickled: ``weights_only`` off); only for files of trusted origin.
        overrides: Architecture overrides passed to the factory (e.g. ``{encoder_layerdrop: 0.0}``).
    """

    name: str = "logmel"
    checkpoint: str | None = None
    trust_checkpoint: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig(ConfigBase):
    """Which clips to use and how training inputs are cropped and augmented.

    Attributes:
        crop_seconds: Training crop length in seconds (a random crop per sample and epoch;
            formerly ``segment_seconds``, which still loads).
            ``"auto"`` (default): 2.0 s for raw-waveform models (the paper), the whole clip for
            spectrogram models. ``None``: whole clips; since a batch needs one length, clips are
            cropped to the shortest training clip. A number: that crop for every model.
        spec_augment: Frequency/time masking for spectrogram (``fbank``) models during training
            (the paper uses SpecAugment); ``None`` disables it. Never applied to raw-waveform models.
        machines: Restrict to these machine types (default: all found).
        sections: Restrict to these sections, e.g. ``["00"]`` (default: all).
        year: DCASE year of the data (default: inferred from the folder name, else 2023 rules
            for evaluation).
        cache_mb: Upper bound of the in-memory cache of decoded training waveforms (per process).
        train_partitions: Partitions whose normal ``train`` clips are used for fine-tuning and
            for the k-NN memory banks: ``["dev"]`` (default), or ``["dev", "eval"]`` to also use
            the eval set's "additional training" clips, as DCASE challenge submissions may (one
            model for all machine types; the eval test clips can then be scored without refitting).
    """

    crop_seconds: float | Literal["auto"] | None = "auto"
    spec_augment: SpecAugmentConfig | None = field(default_factory=SpecAugmentConfig)
    machines: list[str] | None = None
    sections: list[str] | None = None
    year: int | None = None
    cache_mb: int = 2048
    train_partitions: list[Literal["dev", "eval"]] = field(default_factory=lambda: ["dev"])

    config_aliases: ClassVar[dict[str, str]] = {"segment_seconds": "crop_seconds"}

    def __post_init__(self) -> None:
        if not self.train_partitions:
            raise ConfigError("data.train_partitions must name at least one of ['dev', 'eval']")
        if isinstance(self.crop_seconds, float | int) and self.crop_seconds <= 0:
            raise ConfigError(
                f"data.crop_seconds must be > 0, 'auto' or null, got {self.crop_seconds}"
            )

    def crop_seconds_for(self, input_kind: str) -> float | None:
        """Resolved training crop length for a backbone of ``input_kind`` (None = whole clip)."""
        if self.crop_seconds == "auto":
            return WAVEFORM_SEGMENT_SECONDS if input_kind == "waveform" else None
        return None if self.crop_seconds is None else float(self.crop_seconds)


@dataclass
class TrainConfig(ConfigBase):
    """Optimisation settings.

    Attributes:
        epochs: Passes over the training clips (paper: 30).
        batch_size: *Global* batch size (paper: 8). With ``torchrun`` it is split across the
            processes, so N processes with B/N each reproduce one process with B.
        lr: Peak learning rate (paper: 5e-5).
        optimizer: ``"adam"`` (paper) or ``"adamw"`` (decoupled weight decay).
        betas: Adam betas (PyTorch defaults; not in the paper).
        weight_decay: L2 penalty (Adam) or decoupled decay (AdamW); default 0.
        warmup_epochs: Linear warm-up from 0 to ``lr`` over this many epochs (the paper uses a
            warm-up without giving its length; default 1 epoch). Ignored if ``warmup_steps`` is set.
        warmup_steps: Warm-up length in optimiser steps (overrides ``warmup_epochs``).
        schedule: Decay after warm-up: ``"linear"`` (to ``min_lr_ratio · lr`` at the last step,
            default), ``"cosine"``, or ``"constant"`` (not in the paper).
        min_lr_ratio: Final learning rate as a fraction of ``lr`` (default 0).
        grad_clip: Clip the global gradient norm to this value (default 1.0; ``None`` = off).
        amp: ``"bf16"`` autocast on GPU; ``"none"`` (default). Ignored on CPU (logged).
        compile: ``torch.compile`` the backbone on GPU (default off). Ignored on CPU (logged).
        seed: Seed of model initialisation, shuffling, crops and augmentation.
        deterministic: ``torch.use_deterministic_algorithms(True)`` (slower on GPU; exact resume).
        num_workers: DataLoader worker processes (0 = load in the main process).
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``…
        log_every: Write the running loss to ``metrics.csv``/TensorBoard every N steps.
        checkpoint_every_steps: Also write the resumable checkpoint every N steps (it is always
            written at the end of each epoch); ``None`` = epoch ends only.
        val_every: Validate (Ω on labelled dev test clips) every N epochs when validation clips
            are given; 0 disables validation.
        tensorboard: Write TensorBoard event files (if ``tensorboard`` is installed).
    """

    epochs: int = 30
    batch_size: int = 8
    lr: float = 5e-5
    optimizer: Literal["adam", "adamw"] = "adam"
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_epochs: float = 1.0
    warmup_steps: int | None = None
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    amp: Literal["none", "bf16"] = "none"
    compile: bool = False
    seed: int = 13711
    deterministic: bool = False
    num_workers: int = 0
    device: str = "auto"
    log_every: int = 10
    checkpoint_every_steps: int | None = None
    val_every: int = 1
    tensorboard: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ConfigError(f"train.epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.warmup_epochs < 0 or (self.warmup_steps is not None and self.warmup_steps < 0):
            raise ConfigError("train.warmup_epochs / warmup_steps must be >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.checkpoint_every_steps is not None and self.checkpoint_every_steps < 1:
            raise ConfigError("train.checkpoint_every_steps must be >= 1 or null")
        if self.log_every < 1:
            raise ConfigError(f"train.log_every must be >= 1, got {self.log_every}")


@dataclass
class ScoringConfig(ConfigBase):
    """How a clip becomes one embedding at fit and test time.

    Attributes:
        window_seconds: Scoring window (``--window`` of ``stetho watch``; formerly
            ``segment_seconds``, which still loads). ``"auto"`` (default): the
            training crop length (2 s windows for raw-waveform models, whole clips for
            spectrogram models); ``None``: the whole clip; a number: windows of that length.
            Window embeddings are averaged into the clip's.
        hop_seconds: Step between windows (default: half a window).
        batch_size: Clips (or windows) embedded per forward pass.
    """

    window_seconds: float | Literal["auto"] | None = "auto"
    hop_seconds: float | None = None
    batch_size: int = 16

    config_aliases: ClassVar[dict[str, str]] = {"segment_seconds": "window_seconds"}

    def window_seconds_for(self, data: DataConfig, input_kind: str) -> float | None:
        """Resolved scoring window in seconds (None = whole clip)."""
        if self.window_seconds == "auto":
            return data.crop_seconds_for(input_kind)
        return None if self.window_seconds is None else float(self.window_seconds)


@dataclass
class ExperimentConfig(ConfigBase):
    """Everything that defines a stetho experiment (and a saved detector).

    Attributes:
        name: Free-form experiment name (used in sweep tables).
        backbone: Pre-trained model and its weights.
        finetune: ``lora`` (default), ``full`` or ``frozen`` and the LoRA settings.
        head: Proxy-task head (ArcFace, 128-d projection).
        data: Clip selection, crops and SpecAugment.
        train: Optimisation settings.
        backend: k-NN memory banks (k = 1, cosine, per-domain banks).
        threshold: Decision threshold (gamma fit, 0.9 quantile, as the DCASE baseline).
        scoring: Clip → embedding at fit and test time.
        ensemble: Training-free few-shot ensemble (features + back-ends, label-free choice);
            when set, ``stetho train`` builds an ensemble detector instead of fine-tuning
            (``backbone``, ``finetune``, ``head``, ``train``, ``backend`` are then unused).
            ``None`` (default): the paper's fine-tuning + k-NN recipe.
    """

    name: str = "experiment"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    backend: KNNConfig = field(default_factory=KNNConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    ensemble: EnsembleConfig | None = None


def load_experiment_config(
    path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()
) -> ExperimentConfig:
    """Read an experiment YAML/JSON file (or the defaults) and apply dotted overrides.

    Args:
        path: YAML or JSON file; ``None`` starts from the defaults.
        overrides: ``key.sub=value`` strings (values parsed as YAML), e.g. ``train.lr=1e-4``.

    Raises:
        ConfigError: unknown key (the message lists the valid ones) or invalid value.
    """
    cfg = ExperimentConfig.load(path) if path is not None else ExperimentConfig()
    if overrides:
        cfg = cfg.override(list(overrides))
    return cfg
