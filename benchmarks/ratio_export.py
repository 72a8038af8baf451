"""Edge export: onnxruntime (float32, int8) vs torch speed, score parity and AUC on real clips.

Usage::

    python benchmarks/ratio_export.py [--quick]

Needs ``$STETHO_SHARED`` (the 28 real DCASE 2023 clips and the mn04 checkpoint). A frozen mn04
detector is fitted on the 14 training clips and exported; the 14 test clips (5 anomalies) are
scored by torch, onnxruntime float32 and onnxruntime int8 (matrix products quantised). Reports the
largest score difference to torch, the pooled AUC of each, and the embedding time of a batch of
real clips relative to torch.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from _common import emit, interleaved


def _auc(scores: list[float], labels: list[int]) -> float:
    s, y = np.asarray(scores), np.asarray(labels)
    pos, neg = s[y == 1], s[y == 0]
    wins = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
    return float(wins / (len(pos) * len(neg)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="(same work; kept for run_all)")
    ap.parse_args()
    from stetho.config import ExperimentConfig
    from stetho.data import load_audio, scan_dataset
    from stetho.deploy import OnnxDetector, export_onnx
    from stetho.detector import Detector
    from stetho.training import train

    shared = Path(os.environ.get("STETHO_SHARED", "../shared"))
    ckpt = shared / "weights" / "efficientat_mn04_as_mAP_432.pt"
    data = shared / "data" / "dcase2023t2_mini"
    if not ckpt.is_file() or not data.is_dir():
        emit({"bench": "export", "skipped": f"no real clips/checkpoint under {shared}"})
        return
    table = scan_dataset(data)
    tr, te = table.filter(split="train"), table.filter(split="test")
    cfg = ExperimentConfig().override(
        [
            "backbone.name=efficientat-mn04",
            f"backbone.checkpoint={ckpt}",
            "finetune.strategy=frozen",
            "head.embed_dim=null",
            "train.epochs=0",
            "train.tensorboard=false",
            "threshold.method=percentile",
        ]
    )
    with tempfile.TemporaryDirectory(prefix="stetho-export-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = Detector.from_training(train(cfg, tr, Path(tmp) / "run", progress=False)).fit(tr)
        out = export_onnx(det, Path(tmp) / "edge", quantize=True)
        engines = {
            "torch": det,
            "onnx_fp32": OnnxDetector.load(out),
            "onnx_int8": OnnxDetector.load(out, int8=True),
        }
        labels = [int(c.label == "anomaly") for c in te]
        scores = {}
        for name, eng in engines.items():
            s = eng.score_clips(te)
            scores[name] = [s[c.key][c.name] for c in te]
        waves = torch.stack(
            [torch.from_numpy(load_audio(c.path, sr=32000)[0][:320000]) for c in list(te)[:4]]
        )
        t = interleaved(
            {
                "torch": lambda: det._forward(waves),
                "onnx_fp32": lambda: engines["onnx_fp32"]._forward(waves),  # type: ignore[attr-defined]
                "onnx_int8": lambda: engines["onnx_int8"]._forward(waves),  # type: ignore[attr-defined]
            },
            repeats=3,
        )
        ref = np.asarray(scores["torch"])
        emit(
            {
                "bench": "export",
                "test_clips": len(te),
                "anomalies": sum(labels),
                "pooled_auc": {k: round(_auc(v, labels), 3) for k, v in scores.items()},
                "max_abs_score_diff_vs_torch": {
                    k: float(f"{np.abs(np.asarray(v) - ref).max():.2e}") for k, v in scores.items()
                },
                "time_over_torch": {k: round(v / t["torch"], 2) for k, v in t.items()},
                "ms_per_clip": {k: round(v / 4 * 1e3, 1) for k, v in t.items()},
                "model_bytes": {
                    "fp32": (out / "model.onnx").stat().st_size,
                    "int8": (out / "model.int8.onnx").stat().st_size,
                },
            }
        )


if __name__ == "__main__":
    main()
