"""Options and helpers shared by several ``stetho`` commands."""

from __future__ import annotations

import argparse
from typing import Any


def add_detector_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    """``--detector``, ``--checkpoint`` and ``--device`` for commands that load a detector."""
    p.add_argument("--detector", required=required, default=None, help="saved detector folder")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="backbone checkpoint, if it moved since the detector was saved (SHA-256 checked)",
    )
    add_trust_option(p)
    p.add_argument("--device", default="cpu", help="device to run on, e.g. cpu or cuda")
    p.add_argument(
        "--engine",
        choices=["torch", "onnxruntime", "onnxruntime-int8"],
        default="torch",
        help="torch: a saved detector folder; onnxruntime(-int8): a folder written by "
        "`stetho export` (int8: its quantised model)",
    )


def add_trust_option(p: argparse.ArgumentParser) -> None:
    """``--trust-checkpoint``: the only way to allow a pickled backbone checkpoint."""
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow pickled objects in the backbone checkpoint (runs code from the file: only "
        "for checkpoints you trust; a detector folder can never grant this itself)",
    )


def add_set_option(p: argparse.ArgumentParser, help: str = "config overrides") -> None:
    """``--set KEY=VALUE …``: overrides of the experiment config."""
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help=help)


def load_detector(args: argparse.Namespace) -> Any:
    """Load ``--detector`` of any kind (:func:`stetho.load_detector`).

    ``--checkpoint`` if the backbone weights moved, ``--device``; ``--trust-checkpoint`` is the
    only way to allow a pickled checkpoint. ``--engine onnxruntime[-int8]`` requires a folder
    written by ``stetho export`` (every command also accepts such a folder without it).
    """
    from stetho.detector import DetectorError
    from stetho.detector import load_detector as load

    engine = getattr(args, "engine", "torch")
    det = load(
        args.detector,
        device=getattr(args, "device", "cpu"),
        checkpoint=getattr(args, "checkpoint", None),
        trust_checkpoint=bool(getattr(args, "trust_checkpoint", False)),
        int8=engine.endswith("int8"),
    )
    if engine != "torch" and det.kind != "onnx":
        raise DetectorError(
            f"{args.detector} is a {det.kind} detector, not an ONNX export: export it with "
            f"`stetho export {args.detector} EDGE_DIR` and pass --detector EDGE_DIR, or drop "
            "--engine"
        )
    return det
