"""What every pipeline shares: clip selection, the challenge year, submission files, partial
evaluation, the per-epoch k-NN validator and the process rank.

Output layout of a run folder (``run_training``; ``run_ae_baseline`` writes the last three)::

    train/        checkpoint.pt, metrics.csv, config.json, class_map.json, tensorboard/
    detector/     the saved detector (any kind: stetho.load_detector opens it)
    run.json      {"data_root": …}: where the clips are, for `stetho report RUN`
    summary.txt   the plain-words summary printed by `stetho train`
    scores/       anomaly_score_<m>_section_<XX>_test.csv + decision_result_… (official format)
    evaluation/   results.json, results.csv, paper_table.csv, <system>_result.csv, table.md
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from stetho.config import ExperimentConfig
from stetho.data import Clip, ClipTable
from stetho.detector.base import BaseDetector as Scorer
from stetho.evaluation import EvaluationResult, MetricError, Scores, evaluate, write_submission
from stetho.evaluation.submission import Decisions
from stetho.evaluation.truth import Truth
from stetho.training import TrainedModel, Validator
from stetho.training.distributed import process_rank
from stetho.utils.io import atomic_folder, atomic_write_text

__all__ = [
    "evaluate_partially",
    "grouped_decisions",
    "infer_year",
    "is_main_process",
    "knn_validator",
    "select_clips",
    "write_evaluation",
    "write_scores",
]

logger = logging.getLogger(__name__)


def infer_year(clips: Sequence[Clip], year: int | None = None) -> int:
    """The challenge year: ``year`` (e.g. ``data.year``), else the clips' most common, else 2023.

    The one place every pipeline (training, scoring, validation, the AE baseline) asks.
    """
    if year is not None:
        return year
    years = Counter(c.year for c in clips if c.year is not None)
    return years.most_common(1)[0][0] if years else 2023


def is_main_process() -> bool:
    """Whether this process is rank 0 (under ``torchrun`` only rank 0 writes results)."""
    return process_rank() == 0


def select_clips(
    table: ClipTable,
    cfg: ExperimentConfig,
    *,
    partition: str | Sequence[str] = "dev",
    split: str = "train",
    restrict_machines: bool = True,
) -> ClipTable:
    """Clips of ``partition``/``split`` restricted to ``data.machines``/``data.sections``.

    Training selections (``split="train"``) keep normal clips only.

    Args:
        table: All clips.
        cfg: The experiment config (``data.machines``, ``data.sections``).
        partition: ``"dev"``, ``"eval"`` or several.
        split: ``"train"`` or ``"test"``.
        restrict_machines: Apply ``data.machines``; ``False`` for the eval partition, whose
            machine types differ from the dev ones that ``data.machines`` names.
    """
    crit: dict[str, Any] = {"split": split}
    crit["partition"] = partition if isinstance(partition, str) else set(partition)
    if cfg.data.machines is not None and restrict_machines:
        crit["machine"] = set(cfg.data.machines)
    if cfg.data.sections is not None:
        crit["section"] = set(cfg.data.sections)
    out = table.filter(**crit)
    if split == "train":
        out = out.filter(label=lambda lab: lab in (None, "normal"))
    return out


def write_scores(
    scorer: Scorer,
    scores: Scores,
    out_dir: Path,
    year: int,
    style: Literal["plain", "baseline"],
) -> tuple[list[Path], Decisions]:
    """Write the official ``anomaly_score_…``/``decision_result_…`` CSVs of ``scores`` as a set.

    The files go to a temporary folder beside ``out_dir`` that replaces it in one rename, so a
    failure part-way never leaves a folder mixing the files of two runs; leftovers of killed runs
    are removed. An existing ``out_dir`` is replaced only when it holds nothing but submission
    CSVs.

    Returns:
        The files written and the decisions (``scorer.decide`` per machine/section).

    Raises:
        FileExistsError: ``out_dir`` holds other files (they are never deleted).
        OSError: a write failed (disk full, permission denied); the message names the path.
    """
    out_dir = Path(out_dir)
    _check_submission_folder(out_dir)
    decisions = grouped_decisions(scorer, scores)
    names: list[str] = []
    with atomic_folder(out_dir) as tmp:
        for (machine, section), named in sorted(scores.items()):
            written = write_submission(
                tmp, machine, section, named, decisions[(machine, section)], style=style, year=year
            )
            names += [p.name for p in written]
    return [out_dir / n for n in names], decisions


_SUBMISSION_PREFIXES = ("anomaly_score_", "decision_result_")


def _check_submission_folder(out_dir: Path) -> None:
    """Refuse to replace a folder that holds anything but submission CSVs."""
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not out_dir.is_dir() or out_dir.is_symlink():
        raise FileExistsError(f"{out_dir} exists and is not a folder; choose another output folder")
    others = sorted(
        p.name
        for p in out_dir.iterdir()
        if not (p.is_file() and p.name.startswith(_SUBMISSION_PREFIXES) and p.suffix == ".csv")
        and not (p.name.startswith(".") and p.name.endswith(".tmp"))  # leftovers of killed runs
    )
    if others:
        raise FileExistsError(
            f"{out_dir} holds files other than submission CSVs ({', '.join(others[:3])}"
            f"{', …' if len(others) > 3 else ''}); the score files replace the folder as a set, "
            "so choose a new or empty output folder"
        )


def grouped_decisions(scorer: Scorer, scores: Scores) -> Decisions:
    """``scorer.decide`` of grouped scores, in the same ``{key: {name: 0/1}}`` layout."""
    out: Decisions = {}
    for key, named in scores.items():
        names = list(named)
        decided = scorer.decide([named[n] for n in names], key)
        out[key] = {n: int(d) for n, d in zip(names, decided)}
    return out


def evaluate_partially(
    scores: Scores,
    truth: Truth,
    decisions: Decisions | None,
    *,
    year: int,
    system: str,
) -> EvaluationResult | None:
    """Evaluate; on small or unbalanced sets fall back to partial mode, else ``None``.

    Partial mode leaves undefined metrics out (logged); ``None`` when nothing can be evaluated
    (e.g. only anomalies).
    """
    try:
        return evaluate(scores, truth, decisions, year=year, system=system)
    except MetricError as err:  # small / unbalanced dev sets: report a partial score
        logger.warning("%s; evaluating in partial mode (undefined metrics left out)", err)
    try:
        return evaluate(scores, truth, decisions, year=year, system=system, allow_undefined=True)
    except MetricError as err:  # e.g. only anomalies: nothing can be evaluated
        logger.warning("evaluation skipped: %s", err)
        return None


def write_evaluation(evaluation: EvaluationResult, out_dir: Path) -> None:
    """``results.json``, CSVs and ``table.md`` in ``out_dir``."""
    evaluation.write(out_dir)
    atomic_write_text(out_dir / "table.md", evaluation.table() + "\n")


def knn_validator(
    cfg: ExperimentConfig, train_clips: Sequence[Clip], val_clips: Sequence[Clip]
) -> Validator:
    """A per-epoch validator for :func:`stetho.training.train`: k-NN detector → Ω.

    Embeds the train clips into k-NN banks, scores the labelled ``val_clips`` of the trained
    machine/sections and returns ``val_official_score`` and ``val_arithmetic_mean``. A set the
    official metrics cannot be computed on (e.g. a section without anomalies) is logged and
    skipped (``{}``) instead of stopping the training.
    """
    from stetho.detector.detector import Detector
    from stetho.evaluation import GroundTruthError, truth_from_clips

    train_clips, val_clips = list(train_clips), list(val_clips)

    def validate(model: TrainedModel) -> dict[str, float]:
        det = Detector(
            cfg,
            model.backbone,
            model.head,
            model.class_map,
            device=model.device,
            waveform_loader=model.load_waveform,
        )
        det.fit(train_clips)
        keys = set(det.keys)
        usable = [c for c in val_clips if c.key in keys]
        if not usable:
            logger.warning(
                "validation skipped: no validation clip belongs to a trained machine/section"
            )
            return {}
        scores = det.score_clips(usable)
        year = infer_year(usable, cfg.data.year)
        try:
            result = evaluate(scores, truth_from_clips(usable), year=year, ci95=False)
        except (MetricError, GroundTruthError) as err:
            logger.warning("validation skipped: %s", err)
            return {}
        return {
            "val_official_score": float(result.official_score),
            "val_arithmetic_mean": float(result.arithmetic_mean),
        }

    return validate


def write_run_info(out_dir: Path, data_root: str | os.PathLike[str]) -> Path:
    """``run.json``: ``{"data_root": …}`` (absolute), read by ``stetho report RUN``."""
    import json

    from stetho.utils.io import atomic_write_text

    path = Path(out_dir) / "run.json"
    doc = {"data_root": str(Path(data_root).resolve())}
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return path
