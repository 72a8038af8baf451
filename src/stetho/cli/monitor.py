"""``stetho monitor | calibrate``: watch sources into the score store; re-fit a detector."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any


def _cmd_monitor(args: argparse.Namespace) -> int:
    from stetho.serving.monitor import Monitor, load_monitor_config

    cfg = load_monitor_config(args.config)
    if args.db:
        cfg = cfg.replace(db=args.db)
    if args.status_seconds is not None:
        cfg = cfg.replace(status_seconds=args.status_seconds)
    monitor = Monitor(cfg)
    if args.check:
        from stetho.store import ScoreStore

        ScoreStore.open(cfg.db).close()  # reachable, schema up to date
        problems = monitor.check()
        for line in problems:
            print(f"problem: {line}")
        store_ok = not any(line.startswith("store:") for line in problems)
        print(
            f"{len(cfg.sources)} source(s), {len(problems)} problem(s); store {cfg.db} "
            + ("ok" if store_ok else "NOT ok")
        )
        return 1 if problems else 0

    as_json = getattr(args, "log_format", "text") == "json"

    def status(line: str) -> None:  # state changes of the monitor (one JSON object with json)
        from stetho.utils.logs import json_line

        text = json_line(line, logger="stetho.monitor") if as_json else line
        print(text, file=sys.stderr, flush=True)

    def stop(signum: int, _frame: Any) -> None:
        status(f"stetho monitor: {signal.Signals(signum).name}, stopping")
        monitor.stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    names = ", ".join(s.label for s in cfg.sources)
    status(f"stetho monitor: watching {names}; scores -> {cfg.db}")
    failures = monitor.run(status=status)
    return 1 if failures else 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stetho.detector import DetectorError, calibrate
    from stetho.detector.calibrate import load_for_calibration, save_verified
    from stetho.pipelines.summary import plain_summary
    from stetho.serving.files import KeyResolutionError, expand_paths, resolve_key

    trust = bool(getattr(args, "trust_checkpoint", False))
    det = load_for_calibration(
        args.detector, device=args.device, checkpoint=args.checkpoint, trust_checkpoint=trust
    )
    files: dict[tuple[str, str], list[Path]] = {}
    problems = []
    for path, problem in expand_paths(args.normal_dir):
        try:
            if problem is not None:
                raise KeyResolutionError(problem)
            key = resolve_key(path, det.keys, args.machine, args.section)
        except KeyResolutionError as err:
            problems.append(str(err))
            continue
        files.setdefault(key, []).append(path)
    if problems:
        raise DetectorError(
            "calibration stopped, some recordings cannot be used (nothing was written):\n  "
            + "\n  ".join(problems[:20])
        )
    before = det.version
    calibrate(
        det,
        files,
        mode=args.mode,
        note=f"stetho calibrate {' '.join(map(str, args.normal_dir))}",
        progress=sys.stderr.isatty(),
    )
    dest = save_verified(
        det, args.out or args.detector, checkpoint=args.checkpoint, trust_checkpoint=trust
    )
    for m, s in sorted(files):
        print(
            f"{m}/{s}: {len(files[(m, s)])} normal recording(s), threshold "
            f"{det.thresholds[(m, s)]:.6g}"
        )
    print(f"detector {det.detector_id}: version {before} -> {det.version}, written to {dest}")
    print(plain_summary(det, keys=sorted(files)))
    return 0


def register(sub: Any) -> None:
    """Add these commands to the ``stetho`` sub-parsers."""
    p = sub.add_parser(
        "monitor",
        help="watch folders, growing WAVs, stdin or sound cards; store scores and raise alarms",
    )
    p.add_argument("config", help="monitor config file (YAML or JSON; see docs/monitoring.md)")
    p.add_argument("--db", default=None, help="score store (file or postgresql:// URL)")
    p.add_argument(
        "--status-seconds", type=float, default=None, help="status line interval (0: none)"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="check the config, store, detectors and sources, then exit (1 on problems)",
    )
    p.set_defaults(func=_cmd_monitor)

    p = sub.add_parser(
        "calibrate",
        help="re-fit a detector's memory banks and thresholds on new normal recordings",
    )
    p.add_argument("detector", help="saved detector folder")
    p.add_argument("normal_dir", nargs="+", help="new normal recordings (files or folders)")
    p.add_argument("--out", default=None, help="write the new version here (default: in place)")
    p.add_argument("--machine", default=None, help="machine of the recordings (default: inferred)")
    p.add_argument("--section", default=None, help="section of the recordings, e.g. 00")
    p.add_argument(
        "--mode",
        choices=["replace", "add"],
        default="replace",
        help="replace: the recordings become the only bank (default); add: they join the old one",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="backbone checkpoint, if it moved since the detector was saved (SHA-256 checked)",
    )
    p.add_argument("--device", default="cpu", help="device to run on, e.g. cpu or cuda")
    p.set_defaults(func=_cmd_calibrate)
