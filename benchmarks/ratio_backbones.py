"""Backbone forward (front-end included) as a fraction of the float32 matmul peak.

Usage::

    python benchmarks/ratio_backbones.py [--quick] [--names efficientat-mn04 beats ced-base]

FLOPs per clip are counted with ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and
convolutions; the FFT of the front-ends is not counted), the time is the best of a few batches,
and ``fraction = FLOPs / time / peak``. mn04 runs with the real AudioSet checkpoint when
``$STETHO_SHARED`` has it; the others with random weights of the real size (same compute). For
mn04 it also prints, interleaved in the same process, the time ratios of today's forward against

* ``plain``: the same modules without the inference fast path (no BatchNorm folding, NCHW);
* ``before``: the forward of stetho 47ecd60 (conv1d pre-emphasis, no fast path).

``--allocator`` applies :func:`stetho.utils.allocator.reuse_freed_memory` first, as the ``stetho``
command does.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from _common import best_of, emit, interleaved, matmul_peak_gflops, without_fast_path
from torch.utils.flop_counter import FlopCounterMode

from stetho.backbones import create_backbone

MN04 = "weights/efficientat_mn04_as_mAP_432.pt"


def _build(name: str) -> torch.nn.Module:
    ckpt = Path(os.environ.get("STETHO_SHARED", "../shared")) / MN04
    if name == "efficientat-mn04" and ckpt.is_file():
        return create_backbone(name, checkpoint=str(ckpt)).eval()
    return create_backbone(name).eval()


def _flops(model: torch.nn.Module, wave: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model.embed(wave)
    return int(counter.get_total_flops())


def _mn04_ratios(model: torch.nn.Module, wave: torch.Tensor) -> dict[str, float]:
    """Best times of today's mn04 forward, without the fast path, and as of stetho 47ecd60."""
    from stetho.frontend.mel import centred_stft

    fe = model.frontend
    kernel = torch.tensor([[[-fe.preemphasis, 1.0]]])

    def old_frontend(x: torch.Tensor) -> torch.Tensor:  # pre-emphasis by conv1d (47ecd60)
        y = torch.nn.functional.conv1d(x.float().unsqueeze(1), kernel).squeeze(1)
        spec = centred_stft(y, fe.window, fe.n_fft, fe.hop_length, fe.win_length)
        mel = torch.matmul(fe.mel_bank, spec.real.square() + spec.imag.square())
        return ((mel + fe.log_offset).log() + fe.shift) / fe.scale

    def plain() -> None:
        with without_fast_path():
            model.embed(wave)

    def before() -> None:
        fe.forward = old_frontend
        try:
            plain()
        finally:
            del fe.forward  # back to the class's method

    with torch.inference_mode():
        return interleaved(
            {
                "today": lambda: model.embed(wave),
                "plain": plain,
                "before": before,
            },
            repeats=3,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="batch 2 × 5 s, 2 repeats")
    ap.add_argument("--names", nargs="+", default=["efficientat-mn04", "ced-base", "beats"])
    ap.add_argument("--allocator", action="store_true", help="reuse freed memory (as stetho)")
    args = ap.parse_args()
    if args.allocator:
        from stetho.utils.allocator import reuse_freed_memory

        reuse_freed_memory()
    batch, seconds, repeats = (2, 5.0, 2) if args.quick else (8, 10.0, 3)
    peak = matmul_peak_gflops()
    for name in args.names:
        model = _build(name)
        wave = 0.1 * torch.randn(batch, int(seconds * model.sample_rate))
        flops = _flops(model, wave)
        with torch.inference_mode():
            t = best_of(lambda m=model, w=wave: m.embed(w), repeats=repeats)
        row = {
            "bench": "backbone",
            "backbone": name,
            "batch": batch,
            "seconds": seconds,
            "gflop_per_clip": round(flops / batch / 1e9, 3),
            "ms_per_clip": round(t / batch * 1e3, 1),
            "matmul_peak_gflops": round(peak, 1),
            "fraction_of_peak": round(flops / t / (peak * 1e9), 3),
        }
        if name == "efficientat-mn04":
            r = _mn04_ratios(model, wave)
            row["today_over_plain"] = round(r["today"] / r["plain"], 2)
            row["today_over_before"] = round(r["today"] / r["before"], 2)
            row["allocator"] = args.allocator
        emit(row)


if __name__ == "__main__":
    main()
