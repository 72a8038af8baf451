"""Helpers shared by the training tests (fixtures are in ``conftest.py``)."""

from __future__ import annotations

from stetho.config import ExperimentConfig

#: Overrides every training test starts from: beats-tiny with rank-4 LoRA, 16-d head, batches
#: of 4, no TensorBoard, a log row per step, deterministic algorithms.
TINY = (
    "backbone.name=beats-tiny",
    "finetune.lora.r=4",
    "finetune.lora.alpha=4",
    "head.embed_dim=16",
    "train.batch_size=4",
    "train.lr=3e-3",
    "train.warmup_steps=1",
    "train.tensorboard=false",
    "train.log_every=1",
    "train.deterministic=true",
)


def tiny_config(*overrides: str, **dotted: object) -> ExperimentConfig:
    """:data:`TINY` plus ``overrides`` (``"a.b=v"``) and ``a__b=v`` keyword overrides."""
    extra = [f"{k.replace('__', '.')}={v}" for k, v in dotted.items()]
    return ExperimentConfig().override([*TINY, *overrides, *extra])
