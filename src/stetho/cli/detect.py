"""``stetho detect | watch | serve``: a saved detector scores files, streams and HTTP requests."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from stetho.cli._common import add_detector_options, load_detector


def _seconds(text: str) -> float:
    """argparse type: window/hop seconds, > 0 and at most an hour."""
    from stetho.serving.stream import MAX_WINDOW_SECONDS

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= MAX_WINDOW_SECONDS:
        raise argparse.ArgumentTypeError(
            f"must be > 0 and at most {MAX_WINDOW_SECONDS:g} seconds, got {text}"
        )
    return value


def _port(text: str) -> int:
    """argparse type: a TCP port, 0..65535 (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 0..65535, got {value}")
    return value


def _cmd_detect(args: argparse.Namespace) -> int:
    from stetho.serving import format_records, score_paths, write_records_csv

    detector = load_detector(args)
    records = score_paths(detector, args.paths, machine=args.machine, section=args.section)
    print(format_records(records))
    if args.csv:
        write_records_csv(records, args.csv)
        print(f"scores written to {args.csv}")
    if args.db:
        from stetho.serving.history import store_records
        from stetho.store import ScoreStore

        with ScoreStore.open(args.db) as store:
            n = len(store_records(store, records, detector, args.detector))
        print(f"{n} score(s) stored in {args.db}")
    failed = sum(1 for r in records if r.error)
    return 1 if failed else 0


def _cmd_watch(args: argparse.Namespace) -> int:
    from stetho.serving import score_pcm_stream

    detector = load_detector(args)
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

    detector = load_detector(args)
    print(f"serving {args.detector} on http://{args.host}:{args.port} (Ctrl-C to stop)")
    serve(detector, host=args.host, port=args.port, max_body_mb=args.max_body_mb)
    return 0


def register(sub: Any) -> None:
    """Add these commands to the ``stetho`` sub-parsers."""
    p = sub.add_parser("detect", help="score audio files or folders with a saved detector")
    p.add_argument("paths", nargs="+", help="audio files and/or folders (searched recursively)")
    add_detector_options(p)
    p.add_argument(
        "--machine", default=None, help="machine type (default: from the detector/names)"
    )
    p.add_argument("--section", default=None, help="section, e.g. 00")
    p.add_argument("--csv", default=None, help="also write the scores to this CSV file")
    p.add_argument(
        "--db", default=None, help="also store the scores (score store file or postgresql:// URL)"
    )
    p.set_defaults(func=_cmd_detect)

    p = sub.add_parser(
        "watch", help="score a live raw-PCM stream (stdin or a file) window by window"
    )
    add_detector_options(p)
    p.add_argument("--machine", required=True)
    p.add_argument("--section", default="00")
    p.add_argument("--input", default="-", help="raw PCM file, or - for stdin (default)")
    p.add_argument("--rate", type=int, default=16000, help="sample rate of the PCM data")
    p.add_argument("--channels", type=int, default=1, help="interleaved channels in the stream")
    p.add_argument("--channel-index", type=int, default=0, help="channel to score")
    p.add_argument("--dtype", choices=["int16", "int32", "float32"], default="int16")
    p.add_argument(
        "--window", type=_seconds, default=None, help="window seconds (default: detector)"
    )
    p.add_argument(
        "--hop", type=_seconds, default=None, help="hop seconds (default: half a window)"
    )
    p.set_defaults(func=_cmd_watch)

    p = sub.add_parser("serve", help="HTTP scoring server (POST /score?machine=…&section=…)")
    add_detector_options(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8000)
    p.add_argument("--max-body-mb", type=float, default=50.0)
    p.set_defaults(func=_cmd_serve)
