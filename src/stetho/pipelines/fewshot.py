"""The training-free few-shot run: normal clips → ensemble detector → scores → evaluation.

:func:`run_fewshot` is what ``stetho train`` does when the config has an ``ensemble`` section
(the built-in default, :func:`fewshot_config`): no fine-tuning, banks fitted on the normal
training clips, label-free member choice, thresholds, then the dev test clips are scored and,
when labelled, evaluated. Output layout as :func:`stetho.pipelines.run_training`, plus
``detector/config.json`` recording what was chosen per machine and ``choice.md``, a readable
summary of it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from stetho.config import ExperimentConfig
from stetho.data import Clip
from stetho.detector.ensemble import EnsembleDetector
from stetho.evaluation import (
    EvaluationResult,
    MetricError,
    evaluate,
    truth_from_clips,
    write_submission,
)
from stetho.scoring.bank import BackendConfig
from stetho.scoring.ensemble import EnsembleConfig, MemberConfig
from stetho.scoring.selection import SelectionConfig
from stetho.utils.io import atomic_write_text

__all__ = ["choice_summary", "fewshot_config", "fit_and_evaluate"]

logger = logging.getLogger(__name__)


def fewshot_config(pretrained: str | None = None) -> ExperimentConfig:
    """The default few-shot recipe (``stetho train`` without ``--config``).

    Args:
        pretrained: ``None`` (default): weight-free — log-mel mean + max per band, standardised
            per dimension on the bank, Euclidean 1-NN, leave-one-out z-norm (the best single
            system of the real few-shot benchmark, ``docs/benchmarks.md``). A checkpoint spec of
            EfficientAT mn04 adds the frozen mn04 embedding with a Ledoit-Wolf-whitened 1-NN as
            a second member; both are kept and mean-fused with weights ∝ 1 / MAD of each
            member's held-out z-scores (``selection.weighting: robust``, robust-z fusion; not in
            the paper). On the real benchmark it was the best of the fusions measured (the
            pseudo-anomaly choice, which also embeds 64 perturbed clips per key, kept both
            members and scored lower); ``docs/benchmarks.md``, "False alarms at α".
    """
    members = [MemberConfig(name="logmel-stats-knn")]
    if pretrained is not None:
        from stetho.backbones.features import FeatureConfig

        members.append(
            MemberConfig(
                name="mn04-whitened-knn",
                feature=FeatureConfig(
                    backbone="efficientat-mn04", checkpoint=pretrained, pool="mean"
                ),
                backend=BackendConfig(standardise="whiten"),
            )
        )
    ens = EnsembleConfig(members=members)
    if pretrained is not None:
        ens.selection = SelectionConfig(weighting="robust")
    return ExperimentConfig(name="fewshot", ensemble=ens)


def choice_summary(det: EnsembleDetector) -> str:
    """Markdown table of the label-free choice per machine/section."""
    names = [m.name for m in det.ens.members]
    lines = [
        "| machine/section | bank | "
        + " | ".join(f"{n} (weight, proxy AUC)" for n in names)
        + " | why |",
        "|---|---|" + "---|" * len(names) + "---|",
    ]
    for key, ch in det.choices().items():
        w: Any = ch.get("weights", {})
        p: Any = ch.get("proxy_auc", {})
        bank = sum(ch.get("bank_clips", {}).values())
        cells = [
            f"{w.get(n, 0):.2f}, " + (f"{p[n]['mean']:.3f}" if p.get(n) else "–") for n in names
        ]
        lines.append(f"| {key} | {bank} | " + " | ".join(cells) + f" | {ch.get('reason', '')} |")
    return "\n".join(lines) + "\n"


def fit_and_evaluate(
    cfg: ExperimentConfig,
    train_clips: list[Clip],
    test_clips: list[Clip],
    out: Path,
    year: int,
    *,
    progress: bool = True,
) -> tuple[EnsembleDetector, dict[Any, dict[str, float]], list[Path], EvaluationResult | None]:
    """Fit, save, score, write submission files and evaluate an ensemble run in ``out``."""
    t0 = time.monotonic()
    det = EnsembleDetector(cfg, device="cpu").fit(train_clips, progress=progress)
    det.save(out / "detector")
    atomic_write_text(out / "choice.md", choice_summary(det))
    logger.info("ensemble fitted on %d clips in %.1f s", len(train_clips), time.monotonic() - t0)
    scores: dict[Any, dict[str, float]] = {}
    files: list[Path] = []
    evaluation = None
    if not test_clips:
        return det, scores, files, None
    scores = det.score_clips(test_clips, progress=progress)
    decisions = det.decisions(scores)
    for (machine, section), named in sorted(scores.items()):
        files += write_submission(
            out / "scores", machine, section, named, decisions[(machine, section)], year=year
        )
    if all(c.label is not None for c in test_clips):
        truth = truth_from_clips(test_clips)
        for allow in (False, True):
            try:
                evaluation = evaluate(
                    scores, truth, decisions, year=year, system=cfg.name, allow_undefined=allow
                )
                break
            except MetricError as err:
                logger.warning("evaluation%s: %s", " (partial)" if allow else "", err)
        if evaluation is not None:
            evaluation.write(out / "evaluation")
            atomic_write_text(out / "evaluation" / "table.md", evaluation.table() + "\n")
    return det, scores, files, evaluation
