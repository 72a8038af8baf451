"""``stetho monitor`` throughput on real clips: a folder receiving recordings, scores in SQLite.

The detector is the weight-free ``logmel`` k-NN (no training) fitted on 30 real slider id_00
training normals (DCASE 2020, ``dcase2020t2_extra``); the other real slider id_00 clips (45
training normals + the id_00 test clips of ``…_extra`` and ``…_mini``) are copied into the watched
folder at once, and the time until every one is in the store is measured (decoding, scoring,
store writes and alarm updates included).

Usage::

    python benchmarks/bench_monitor.py --shared ../shared [--window 1]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

import soundfile as sf

from stetho.config import ExperimentConfig
from stetho.data import scan_dataset
from stetho.detector import Detector
from stetho.serving.monitor import Monitor
from stetho.serving.monitor_config import MonitorConfig
from stetho.store import ScoreStore
from stetho.training import train


def _n_windows(path: Path, window: float | None) -> int:
    if not window:
        return 1
    seconds = sf.info(str(path)).duration
    hop = window / 2
    return int((seconds - window) // hop) + 1 if seconds >= window else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    ap.add_argument(
        "--window", type=float, default=None, help="score rolling windows of this many seconds"
    )
    args = ap.parse_args()
    data = args.shared / "data"
    extra = scan_dataset(data / "dcase2020t2_extra")
    mini = scan_dataset(data / "dcase2020t2_mini")
    train_clips = sorted(extra.filter(machine="slider", split="train", section="00"), key=str)
    test = [
        c for t in (extra, mini) for c in t.filter(machine="slider", split="test", section="00")
    ]
    cfg = ExperimentConfig().override(
        [
            "backbone.name=logmel",
            "finetune.strategy=frozen",
            "train.epochs=0",
            "head.embed_dim=null",
            "train.tensorboard=false",
        ]
    )
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        result = train(cfg, train_clips[:30], tmp / "train", progress=False)
        Detector.from_training(result).fit(train_clips[:30]).save(tmp / "detector")
        inbox = tmp / "in"
        inbox.mkdir()
        source: dict[str, object] = {
            "kind": "folder",
            "path": str(inbox),
            "machine": "slider",
            "settle_seconds": 0,
        }
        if args.window:
            source.update(mode="windows", window_seconds=args.window)
        mcfg = MonitorConfig.from_dict(
            {
                "detector": str(tmp / "detector"),
                "db": str(tmp / "plant.db"),
                "poll_seconds": 0.1,
                "status_seconds": 0,
                "sources": [source],
            }
        )
        clips = [c.path for c in train_clips[30:]] + [c.path for c in test]
        store = ScoreStore.open(mcfg.db)
        monitor = Monitor(mcfg, store)
        thread = threading.Thread(target=monitor.run, daemon=True)
        thread.start()
        time.sleep(1.0)  # detector loaded, folder watched
        t0 = time.perf_counter()
        for i, p in enumerate(clips):  # names are unique per folder, not across folders
            shutil.copy(p, inbox / f"{i:03d}_{p.name}")
        expected = sum(_n_windows(p, args.window) for p in clips)
        stats = monitor.stats[mcfg.sources[0].label]
        deadline = time.monotonic() + 600
        while stats.windows < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        rows = store.scores("slider")
        secs = time.perf_counter() - t0
        monitor.stop()
        thread.join()
        alarms = store.alarms()
        store.close()
        audio = sum(sf.info(str(p)).duration for p in clips)
        print(
            f"{len(clips)} real clips ({audio:.0f} s of audio), {len(rows)} windows scored and "
            f"stored in {secs:.1f} s: {len(rows) / secs:.1f} windows/s, "
            f"{audio / secs:.0f}x real time; {len(alarms)} alarm(s)"
        )


if __name__ == "__main__":
    main()
