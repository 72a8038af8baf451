"""``stetho evaluate``: the official DCASE evaluation of submission CSVs (single-domain data,
e.g. imported recordings without target-domain clips: AUC/pAUC/F1 over all clips)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from stetho.evaluation import evaluate_directory

    if args.noise is not None:  # robustness curve (stetho.cli.report)
        from stetho.cli.report import cmd_evaluate_noise

        return cmd_evaluate_noise(args)
    if args.scores_dir is None or args.truth is None:
        raise ValueError("evaluate needs SCORES_DIR and --truth (or --noise, see --help)")

    result = evaluate_directory(
        args.scores_dir,
        args.truth,
        year=args.year,
        out_dir=args.out,
        allow_undefined=args.allow_undefined,
    )
    print(result.table())
    out = Path(args.out) if args.out else Path(args.scores_dir) / "evaluation"
    print(f"\nresults written to {out}")
    return 0


def register(sub: Any) -> None:
    """Add these commands to the ``stetho`` sub-parsers."""
    # evaluate --------------------------------------------------------------------------------
    p = sub.add_parser("evaluate", help="score submission CSVs exactly like the official evaluator")
    p.add_argument(
        "scores_dir",
        nargs="?",
        help="folder with anomaly_score_*.csv (and decision_result_*.csv)",
    )
    p.add_argument("--truth", default=None, help="dev dataset root or official ground-truth folder")
    p.add_argument("--year", type=int, default=None, help="DCASE year (default: inferred)")
    p.add_argument("--out", default=None, help="results folder (default: SCORES_DIR/evaluation)")
    p.add_argument(
        "--allow-undefined",
        action="store_true",
        help="small/unbalanced sets: report one-class metrics as n/a and a partial score "
        "instead of failing (the official evaluator fails)",
    )
    from stetho.cli.report import add_noise_options

    add_noise_options(p)
    p.set_defaults(func=_cmd_evaluate)
