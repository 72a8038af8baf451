"""End-to-end pipelines the CLI calls: train → detector → submission files → evaluation.

::

    run = run_training(cfg, "data/dcase2023t2", "runs/beats_lora")   # dev train → dev test
    print(run.evaluation.table())
    score_dataset(run.detector, "data/dcase2023t2", "runs/beats_lora/eval_scores", partition="eval")
    result = run_demo("runs/demo")                                     # synthetic, a few minutes
    table = run_sweep(["configs/paper/a.yaml", "configs/paper/b.yaml"], root, "runs/sweep")

Output layout of :func:`run_training` (``out_dir``)::

    train/        checkpoint.pt, metrics.csv, config.json, class_map.json, tensorboard/
    detector/     the saved detector (see :mod:`stetho.detector.detector`)
    scores/       anomaly_score_<m>_section_<XX>_test.csv + decision_result_… (official format)
    evaluation/   results.json, results.csv, paper_table.csv, <system>_result.csv, table.md
"""

from __future__ import annotations

import csv
import io
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stetho.config import BackboneConfig, ExperimentConfig, load_experiment_config
from stetho.data import Clip, ClipTable, scan_dataset
from stetho.detector.detector import Detector
from stetho.detector.ensemble import EnsembleDetector
from stetho.evaluation import (
    EvaluationResult,
    MetricError,
    Scores,
    evaluate,
    truth_from_clips,
    write_submission,
)
from stetho.training.loop import TrainResult, build_backbone, train
from stetho.utils.io import atomic_write, atomic_write_text

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

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """Outcome of :func:`run_training`.

    Attributes:
        out_dir: The run folder.
        detector: The fitted detector (also saved in ``out_dir/detector``).
        train: The training result.
        evaluation: Dev-test evaluation (``None`` when the test clips carry no labels).
        scores: ``{(machine, section): {clip name: score}}`` of the dev test clips.
        submission_files: Score/decision CSVs written to ``out_dir/scores``.
        seconds: Wall time of the whole run.
    """

    out_dir: Path
    detector: Detector | EnsembleDetector
    train: TrainResult | None
    evaluation: EvaluationResult | None
    scores: Scores
    submission_files: list[Path] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class SweepResult:
    """Outcome of :func:`run_sweep`: one row per config, as markdown and CSV."""

    rows: list[dict[str, Any]]
    markdown: str
    csv_path: Path
    markdown_path: Path


def _year(cfg: ExperimentConfig, clips: Sequence[Clip]) -> int:
    if cfg.data.year is not None:
        return cfg.data.year
    years = Counter(c.year for c in clips if c.year is not None)
    return years.most_common(1)[0][0] if years else 2023


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


def _write_scores(
    detector: Detector,
    scores: Scores,
    out_dir: Path,
    year: int,
    style: Literal["plain", "baseline"],
) -> tuple[list[Path], dict[tuple[str, str], dict[str, int]]]:
    decisions = detector.decisions(scores)
    files: list[Path] = []
    for (machine, section), named in sorted(scores.items()):
        files += write_submission(
            out_dir, machine, section, named, decisions[(machine, section)], style=style, year=year
        )
    return files, decisions


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
        cfg: The experiment config.
        data_root: DCASE dataset root (``dev_data/raw/<machine>/{train,test}``).
        out_dir: Run folder (layout in the module docstring).
        resume: Continue an interrupted training run in ``out_dir/train``.
        progress: Progress bars.

    Returns:
        A :class:`RunResult`. Under ``torchrun`` all processes train; only rank 0 then fits,
        saves, scores and evaluates (other ranks get an unfitted detector and no evaluation).
    """
    t0 = time.monotonic()
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
    year = _year(cfg, list(table))
    logger.info(
        "run %s: %d train clips, %d test clips (%s), %d machine/section(s), year %d",
        cfg.name, len(train_clips), len(test_clips), "labelled" if labelled else "unlabelled",
        len(train_clips.sections()), year,
    )  # fmt: skip
    if cfg.ensemble is not None:  # training-free few-shot ensemble (the default recipe)
        from stetho.pipelines.fewshot import fit_and_evaluate

        det, fs_scores, fs_files, ev = fit_and_evaluate(
            cfg, list(train_clips), list(test_clips), out, year, progress=progress
        )
        secs = round(time.monotonic() - t0, 3)
        return RunResult(out, det, None, ev, fs_scores, fs_files, secs)
    result = train(
        cfg,
        train_clips,
        out / "train",
        resume=resume,
        val_clips=test_clips if labelled else None,
        progress=progress,
    )
    if int(os.environ.get("RANK", "0")) != 0:
        # under torchrun only rank 0 fits, saves, scores and evaluates
        return RunResult(out, Detector.from_training(result), result, None, {}, [], 0.0)
    detector = Detector.from_training(result).fit(train_clips, progress=progress)
    detector.save(out / "detector")
    scores: Scores = {}
    files: list[Path] = []
    evaluation = None
    if len(test_clips):
        scores = detector.score_clips(test_clips, progress=progress)
        files, decisions = _write_scores(detector, scores, out / "scores", year, "plain")
        if labelled:
            truth = truth_from_clips(test_clips)
            try:
                evaluation = evaluate(scores, truth, decisions, year=year, system=cfg.name)
            except MetricError as err:  # small / unbalanced dev sets: report a partial score
                logger.warning("%s; evaluating in partial mode (undefined metrics left out)", err)
                try:
                    evaluation = evaluate(
                        scores, truth, decisions, year=year, system=cfg.name, allow_undefined=True
                    )
                except MetricError as err2:  # e.g. only anomalies: nothing can be evaluated
                    logger.warning("evaluation skipped: %s", err2)
        if evaluation is not None:
            evaluation.write(out / "evaluation")
            atomic_write_text(out / "evaluation" / "table.md", evaluation.table() + "\n")
            logger.info("run %s: official score Ω = %.4f", cfg.name, evaluation.official_score)
    return RunResult(
        out, detector, result, evaluation, scores, files, round(time.monotonic() - t0, 3)
    )


def embed_dataset(
    detector_or_cfg: Detector | ExperimentConfig,
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    partitions: Sequence[str] = ("dev", "eval"),
    splits: Sequence[str] = ("train", "test"),
    progress: bool = True,
) -> Path:
    """Embed every clip of a dataset and write ``embeddings.npy`` + ``clips.csv`` to ``out``.

    With a :class:`Detector` the k-NN embeddings (head projection) are written; with an
    :class:`ExperimentConfig` the plain (pre-trained, not fine-tuned) backbone embeddings.

    Returns:
        The output folder; row ``i`` of ``embeddings.npy`` is row ``i`` of ``clips.csv``.
    """
    table = scan_dataset(root)
    clips = [c for c in table if c.partition in partitions and c.split in splits]
    if not clips:
        raise ValueError(
            f"no clips of partitions {list(partitions)} / splits {list(splits)} under {root}"
        )
    dest = Path(out)
    if isinstance(detector_or_cfg, Detector):
        emb = detector_or_cfg.embed_clips(clips, progress=progress)
    else:
        emb = _plain_embeddings(detector_or_cfg, clips, progress)
    with atomic_write(dest / "embeddings.npy", "wb") as fh:
        np.save(fh, emb.astype(np.float32))
    ClipTable(clips).to_csv(dest / "clips.csv")
    logger.info("wrote %d embeddings of size %d to %s", emb.shape[0], emb.shape[1], dest)
    return dest


def _plain_embeddings(cfg: ExperimentConfig, clips: Sequence[Clip], progress: bool) -> np.ndarray:
    from stetho.model.heads import HeadConfig, ProxyHead
    from stetho.model.labels import ClassMap

    backbone = build_backbone(cfg.backbone)
    head = ProxyHead(backbone.embed_dim, 1, HeadConfig(embed_dim=None))  # identity projection
    det = Detector(cfg, backbone, head, ClassMap(classes=["none"]))
    return det.embed_clips(clips, progress=progress)


def score_dataset(
    detector: Detector,
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    partition: Literal["dev", "eval"] = "dev",
    *,
    fit_missing: bool = True,
    style: Literal["plain", "baseline"] = "plain",
    year: int | None = None,
    progress: bool = True,
) -> Scores:
    """Score the test clips of a dev or eval tree and write the official submission CSVs.

    Args:
        detector: A fitted detector.
        root: Dataset root.
        out_dir: Folder for ``anomaly_score_…``/``decision_result_…`` files.
        partition: ``"dev"`` or ``"eval"`` test clips.
        fit_missing: Machine/sections without a memory bank (e.g. eval machine types) get banks
            and thresholds from that partition's normal train clips first (the detector is
            updated in memory; save it again to keep them).
        style: ``"plain"`` or ``"baseline"`` file names.
        year: Challenge year for file-name forms (default: from the data, else 2023).
        progress: Progress bars.

    Returns:
        ``{(machine, section): {clip name: score}}``.
    """
    table = scan_dataset(root, year=year)
    data = detector.cfg.data
    # data.machines names dev machine types: it does not restrict the eval partition
    restrict = partition == "dev"
    test = select_clips(
        table, detector.cfg, partition=partition, split="test", restrict_machines=restrict
    )
    if not len(test):
        filters = [f"sections={data.sections}"] if data.sections is not None else []
        if restrict and data.machines is not None:
            filters.insert(0, f"machines={data.machines}")
        where = f" matching the detector's data filter ({', '.join(filters)})" if filters else ""
        raise ValueError(
            f"no {partition} test clips under {root}{where}; found {len(table)} clips in total"
        )
    missing = sorted(set(test.sections()) - set(detector.keys))
    if missing:
        if not fit_missing:
            raise KeyError(
                f"the detector has no banks for {[f'{m}/{s}' for m, s in missing]}; fitted keys: "
                f"{[f'{m}/{s}' for m, s in detector.keys]} (use fit_missing=True)"
            )
        extra = select_clips(
            table, detector.cfg, partition=partition, split="train", restrict_machines=restrict
        ).filter(key=set(missing))
        lacking = sorted(set(missing) - set(extra.sections()))
        if lacking:
            raise KeyError(
                f"no {partition} train clips to fit banks for {[f'{m}/{s}' for m, s in lacking]}"
            )
        logger.info(
            "fitting banks for %d new machine/section(s) from %d train clips",
            len(missing),
            len(extra),
        )
        detector.fit(extra, replace=False, progress=progress)
    scores = detector.score_clips(test, progress=progress)
    _write_scores(detector, scores, Path(out_dir), year or _year(detector.cfg, list(table)), style)
    return scores


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


_SWEEP_FIELDS = (
    "name",
    "backbone",
    "strategy",
    "official_score",
    "arithmetic_mean",
    "auc_source_hmean",
    "auc_target_hmean",
    "pauc_hmean",
    "trainable_params",
    "epochs",
    "final_loss",
    "seconds",
    "config",
)


def run_sweep(
    config_paths: Sequence[str | os.PathLike[str]],
    data_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    overrides: Sequence[str] = (),
    resume: bool = True,
    progress: bool = True,
) -> SweepResult:
    """Run :func:`run_training` for each config and compare them.

    Each config runs in ``out_dir/<name>`` (``name`` from the config, else the file stem);
    ``out_dir/comparison.csv`` and ``comparison.md`` list Ω, the arithmetic mean, the per-metric
    harmonic means, trainable parameters and run time per config, best Ω first.

    Returns:
        A :class:`SweepResult`.
    """

    out = Path(out_dir)
    rows: list[dict[str, Any]] = []
    used: set[str] = set()
    for path in config_paths:
        cfg = load_experiment_config(path, overrides)
        name = cfg.name if cfg.name != "experiment" else Path(path).stem
        base, i = name, 1
        while name in used:
            i += 1
            name = f"{base}-{i}"
        used.add(name)
        cfg = cfg.replace(name=name)
        logger.info("sweep: running %s (%s)", name, path)
        run = run_training(cfg, data_root, out / name, resume=resume, progress=progress)
        ev = run.evaluation
        means = ev.metric_means() if ev is not None else {}

        def hmean(metric: str, means: dict[str, dict[str, float | None]] = means) -> float | None:
            return means.get(metric, {}).get("h-mean")

        rows.append(
            {
                "name": name,
                "backbone": cfg.backbone.name,
                "strategy": cfg.finetune.strategy,
                "official_score": ev.official_score if ev is not None else None,
                "arithmetic_mean": ev.arithmetic_mean if ev is not None else None,
                "auc_source_hmean": hmean("AUC (source)"),
                "auc_target_hmean": hmean("AUC (target)"),
                "pauc_hmean": hmean("pAUC (source, target)"),
                "trainable_params": run.train.trainable_params if run.train else 0,
                "epochs": run.train.epochs if run.train else 0,
                "final_loss": run.train.final_loss if run.train else None,
                "seconds": run.seconds,
                "config": str(path),
            }
        )
    rows.sort(key=lambda r: -(r["official_score"] if r["official_score"] is not None else -1.0))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(_SWEEP_FIELDS), lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: ("" if r[k] is None else r[k]) for k in _SWEEP_FIELDS} for r in rows])
    csv_path = out / "comparison.csv"
    atomic_write_text(csv_path, buf.getvalue())
    markdown = _sweep_markdown(rows)
    md_path = out / "comparison.md"
    atomic_write_text(md_path, markdown + "\n")
    return SweepResult(rows, markdown, csv_path, md_path)


def _sweep_markdown(rows: list[dict[str, Any]]) -> str:
    def f(v: Any) -> str:
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.4f}"
        return str(v)

    cols = ["name", "backbone", "strategy", "official_score", "arithmetic_mean", "auc_source_hmean",
            "auc_target_hmean", "pauc_hmean", "trainable_params", "seconds"]  # fmt: skip
    heads = ["config", "backbone", "strategy", "Ω", "a-mean", "AUC src (h)", "AUC tgt (h)", "pAUC (h)",
             "trainable", "time (s)"]  # fmt: skip
    lines = ["| " + " | ".join(heads) + " |", "|---" * len(heads) + "|"]
    lines += ["| " + " | ".join(f(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
