"""Pipelines: the jobs a user runs end to end (train, score, embed, sweep, demo).

>>> from stetho.pipelines import run_training
>>> result = run_training(cfg, "runs/x")                    # doctest: +SKIP
"""

from stetho.pipelines.pipeline import (
    RunResult,
    SweepResult,
    demo_config,
    embed_dataset,
    run_demo,
    run_sweep,
    run_training,
    score_dataset,
    select_clips,
)

__all__ = [
    "RunResult",
    "SweepResult",
    "demo_config",
    "embed_dataset",
    "run_demo",
    "run_sweep",
    "run_training",
    "score_dataset",
    "select_clips",
]
