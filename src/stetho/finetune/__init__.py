"""Fine-tuning: proxy labels, ArcFace heads, LoRA / full / frozen adaptation, training, detectors.

>>> from stetho.finetune import FinetuneConfig, LoRAConfig, apply_finetuning   # doctest: +SKIP
>>> apply_finetuning(backbone, FinetuneConfig(strategy="lora", lora=LoRAConfig(r=64)))  # doctest: +SKIP
"""

from stetho.finetune.adapt import (
    LORA_PRESETS,
    STRATEGIES,
    FinetuneConfig,
    LoRAConfig,
    adapted_modules,
    apply_finetuning,
    build_lora_config,
    freeze_norm_statistics,
    frozen_parameter_names,
    load_lora_state_dict,
    lora_state_dict,
    merge_lora,
    norm_stats_frozen,
    parse_pattern_key,
    plan_lora,
    trainable_parameter_count,
    valid_strategies,
)

# B-EXPORTS
from stetho.finetune.config import (
    BackboneConfig,
    DataConfig,
    ExperimentConfig,
    ScoringConfig,
    TrainConfig,
    load_experiment_config,
)
from stetho.finetune.detector import Detector, DetectorError
from stetho.finetune.heads import HeadConfig, ProxyHead, arcface_logits
from stetho.finetune.labels import ClassMap, UnknownClassError, build_class_map, class_id
from stetho.finetune.pipeline import (
    RunResult,
    SweepResult,
    embed_dataset,
    run_demo,
    run_sweep,
    run_training,
    score_dataset,
)
from stetho.finetune.train import StepInfo, TrainResult, train

__all__ = [
    "LORA_PRESETS",
    "STRATEGIES",
    "BackboneConfig",
    "ClassMap",
    "DataConfig",
    "Detector",
    "DetectorError",
    "ExperimentConfig",
    "FinetuneConfig",
    "HeadConfig",
    "LoRAConfig",
    "ProxyHead",
    "RunResult",
    "ScoringConfig",
    "StepInfo",
    "SweepResult",
    "TrainConfig",
    "TrainResult",
    "UnknownClassError",
    "adapted_modules",
    "apply_finetuning",
    "arcface_logits",
    "build_class_map",
    "build_lora_config",
    "class_id",
    "embed_dataset",
    "freeze_norm_statistics",
    "frozen_parameter_names",
    "load_experiment_config",
    "load_lora_state_dict",
    "lora_state_dict",
    "merge_lora",
    "norm_stats_frozen",
    "parse_pattern_key",
    "plan_lora",
    "run_demo",
    "run_sweep",
    "run_training",
    "score_dataset",
    "train",
    "trainable_parameter_count",
    "valid_strategies",
]
