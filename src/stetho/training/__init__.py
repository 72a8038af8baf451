"""The training stage: datasets of normal clips, the fine-tuning loop with resume, DDP helpers.

>>> from stetho.training import train
>>> result = train(cfg, clips, "runs/x")                    # doctest: +SKIP
"""

from stetho.training.loop import (
    CHECKPOINT_NAME,
    METRICS_NAME,
    StepInfo,
    TrainResult,
    build_backbone,
    lr_factor,
    resolve_device,
    train,
)

__all__ = [
    "CHECKPOINT_NAME",
    "METRICS_NAME",
    "StepInfo",
    "TrainResult",
    "build_backbone",
    "lr_factor",
    "resolve_device",
    "train",
]
