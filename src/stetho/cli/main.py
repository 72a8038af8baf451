"""``stetho`` command line: a thin layer over the library's pure functions.

Every sub-command parses its arguments, calls one library function and prints its result. Heavy
modules are imported inside the handlers so that ``stetho --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]

logger = logging.getLogger("stetho")


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from stetho.evaluation import evaluate_directory

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


# --------------------------------------------------------------------------------------------
# backbones
# --------------------------------------------------------------------------------------------
def _cmd_backbones(args: argparse.Namespace) -> int:
    from stetho.backbones.tagging import describe_backbones

    rows = describe_backbones()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'name':<26}{'params':>14}{'rate':>8}{'dim':>6}  {'input':<9}weights"
    print(header)
    print("-" * len(header))
    for row in rows:
        if row.get("error"):
            print(f"{row['name']:<26}(cannot describe: {row['error']})")
            continue
        params = row.get("params")
        ptxt = f"{params / 1e6:,.2f} M" if isinstance(params, (int, float)) else str(params)
        print(
            f"{row['name']:<26}{ptxt:>14}{row['sample_rate']:>8}{row['embed_dim']:>6}  "
            f"{row['input']:<9}{row['weights']}"
        )
    return 0


def _cmd_tag(args: argparse.Namespace) -> int:
    from stetho.backbones import create_backbone
    from stetho.backbones.tagging import tag_waveform
    from stetho.data import load_audio

    model = create_backbone(
        args.backbone, checkpoint=args.checkpoint, trust_checkpoint=args.trust_checkpoint
    )
    for path in args.files:
        wave, sr = load_audio(path, channel=args.channel)
        tags = tag_waveform(model, wave, sr, top_k=args.top_k)
        print(f"{path}:")
        for label, prob in tags:
            print(f"  {prob:6.3f}  {label}")
    return 0


def _load_detector(args: argparse.Namespace) -> Any:
    """Load ``--detector`` (with ``--checkpoint`` if the backbone weights moved, on ``--device``)."""
    from stetho.detector.detector import Detector

    return Detector.load(args.detector, device=args.device, checkpoint=args.checkpoint)


def _add_detector_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--detector", required=required, default=None, help="saved detector folder")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="backbone checkpoint, if it moved since the detector was saved (SHA-256 checked)",
    )
    p.add_argument("--device", default="cpu", help="device to run on, e.g. cpu or cuda")


# --------------------------------------------------------------------------------------------
# training, scoring, demo
# --------------------------------------------------------------------------------------------
def _cmd_train(args: argparse.Namespace) -> int:
    from stetho.config import load_experiment_config
    from stetho.pipelines.pipeline import run_training

    cfg = load_experiment_config(args.config, args.set)
    result = run_training(cfg, args.data, args.out, resume=not args.no_resume)
    if result.evaluation is not None:
        print(result.evaluation.table())
    print(f"run written to {args.out}")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from stetho.config import load_experiment_config
    from stetho.pipelines.pipeline import embed_dataset

    if (args.detector is None) == (args.config is None):
        raise ValueError("pass exactly one of --detector DIR (fine-tuned) or --config CFG (plain)")
    source = (
        _load_detector(args)
        if args.detector is not None
        else load_experiment_config(args.config, args.set)
    )
    path = embed_dataset(source, args.data, args.out)
    print(f"embeddings written to {path}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from stetho.pipelines.pipeline import score_dataset

    detector = _load_detector(args)
    scores = score_dataset(detector, args.data, args.out, partition=args.partition)
    n_clips = sum(len(v) for v in scores.values())
    print(f"submission files for {len(scores)} section(s), {n_clips} clips, written to {args.out}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from stetho.pipelines.pipeline import run_sweep

    result = run_sweep(args.configs, args.data, args.out, overrides=args.set)
    print(result.markdown)
    print(f"\ncomparison written to {result.markdown_path} and {result.csv_path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from stetho.backbones import get_entry
    from stetho.pipelines.pipeline import run_demo

    if get_entry(args.backbone).needs_weights and not args.checkpoint and not args.random_weights:
        raise ValueError(
            f"backbone {args.backbone!r} needs pre-trained weights: pass --checkpoint PATH_OR_URL "
            "(a file name is also looked up in $STETHO_CACHE), or --random-weights to run the "
            "same code with random initialisation"
        )
    overrides = list(args.set)
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    result = run_demo(
        args.out,
        backbone=args.backbone,
        checkpoint=args.checkpoint,
        strategy=args.strategy,
        overrides=overrides,
    )
    print(result.table())
    print(f"\ndemo run written to {args.out}")
    return 0


# --------------------------------------------------------------------------------------------
# using a saved detector: files, streams, HTTP
# --------------------------------------------------------------------------------------------
def _cmd_detect(args: argparse.Namespace) -> int:
    from stetho.serving import format_records, score_paths, write_records_csv

    detector = _load_detector(args)
    records = score_paths(detector, args.paths, machine=args.machine, section=args.section)
    print(format_records(records))
    if args.csv:
        write_records_csv(records, args.csv)
        print(f"scores written to {args.csv}")
    failed = sum(1 for r in records if r.error)
    return 1 if failed else 0


def _cmd_watch(args: argparse.Namespace) -> int:
    from stetho.serving import score_pcm_stream

    detector = _load_detector(args)
    stream = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")  # noqa: SIM115
    try:
        for event in score_pcm_stream(
            stream,
            args.rate,
            args.channels,
            args.dtype,
            detector=detector,
            machine=args.machine,
            section=args.section,
            window_seconds=args.window,
            hop_seconds=args.hop,
            channel=args.channel_index,
        ):
            flag = {1: "ANOMALY", 0: "normal", None: "-"}[event.decision]
            print(f"{event.t_start:9.2f}s-{event.t_end:9.2f}s  score {event.score:.6f}  {flag}")
            sys.stdout.flush()
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from stetho.serving import serve

    detector = _load_detector(args)
    print(f"serving {args.detector} on http://{args.host}:{args.port} (Ctrl-C to stop)")
    serve(detector, host=args.host, port=args.port, max_body_mb=args.max_body_mb)
    return 0


def _cmd_baseline(args: argparse.Namespace) -> int:
    from stetho.baselines.autoencoder import run_ae_baseline

    result = run_ae_baseline(
        args.data,
        args.out,
        mode=args.mode,
        epochs=args.epochs,
        machines=args.machines or None,
    )
    print(result.table())
    print(f"\nbaseline run written to {args.out}")
    return 0


# --------------------------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser for all sub-commands."""
    from stetho import __version__

    parser = argparse.ArgumentParser(
        prog="stetho",
        description="Anomalous sound detection of machines with fine-tuned pre-trained audio models.",
    )
    parser.add_argument("--version", action="version", version=f"stetho {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # data ------------------------------------------------------------------------------------
    data = sub.add_parser("data", help="scan, synthesise, download or import datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    p = dsub.add_parser("scan", help="inventory of a DCASE Task 2 tree (clips + problems)")
    p.add_argument("root", help="dataset root (with dev_data/eval_data), or a machine folder")
    p.add_argument("--year", type=int, default=None, help="DCASE year (default: from the path)")
    p.add_argument("--check-audio", action="store_true", help="open every file header")
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

    # evaluate --------------------------------------------------------------------------------
    p = sub.add_parser("evaluate", help="score submission CSVs exactly like the official evaluator")
    p.add_argument("scores_dir", help="folder with anomaly_score_*.csv (and decision_result_*.csv)")
    p.add_argument(
        "--truth", required=True, help="dev dataset root or official ground-truth folder"
    )
    p.add_argument("--year", type=int, default=None, help="DCASE year (default: inferred)")
    p.add_argument("--out", default=None, help="results folder (default: SCORES_DIR/evaluation)")
    p.add_argument(
        "--allow-undefined",
        action="store_true",
        help="small/unbalanced sets: report one-class metrics as n/a and a partial score "
        "instead of failing (the official evaluator fails)",
    )
    p.set_defaults(func=_cmd_evaluate)

    # backbones / tag -------------------------------------------------------------------------
    p = sub.add_parser("backbones", help="list the registered backbones")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_backbones)

    p = sub.add_parser("tag", help="print the top AudioSet labels of audio files")
    p.add_argument("files", nargs="+", help="audio files")
    p.add_argument("--backbone", default="efficientat-mn04")
    p.add_argument("--checkpoint", default=None, help="checkpoint path or URL")
    p.add_argument("--trust-checkpoint", action="store_true", help="allow pickled checkpoints")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--channel", default=None, help="channel index or 'mix' for multichannel files")
    p.set_defaults(func=_cmd_tag)

    # train / embed / score / sweep / demo ----------------------------------------------------
    p = sub.add_parser("train", help="fine-tune a backbone and build a detector")
    p.add_argument("--config", default=None, help="YAML experiment config (default: built-in)")
    p.add_argument("--data", required=True, help="dataset root")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--no-resume", action="store_true", help="ignore checkpoints in --out")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("embed", help="write embeddings of every clip of a dataset")
    _add_detector_options(p, required=False)
    p.add_argument("--config", default=None, help="experiment config (plain backbone embeddings)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_embed)

    p = sub.add_parser("score", help="write official submission CSVs for a dev or eval tree")
    _add_detector_options(p)
    p.add_argument("--data", required=True, help="dataset root")
    p.add_argument("--out", required=True, help="output folder for the CSV files")
    p.add_argument("--partition", choices=["dev", "eval"], default="dev")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("baseline", help="the official DCASE autoencoder baseline (MSE / MAHALA)")
    p.add_argument("--data", required=True, help="dataset root with dev_data")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--mode", choices=["mse", "mahala"], default="mse")
    p.add_argument("--epochs", type=int, default=100, help="training epochs (official: 100)")
    p.add_argument("--machines", nargs="+", default=None, help="only these machine types")
    p.set_defaults(func=_cmd_baseline)

    p = sub.add_parser("detect", help="score audio files or folders with a saved detector")
    p.add_argument("paths", nargs="+", help="audio files and/or folders (searched recursively)")
    _add_detector_options(p)
    p.add_argument(
        "--machine", default=None, help="machine type (default: from the detector/names)"
    )
    p.add_argument("--section", default=None, help="section, e.g. 00")
    p.add_argument("--csv", default=None, help="also write the scores to this CSV file")
    p.set_defaults(func=_cmd_detect)

    p = sub.add_parser(
        "watch", help="score a live raw-PCM stream (stdin or a file) window by window"
    )
    _add_detector_options(p)
    p.add_argument("--machine", required=True)
    p.add_argument("--section", default="00")
    p.add_argument("--input", default="-", help="raw PCM file, or - for stdin (default)")
    p.add_argument("--rate", type=int, default=16000, help="sample rate of the PCM data")
    p.add_argument("--channels", type=int, default=1, help="interleaved channels in the stream")
    p.add_argument("--channel-index", type=int, default=0, help="channel to score")
    p.add_argument("--dtype", choices=["int16", "int32", "float32"], default="int16")
    p.add_argument("--window", type=float, default=None, help="window seconds (default: detector)")
    p.add_argument("--hop", type=float, default=None, help="hop seconds (default: half a window)")
    p.set_defaults(func=_cmd_watch)

    p = sub.add_parser("serve", help="HTTP scoring server (POST /score?machine=…&section=…)")
    _add_detector_options(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-body-mb", type=float, default=50.0)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("sweep", help="run several configs and write one comparison table")
    p.add_argument("configs", nargs="+", help="YAML configs")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every config"
    )
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("demo", help="synthetic data -> train -> score -> evaluate, offline")
    p.add_argument("--out", default="runs/demo", help="run folder")
    p.add_argument("--backbone", default="logmel", help="e.g. logmel, efficientat-mn04, beats")
    p.add_argument("--checkpoint", default=None, help="weights for backbones that need them")
    p.add_argument(
        "--strategy",
        choices=["lora", "full", "frozen"],
        default=None,
        help="fine-tuning strategy (default: LoRA where supported, else frozen)",
    )
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="allow backbones that need weights to run with random initialisation",
    )
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    p.set_defaults(func=_cmd_demo)
    return parser


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stetho`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if getattr(args, "channel", None) not in (None, "mix"):
        args.channel = int(args.channel)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, KeyError, RuntimeError, OSError) as err:
        if args.debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"stetho: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
