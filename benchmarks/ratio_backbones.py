"""Backbone forward (front-end included) as a fraction of the float32 matmul peak.

Usage::

    python benchmarks/ratio_backbones.py [--quick] [--names efficientat-mn04 beats ced-base]

FLOPs per clip are counted with ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and
convolutions; the FFT of the front-ends is not counted), the time is the best of a few batches,
and ``fraction = FLOPs / time / peak``. mn04 runs with the real AudioSet checkpoint when
``$STETHO_SHARED`` has it; the others with random weights of the real size (same compute). Also
prints the before/after ratio of mn04's old conv1d pre-emphasis and of channels-last memory format.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from _common import best_of, emit, interleaved, matmul_peak_gflops
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


def _old_preemphasis_ratio(model: torch.nn.Module, wave: torch.Tensor) -> dict[str, float]:
    """mn04 embed with the pre-emphasis of stetho 4f71ad6 (conv1d) vs today's shifted difference."""
    fe = model.frontend
    kernel = torch.tensor([[[-fe.preemphasis, 1.0]]])

    def old_forward(x: torch.Tensor) -> torch.Tensor:
        from stetho.frontend.mel import centred_stft

        y = torch.nn.functional.conv1d(x.float().unsqueeze(1), kernel).squeeze(1)
        spec = centred_stft(y, fe.window, fe.n_fft, fe.hop_length, fe.win_length)
        mel = torch.matmul(fe.mel_bank, spec.real.square() + spec.imag.square())
        return ((mel + fe.log_offset).log() + fe.shift) / fe.scale

    new_forward = fe.forward
    with torch.inference_mode():

        def run_old() -> None:
            fe.forward = old_forward
            try:
                model.embed(wave)
            finally:
                fe.forward = new_forward

        t = interleaved({"before": run_old, "after": lambda: model.embed(wave)}, repeats=3)
        cl = model.to(memory_format=torch.channels_last)
        t["channels_last"] = best_of(lambda: cl.embed(wave), repeats=3)
        model.to(memory_format=torch.contiguous_format)
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="batch 2 × 5 s, 2 repeats")
    ap.add_argument("--names", nargs="+", default=["efficientat-mn04", "ced-base", "beats"])
    args = ap.parse_args()
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
            r = _old_preemphasis_ratio(model, wave)
            row["preemphasis_before_over_after"] = round(r["before"] / r["after"], 2)
            row["channels_last_over_default"] = round(r["channels_last"] / r["after"], 2)
        emit(row)


if __name__ == "__main__":
    main()
