"""Training step: LoRA vs full fine-tuning, time and peak memory, for BEATs and EfficientAT mn04.

Usage::

    python benchmarks/ratio_train.py [--quick] [--batch 8] [--seconds 10]

Each case (forward + ArcFace loss + backward + Adam step, best of 2 after a warm-up; see
``bench_train.py``) runs in a fresh process so that its peak resident memory is its own. Ratios
are LoRA / full of the same backbone (below 1 = LoRA cheaper).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from _common import emit, peak_rss_mib

CASES = {
    "beats/lora": ("beats", "lora"),
    "beats/full": ("beats", "full"),
    "efficientat-mn04/lora": ("efficientat-mn04", "lora"),
    "efficientat-mn04/full": ("efficientat-mn04", "full"),
}


def _run(case: str, batch: int, seconds: float) -> None:
    from bench_train import step_time

    from stetho.model.adapt import FinetuneConfig, LoRAConfig

    name, strategy = CASES[case]
    lora = LoRAConfig(r=64, alpha=64, targets=("q", "v")) if name == "beats" else LoRAConfig()
    ft = FinetuneConfig(strategy=strategy, lora=lora)  # type: ignore[arg-type]
    try:
        row = step_time(name, ft, "cpu", batch, seconds, amp=False)
    except (ValueError, RuntimeError, KeyError) as err:
        row = {"error": f"{type(err).__name__}: {err}"[:300]}
    row["peak_rss_mib"] = round(peak_rss_mib())
    print(json.dumps(row))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="batch 2 × 2 s")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--run", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    batch, seconds = (2, 2.0) if args.quick else (args.batch, args.seconds)
    if args.run:
        _run(args.run, batch, seconds)
        return
    res = {}
    for case in CASES:
        cmd = [sys.executable, __file__, "--run", case, "--batch", str(batch)]
        cmd += ["--seconds", str(seconds)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        res[case] = json.loads(out.strip().splitlines()[-1])
    for name in ("beats", "efficientat-mn04"):
        lo, fu = res[f"{name}/lora"], res[f"{name}/full"]
        row = {"bench": "train", "backbone": name, "batch": batch, "seconds": seconds}
        row["lora"], row["full"] = lo, fu
        if "s_per_step" in lo and "s_per_step" in fu:
            row["time_lora_over_full"] = round(lo["s_per_step"] / fu["s_per_step"], 2)
            row["peak_rss_lora_over_full"] = round(lo["peak_rss_mib"] / fu["peak_rss_mib"], 2)
        emit(row)


if __name__ == "__main__":
    main()
