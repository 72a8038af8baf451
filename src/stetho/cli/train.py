"""``stetho train | embed | score | baseline | sweep | demo``: the jobs that build and run detectors."""

from __future__ import annotations

import argparse
from typing import Any, Literal

from stetho.cli._common import add_detector_options, add_set_option, load_detector


def _cmd_train(args: argparse.Namespace) -> int:
    from stetho.pipelines import run_training, training_config

    # the recipe (default: the few-shot ensemble) is chosen by the library, as in Python
    sets = list(args.set)
    if args.false_alarm is not None:
        sets += [f"threshold.false_alarm={args.false_alarm}"]
    cfg = training_config(args.config, sets, args.pretrained)
    result = run_training(cfg, args.data, args.out, resume=not args.no_resume)
    print(result.summary)  # plain words first
    if result.evaluation is not None:
        what = "Evaluation" if result.evaluation.single_domain else "DCASE evaluation"
        print(f"\n{what} of the test clips:")
        print(result.evaluation.table())
    if result.train is None:  # the few-shot ensemble
        print(f"label-free member choice per machine: {args.out}/choice.md")
    print(f"run written to {args.out}")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from stetho.config import load_experiment_config
    from stetho.pipelines import embed_dataset

    if (args.detector is None) == (args.config is None):
        raise ValueError("pass exactly one of --detector DIR (fine-tuned) or --config CFG (plain)")
    source = (
        load_detector(args)
        if args.detector is not None
        else load_experiment_config(args.config, args.set)
    )
    path = embed_dataset(source, args.data, args.out)
    print(f"embeddings written to {path}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from stetho.pipelines import score_dataset

    detector = load_detector(args)
    scores = score_dataset(detector, args.data, args.out, partition=args.partition)
    n_clips = sum(len(v) for v in scores.values())
    print(f"submission files for {len(scores)} section(s), {n_clips} clips, written to {args.out}")
    return 0


def _cmd_baseline(args: argparse.Namespace) -> int:
    from stetho.pipelines import run_ae_baseline

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


def _cmd_sweep(args: argparse.Namespace) -> int:
    from stetho.pipelines import run_sweep

    result = run_sweep(args.configs, args.data, args.out, overrides=args.set)
    print(result.markdown)
    print(f"\ncomparison written to {result.markdown_path} and {result.csv_path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from stetho.backbones import get_entry
    from stetho.pipelines import run_demo

    recipe: Literal["fewshot", "finetune"] = (
        "fewshot" if args.backbone is None and args.strategy is None else "finetune"
    )
    if args.backbone is None:
        args.backbone = "logmel"
    if recipe == "fewshot" and args.epochs is not None:
        recipe = "finetune"
    if (
        recipe == "finetune"
        and get_entry(args.backbone).needs_weights
        and not args.checkpoint
        and not args.random_weights
    ):
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
        recipe=recipe,
    )
    print(result.table())
    print(f"\ndemo run written to {args.out}")
    return 0


def register(sub: Any) -> None:
    """Add these commands to the ``stetho`` sub-parsers."""
    # train / embed / score / sweep / demo ----------------------------------------------------
    p = sub.add_parser(
        "train",
        help="build a detector: the few-shot ensemble (default) or a fine-tuned backbone",
    )
    p.add_argument(
        "--config",
        default=None,
        help="YAML experiment config (default: the training-free few-shot ensemble, see "
        "docs/fewshot.md; fine-tuning: configs/default.yaml, the paper's in configs/paper/, or "
        "--set recipe=finetune). A setting the recipe does not read is an error",
    )
    p.add_argument("--data", required=True, help="dataset root")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument(
        "--pretrained",
        default=None,
        metavar="CKPT",
        help="default recipe only: log-mel statistics + the frozen EfficientAT mn04 embedding "
        "with these weights, robust-z fused, instead of the three weight-free views (e.g. "
        "efficientat_mn04_as_mAP_432.pt after `stetho backbones fetch efficientat-mn04`)",
    )
    p.add_argument(
        "--false-alarm",
        type=float,
        default=None,
        metavar="ALPHA",
        help="false-alarm rate the thresholds are fitted for (default 0.1: about 10 of 100 "
        "normal clips; see docs/thresholds.md)",
    )
    add_set_option(p)
    p.add_argument("--no-resume", action="store_true", help="ignore checkpoints in --out")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("embed", help="write embeddings of every clip of a dataset")
    add_detector_options(p, required=False)
    p.add_argument("--config", default=None, help="experiment config (plain backbone embeddings)")
    add_set_option(p)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_embed)

    p = sub.add_parser("score", help="write official submission CSVs for a dev or eval tree")
    add_detector_options(p)
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

    p = sub.add_parser("sweep", help="run several configs and write one comparison table")
    p.add_argument("configs", nargs="+", help="YAML configs")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    add_set_option(p, help="overrides for every config")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("demo", help="synthetic data -> train -> score -> evaluate, offline")
    p.add_argument("--out", default="runs/demo", help="run folder")
    p.add_argument(
        "--backbone",
        default=None,
        help="fine-tune demo with this backbone (e.g. logmel, efficientat-mn04, beats); default: "
        "the training-free few-shot recipe",
    )
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
    add_set_option(p)
    p.set_defaults(func=_cmd_demo)
