"""stetho's mn04 forward against the official EfficientAT code, same process, same checkpoint.

Usage::

    python benchmarks/ratio_official_efficientat.py --efficientat /path/to/EfficientAT \\
        [--path DIR ...] [--batch 8] [--seconds 10] [--repeats 5] [--allocator]

The official code is *not* part of this repository and none of it is copied here: point
``--efficientat`` at a checkout of https://github.com/fschmid56/EfficientAT (MIT licence). This
script only imports its ``models.mn.model.get_model`` and ``models.preprocess.AugmentMelSTFT``
and builds mn04 the way its ``inference.py`` does (``width_mult`` 0.4, strides 2-2-2-2, mlp
head; mel front-end with 128 bins, 32 kHz, window 800, hop 320, eval mode), then loads the real
AudioSet checkpoint from ``$STETHO_SHARED`` into both models.

The official code imports ``torchvision`` (``ConvNormActivation``) and ``torchaudio`` (Kaldi mel
banks, built on every forward) and reads ``metadata/class_labels_indices.csv`` relative to the
working directory at import: ``--path`` adds folders to ``sys.path`` for an environment where those
are importable, and the script runs from inside the checkout.

Prints, interleaved best of ``--repeats``: the time of stetho's forward (front-end + CNN →
embedding) over the official one (mel + CNN → logits and embedding), with stetho's inference
fast path and without it, and the largest embedding difference between the two.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from _common import emit, interleaved, machine, without_fast_path

MN04 = "weights/efficientat_mn04_as_mAP_432.pt"


def _official(root: Path, ckpt: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The official mn04 and its mel front-end, in eval mode, with the checkpoint loaded."""
    os.chdir(root)  # its helpers read metadata/ relative to the working directory
    sys.path.insert(0, str(root))
    from models.mn.model import get_model  # type: ignore[import-not-found]
    from models.preprocess import AugmentMelSTFT  # type: ignore[import-not-found]

    model = get_model(width_mult=0.4, pretrained_name=None, strides=[2, 2, 2, 2], head_type="mlp")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    model.load_state_dict(state)  # strict
    mel = AugmentMelSTFT(n_mels=128, sr=32000, win_length=800, hopsize=320)
    return model.eval(), mel.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--efficientat", required=True, type=Path, help="official checkout")
    ap.add_argument("--path", nargs="*", default=[], help="extra sys.path folders")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--allocator", action="store_true", help="reuse freed memory (as stetho)")
    args = ap.parse_args()
    ckpt = (Path(os.environ.get("STETHO_SHARED", "../shared")) / MN04).resolve()
    if not ckpt.is_file():
        sys.exit(f"needs the real mn04 checkpoint: {ckpt} not found (set STETHO_SHARED)")
    for extra in reversed(args.path):
        sys.path.insert(0, str(Path(extra).resolve()))
    if args.allocator:
        from stetho.utils.allocator import reuse_freed_memory

        reuse_freed_memory()
    from stetho.backbones import create_backbone

    ours = create_backbone("efficientat-mn04", checkpoint=str(ckpt)).eval()
    theirs, mel = _official(args.efficientat.resolve(), ckpt)
    torch.manual_seed(0)
    wave = 0.1 * torch.randn(args.batch, int(args.seconds * 32000))  # (B, N) at 32 kHz

    def official() -> torch.Tensor:
        _logits, emb = theirs(mel(wave).unsqueeze(1))  # (B, 527), (B, 384)
        return emb

    def plain() -> torch.Tensor:  # stetho without its inference fast path
        with without_fast_path():
            return ours.embed(wave)

    with torch.no_grad():
        diff = float((ours.embed(wave) - official()).abs().max())
        scale = float(official().abs().max())
        t = interleaved(
            {"stetho": lambda: ours.embed(wave), "plain": plain, "official": official},
            repeats=args.repeats,
        )
    emit(
        {
            "bench": "official_efficientat",
            "batch": args.batch,
            "seconds": args.seconds,
            "ms_per_batch": {k: round(v * 1e3, 1) for k, v in t.items()},
            "stetho_over_official": round(t["stetho"] / t["official"], 2),
            "plain_over_official": round(t["plain"] / t["official"], 2),
            "max_abs_embedding_diff": diff,
            "max_abs_embedding": scale,
            "allocator": args.allocator,
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
