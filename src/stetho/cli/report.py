"""``stetho report | explain`` and the noise mode of ``stetho evaluate``: pictures of a detector."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from stetho.cli._common import add_detector_options, load_detector


def _cmd_report(args: argparse.Namespace) -> int:
    from stetho.reporting import build_report

    result = build_report(
        args.source,
        args.out,
        truth=args.truth,
        data=args.data,
        detector=args.detector,
        robustness=args.robustness,
        year=args.year,
        explain_top=args.explain_top,
        device=args.device,
        checkpoint=args.checkpoint,
    )
    if result.evaluation is not None:
        print(f"{result.evaluation.official_score_name}: {result.evaluation.official_score:.4f}")
    for note in result.notes:
        print(f"note: {note}")
    print(f"report written to {result.html} ({len(result.figures)} figures in {args.out}/figures)")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from stetho.reporting import explain_file, plot_explanation
    from stetho.utils.io import atomic_write_bytes, atomic_write_text

    detector = load_detector(args)  # any kind (the detector contract)
    out = Path(args.out)
    for clip in args.clips:
        ex = explain_file(
            detector,
            clip,
            args.machine,
            args.section,
            window_seconds=args.window,
            hop_seconds=args.hop,
            n_bands=args.bands,
        )
        stem = Path(clip).stem
        atomic_write_bytes(out / f"{stem}.png", plot_explanation(ex))
        atomic_write_text(out / f"{stem}.json", json.dumps(ex.to_dict(), indent=2) + "\n")
        print(ex.summary())
    print(f"figures and JSON written to {out}")
    return 0


def cmd_evaluate_noise(args: argparse.Namespace) -> int:
    """``stetho evaluate --noise FOLDER --snr …``: Ω per SNR (called by ``stetho.cli.evaluate``)."""
    from stetho.reporting import evaluate_under_noise
    from stetho.utils.errors import InputError

    if args.detector is None or args.data is None:
        raise InputError("--noise needs --detector DIR and --data ROOT (the labelled test clips)")
    detector = load_detector(args)  # any kind (the detector contract)
    curve = evaluate_under_noise(
        detector,
        args.data,
        args.noise,
        args.snr,
        seed=args.seed,
        partition=args.partition,
        year=args.year or 2023,
    )
    out = Path(args.out) if args.out else Path(args.detector).parent / "robustness"
    curve.write(out)
    print(curve.table())
    print(f"\n{curve.n_clips} test clips per SNR; results written to {out} (used by stetho report)")
    return 0


def add_noise_options(p: argparse.ArgumentParser) -> None:
    """``--noise``/``--snr``/``--seed``/``--data``/``--partition`` + detector options (evaluate)."""
    g = p.add_argument_group("robustness to noise (instead of SCORES_DIR and --truth)")
    g.add_argument("--noise", default=None, help="folder (or file) of background recordings")
    g.add_argument(
        "--snr",
        type=float,
        nargs="+",
        default=[20.0, 10.0, 0.0],
        help="SNRs in dB (default 20 10 0)",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the per-clip noise choice")
    g.add_argument("--data", default=None, help="dataset root with the labelled test clips")
    g.add_argument("--partition", choices=["dev", "eval"], default="dev")
    add_detector_options(p, required=False)


def register(sub: Any) -> None:
    """Add these commands to the ``stetho`` sub-parsers."""
    p = sub.add_parser("report", help="HTML evaluation report with figures (self-contained)")
    p.add_argument("source", help="run, demo, sweep or submission folder")
    p.add_argument("--out", required=True, help="output folder (report.html + figures/)")
    p.add_argument("--truth", default=None, help="dataset root or official ground-truth folder")
    p.add_argument(
        "--data", default=None, help="dataset root with the test audio (default: --truth)"
    )
    p.add_argument("--robustness", default=None, help="robustness.json (default: RUN/robustness)")
    p.add_argument("--year", type=int, default=None, help="DCASE year (default: inferred)")
    p.add_argument(
        "--explain-top", type=int, default=1, help="clips explained per machine/section (0: none)"
    )
    add_detector_options(p, required=False)
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("explain", help="when and at which frequencies a clip is anomalous")
    p.add_argument("clips", nargs="+", help="audio files")
    add_detector_options(p)
    p.add_argument("--machine", default=None, help="machine type (default: from folder/detector)")
    p.add_argument("--section", default=None, help="section (default: from the file name)")
    p.add_argument("--out", default="explanations", help="folder for PNG + JSON per clip")
    p.add_argument("--window", type=float, default=None, help="window seconds (default: 1 s)")
    p.add_argument("--hop", type=float, default=None, help="hop seconds (default: half a window)")
    p.add_argument("--bands", type=int, default=8, help="mel band groups (default 8)")
    p.set_defaults(func=_cmd_explain)
