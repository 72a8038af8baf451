"""Deprecated names: ``Scorer`` is :class:`~stetho.detector.base.BaseDetector` and
``load_scorer`` is :func:`~stetho.detector.registry.load_detector` (both warn once per call)."""

from __future__ import annotations

import os
import warnings
from typing import Any

from stetho.data.names import Key
from stetho.detector.base import BaseDetector
from stetho.detector.registry import load_detector

__all__ = ["Key", "Scorer", "load_scorer"]

#: Deprecated alias of :class:`~stetho.detector.base.BaseDetector` (the detector contract).
Scorer = BaseDetector


def load_scorer(directory: str | os.PathLike[str], **kwargs: Any) -> BaseDetector:
    """Deprecated: use :func:`stetho.load_detector` (same arguments, any kind of folder)."""
    warnings.warn(
        "stetho.detector.load_scorer is deprecated; use stetho.load_detector",
        DeprecationWarning,
        stacklevel=2,
    )
    return load_detector(directory, **kwargs)
