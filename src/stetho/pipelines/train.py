"""``run_training``: dev train clips → fine-tuned backbone → detector → scores → evaluation.

::

    run = run_training(cfg, "data/dcase2023t2", "runs/beats_lora")   # dev train → dev test
    print(run.evaluation.table())

The run folder's layout is in :mod:`stetho.pipelines.common`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from stetho.config import ExperimentConfig
from stetho.data import scan_dataset
from stetho.detector.base import BaseDetector
from stetho.detector.detector import Detector
from stetho.evaluation import EvaluationResult, Scores, truth_from_clips
from stetho.pipelines.common import (
    evaluate_partially,
    infer_year,
    is_main_process,
    knn_validator,
    select_clips,
    write_evaluation,
    write_scores,
)
from stetho.pipelines.recipes import resolve_recipe
from stetho.training import TrainResult, train

__all__ = ["RunResult", "run_training"]

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """Outcome of :func:`run_training`.

    Attributes:
        out_dir: The run folder.
        detector: The fitted detector (also saved in ``out_dir/detector``).
        train: The training result (``None`` for the training-free few-shot ensemble).
        evaluation: Dev-test evaluation (``None`` when the test clips carry no labels).
        scores: ``{(machine, section): {clip name: score}}`` of the dev test clips.
        submission_files: Score/decision CSVs written to ``out_dir/scores``.
        seconds: Wall time of the whole run.
    """

    out_dir: Path
    detector: BaseDetector
    train: TrainResult | None
    evaluation: EvaluationResult | None
    scores: Scores
    submission_files: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def summary(self) -> str:
        """Plain-words summary of the detector and its test clips (also in ``summary.txt``)."""
        from stetho.pipelines.summary import plain_summary

        return plain_summary(self.detector, self.scores)


def run_training(
    cfg: ExperimentConfig,
    data_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    resume: bool = True,
    *,
    progress: bool = True,
) -> RunResult:
    """Train on the normal train clips, fit and save the detector, score and evaluate dev test.

    Training clips come from ``cfg.data.train_partitions`` (dev by default; dev + eval for a
    challenge submission); the labelled dev test clips of the trained sections are scored and
    evaluated.

    Args:
        cfg: The experiment config. Its recipe (``cfg.recipe``, see :mod:`stetho.config`) picks
            what is built; a config that says nothing about the recipe builds the default, as
            ``stetho train`` without ``--config`` does (:func:`~stetho.pipelines.default_config`).
        data_root: DCASE dataset root (``dev_data/raw/<machine>/{train,test}``).
        out_dir: Run folder (layout in :mod:`stetho.pipelines.common`).
        resume: Continue an interrupted training run in ``out_dir/train``.
        progress: Progress bars.

    Returns:
        A :class:`RunResult`. Under ``torchrun`` all processes train; only rank 0 then fits,
        saves, scores and evaluates (other ranks get an unfitted detector and no evaluation).

    Raises:
        ConfigError: a setting that does not apply to the config's recipe.
    """
    t0 = time.monotonic()
    cfg = resolve_recipe(cfg)  # checked; the default recipe filled in when none is stated
    out = Path(out_dir)
    table = scan_dataset(data_root, year=cfg.data.year)
    partitions = list(dict.fromkeys(cfg.data.train_partitions))
    train_clips = select_clips(table, cfg, partition=partitions, split="train")
    if not len(train_clips):
        raise ValueError(
            f"no normal {'/'.join(partitions)} training clips under {data_root} "
            f"(machines={cfg.data.machines}, sections={cfg.data.sections}); "
            f"found {len(table)} clips in total"
        )
    test_clips = select_clips(table, cfg, partition="dev", split="test").filter(
        key=set(train_clips.sections())
    )
    labelled = len(test_clips) > 0 and all(c.label is not None for c in test_clips)
    year = infer_year(list(table), cfg.data.year)
    logger.info(
        "run %s: %d train clips, %d test clips (%s), %d machine/section(s), year %d",
        cfg.name, len(train_clips), len(test_clips), "labelled" if labelled else "unlabelled",
        len(train_clips.sections()), year,
    )  # fmt: skip
    if cfg.recipe == "fewshot":  # training-free few-shot ensemble (the default recipe)
        from stetho.pipelines.fewshot import fit_and_evaluate

        det, fs_scores, fs_files, ev = fit_and_evaluate(
            cfg, list(train_clips), list(test_clips), out, year, progress=progress
        )
        secs = round(time.monotonic() - t0, 3)
        return _with_summary(RunResult(out, det, None, ev, fs_scores, fs_files, secs), data_root)
    result = train(
        cfg,
        train_clips,
        out / "train",
        resume=resume,
        validate=knn_validator(cfg, train_clips, test_clips) if labelled else None,
        progress=progress,
    )
    if not is_main_process():
        # under torchrun only rank 0 fits, saves, scores and evaluates
        return RunResult(out, Detector.from_training(result), result, None, {}, [], 0.0)
    detector = Detector.from_training(result).fit(train_clips, progress=progress)
    detector.save(out / "detector")
    scores: Scores = {}
    files: list[Path] = []
    evaluation = None
    if len(test_clips):
        scores = detector.score_clips(test_clips, progress=progress)
        files, decisions = write_scores(detector, scores, out / "scores", year, "plain")
        if labelled:
            truth = truth_from_clips(test_clips)
            evaluation = evaluate_partially(scores, truth, decisions, year=year, system=cfg.name)
        if evaluation is not None:
            write_evaluation(evaluation, out / "evaluation")
            logger.info("run %s: official score Ω = %.4f", cfg.name, evaluation.official_score)
    secs = round(time.monotonic() - t0, 3)
    return _with_summary(
        RunResult(out, detector, result, evaluation, scores, files, secs), data_root
    )


def _with_summary(run: RunResult, data_root: str | os.PathLike[str] | None = None) -> RunResult:
    """Write ``summary.txt`` (the plain-words summary) and ``run.json`` (where the data is, so
    that ``stetho report RUN`` finds the test clips' labels) into the run folder."""
    from stetho.pipelines.common import write_run_info
    from stetho.utils.io import atomic_write_text

    atomic_write_text(run.out_dir / "summary.txt", run.summary + "\n")
    if data_root is not None:
        write_run_info(run.out_dir, data_root)
    return run
