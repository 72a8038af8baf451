"""Detectors on the 28 real DCASE 2023 dev clips (the shared mini set): the real-audio check.

Each machine of the mini set has 2 training and 2 test clips, so per-machine AUCs are mostly
undefined (see ``stetho evaluate --allow-undefined``). This script therefore also reports a
*pooled* AUC and pAUC over all 14 test clips (5 anomalies, 9 normals) of all machines. Pooled
numbers are noisy (45 anomaly/normal pairs) and not comparable to official scores; they are a
sanity check that real embeddings separate real anomalies, and a regression signal.

Usage::

    python benchmarks/real_clips.py --shared ../shared [--out runs/real_clips] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from stetho.config import load_experiment_config
from stetho.data import scan_dataset
from stetho.evaluation.metrics import auc_score, pauc_score
from stetho.pipelines import run_training

MN04 = "weights/efficientat_mn04_as_mAP_432.pt"
VARIANTS: dict[str, list[str]] = {
    "logmel, no training (stats + cosine KNN)": [
        "backbone.name=logmel",
        "finetune.strategy=frozen",
        "train.epochs=0",
        "head.embed_dim=null",
    ],
    "logmel + ArcFace head (10 ep)": [
        "backbone.name=logmel",
        "finetune.strategy=frozen",
        "train.epochs=10",
        "train.lr=1e-3",
    ],
    "mn04 frozen, no training (pretrained embedding)": [
        "backbone.name=efficientat-mn04",
        "backbone.checkpoint={mn04}",
        "finetune.strategy=frozen",
        "train.epochs=0",
        "head.embed_dim=null",
    ],
    "mn04 frozen + ArcFace head (10 ep)": [
        "backbone.name=efficientat-mn04",
        "backbone.checkpoint={mn04}",
        "finetune.strategy=frozen",
        "train.epochs=10",
        "train.lr=1e-3",
    ],
    "mn04 full fine-tune + ArcFace (5 ep)": [
        "backbone.name=efficientat-mn04",
        "backbone.checkpoint={mn04}",
        "finetune.strategy=full",
        "train.epochs=5",
        "train.lr=1e-4",
    ],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shared", default=os.environ.get("STETHO_SHARED", "../shared"))
    ap.add_argument("--out", default="runs/real_clips")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    shared = Path(args.shared)
    root = shared / "data" / "dcase2023t2_mini"
    test = [c for c in scan_dataset(root) if c.split == "test"]
    rows = []
    for name, overrides in VARIANTS.items():
        sets = [o.format(mn04=shared / MN04) for o in overrides] + ["train.seed=0"]
        cfg = load_experiment_config(None, sets)
        out = Path(args.out) / name.split(",")[0].replace(" ", "_").replace("+", "")
        t0 = time.perf_counter()
        run = run_training(cfg, root, out, resume=False)
        wall = time.perf_counter() - t0
        y = np.array([c.label == "anomaly" for c in test], dtype=np.int64)
        s = np.array([run.scores[c.key][c.name] for c in test])
        ev = run.evaluation
        row = {
            "system": name,
            "pooled_auc": round(auc_score(y, s), 4),
            "pooled_pauc": round(pauc_score(y, s, 0.1), 4),
            "partial_defined_amean": round(ev.arithmetic_mean, 4) if ev else None,
            "seconds": round(wall, 1),
        }
        rows.append(row)
        print(json.dumps(row))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
