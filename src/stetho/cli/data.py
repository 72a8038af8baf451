"""``stetho data …``: scan, synthesise, import and download datasets."""

from __future__ import annotations

import argparse
from typing import Any


def _cmd_data_scan(args: argparse.Namespace) -> int:
    from stetho.data import scan_dataset
    from stetho.data.scan import format_summary

    table = scan_dataset(args.root, year=args.year, check_audio=args.check_audio)
    print(format_summary(table))
    if args.csv:
        table.to_csv(args.csv)
        print(f"clip table written to {args.csv}")
    return 1 if (table.problems and args.strict) else 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from stetho.data.synth import generate_synthetic_dataset

    kwargs: dict[str, Any] = {"seed": args.seed}
    if args.machines:
        kwargs["machines"] = tuple(args.machines)
    if args.seconds is not None:
        kwargs["seconds"] = args.seconds
    if args.eval_machines:
        kwargs["eval_machines"] = tuple(args.eval_machines)
    root = generate_synthetic_dataset(args.out, **kwargs)
    print(f"synthetic DCASE-format dataset written to {root}")
    return 0


def _cmd_data_import(args: argparse.Namespace) -> int:
    from stetho.data.importer import run_import

    summary = run_import(
        args.out,
        args.machine,
        train=args.train,
        test_normal=args.test_normal,
        test_anomaly=args.test_anomaly,
        section=args.section,
        domain=args.domain,
        attributes=args.attributes,
        mode="copy" if args.copy else "symlink",
        skip_bad=args.skip_bad,
    )
    print(summary.format())
    return 0


def _cmd_data_download(args: argparse.Namespace) -> int:
    from stetho.data.download import download_dataset

    kwargs: dict[str, Any] = {}
    if args.base_url:
        kwargs["base_url"] = args.base_url
    root = download_dataset(
        args.name, part=args.part, root=args.root, machines=args.machines or None, **kwargs
    )
    print(f"{args.name} ({args.part}) is in {root}")
    return 0


def register(sub: Any) -> None:
    """Add these commands to the ``stetho`` sub-parsers."""
    # data ------------------------------------------------------------------------------------
    data = sub.add_parser("data", help="scan, synthesise, download or import datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    p = dsub.add_parser("scan", help="inventory of a DCASE Task 2 tree (clips + problems)")
    p.add_argument("root", help="dataset root (with dev_data/eval_data), or a machine folder")
    p.add_argument("--year", type=int, default=None, help="DCASE year (default: from the path)")
    p.add_argument(
        "--check-audio",
        action="store_true",
        help="open every file header (and decode float files to find NaN/Inf samples)",
    )
    p.add_argument("--csv", default=None, help="write the clip table to this CSV file")
    p.add_argument("--strict", action="store_true", help="exit 1 when problems were found")
    p.set_defaults(func=_cmd_data_scan)

    p = dsub.add_parser("synth", help="write a synthetic DCASE-format machine-sound dataset")
    p.add_argument("out", help="output root")
    p.add_argument("--machines", nargs="+", default=None, help="machine types to generate")
    p.add_argument("--seconds", type=float, default=None, help="clip length in seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--eval-machines",
        nargs="+",
        default=None,
        help="also write eval_data (anonymised test names) + official-layout ground truth for these",
    )
    p.set_defaults(func=_cmd_data_synth)

    p = dsub.add_parser(
        "import", help="turn plain folders of recordings into a dataset stetho can train on"
    )
    p.add_argument("out", help="dataset root to create or extend (then: stetho train --data OUT)")
    p.add_argument("--machine", required=True, help="machine type, e.g. pump (no '_')")
    p.add_argument(
        "--train", nargs="+", default=[], metavar="PATH", help="normal recordings (files/folders)"
    )
    p.add_argument(
        "--test-normal", nargs="+", default=[], metavar="PATH", help="normal recordings for testing"
    )
    p.add_argument(
        "--test-anomaly", nargs="+", default=[], metavar="PATH", help="known-faulty recordings"
    )
    p.add_argument("--section", default="00", help="two-digit section, e.g. one per machine unit")
    p.add_argument(
        "--domain",
        choices=["source", "target"],
        default="source",
        help="target: recordings of a changed operating condition",
    )
    p.add_argument(
        "--attributes", default=None, help="attribute tail of the names (default noAttribute)"
    )
    p.add_argument("--copy", action="store_true", help="copy the files (default: symlinks)")
    p.add_argument(
        "--skip-bad", action="store_true", help="import the readable files, list the others"
    )
    p.set_defaults(func=_cmd_data_import)

    p = dsub.add_parser("download", help="download an official DCASE Task 2 dataset (Zenodo)")
    p.add_argument("name", help="dataset, e.g. dcase2023 (2020-2025)")
    p.add_argument("--part", choices=["dev", "eval", "all"], default="dev")
    p.add_argument("--root", required=True, help="where to put dcase<YYYY>t2/")
    p.add_argument("--machines", nargs="+", default=None, help="only these machine types")
    p.add_argument("--base-url", default=None, help="mirror base URL (default: Zenodo)")
    p.set_defaults(func=_cmd_data_download)
