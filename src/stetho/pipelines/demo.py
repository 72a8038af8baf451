"""``run_demo``: synthetic data → train → detector → submission files → evaluation."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from stetho.config import BackboneConfig, ExperimentConfig
from stetho.evaluation import EvaluationResult
from stetho.pipelines.train import run_training
from stetho.training import build_backbone

__all__ = ["demo_config", "run_demo"]


def demo_config(
    backbone: str = "logmel", checkpoint: str | None = None, strategy: str | None = None
) -> ExperimentConfig:
    """The tiny, fast training setup of :func:`run_demo` (not the paper's 30 epochs).

    ``strategy`` defaults to LoRA when the backbone supports it, else frozen (head only).
    """
    from stetho.model.adapt import valid_strategies

    bcfg = BackboneConfig(name=backbone, checkpoint=checkpoint)
    if strategy is None:
        valid = valid_strategies(build_backbone(bcfg))
        strategy = "lora" if "lora" in valid else "frozen"
    cfg = ExperimentConfig(name=f"demo-{backbone}", backbone=bcfg)
    head_only = strategy == "frozen"
    return cfg.override(
        [
            f"finetune.strategy={strategy}",
            "train.epochs=4",
            "train.batch_size=8",
            f"train.lr={1e-3 if head_only else 1e-4}",
            "train.warmup_epochs=1",
            "train.tensorboard=false",
            "train.log_every=5",
        ]
    )


def run_demo(
    out_dir: str | os.PathLike[str],
    backbone: str = "logmel",
    checkpoint: str | None = None,
    *,
    strategy: str | None = None,
    overrides: Sequence[str] = (),
    machines: Sequence[str] = ("fan", "gearbox", "valve"),
    seconds: float = 2.0,
    n_train_source: int = 40,
    n_train_target: int = 10,
    n_test_per_group: int = 10,
    seed: int = 0,
    resume: bool = True,
    progress: bool = True,
    recipe: Literal["finetune", "fewshot"] = "finetune",
) -> EvaluationResult:
    """Synthetic data → train → detector → submission files → evaluation, in a few minutes.

    The dataset is generated in ``out_dir/data`` (reused if present) and the run written to
    ``out_dir/run`` (layout of :func:`run_training`).

    Args:
        out_dir: Demo folder.
        backbone: Registry name (default ``logmel``: no weights needed).
        checkpoint: Backbone weights (e.g. the EfficientAT mn04 file).
        strategy: ``lora``/``full``/``frozen`` (default: LoRA if supported, else frozen).
        overrides: Extra dotted config overrides.
        machines, seconds, n_train_source, n_train_target, n_test_per_group, seed: Synthetic
            dataset size (3 machines × 50 train + 40 test clips of 2 s by default).
        resume: Reuse a finished or interrupted run in ``out_dir/run``.
        progress: Progress bars.
        recipe: ``"finetune"`` (``backbone`` + ``strategy``, a short ArcFace run) or
            ``"fewshot"`` (the training-free default ensemble; ``checkpoint`` adds mn04).

    Returns:
        The dev-test :class:`EvaluationResult` (also written to ``out_dir/run/evaluation``).
    """
    from stetho.data.synth import MARKER_FILE, generate_synthetic_dataset

    out = Path(out_dir)
    data = out / "data"
    if not (data / MARKER_FILE).is_file():
        generate_synthetic_dataset(
            data,
            machines=tuple(machines),
            n_train_source=n_train_source,
            n_train_target=n_train_target,
            n_test_per_group=n_test_per_group,
            seconds=seconds,
            seed=seed,
            overwrite=True,
        )
    if recipe == "fewshot":  # training-free ensemble: the default CPU recipe
        from stetho.pipelines.fewshot import fewshot_config

        cfg = fewshot_config(checkpoint).override(list(overrides))
    else:
        cfg = demo_config(backbone, checkpoint, strategy)
        cfg = cfg.override([f"train.seed={seed}", *overrides])
    run = run_training(cfg, data, out / "run", resume=resume, progress=progress)
    assert run.evaluation is not None  # synthetic dev test clips are labelled
    return run.evaluation
