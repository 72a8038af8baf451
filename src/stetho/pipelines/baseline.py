"""``run_ae_baseline``: the official autoencoder baseline on a dev set, end to end.

Writes the standard run layout (:mod:`stetho.pipelines.common`): ``detector/`` (the trained
baseline: a :class:`~stetho.detector.Scorer` folder that ``stetho detect``, ``watch`` and
``serve`` open), ``scores/`` (official submission CSVs) and ``evaluation/``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from stetho.baselines.ae_model import ScoreMode
from stetho.baselines.autoencoder import (
    SCORE_MODES,
    AEBaselineConfig,
    train_ae_baseline,
)
from stetho.data import ClipTable, scan_dataset
from stetho.detector.autoencoder import AutoencoderDetector
from stetho.evaluation import EvaluationResult, evaluate, truth_from_clips
from stetho.pipelines.common import infer_year, write_evaluation, write_run_info, write_scores

__all__ = ["run_ae_baseline"]

logger = logging.getLogger(__name__)


def run_ae_baseline(
    data_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    mode: ScoreMode = "mse",
    epochs: int = 100,
    faithful: bool = True,
    cfg: AEBaselineConfig | None = None,
    machines: Sequence[str] | None = None,
    year: int | None = None,
    style: Literal["plain", "baseline"] = "plain",
) -> EvaluationResult:
    """Train the AE baseline on dev train clips, score dev test clips, write and evaluate.

    Args:
        data_root: Dataset root (``…/dcase2023t2`` with ``dev_data/raw/<machine>/{train,test}``).
        out_dir: Run folder: ``detector/``, ``scores/``, ``evaluation/``.
        mode: Score ``"mse"`` or ``"mahala"`` (saved as the baseline's ``score_mode``).
        epochs: Training epochs (overrides ``cfg.epochs``).
        faithful: Baseline Mahalanobis quirk (overrides ``cfg.faithful``).
        cfg: Other settings (default: protocol §3).
        machines: Restrict to these machine types.
        year: Evaluation rules year (default: inferred from the clips, else 2023).
        style: Submission file names (``"plain"`` or baseline-style).

    Returns:
        The :class:`~stetho.evaluation.EvaluationResult` (Ω in ``official_score``).
    """
    if mode not in SCORE_MODES:
        raise ValueError(f"unknown score mode {mode!r}; valid: {', '.join(SCORE_MODES)}")
    cfg = (cfg or AEBaselineConfig()).replace(epochs=epochs, faithful=faithful, score_mode=mode)
    table = _dev_clips(data_root, year, machines)
    train, test = table.filter(split="train"), table.filter(split="test")
    year = infer_year(list(table), year)
    out = Path(out_dir)
    model = train_ae_baseline(train, cfg)
    detector = AutoencoderDetector(model)
    detector.save(out / "detector")
    write_run_info(out, data_root)
    lacking = sorted(set(test.sections()) - set(model.keys))
    if lacking:
        m, s = lacking[0]
        raise ValueError(f"{m} section {s}: test clips but no training clips")
    scores = detector.score_clips(test)
    _, decisions = write_scores(detector, scores, out / "scores", year, style)
    result = evaluate(
        scores, truth_from_clips(test), decisions, year=year, system=f"ae_baseline_{mode}"
    )
    write_evaluation(result, out / "evaluation")
    logger.info(
        "AE baseline (%s) on %s: official score %.4f", mode, data_root, result.official_score
    )
    return result


def _dev_clips(
    data_root: str | os.PathLike[str], year: int | None, machines: Sequence[str] | None
) -> ClipTable:
    table = scan_dataset(data_root, year=year, partitions=("dev",))
    if machines is not None:
        missing = sorted(set(machines) - set(table.machines()))
        if missing:
            raise ValueError(
                f"machine(s) {missing} not found in {data_root}; available: {table.machines()}"
            )
        table = table.filter(machine=set(machines))
    n_train, n_test = len(table.filter(split="train")), len(table.filter(split="test"))
    if not n_train or not n_test:
        raise ValueError(
            f"{data_root}: need dev train and test clips, found {n_train} train and "
            f"{n_test} test clips"
        )
    return table
