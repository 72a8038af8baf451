"""``stetho backbones`` and ``stetho tag``: the backbone registry and AudioSet tagging."""

from __future__ import annotations

import argparse
import json
from typing import Any

from stetho.cli._common import add_trust_option


def _cmd_backbones(args: argparse.Namespace) -> int:
    from stetho.backbones.registry import describe_backbones

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


def _cmd_fetch(args: argparse.Namespace) -> int:
    from stetho.backbones.fetch import fetch_weights

    path = fetch_weights(args.name, url=args.url, cache=args.cache)
    print(f"{args.name}: weights verified at {path}")
    return 0


def register(sub: Any) -> None:
    """Add these commands to the ``stetho`` sub-parsers."""
    # backbones / tag -------------------------------------------------------------------------
    p = sub.add_parser("backbones", help="list the registered backbones")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_backbones)
    fetch_sub = p.add_subparsers(dest="backbones_cmd")
    f = fetch_sub.add_parser(
        "fetch", help="download a backbone's registered weights into the cache (SHA-256 checked)"
    )
    f.add_argument("name", help="registry name, e.g. efficientat-mn04")
    f.add_argument("--url", default=None, help="download from this mirror instead")
    f.add_argument("--cache", default=None, help="cache folder (default: $STETHO_CACHE)")
    f.set_defaults(func=_cmd_fetch)

    p = sub.add_parser("tag", help="print the top AudioSet labels of audio files")
    p.add_argument("files", nargs="+", help="audio files")
    p.add_argument("--backbone", default="efficientat-mn04")
    p.add_argument("--checkpoint", default=None, help="checkpoint path or URL")
    add_trust_option(p)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--channel", default=None, help="channel index or 'mix' for multichannel files")
    p.set_defaults(func=_cmd_tag)
