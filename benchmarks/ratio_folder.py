"""Folder scoring end to end (decode, resample, front-end, model, k-NN): clips/s and peak memory.

Usage::

    python benchmarks/ratio_folder.py [--quick] [--clips 1000] [--workers 2] [--rounds 3]

Writes ``--clips`` synthetic 10 s, 16 kHz WAV clips (DCASE layout) to a temporary folder, fits a
frozen EfficientAT mn04 detector (real checkpoint from ``$STETHO_SHARED`` when present, else
random weights) on 5 training clips, and scores the folder with ``score_paths``, each run in a
fresh process (for its peak memory):

* ``before``: **stetho's own code at ``--before`` (default 47ecd60, the commit the issue measured)**,
  extracted from this repository's git history with ``git archive`` into the temporary folder; it
  fits its own detector on the same clips with its own API and scores with its own loop (decoding
  in the main process). Without git history the row is left out and said so;
* ``library_workers0``: today's code called as a library (glibc's default allocator), decoding in
  the main process;
* ``workers0``: today's code as the ``stetho`` command runs it (after
  :func:`stetho.utils.allocator.reuse_freed_memory`), decoding in the main process;
* ``workersN``: the same with ``N`` decoding threads (``--workers``);
* ``onnx_workersN``: the same through the exported ONNX model (``--engine onnxruntime``).

The modes run round-robin ``--rounds`` times, so load changes of a shared machine hit all alike;
the best clips/s of each mode is reported, and the ratio to ``before`` both from the bests and as
the median of the per-round ratios. Scores of ``before`` and today agree (printed: max |Δ|).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit, machine, peak_rss_mib

MN04 = "weights/efficientat_mn04_as_mAP_432.pt"
REPO = Path(__file__).resolve().parent.parent
#: ``backbone.checkpoint`` and the other overrides, shared by today's and the old API
OVERRIDES = [
    "backbone.name=efficientat-mn04",
    "finetune.strategy=frozen",
    "head.embed_dim=null",
    "train.epochs=0",
    "train.tensorboard=false",
    "threshold.method=percentile",
]


def _checkpoint_override() -> str:
    ckpt = Path(os.environ.get("STETHO_SHARED", "../shared")) / MN04
    return f"backbone.checkpoint={ckpt}" if ckpt.is_file() else "backbone.checkpoint=null"


def _prepare(folder: Path, clips: int) -> Path:
    """Synthetic clips + today's detector (and its ONNX export); returns the detector folder."""
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
    cfg = ExperimentConfig().override([*OVERRIDES, _checkpoint_override()])
    tr = scan_dataset(root).filter(split="train")
    det = Detector.from_training(train(cfg, tr, folder / "run", progress=False)).fit(tr)
    try:
        from stetho.deploy import export_onnx

        export_onnx(det, folder / "edge")
    except ImportError:
        pass  # no onnx extra: the onnxruntime row is left out
    return det.save(folder / "detector")


def _extract_before(ref: str, folder: Path) -> Path | None:
    """``src/`` of stetho at git ``ref`` under ``folder``; None without git history."""
    dest = folder / "before"
    dest.mkdir()
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", ref, "src"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        print(f"no 'before' row: cannot extract stetho {ref} from git ({err})", file=sys.stderr)
        return None
    return dest / "src"


def _prepare_before(folder: Path) -> None:
    """Fit and save a detector with the old code (run with the old ``src`` on sys.path)."""
    from stetho.finetune import Detector, ExperimentConfig, train  # the API of 47ecd60

    from stetho.data import scan_dataset

    cfg = ExperimentConfig().override([*OVERRIDES, _checkpoint_override()])
    tr = scan_dataset(folder / "data").filter(split="train")
    det = Detector.from_training(train(cfg, tr, folder / "run_before", progress=False)).fit(tr)
    det.save(folder / "detector_before")


def _load(mode: str, folder: Path) -> Any:
    if mode == "before":
        from stetho.finetune import Detector  # the old code's detector

        return Detector.load(folder / "detector_before")
    if mode.startswith("onnx"):
        from stetho.deploy import OnnxDetector

        return OnnxDetector.load(folder / "edge")
    from stetho.detector import load_scorer

    return load_scorer(folder / "detector")


def _run(mode: str, folder: Path, workers: int) -> None:
    """Time one scoring of the test clips; prints clips, seconds, peak memory and the scores."""
    from stetho.serving import score_paths

    if mode != "before" and not mode.startswith("library"):
        from stetho.utils.allocator import reuse_freed_memory

        reuse_freed_memory()  # as the stetho command does at start
    det = _load(mode, folder)
    files = sorted(f for f in (folder / "data").rglob("*.wav") if "/test/" in str(f))
    kwargs = {"num_workers": workers} if mode != "before" else {}  # 47ecd60 had no workers
    t0 = time.perf_counter()
    recs = score_paths(det, files, machine="fan", section="00", **kwargs)
    dt = time.perf_counter() - t0
    assert all(r.ok for r in recs), [r.error for r in recs if not r.ok][:2]
    scores = [r.score for r in recs]
    rss = peak_rss_mib(children=True)
    print(json.dumps({"clips": len(files), "s": dt, "peak_rss_mib": rss, "scores": scores}))


def _subprocess(args: list[str], pythonpath: Path | None = None) -> dict[str, Any]:
    env = dict(os.environ)
    if pythonpath is not None:  # the old code first, so ``import stetho`` finds it
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), str(Path(__file__).parent)])
    cmd = [sys.executable, __file__, *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    last = out.strip().splitlines()[-1] if out.strip() else "{}"
    return json.loads(last) if last.startswith("{") else {}


def _measure(folder: Path, modes: list[tuple[str, int]], before: Path | None, rounds: int):
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m, _ in modes}
    for _ in range(rounds):
        for mode, workers in modes:
            args = ["--run", mode, "--folder", str(folder), "--workers", str(workers)]
            runs[mode].append(_subprocess(args, before if mode == "before" else None))
    return runs


def _row(runs: dict[str, list[dict[str, Any]]], par: str) -> dict[str, Any]:
    n = runs[par][0]["clips"]
    best = {m: min(r["s"] for r in rs) for m, rs in runs.items()}
    row: dict[str, Any] = {
        "bench": "folder",
        "clips": n,
        "clip_seconds": 10.0,
        "rounds": len(runs[par]),
        "clips_per_s": {m: round(n / s, 2) for m, s in best.items()},
        "peak_rss_mib": {m: round(max(r["peak_rss_mib"] for r in rs)) for m, rs in runs.items()},
        "speedup_workers_only": round(best["workers0"] / best[par], 2),
        "speedup_allocator_only": round(best["library_workers0"] / best["workers0"], 2),
    }
    ref = "before" if "before" in runs else None
    if ref:
        per_round = [b["s"] / p["s"] for b, p in zip(runs[ref], runs[par], strict=True)]
        row["speedup_vs_before"] = round(best[ref] / best[par], 2)
        row["speedup_vs_before_median_of_rounds"] = round(statistics.median(per_round), 2)
        row["speedup_workers0_vs_before"] = round(best[ref] / best["workers0"], 2)
        old, new = runs[ref][0]["scores"], runs[par][0]["scores"]
        row["max_abs_score_diff_vs_before"] = float(max(abs(a - b) for a, b in zip(old, new)))
    if f"onnx_{par}" in runs and ref:
        row["speedup_onnx_vs_before"] = round(best[ref] / best[f"onnx_{par}"], 2)
    row["machine"] = machine()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="64 clips")
    ap.add_argument("--clips", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--before", default="47ecd60", help="git ref of the reference loop")
    ap.add_argument("--run", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run == "prepare_before":
        _prepare_before(Path(args.folder))
        return
    if args.run:
        _run(args.run, Path(args.folder), args.workers)
        return
    clips = 64 if args.quick else args.clips
    with tempfile.TemporaryDirectory(prefix="stetho-bench-") as tmp:
        folder = Path(tmp)
        _prepare(folder, clips)
        before = _extract_before(args.before, folder)
        if before is not None:
            _subprocess(["--run", "prepare_before", "--folder", str(folder)], before)
        par = f"workers{args.workers}"
        modes = [("library_workers0", 0), ("workers0", 0), (par, args.workers)]
        if before is not None:
            modes.insert(0, ("before", 0))
        if (folder / "edge").is_dir():
            modes.append((f"onnx_{par}", args.workers))
        emit(_row(_measure(folder, modes, before, args.rounds), par))


if __name__ == "__main__":
    main()
