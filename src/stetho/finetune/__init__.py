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
    load_lora_state_dict,
    lora_state_dict,
    merge_lora,
    parse_pattern_key,
    plan_lora,
    trainable_parameter_count,
    valid_strategies,
)
from stetho.finetune.heads import HeadConfig, ProxyHead, arcface_logits
from stetho.finetune.labels import ClassMap, UnknownClassError, build_class_map, class_id

# B-EXPORTS

__all__ = [
    "LORA_PRESETS",
    "STRATEGIES",
    "ClassMap",
    "FinetuneConfig",
    "HeadConfig",
    "LoRAConfig",
    "ProxyHead",
    "UnknownClassError",
    "adapted_modules",
    "apply_finetuning",
    "arcface_logits",
    "build_class_map",
    "build_lora_config",
    "class_id",
    "load_lora_state_dict",
    "lora_state_dict",
    "merge_lora",
    "parse_pattern_key",
    "plan_lora",
    "trainable_parameter_count",
    "valid_strategies",
    # B-EXPORTS (add B's names here)
]
