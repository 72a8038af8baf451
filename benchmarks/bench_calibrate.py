"""``stetho calibrate`` on real clips: a slider that "moved" next to a running fan.

Real DCASE 2020 slider id_00 recordings (``dcase2020t2_extra`` train normals, ``…_extra`` and
``…_mini`` test clips) and real MIMII fan normals as the new background:

- the detector's bank is fitted on 30 clean slider training normals;
- "after the move" every slider clip is mixed with a fan recording at -6 dB (RMS);
- calibration uses 20 moved normals (other training clips); the figures are measured on the
  moved held-out normals (25 training + the id_00 test normals) and the moved id_00 anomalies.

The clip counts are small: the figures show the effect of calibration, not a detector's quality.

Usage::

    python benchmarks/bench_calibrate.py --shared ../shared [--backbone logmel|mn04]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from stetho.config import ExperimentConfig
from stetho.data import scan_dataset
from stetho.detector import Detector, calibrate
from stetho.evaluation.metrics import auc_score
from stetho.training import train

MN04 = "weights/efficientat_mn04_as_mAP_432.pt"


def _mix(paths: list[Path], background: list[Path], out: Path, gain_db: float) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, p in enumerate(paths):
        x, sr = sf.read(p, dtype="float32")
        b, sr_b = sf.read(background[i % len(background)], dtype="float32")
        assert sr == sr_b == 16000
        b = np.resize(b, x.shape)
        g = np.sqrt(np.mean(x**2) / max(np.mean(b**2), 1e-12)) * 10 ** (gain_db / 20)
        y = x + g * b
        y = y / max(1.0, float(np.abs(y).max()))
        written.append(out / p.name)
        sf.write(written[-1], y.astype(np.float32), sr, subtype="FLOAT")
    return written


def _report(name: str, det: Detector, normals: list[Path], anomalies: list[Path]) -> None:
    thr = det.thresholds[("slider", "00")]
    sn = det.score_files(normals, "slider", "00")
    sa = det.score_files(anomalies, "slider", "00")
    auc = auc_score(np.r_[np.zeros(len(sn)), np.ones(len(sa))], np.r_[sn, sa])
    print(
        f"| {name} | {int((sn > thr).sum())}/{len(sn)} | {int((sa > thr).sum())}/{len(sa)} | "
        f"{auc:.3f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    ap.add_argument("--backbone", choices=["logmel", "mn04"], default="logmel")
    ap.add_argument("--gain-db", type=float, default=-6.0, help="fan level relative to slider")
    args = ap.parse_args()
    data = args.shared / "data"
    extra = scan_dataset(data / "dcase2020t2_extra")
    mini = scan_dataset(data / "dcase2020t2_mini")
    train_clips = sorted(extra.filter(machine="slider", split="train", section="00"), key=str)
    test = [
        c for t in (extra, mini) for c in t.filter(machine="slider", split="test", section="00")
    ]
    test_normal = [c.path for c in test if c.label == "normal"]
    test_anomaly = [c.path for c in test if c.label == "anomaly"]
    fans = sorted((data / "mimii_fan_extra" / "normal").glob("*.wav"))
    overrides = ["finetune.strategy=frozen", "train.epochs=0", "head.embed_dim=null"]
    if args.backbone == "logmel":
        overrides.append("backbone.name=logmel")
    else:
        overrides += ["backbone.name=efficientat-mn04", f"backbone.checkpoint={args.shared / MN04}"]
    cfg = ExperimentConfig().override([*overrides, "train.tensorboard=false"])
    with tempfile.TemporaryDirectory() as tmp:
        fit = train_clips[:30]
        result = train(cfg, fit, Path(tmp) / "train", progress=False)
        det = Detector.from_training(result).fit(fit)
        folder = det.save(Path(tmp) / "detector")
        clean_normal = [c.path for c in train_clips[50:]] + test_normal
        moved_cal = _mix(
            [c.path for c in train_clips[30:50]], fans, Path(tmp) / "cal", args.gain_db
        )
        moved_normal = _mix(clean_normal, fans[::-1], Path(tmp) / "normal", args.gain_db)
        moved_anomaly = _mix(test_anomaly, fans[::-1], Path(tmp) / "anomaly", args.gain_db)
        print(
            f"backbone {args.backbone}; bank: {len(fit)} clean normals; calibration: "
            f"{len(moved_cal)} moved normals; held out: {len(moved_normal)} normals, "
            f"{len(moved_anomaly)} anomalies; fan background {args.gain_db:+.0f} dB\n"
        )
        print("| detector | false alarms (normals) | anomalies flagged | AUC |")
        print("|---|---:|---:|---:|")
        _report("before the move (clean audio)", det, clean_normal, test_anomaly)
        _report("after the move, not calibrated", det, moved_normal, moved_anomaly)
        for mode in ("replace", "add"):
            d = Detector.load(folder)
            t0 = time.perf_counter()
            calibrate(d, {("slider", "00"): moved_cal}, mode=mode)  # type: ignore[arg-type]
            secs = time.perf_counter() - t0
            _report(
                f"after the move, calibrated ({mode}, {secs:.1f} s)", d, moved_normal, moved_anomaly
            )


if __name__ == "__main__":
    main()
