"""``embed_dataset``: one embedding per clip of a dataset (fine-tuned or plain backbone)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stetho.config import ExperimentConfig
from stetho.data import Clip, ClipTable, scan_dataset
from stetho.detector.artifact import DetectorError
from stetho.detector.base import BaseDetector
from stetho.detector.detector import Detector
from stetho.training import build_backbone
from stetho.utils.io import atomic_write

__all__ = ["embed_dataset"]

logger = logging.getLogger(__name__)


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
    if isinstance(detector_or_cfg, BaseDetector):
        emb = np.asarray(detector_or_cfg.embed_files([c.path for c in clips], progress=progress))
        if emb.dtype == object or emb.ndim != 2:
            raise DetectorError(
                f"a {detector_or_cfg.kind} detector has no fixed-size embedding to write "
                "(its features are per-clip frames); use a few-shot or k-NN detector"
            )
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
