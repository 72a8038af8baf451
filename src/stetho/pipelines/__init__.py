"""Pipelines: the jobs a user runs end to end (train, score, embed, sweep, demo).

>>> from stetho.pipelines import run_training
>>> result = run_training(cfg, "data/dcase2023t2", "runs/x")   # doctest: +SKIP

One module per job (``train``, ``score``, ``embed``, ``sweep``, ``demo``, ``baseline``); ``common`` holds what
they share (clip selection, the challenge year, submission files, partial evaluation, the k-NN
validator, the process rank).
"""

from stetho.pipelines.baseline import run_ae_baseline
from stetho.pipelines.common import knn_validator, select_clips
from stetho.pipelines.demo import demo_config, run_demo
from stetho.pipelines.embed import embed_dataset
from stetho.pipelines.recipes import default_config, training_config
from stetho.pipelines.score import score_dataset
from stetho.pipelines.sweep import SweepResult, run_sweep
from stetho.pipelines.train import RunResult, run_training

__all__ = [
    "RunResult",
    "SweepResult",
    "default_config",
    "demo_config",
    "embed_dataset",
    "knn_validator",
    "run_ae_baseline",
    "run_demo",
    "run_sweep",
    "run_training",
    "score_dataset",
    "select_clips",
    "training_config",
]
