"""Time of one fine-tuning step (forward + ArcFace loss + backward + Adam) per strategy.

Usage::

    python benchmarks/bench_train.py [--device cpu|cuda] [--batch 8] [--seconds 10] [--amp]

Random initialisation (same compute as the official weights). Reports seconds per step and the
implied time of one epoch of the DCASE 2023 dev training set (7 machines × 1000 clips).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from stetho.backbones import create_backbone
from stetho.model.adapt import (
    FinetuneConfig,
    LoRAConfig,
    apply_finetuning,
    trainable_parameter_count,
)
from stetho.model.heads import HeadConfig, ProxyHead

CASES = [
    ("beats", FinetuneConfig(strategy="lora", lora=LoRAConfig(r=64, alpha=64, targets=("q", "v")))),
    ("beats", FinetuneConfig(strategy="full")),
    ("efficientat-mn04", FinetuneConfig(strategy="full")),
    ("logmel", FinetuneConfig(strategy="frozen")),
]
DCASE2023_DEV_TRAIN_CLIPS = 7000


def step_time(
    name: str, ft: FinetuneConfig, device: str, batch: int, seconds: float, amp: bool
) -> dict:
    torch.manual_seed(0)
    model = apply_finetuning(create_backbone(name), ft).to(device).train()
    head = ProxyHead(model.embed_dim, 100, HeadConfig()).to(device)
    params = [p for p in list(model.parameters()) + list(head.parameters()) if p.requires_grad]
    opt = torch.optim.Adam(params, lr=5e-5)
    wave = torch.randn(batch, int(seconds * model.sample_rate), device=device) * 0.1
    labels = torch.randint(0, 100, (batch,), device=device)
    times = []
    for i in range(3):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp):
            loss = head.loss(model.embed(wave), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    best = min(times)
    steps = DCASE2023_DEV_TRAIN_CLIPS / batch
    return {
        "backbone": name,
        "strategy": ft.strategy,
        "trainable_backbone_params": trainable_parameter_count(model),
        "device": device,
        "amp": amp,
        "batch": batch,
        "seconds": seconds,
        "s_per_step": round(best, 3),
        "dcase2023_dev_epoch_min": round(best * steps / 60, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--amp", action="store_true", help="bf16 autocast")
    args = ap.parse_args()
    for name, ft in CASES:
        print(json.dumps(step_time(name, ft, args.device, args.batch, args.seconds, args.amp)))


if __name__ == "__main__":
    main()
