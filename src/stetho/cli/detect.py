"""``stetho detect | watch | serve``: a saved detector scores files, streams and HTTP requests."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from stetho.cli._common import add_detector_options, add_trust_option, load_detector


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
    records = score_paths(
        detector,
        args.paths,
        machine=args.machine,
        section=args.section,
        num_workers=args.workers,
    )
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
    from stetho.serving.stream import RawFormat, score_audio_stream
    from stetho.utils.errors import InputError

    raw = None
    if args.dtype is not None:  # headerless PCM: only with its format given
        if args.rate is None:
            raise InputError("raw PCM (--dtype) needs its sample rate too: give --rate HZ")
        raw = RawFormat(args.rate, args.channels or 1, args.dtype)
    name = "<stdin>" if args.input == "-" else args.input
    detector = load_detector(args)
    stream = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")  # noqa: SIM115
    try:
        for event in score_audio_stream(
            stream,
            detector=detector,
            machine=args.machine,
            section=args.section,
            raw=raw,
            expect_rate=args.rate,
            expect_channels=args.channels,
            channel=args.channel_index,
            window_seconds=args.window,
            hop_seconds=args.hop,
            name=name,
        ):
            flag = {1: "ANOMALY", 0: "normal", None: "-"}[event.decision]
            nrm = "" if event.normalised is None else f"  normalised {event.normalised:.2f}"
            print(
                f"{event.t_start:9.2f}s-{event.t_end:9.2f}s  score {event.score:.6f}{nrm}  {flag}"
            )
            sys.stdout.flush()
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    return 0


def _audio_keeper(args: argparse.Namespace, store: Any) -> Any:
    """``"auto"`` (the store's defaults), None (``--audio-mb 0``) or a keeper with the bounds."""
    from stetho.store.audio import DEFAULT_AUDIO_DAYS, DEFAULT_AUDIO_MB, AudioKeeper

    if args.audio_mb is None and args.audio_days is None:
        return "auto"
    if store is None or args.audio_mb == 0:
        return None
    return AudioKeeper.for_store(
        store.database,
        DEFAULT_AUDIO_MB if args.audio_mb is None else args.audio_mb,
        DEFAULT_AUDIO_DAYS if args.audio_days is None else args.audio_days,
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    from stetho.detector import load_detector as load_scorer
    from stetho.serving import (
        DetectorEntry,
        DetectorRegistry,
        ScoringService,
        ServiceLimits,
        bind_socket,
        create_app,
        parse_detector_spec,
        run_server,
    )
    from stetho.serving.server import socket_url

    if not args.detector and not args.db:
        raise ValueError("give --detector NAME=DIR (several allowed) and/or --db PATH_OR_URL")
    limits = ServiceLimits(
        max_body_mb=args.max_body_mb,
        max_seconds=args.max_seconds,
        max_concurrency=args.max_concurrency,
        max_queue=args.max_queue,
        max_pending_mb=args.max_pending_mb,
        body_timeout=args.timeout,
        header_timeout=args.header_timeout,
        min_body_rate_kib=args.min_body_rate_kib,
        backlog=args.backlog,
    )
    sock = bind_socket(args.host, args.port, backlog=limits.backlog)  # fail fast: port, address
    registry = DetectorRegistry()

    def load(folder: Any) -> Any:
        return load_scorer(
            folder,
            device=args.device,
            checkpoint=args.checkpoint,
            trust_checkpoint=args.trust_checkpoint,
        )

    for spec in args.detector or []:
        name, folder = parse_detector_spec(spec)
        # a folder replaced on disk (stetho calibrate) is picked up within 10 s
        registry.add(DetectorEntry(name, load(folder), folder, loader=load))
    store, rule = None, None
    if args.db:
        from stetho.store import AlarmRule, ScoreStore

        store = ScoreStore.open(args.db, wait_seconds=args.db_wait)
        rule = AlarmRule(k=args.alarm_k, n=args.alarm_n, clear_k=args.alarm_clear_k)
    service = ScoringService(
        registry, limits, store=store, alarm_rule=rule, audio=_audio_keeper(args, store)
    )
    url = socket_url(sock)
    names = ", ".join(registry.names) or "none (dashboard and history only)"
    print(f"serving detectors {names} on {url} (dashboard {url}/, API {url}/docs; Ctrl-C stops)")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: listening on {args.host} without authentication or TLS: anyone who can "
            "reach this port can score audio and read the history (see docs/service.md, Security)",
            file=sys.stderr,
        )
    sys.stdout.flush()
    try:
        run_server(create_app(service), sock, limits)
    finally:
        service.close()
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
        "--workers",
        type=int,
        default=0,
        help="threads decoding the next files while the model runs (0: none; on 2 cores they "
        "add about 3 %%, see docs/benchmarks.md)",
    )
    p.add_argument(
        "--db", default=None, help="also store the scores (score store file or postgresql:// URL)"
    )
    p.set_defaults(func=_cmd_detect)

    p = sub.add_parser(
        "watch",
        help="score a live stream (WAV/FLAC, or raw PCM of a given format) window by window",
        description="Score audio from stdin or a file window by window. WAV and FLAC are read "
        "with their header (rate and channels from it, resampled to the detector's rate); "
        "headerless PCM only when its format is given with --dtype and --rate.",
    )
    add_detector_options(p)
    p.add_argument("--machine", required=True)
    p.add_argument("--section", default="00")
    p.add_argument(
        "--input", default="-", help="WAV/FLAC or raw PCM file, or - for stdin (default)"
    )
    p.add_argument(
        "--rate",
        type=int,
        default=None,
        help="raw PCM: its sample rate (required with --dtype); WAV/FLAC: checked against "
        "the header",
    )
    p.add_argument(
        "--channels",
        type=int,
        default=None,
        help="raw PCM: interleaved channels (default 1); WAV/FLAC: checked against the header",
    )
    p.add_argument("--channel-index", type=int, default=0, help="channel to score")
    p.add_argument(
        "--dtype",
        choices=["int16", "int32", "float32"],
        default=None,
        help="read headerless little-endian PCM of this sample format (with --rate)",
    )
    p.add_argument(
        "--window", type=_seconds, default=None, help="window seconds (default: detector)"
    )
    p.add_argument(
        "--hop", type=_seconds, default=None, help="hop seconds (default: half a window)"
    )
    p.set_defaults(func=_cmd_watch)

    p = sub.add_parser(
        "serve",
        help="monitoring API + dashboard (POST /v1/score, GET /, /metrics, /docs)",
        description="Serve detectors over HTTP: scoring, score history and alarms (with --db), "
        "a dashboard at /, Prometheus metrics at /metrics and the OpenAPI docs at /docs.",
    )
    p.add_argument(
        "--detector",
        action="append",
        metavar="[NAME=]DIR",
        help="saved detector folder, optionally named (repeat for several); default name: the "
        "folder's, or its parent's for …/detector",
    )
    p.add_argument("--checkpoint", default=None, help="backbone checkpoint, if it moved")
    add_trust_option(p)
    p.add_argument("--device", default="cpu", help="device to run on, e.g. cpu or cuda")
    p.add_argument(
        "--db",
        default=None,
        metavar="PATH_OR_URL",
        help="score store: a SQLite file (e.g. runs/plant.db) or postgresql://… "
        "(default: none, scores are not kept and there are no alarms)",
    )
    p.add_argument(
        "--db-wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="at start-up, keep retrying a database server that does not answer yet for this "
        "long (default 60; 0: fail at once)",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface (default: this machine only)")
    p.add_argument("--port", type=_port, default=8000, help="TCP port (0: any free port)")
    p.add_argument("--max-body-mb", type=float, default=50.0, help="largest request body (MiB)")
    p.add_argument("--max-seconds", type=float, default=600.0, help="longest audio (s)")
    p.add_argument("--max-concurrency", type=int, default=2, help="requests decoding at once")
    p.add_argument("--max-queue", type=int, default=256, help="requests waiting (then 503)")
    p.add_argument(
        "--max-pending-mb", type=float, default=256.0, help="bodies of admitted requests (MiB)"
    )
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to receive a request body (408)"
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds to receive a request's headers (else the connection is closed)",
    )
    p.add_argument(
        "--min-body-rate-kib",
        type=float,
        default=64.0,
        help="a body slower than this (KiB/s, after 5 s) is cut with 408; 0 disables",
    )
    p.add_argument("--backlog", type=int, default=1024, help="listen backlog")
    p.add_argument("--alarm-k", type=int, default=3, help="alarm opens at k of n anomalous")
    p.add_argument("--alarm-n", type=int, default=5, help="window count of the alarm rule")
    p.add_argument("--alarm-clear-k", type=int, default=0, help="closes at <= this many of n")
    p.add_argument(
        "--audio-mb",
        type=float,
        default=None,
        help="keep the audio of anomalous windows beside the SQLite store (<db>.audio/) up to "
        "this many MiB, oldest dropped first (default 500; 0: keep none)",
    )
    p.add_argument(
        "--audio-days", type=float, default=None, help="drop kept audio older than this (30)"
    )
    p.set_defaults(func=_cmd_serve)
