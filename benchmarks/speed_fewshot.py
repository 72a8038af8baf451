"""Speed budget of the few-shot default (issue #23): fit 40 clips + score 160 in under 10 s, 2 cores.

Real ten-second clips of DCASE 2020 slider id_00 (``$STETHO_SHARED/data/dcase2020t2_extra``):
the first 40 training normals are the bank; the 160 scored files are the remaining clips of
that machine, repeated in order until there are 160 (every file is decoded and featurised
again each time: nothing is cached). Best of ``--rounds``; the 1-minute load average is
printed beside each round because the machine may be shared.

    python benchmarks/speed_fewshot.py [--rounds 3] [--threads 2] [--config FILE] [--pretrained CKPT]
    python benchmarks/speed_fewshot.py --held-out      # cost of the held-out scores of one bank

``--held-out`` times :class:`~stetho.scoring.bank.BankBackend` on synthetic banks (N rows, D
dimensions): the fit that scores new clips only (standardiser + bank), the whole fit with the
honest held-out scores (what ``fit`` does), and the same held-out scores by a plain refit per
left-out row (no shortcut), best of ``--rounds``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from stetho.config import load_experiment_config
from stetho.data import scan_dataset
from stetho.detector.ensemble import EnsembleDetector
from stetho.pipelines.fewshot import fewshot_config
from stetho.scoring.bank import BackendConfig, BankBackend


def _best(fn: object, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best


def _held_out_row(std: str, x: np.ndarray, rounds: int) -> str:
    n, d = x.shape
    cfg = BackendConfig(standardise=std)  # type: ignore[arg-type]
    core = _best(lambda: BankBackend(cfg)._fit_core(x), rounds)
    full = _best(lambda: BankBackend(cfg).fit(x), rounds)
    fold = BankBackend(cfg).folds(n)

    def plain() -> None:
        be = BankBackend(cfg)._fit_core(x)
        be._raw = x
        for f in np.unique(fold):
            be._refit_raw(np.flatnonzero(fold != f), x[fold == f])

    slow = _best(plain, 1) if std == "std" or n <= 60 else float("nan")
    how = "LOO" if fold.max() == n - 1 else f"{fold.max() + 1}-fold"
    return (f"| knn1/{std} | {n} × {d} ({how}) | {core * 1e3:.1f} ms | {full * 1e3:.1f} ms "
            f"| {slow * 1e3:.0f} ms |")  # fmt: skip


def held_out_costs(rounds: int) -> None:
    """Print fit times of one bank: scoring-only, with held-out scores, by plain refits."""
    rng = np.random.default_rng(0)
    print("| back-end | N × D | fit for new clips only | fit with held-out scores | "
          "held-out by plain refits per row |")  # fmt: skip
    print("|---|---|---:|---:|---:|")
    for std, d in (("std", 256), ("whiten", 384)):
        for n in (20, 60, 200, 400):
            print(_held_out_row(std, rng.normal(size=(n, d)) * rng.uniform(0.2, 5, size=d), rounds))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.environ.get("STETHO_SHARED", "../shared"))
    ap.add_argument("--config", default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pretrained", default=None, help="mn04 checkpoint: time --pretrained")
    ap.add_argument("--held-out", action="store_true", help="time the held-out scores only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.1f}")
    if args.held_out:
        held_out_costs(args.rounds)
        return
    cfg = (load_experiment_config(args.config, []) if args.config
           else fewshot_config(args.pretrained))  # fmt: skip
    table = scan_dataset(Path(args.shared) / "data" / "dcase2020t2_extra")
    clips = sorted((c for c in table if c.machine == "slider" and c.section == "00"),
                   key=lambda c: (c.split != "train", c.name))  # fmt: skip
    bank, rest = clips[:40], clips[40:]
    paths = [rest[i % len(rest)].path for i in range(160)]
    best = float("inf")
    for r in range(args.rounds):
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        det = EnsembleDetector(cfg).fit(bank)
        t1 = time.perf_counter()
        det.score_files(paths, "slider", "00")
        t2 = time.perf_counter()
        best = min(best, t2 - t0)
        print(f"round {r + 1}: fit {len(bank)} clips {t1 - t0:.2f} s + score {len(paths)} clips "
              f"{t2 - t1:.2f} s = {t2 - t0:.2f} s (load average {load:.1f}, "
              f"{args.threads} torch threads)")  # fmt: skip
    print(f"{cfg.name}: best {best:.2f} s (budget 10 s)")


if __name__ == "__main__":
    main()
