"""One machine, no attributes: which proxy task learns something? (real clips, CPU).

A user's machine imported without ``--attributes`` gives the paper's ArcFace task one class and a
loss of exactly 0. This script compares, on real recordings of one machine each, the embeddings
k-NN scores after training with each proxy objective of ``train.proxy``:

* **slider**: DCASE 2020 slider id_00 (``dcase2020t2_extra``): 60 of the 75 training normals train;
  test = the other 15 training normals + the id_00 test clips of ``dcase2020t2_extra`` and
  ``dcase2020t2_mini`` (20 normal, 4 anomalous clips in total).
* **fan**: MIMII fan (``mimii_fan_extra``, 10 normal + 10 abnormal), two folds: train on 5 normals,
  test on the other 5 normals + the 10 abnormal clips; AUC is the mean of the two folds.

Outlier exposure uses the normal *test* clips of other machine types of ``dcase2020t2_extra``
(pump, valve, ToyCar, ToyConveyor, and slider or fan that are not the machine itself).
Every figure is one training run (seed 13711); the clip counts behind it are printed.

Usage::

    python benchmarks/oneclass_proxy.py --shared ../shared [--systems logmel-transforms ...]
        [--out runs/oneclass_proxy] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stetho.config import load_experiment_config
from stetho.data import Clip, import_recordings, scan_dataset
from stetho.detector.detector import Detector
from stetho.evaluation.metrics import auc_score, pauc_score
from stetho.model.proxy import TRANSFORMS, ProxyConfig
from stetho.training import train

MN04 = "weights/efficientat_mn04_as_mAP_432.pt"
BATCH = 16
COMMON = [
    "data.crop_seconds=2.0",  # 2 s training crops and 2 s scoring windows for every backbone
    "train.tensorboard=false",
    "train.device=cpu",
    f"train.batch_size={BATCH}",
    "scoring.batch_size=32",
]
LOGMEL = ["backbone.name=logmel", "finetune.strategy=frozen", "train.lr=1e-3"]
MN04_FROZEN = [
    "backbone.name=efficientat-mn04",
    "backbone.checkpoint={mn04}",
    "finetune.strategy=frozen",
    "train.lr=1e-3",
]
MN04_FULL = [
    "backbone.name=efficientat-mn04",
    "backbone.checkpoint={mn04}",
    "finetune.strategy=full",
    "train.lr=1e-4",
]
UNTRAINED = ["train.epochs=0", "head.embed_dim=null"]
#: system → (description, overrides, optimiser steps); the epochs are derived from the steps so that
#: 5 clips (fan) and 60 clips (slider) get the same number of updates
SYSTEMS: dict[str, tuple[str, list[str], int]] = {
    "logmel-none": ("logmel stats, no training (k-NN on the statistics)", LOGMEL + UNTRAINED, 0),
    "logmel-loss0": (
        "logmel + untrained 128-d projection (= the one-class ArcFace run, loss 0)",
        LOGMEL,
        0,
    ),
    "logmel-transforms": (
        "logmel + head trained on transforms",
        [*LOGMEL, "train.proxy=transforms"],
        150,
    ),
    "logmel-outlier": (
        "logmel + head trained with outlier exposure",
        [*LOGMEL, "train.proxy=outlier"],
        150,
    ),
    "logmel-speed": (
        "logmel + head trained on speed_up/down only",
        [*LOGMEL, "train.proxy=transforms", "train.proxy_options.transforms=[speed_up,speed_down]"],
        150,
    ),
    "logmel-tilt": (
        "logmel + head trained on tilt_up/down only",
        [*LOGMEL, "train.proxy=transforms", "train.proxy_options.transforms=[tilt_up,tilt_down]"],
        150,
    ),
    "logmel-pitch": (
        "logmel + head trained on pitch_up/down only",
        [*LOGMEL, "train.proxy=transforms", "train.proxy_options.transforms=[pitch_up,pitch_down]"],
        150,
    ),
    "logmel-all7": (
        "logmel + head trained on all 7 transformations",
        [
            *LOGMEL,
            "train.proxy=transforms",
            f"train.proxy_options.transforms=[{','.join(TRANSFORMS)}]",
        ],
        150,
    ),
    "mn04-none": ("mn04 frozen, no training", MN04_FROZEN + UNTRAINED, 0),
    "mn04-frozen-transforms": (
        "mn04 frozen + head trained on transforms",
        [*MN04_FROZEN, "train.proxy=transforms"],
        100,
    ),
    "mn04-full-transforms": (
        "mn04 fine-tuned (full) on transforms",
        [*MN04_FULL, "train.proxy=transforms"],
        30,
    ),
    "mn04-full-outlier": (
        "mn04 fine-tuned (full) with outlier exposure",
        [*MN04_FULL, "train.proxy=outlier"],
        30,
    ),
}


#: the systems run by default (the others are the transformation ablation, run with --systems)
MAIN = [s for s in SYSTEMS if s.startswith("mn04") or s in (
    "logmel-none", "logmel-loss0", "logmel-transforms", "logmel-outlier")]  # fmt: skip


def _epochs(steps: int, n_clips: int, overrides: Sequence[str], batch: int) -> int:
    """Epochs that give about ``steps`` optimiser steps on ``n_clips`` training clips."""
    if steps == 0:
        return 0
    listed = [
        o.split("=", 1)[1] for o in overrides if o.startswith("train.proxy_options.transforms=")
    ]
    n_transforms = (
        len(listed[0].strip("[]").split(",")) if listed else len(ProxyConfig().transforms)
    )
    per_clip = 2 if "train.proxy=outlier" in overrides else 1 + n_transforms
    return max(1, math.ceil(steps / math.ceil(n_clips * per_clip / batch)))


def _wavs(folder: Path, pattern: str = "*.wav") -> list[Path]:
    return sorted(folder.glob(pattern))


def _outlier_folder(shared: Path, exclude: str, work: Path) -> Path:
    """A folder of symlinks to other machines' normal test clips."""
    out = work / f"outliers_not_{exclude}"
    out.mkdir(parents=True, exist_ok=True)
    root = shared / "data/dcase2020t2_extra/dev_data"
    for machine in sorted(p.name for p in root.iterdir() if p.is_dir()):
        if machine == exclude:
            continue
        for f in _wavs(root / machine / "test", "normal_*.wav"):
            link = out / f"{machine}_{f.name}"
            if not link.exists():
                link.symlink_to(f.resolve())
    return out


def _cases(shared: Path) -> dict[str, list[tuple[list[Path], list[Path], list[Path]]]]:
    """``case → folds of (train, test normal, test anomaly)`` files."""
    slider_train = _wavs(shared / "data/dcase2020t2_extra/dev_data/slider/train")
    tests = [
        shared / "data/dcase2020t2_extra/dev_data/slider/test",
        shared / "data/dcase2020t2_mini/dev_data/slider/test",
    ]
    normal = [f for t in tests for f in _wavs(t, "normal_id_00_*.wav")]
    anomaly = [f for t in tests for f in _wavs(t, "anomaly_id_00_*.wav")]
    fan_n = _wavs(shared / "data/mimii_fan_extra/normal")
    fan_a = _wavs(shared / "data/mimii_fan_extra/abnormal")
    return {
        "slider": [(slider_train[:60], slider_train[60:] + normal, anomaly)],
        "fan": [(fan_n[:5], fan_n[5:], fan_a), (fan_n[5:], fan_n[:5], fan_a)],
    }


def _import(work: Path, machine: str, train_f: Sequence[Path], tn: Sequence[Path],
            ta: Sequence[Path]) -> tuple[list[Clip], list[Clip]]:  # fmt: skip
    root = work / "data"
    import_recordings(root, machine, train=train_f, test_normal=tn, test_anomaly=ta)
    table = scan_dataset(root)
    return list(table.filter(split="train")), list(table.filter(split="test"))


def run_one(system: str, case: str, fold: int, files: tuple[list[Path], list[Path], list[Path]],
            shared: Path, out: Path) -> dict[str, object]:  # fmt: skip
    """Train + fit + score one system on one fold; returns AUC and clip counts."""
    label, overrides, steps = SYSTEMS[system]
    sets = [o.format(mn04=shared / MN04) for o in [*COMMON, *overrides]]
    epochs = _epochs(steps, len(files[0]), overrides, BATCH)
    sets.append(f"train.epochs={epochs}")
    if "train.proxy=outlier" in sets:
        sets.append(f"train.proxy_options.outlier_dir={_outlier_folder(shared, case, out)}")
    cfg = load_experiment_config(None, sets)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        train_clips, test_clips = _import(Path(tmp), case, *files)
        t0 = time.monotonic()
        result = train(cfg, train_clips, Path(tmp) / "run", progress=False)
        det = Detector.from_training(result).fit(train_clips, fit_thresholds=False)
        scores = det.score_clips(test_clips)
        seconds = time.monotonic() - t0
    flat = {name: s for per_key in scores.values() for name, s in per_key.items()}
    y = np.array([c.label == "anomaly" for c in test_clips], dtype=int)
    s = np.array([flat[c.name] for c in test_clips])
    losses = [round(float(h["loss"]), 4) for h in result.history]
    return {
        "system": system,
        "label": label,
        "case": case,
        "fold": fold,
        "auc": auc_score(y, s),
        "pauc": pauc_score(y, s),
        "n_train": len(train_clips),
        "n_normal": int((y == 0).sum()),
        "n_anomaly": int(y.sum()),
        "classes": len(result.class_map),
        "epochs": result.epochs,
        "steps": result.steps,
        "losses": losses,
        "seconds": round(seconds, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default="../shared", help="the shared data folder")
    parser.add_argument("--systems", nargs="+", default=list(MAIN), choices=list(SYSTEMS))
    parser.add_argument("--cases", nargs="+", default=["fan", "slider"], choices=["slider", "fan"])
    parser.add_argument("--folds", nargs="+", type=int, default=None, help="only these folds")
    parser.add_argument("--out", default="runs/oneclass_proxy", help="work folder")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    shared, out = Path(args.shared), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cases = _cases(shared)
    rows: list[dict[str, object]] = []
    for system in args.systems:
        for case in args.cases:
            for fold, files in enumerate(cases[case]):
                if args.folds is not None and fold not in args.folds:
                    continue
                row = run_one(system, case, fold, files, shared, out)
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.json:
                    Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    print("\n| system | slider id_00 AUC | MIMII fan AUC (2 folds) |\n|---|---:|---:|")
    for system in args.systems:
        cells = []
        for case in ("slider", "fan"):
            got = [r for r in rows if r["system"] == system and r["case"] == case]
            if not got:
                cells.append("–")
                continue
            aucs = [float(r["auc"]) for r in got]  # type: ignore[arg-type]
            detail = "/".join(f"{a:.3f}" for a in aucs) if len(aucs) > 1 else ""
            cells.append(f"{np.mean(aucs):.3f}" + (f" ({detail})" if detail else ""))
        print(f"| {SYSTEMS[system][0]} | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
