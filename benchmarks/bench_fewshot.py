"""Wall time of the few-shot default: fit on 40 ten-second normal clips, then score 40 clips.

Uses the 75 real slider id_00 training clips of ``$STETHO_SHARED/data/dcase2020t2_extra``
(40 as the bank, 35 + 5 test clips scored). ``--config`` times another recipe.

    python benchmarks/bench_fewshot.py [--config configs/fewshot_mn04.yaml] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from stetho.config import load_experiment_config
from stetho.data import scan_dataset
from stetho.detector.ensemble import EnsembleDetector
from stetho.pipelines.fewshot import fewshot_config


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.environ.get("STETHO_SHARED", "../shared"))
    ap.add_argument("--config", default=None)
    ap.add_argument("--set", nargs="*", default=[])
    args = ap.parse_args()
    cfg = load_experiment_config(args.config, args.set) if args.config else fewshot_config()
    table = scan_dataset(Path(args.shared) / "data" / "dcase2020t2_extra")
    clips = sorted((c for c in table if c.machine == "slider" and c.section == "00"),
                   key=lambda c: (c.split != "train", c.name))  # fmt: skip
    bank, test = clips[:40], clips[40:80]
    t0 = time.perf_counter()
    det = EnsembleDetector(cfg).fit(bank)
    t1 = time.perf_counter()
    det.score_files([c.path for c in test], "slider", "00")
    t2 = time.perf_counter()
    print(f"{cfg.name}: fit {len(bank)} clips {t1 - t0:.1f} s, score {len(test)} clips "
          f"{t2 - t1:.1f} s, total {t2 - t0:.1f} s (torch threads: {os.cpu_count()} cores)")  # fmt: skip


if __name__ == "__main__":
    main()
