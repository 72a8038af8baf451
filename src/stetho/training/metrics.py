"""Training metrics: ``metrics.csv`` (rewritten atomically) and optional TensorBoard events."""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any

from stetho.utils.io import atomic_write_text

__all__ = ["METRICS_NAME", "METRIC_FIELDS", "MetricsLog"]

logger = logging.getLogger(__name__)

#: Per-step / per-epoch metrics CSV in the training output folder.
METRICS_NAME = "metrics.csv"
#: Columns of ``metrics.csv``.
METRIC_FIELDS = (
    "kind",
    "epoch",
    "step",
    "lr",
    "loss",
    "grad_norm",
    "val_official_score",
    "val_arithmetic_mean",
    "elapsed_s",
)


class MetricsLog:
    """``metrics.csv`` + optional TensorBoard, written on rank 0 only (``active``).

    Args:
        out_dir: Training output folder.
        active: Whether this process writes (rank 0).
        tensorboard: Also write TensorBoard events (skipped with a log line if unavailable).
        keep_until_step: On resumption, rows after this step (written by the interrupted run
            after its last checkpoint) are dropped; 0 starts a new log.
    """

    def __init__(
        self, out_dir: Path, active: bool, tensorboard: bool, keep_until_step: int
    ) -> None:
        self.path = out_dir / METRICS_NAME
        self.active = active
        self.rows: list[dict[str, Any]] = []
        self.writer: Any = None
        if not active:
            return
        if keep_until_step > 0 and self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as fh:
                self.rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= keep_until_step]
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(
                    str(out_dir / "tensorboard"),
                    purge_step=keep_until_step if keep_until_step else None,
                )
            except Exception as err:  # tensorboard missing or broken: the CSV is enough
                logger.info("TensorBoard logging disabled: %s", err)

    def log(self, kind: str, epoch: int, step: int, values: dict[str, Any]) -> None:
        """Append a ``"step"`` or ``"epoch"`` row and rewrite the CSV."""
        if not self.active:
            return
        row = {"kind": kind, "epoch": epoch, "step": step, **values}
        self.rows.append({k: row.get(k, "") for k in METRIC_FIELDS})
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(METRIC_FIELDS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, int | float) and k != "elapsed_s" and math.isfinite(v):
                    self.writer.add_scalar(f"{kind}/{k}", v, step)
            self.writer.flush()

    def close(self) -> None:
        """Close the TensorBoard writer."""
        if self.writer is not None:
            self.writer.close()
