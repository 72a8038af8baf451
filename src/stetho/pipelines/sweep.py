"""``run_sweep``: several configs on one dataset, compared in one table."""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stetho.config import load_experiment_config
from stetho.pipelines.train import run_training
from stetho.utils.io import atomic_write_text

__all__ = ["SweepResult", "run_sweep"]

logger = logging.getLogger(__name__)


@dataclass
class SweepResult:
    """Outcome of :func:`run_sweep`: one row per config, as markdown and CSV."""

    rows: list[dict[str, Any]]
    markdown: str
    csv_path: Path
    markdown_path: Path


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
