"""``stetho`` command line: a thin layer over the library's pure functions."""

from stetho.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
