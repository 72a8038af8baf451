"""Folder scoring end to end (decode, resample, front-end, model, k-NN): clips/s and peak memory.

Usage::

    python benchmarks/ratio_folder.py [--quick] [--clips 1000] [--workers 2]

Writes ``--clips`` synthetic 10 s, 16 kHz WAV clips (DCASE layout) to a temporary folder, fits a
frozen EfficientAT mn04 detector (real checkpoint from ``$STETHO_SHARED`` when present, else
random weights) on 5 training clips, saves it, and scores the folder with
:func:`stetho.serving.score_paths` three ways, each in a fresh process (for its peak memory):

* ``before``: the loop of stetho 4f71ad6 -- decoding in the main process and the old conv1d
  pre-emphasis of the mn04 front-end;
* ``workers0``: today's code, decoding in the main process;
* ``workersN``: today's code with ``num_workers=N`` decoding processes;
* ``onnx_workersN``: the same through the exported ONNX model (``--engine onnxruntime``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import emit, peak_rss_mib

MN04 = "weights/efficientat_mn04_as_mAP_432.pt"


def _prepare(folder: Path, clips: int) -> Path:
    from stetho.config import ExperimentConfig
    from stetho.data import generate_synthetic_dataset, scan_dataset
    from stetho.detector import Detector
    from stetho.training import train

    root = generate_synthetic_dataset(
        folder / "data",
        machines=("fan",),
        n_train_source=4,
        n_train_target=1,
        n_test_per_group=max(1, clips // 4),
        seconds=10.0,
    )
    table = scan_dataset(root)
    ckpt = Path(os.environ.get("STETHO_SHARED", "../shared")) / MN04
    cfg = ExperimentConfig().override(
        [
            "backbone.name=efficientat-mn04",
            f"backbone.checkpoint={ckpt}" if ckpt.is_file() else "backbone.checkpoint=null",
            "finetune.strategy=frozen",
            "head.embed_dim=null",
            "train.epochs=0",
            "train.tensorboard=false",
            "threshold.method=percentile",
        ]
    )
    tr = table.filter(split="train")
    det = Detector.from_training(train(cfg, tr, folder / "run", progress=False)).fit(tr)
    try:
        from stetho.deploy import export_onnx

        export_onnx(det, folder / "edge")
    except ImportError:
        pass  # no onnx extra: the onnxruntime row is left out
    return det.save(folder / "detector")


def _run(mode: str, detector: str, data: str, workers: int) -> None:
    from stetho.detector import load_scorer
    from stetho.serving import score_paths

    if mode.startswith("onnx"):
        from stetho.deploy import OnnxDetector

        det: Any = OnnxDetector.load(Path(detector).parent / "edge")
    else:
        det = load_scorer(detector)
    if mode == "before":  # the conv1d pre-emphasis of stetho 4f71ad6
        fe = det.backbone.frontend  # type: ignore[attr-defined]
        kernel = torch.tensor([[[-fe.preemphasis, 1.0]]])
        fe.forward = lambda x: _conv_frontend(fe, x, kernel)
    files = sorted(Path(data).rglob("*.wav"))
    files = [f for f in files if "/test/" in str(f)]
    t0 = time.perf_counter()
    recs = score_paths(det, files, machine="fan", section="00", num_workers=workers)
    dt = time.perf_counter() - t0
    assert all(r.ok for r in recs), [r.error for r in recs if not r.ok][:2]
    print(json.dumps({"clips": len(files), "s": dt, "peak_rss_mib": peak_rss_mib(children=True)}))


def _conv_frontend(fe: torch.nn.Module, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The mn04 front-end as of stetho 4f71ad6 (pre-emphasis by conv1d)."""
    from stetho.frontend.mel import centred_stft

    y = torch.nn.functional.conv1d(x.float().unsqueeze(1), kernel).squeeze(1)
    spec = centred_stft(y, fe.window, fe.n_fft, fe.hop_length, fe.win_length)
    mel = torch.matmul(fe.mel_bank, spec.real.square() + spec.imag.square())
    return ((mel + fe.log_offset).log() + fe.shift) / fe.scale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="64 clips")
    ap.add_argument("--clips", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--run", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--detector", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        _run(args.run, args.detector, args.data, args.workers)
        return
    clips = 64 if args.quick else args.clips
    with tempfile.TemporaryDirectory(prefix="stetho-bench-") as tmp:
        det = _prepare(Path(tmp), clips)
        modes = [("before", 0), ("workers0", 0), (f"workers{args.workers}", args.workers)]
        if (Path(tmp) / "edge").is_dir():
            modes.append((f"onnx_workers{args.workers}", args.workers))
        res = {}
        for mode, workers in modes * 1:
            cmd = [sys.executable, __file__, "--run", mode, "--detector", str(det)]
            cmd += ["--data", str(Path(tmp) / "data"), "--workers", str(workers)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            res[mode] = json.loads(out.strip().splitlines()[-1])
        n = res["before"]["clips"]
        par = f"workers{args.workers}"
        emit(
            {
                "bench": "folder",
                "clips": n,
                "clip_seconds": 10.0,
                "clips_per_s": {m: round(n / r["s"], 2) for m, r in res.items()},
                "peak_rss_mib": {m: round(r["peak_rss_mib"]) for m, r in res.items()},
                "speedup_vs_before": round(res["before"]["s"] / res[par]["s"], 2),
                "speedup_workers_only": round(res["workers0"]["s"] / res[par]["s"], 2),
                "speedup_onnx_vs_before": round(res["before"]["s"] / res[f"onnx_{par}"]["s"], 2)
                if f"onnx_{par}" in res
                else None,
            }
        )


if __name__ == "__main__":
    main()
