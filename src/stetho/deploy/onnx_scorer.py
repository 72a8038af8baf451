"""Deprecated module: exported folders load as detectors of their kind.

``OnnxDetector.load(folder, int8=…)`` is :func:`stetho.load_detector` (it warns); the classes live
in :mod:`stetho.detector.onnx`.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from stetho.detector.base import BaseDetector
from stetho.detector.onnx import load_onnx_detector

__all__ = ["OnnxDetector"]


class OnnxDetector:
    """Deprecated: use ``stetho.load_detector(folder, int8=…)``."""

    @staticmethod
    def load(directory: str | os.PathLike[str], **options: Any) -> BaseDetector:
        """Open an exported folder (deprecated name of :func:`stetho.load_detector`)."""
        warnings.warn(
            "stetho.deploy.OnnxDetector is deprecated; use stetho.load_detector",
            DeprecationWarning,
            stacklevel=2,
        )
        return load_onnx_detector(directory, **options)
