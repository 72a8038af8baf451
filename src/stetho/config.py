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

**Recipes.** A config builds one of two detectors (``ExperimentConfig.recipe``):

* ``"fewshot"`` -- the training-free few-shot ensemble (``ensemble`` section). It is the default:
  what ``stetho train`` builds without ``--config`` and what a config that says nothing about
  the recipe builds (``stetho.pipelines.default_config()`` holds it).
* ``"finetune"`` -- the paper's fine-tuning + k-NN recipe (``backbone``, ``finetune``, ``head``,
  ``train``, ``backend``, ``scoring`` and ``data.crop_seconds`` / ``spec_augment`` /
  ``cache_mb``: :data:`FINETUNE_SECTIONS`, :data:`FINETUNE_DATA_KEYS`).

``recipe`` is stated, or implied: an ``ensemble`` section means few-shot; a config file that lists
a fine-tuning section, or a fine-tuning setting that differs from its default, means fine-tuning.
A setting of the other recipe is an error (:meth:`ExperimentConfig.check_recipe`), never ignored.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from stetho.frontend.specaugment import SpecAugmentConfig
from stetho.model.adapt import FinetuneConfig
from stetho.model.heads import HeadConfig
from stetho.model.proxy import ProxyConfig, ProxyKind
from stetho.scoring.ensemble import EnsembleConfig
from stetho.scoring.knn import KNNConfig
from stetho.scoring.threshold import ThresholdConfig
from stetho.utils.config import ConfigBase, ConfigError

__all__ = [
    "DEFAULT_RECIPE",
    "FINETUNE_DATA_KEYS",
    "FINETUNE_SECTIONS",
    "BackboneConfig",
    "DataConfig",
    "ExperimentConfig",
    "Recipe",
    "ScoringConfig",
    "TrainConfig",
    "load_experiment_config",
]

#: Crop length used for raw-waveform models when ``crop_seconds="auto"`` (the paper's 2 s).
WAVEFORM_SEGMENT_SECONDS = 2.0

#: What a config builds: the training-free few-shot ensemble or the fine-tuned k-NN detector.
Recipe = Literal["fewshot", "finetune"]
#: The recipe of a config that states none and sets nothing of the fine-tuning recipe.
DEFAULT_RECIPE: Recipe = "fewshot"
#: Sections that only the fine-tuning recipe reads (the few-shot ensemble embeds whole clips
#: with its members' own feature settings and never trains).
FINETUNE_SECTIONS = ("backbone", "finetune", "head", "train", "backend", "scoring")
#: Keys of ``data`` that only the fine-tuning recipe reads (training crops, augmentation, cache).
FINETUNE_DATA_KEYS = ("crop_seconds", "spec_augment", "cache_mb")
#: Where the message of a recipe conflict sends the user.
_TO_FINETUNE = (
    "To fine-tune, pass --config configs/default.yaml (the fine-tuning defaults; other "
    "fine-tuning configs are in configs/ and configs/paper/) or --set recipe=finetune; "
    'in Python, ExperimentConfig(recipe="finetune", ...)'
)


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
        proxy: Proxy task: ``"attributes"`` (the paper: one class per machine/section/attributes),
            ``"transforms"`` (those classes × waveform transformations, self-supervised),
            ``"outlier"`` (outlier exposure against ``proxy_options.outlier_dir``) or ``"auto"``
            (default: attributes unless they form one class or one class holds more than
            ``proxy_options.max_class_share`` of the clips, then a warning and transforms, or
            outlier exposure when an outlier folder is set). Not in the paper, see
            ``docs/oneclass.md``.
        proxy_options: Settings of the self-supervised objectives.
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
    proxy: ProxyKind = "auto"
    proxy_options: ProxyConfig = field(default_factory=ProxyConfig)

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
        threshold: Decision threshold (conformal, false-alarm rate 0.1; ``docs/thresholds.md``).
        scoring: Clip → embedding at fit and test time.
        ensemble: Training-free few-shot ensemble (features + back-ends, label-free choice):
            the members of the ``"fewshot"`` recipe. ``None`` with that recipe: the default
            members (``stetho.pipelines.default_config()``).
        recipe: ``"fewshot"`` (the training-free ensemble), ``"finetune"`` (the paper's
            fine-tuning + k-NN) or ``None`` (default): implied by the settings -- few-shot when
            ``ensemble`` is set, fine-tuning when a fine-tuning setting differs from its default
            (or a config file lists a fine-tuning section), else the default recipe
            (:data:`DEFAULT_RECIPE`, few-shot). :meth:`check_recipe` refuses the other
            recipe's settings.
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
    recipe: Recipe | None = None

    def __post_init__(self) -> None:
        if self.recipe is None and self.ensemble is not None:
            self.recipe = "fewshot"

    @classmethod
    def from_dict(cls: type[_E], data: dict[str, Any]) -> _E:
        """Build the config from a mapping (see :meth:`ConfigBase.from_dict`).

        A mapping without ``recipe`` and without ``ensemble`` that lists a fine-tuning section
        (a config file written for fine-tuning, or a detector saved before ``recipe`` existed)
        gets ``recipe: finetune``, even when the section only repeats the defaults.
        """
        data = dict(data)
        if (
            "recipe" not in data
            and data.get("ensemble") is None
            and any(k in data for k in FINETUNE_SECTIONS)
        ):
            data["recipe"] = "finetune"
        return super().from_dict(data)

    def finetune_settings(self) -> list[str]:
        """``key=value`` of every fine-tuning-only setting that differs from its default."""
        out: list[str] = []
        for f in dataclasses.fields(self):
            if f.name in FINETUNE_SECTIONS:
                default = type(getattr(self, f.name))()
                out += _changed(getattr(self, f.name).to_dict(), default.to_dict(), f.name)
        data, default_data = self.data.to_dict(), DataConfig().to_dict()
        for key in FINETUNE_DATA_KEYS:
            out += _changed(data[key], default_data[key], f"data.{key}")
        return out

    def check_recipe(self) -> Recipe:
        """The recipe this config builds, after checking that every setting applies to it.

        Raises:
            ConfigError: a fine-tuning setting with the few-shot recipe, or an ``ensemble``
                section with the fine-tuning recipe; the message names the settings, the recipe
                and how to choose the other one.
        """
        unused = self.finetune_settings()
        if self.recipe == "finetune" or (self.recipe is None and unused):
            if self.ensemble is not None:
                raise ConfigError(_ensemble_message(["the `ensemble` section"]))
            return "finetune"
        if unused:
            raise ConfigError(
                f"{', '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply to the "
                "few-shot recipe (the training-free ensemble that stetho train without --config "
                "builds, also any config with an `ensemble` section; it reads only name, "
                "data.machines/sections/year/train_partitions, threshold and ensemble). "
                + _TO_FINETUNE
            )
        return DEFAULT_RECIPE if self.recipe is None else self.recipe

    def override(self: _E, assignments: list[str] | tuple[str, ...]) -> _E:
        """Return a copy with dotted ``key=value`` overrides (see :meth:`ConfigBase.override`).

        Raises:
            ConfigError: as :meth:`ConfigBase.override`; an ``ensemble.*`` override of a
                fine-tuning config names the recipe instead of "'ensemble' is not set".
        """
        keys = {item.split("=", 1)[0].strip() for item in assignments}
        if self.ensemble is None and not keys & {"ensemble", "recipe"}:
            bad = [a.strip() for a in assignments if a.strip().startswith("ensemble.")]
            if bad and (self.recipe == "finetune" or self.finetune_settings()):
                raise ConfigError(_ensemble_message(bad))
        return super().override(assignments)


_E = TypeVar("_E", bound=ExperimentConfig)


def _changed(value: Any, default: Any, path: str) -> list[str]:
    """``path=value`` for every leaf of ``value`` that differs from ``default``."""
    if isinstance(value, dict) and isinstance(default, dict):
        out: list[str] = []
        for key in sorted(value.keys() | default.keys()):
            out += _changed(value.get(key), default.get(key), f"{path}.{key}")
        return out
    if value == default:
        return []
    return [f"{path}={value if isinstance(value, str) else json.dumps(value)}"]


def _ensemble_message(settings: list[str]) -> str:
    what = ", ".join(settings)
    return (
        f"{what} {'does' if len(settings) == 1 else 'do'} not apply to the fine-tuning recipe "
        "(recipe=finetune, or a config with fine-tuning sections such as configs/default.yaml): "
        "`ensemble` configures the training-free few-shot recipe. For the few-shot ensemble, "
        "run stetho train without --config (the default recipe, with --set ensemble.*) or "
        "pass --config configs/fewshot_mn04.yaml (or another config with an `ensemble` "
        "section); to fine-tune, remove the ensemble settings"
    )


def load_experiment_config(
    path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()
) -> ExperimentConfig:
    """Read an experiment YAML/JSON file (or the defaults) and apply dotted overrides.

    Args:
        path: YAML or JSON file; ``None`` starts from :class:`ExperimentConfig` ``()``, whose
            recipe is implied by the overrides (``stetho train`` without ``--config`` starts
            from ``stetho.pipelines.default_config()`` instead).
        overrides: ``key.sub=value`` strings (values parsed as YAML), e.g. ``train.lr=1e-4``.

    Raises:
        ConfigError: unknown key (the message lists the valid ones), invalid value, or a setting
            that does not apply to the config's recipe (:meth:`ExperimentConfig.check_recipe`).
    """
    cfg = ExperimentConfig.load(path) if path is not None else ExperimentConfig()
    if overrides:
        cfg = cfg.override(list(overrides))
    try:
        cfg.check_recipe()
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path is not None else str(err)) from err
    return cfg
