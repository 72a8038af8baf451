"""``stetho`` command line: a thin layer over the library's pure functions.

Every sub-command parses its arguments, calls one library function and prints its result. Heavy
modules are imported inside the handlers so that ``stetho --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from stetho.utils.allocator import reuse_freed_memory
from stetho.utils.errors import StethoError, error_message

__all__ = ["build_parser", "main"]

logger = logging.getLogger("stetho")


#: Command modules, each with ``register(sub)`` adding its sub-commands (in ``--help`` order).
COMMAND_MODULES: tuple[str, ...] = (
    "stetho.cli.data",
    "stetho.cli.evaluate",
    "stetho.cli.backbones",
    "stetho.cli.train",
    "stetho.cli.detect",
    "stetho.cli.export",
    "stetho.cli.report",
    "stetho.cli.monitor",
)


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
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="json: one JSON object per log line on stderr (journald, Loki)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _setup_logging(verbosity: int, fmt: str = "text") -> None:
    from stetho.utils.logs import setup_logging

    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    setup_logging(level, "json" if fmt == "json" else "text")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stetho`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.log_format)
    reuse_freed_memory()  # batches reuse their temporaries instead of page-faulting afresh
    if getattr(args, "channel", None) not in (None, "mix"):
        args.channel = int(args.channel)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except StethoError as err:  # stetho's own errors carry their exit code
        if args.debug:
            raise
        print(f"stetho: error: {error_message(err)}", file=sys.stderr)
        return int(err.exit_code)
    except (ValueError, LookupError, RuntimeError, OSError, MemoryError) as err:
        if args.debug:
            raise
        print(f"stetho: error: {error_message(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
