"""The training stage: datasets of normal clips, the fine-tuning loop with resume, DDP helpers.

>>> from stetho.training import train
>>> result = train(cfg, clips, "runs/x", validate=validator)   # doctest: +SKIP

Rooms: ``state`` (:class:`TrainState`, :func:`setup`, :class:`TrainResult`), ``loop`` (the
algorithm: :func:`train`), ``checkpoint`` (resumable checkpoints), ``metrics`` (``metrics.csv``),
``dataset`` and ``distributed``. Training never imports the detector: validation is a callable
the caller passes in (:data:`Validator`).
"""

from stetho.training.checkpoint import CHECKPOINT_NAME
from stetho.training.loop import lr_factor, train
from stetho.training.metrics import METRICS_NAME
from stetho.training.state import (
    StepInfo,
    TrainedModel,
    TrainResult,
    TrainState,
    Validator,
    build_backbone,
    resolve_device,
)

__all__ = [
    "CHECKPOINT_NAME",
    "METRICS_NAME",
    "StepInfo",
    "TrainResult",
    "TrainState",
    "TrainedModel",
    "Validator",
    "build_backbone",
    "lr_factor",
    "resolve_device",
    "train",
]
