"""Throughput of front-ends and backbones (random weights, real sizes) on this machine.

Usage::

    python benchmarks/bench_backbones.py [--device cpu|cuda] [--names beats ced-base ...]
        [--batch 8] [--seconds 10] [--repeats 3] [--json out.json]

Random initialisation gives the same compute as the official weights. Prints one row per backbone:
milliseconds per batch of ``--batch`` clips of ``--seconds`` seconds, clips per second, and the
real-time factor (audio seconds processed per wall second).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from stetho.backbones import create_backbone

DEFAULT = ["logmel", "efficientat-mn04", "ced-tiny", "ced-base", "beats", "wav2vec2"]


def bench(name: str, device: str, batch: int, seconds: float, repeats: int, train: bool) -> dict:
    model = create_backbone(name).to(device)
    wave = torch.randn(batch, int(seconds * model.sample_rate), device=device) * 0.1
    if train:
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
    ctx = torch.enable_grad() if train else torch.inference_mode()
    times = []
    with ctx:
        for i in range(repeats + 1):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = model.embed(wave)
            if train and params:
                out.float().pow(2).mean().backward()
            if device == "cuda":
                torch.cuda.synchronize()
            if i:  # first call is warm-up
                times.append(time.perf_counter() - t0)
    best = min(times)
    return {
        "backbone": name,
        "mode": "train fwd+bwd" if train else "inference",
        "device": device,
        "batch": batch,
        "seconds": seconds,
        "ms_per_batch": round(best * 1e3, 1),
        "clips_per_s": round(batch / best, 2),
        "realtime_factor": round(batch * seconds / best, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--names", nargs="+", default=DEFAULT)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train", action="store_true", help="time forward+backward")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, device {args.device}"
    )
    for name in args.names:
        row = bench(name, args.device, args.batch, args.seconds, args.repeats, args.train)
        rows.append(row)
        print(json.dumps(row))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
