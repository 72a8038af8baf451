"""``stetho export``: write a fitted detector as an edge folder (ONNX network + banks + thresholds)."""

from __future__ import annotations

import argparse
from typing import Any

from stetho.cli._common import add_trust_option, load_detector


def _cmd_export(args: argparse.Namespace) -> int:
    from stetho.deploy import export_onnx

    detector = load_detector(args)
    out = export_onnx(detector, args.out, quantize=args.quantize == "int8")
    print(
        f"exported {args.detector} to {out} (score with: stetho detect --engine onnxruntime "
        f"--detector {out} …)"
    )
    return 0


def register(sub: Any) -> None:
    """Add ``export`` to the ``stetho`` sub-parsers."""
    p = sub.add_parser(
        "export", help="export a saved detector for edge devices (ONNX + memory banks)"
    )
    p.add_argument("detector", help="saved detector folder")
    p.add_argument("out", help="output folder")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="backbone checkpoint, if it moved since the detector was saved (SHA-256 checked)",
    )
    add_trust_option(p)
    p.add_argument("--format", choices=["onnx"], default="onnx", help="export format")
    p.add_argument(
        "--quantize",
        choices=["none", "int8"],
        default="none",
        help="also write an int8 dynamically quantised model (model.int8.onnx)",
    )
    p.set_defaults(device="cpu", engine="torch")
    p.set_defaults(func=_cmd_export)
