"""The model stage: proxy-task labels, ArcFace / linear heads, LoRA / full / frozen adaptation.

>>> from stetho.model import FinetuneConfig, LoRAConfig, apply_finetuning   # doctest: +SKIP
>>> apply_finetuning(backbone, FinetuneConfig(strategy="lora", lora=LoRAConfig(r=64)))  # doctest: +SKIP
"""

from stetho.model.adapt import (
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
from stetho.model.heads import HeadConfig, ProxyHead, arcface_logits
from stetho.model.labels import ClassMap, UnknownClassError, build_class_map, class_id
from stetho.model.proxy import ProxyConfig, ProxyTask, apply_transform, build_proxy_task

__all__ = [
    "LORA_PRESETS",
    "STRATEGIES",
    "ClassMap",
    "FinetuneConfig",
    "HeadConfig",
    "LoRAConfig",
    "ProxyConfig",
    "ProxyHead",
    "ProxyTask",
    "UnknownClassError",
    "adapted_modules",
    "apply_finetuning",
    "apply_transform",
    "arcface_logits",
    "build_class_map",
    "build_lora_config",
    "build_proxy_task",
    "class_id",
    "freeze_norm_statistics",
    "frozen_parameter_names",
    "load_lora_state_dict",
    "lora_state_dict",
    "merge_lora",
    "norm_stats_frozen",
    "parse_pattern_key",
    "plan_lora",
    "trainable_parameter_count",
    "valid_strategies",
]
