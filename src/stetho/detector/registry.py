"""Saved detector formats and the one loader for all of them.

Every saved detector folder has a ``config.json`` whose ``format`` names its kind. The registry
maps each format to the class that reads it; :func:`load_detector` opens any of them::

    det = stetho.load_detector("runs/plant/detector")     # few-shot, k-NN, autoencoder, ONNX
    det.describe()["kind"], det.keys

New kinds register with :func:`register_format` (a class that implements
:class:`~stetho.detector.base.BaseDetector`).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from stetho.detector.artifact import DetectorError, read_json
from stetho.detector.base import BaseDetector

__all__ = ["KIND_NAMES", "known_formats", "load_detector", "register_format"]

#: format tag → "module:Class" of the kind that reads it (imported on first use)
_FORMATS: dict[str, str] = {
    "stetho-detector": "stetho.detector.detector:Detector",
    "stetho-ensemble": "stetho.detector.ensemble:EnsembleDetector",
    "stetho.ae_baseline": "stetho.detector.autoencoder:AutoencoderDetector",
    "stetho-onnx-detector": "stetho.detector.onnx:load_onnx_detector",
}

#: Plain-words names of the kinds, for messages and the README's table.
KIND_NAMES: dict[str, str] = {
    "fewshot": "few-shot ensemble (stetho train's default)",
    "knn": "fine-tuned / frozen k-NN detector",
    "autoencoder": "DCASE autoencoder baseline",
    "onnx": "ONNX export",
}


def register_format(fmt: str, target: str) -> None:
    """Register a saved format: ``target`` is ``"module:Class"`` (or a loader function)."""
    _FORMATS[fmt] = target


def known_formats() -> list[str]:
    """The registered ``config.json`` format tags."""
    return sorted(_FORMATS)


def _resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def load_detector(directory: str | os.PathLike[str], **options: Any) -> BaseDetector:
    """Open a saved detector folder of any kind (files checked against its manifest).

    Args:
        directory: The folder written by ``save`` or ``stetho export``.
        **options: Passed to the kind's loader where it applies (``device``, ``checkpoint``,
            ``trust_checkpoint``, ``int8``, ``threads``); options that do not apply to the
            folder's kind are ignored.

    Raises:
        DetectorError: not a detector folder, an unknown format, or damaged files (named).
    """
    src = Path(directory)
    cfg_path = src / "config.json"
    if not src.is_dir():
        raise DetectorError(f"{src}: no such detector folder")
    if not cfg_path.is_file():
        raise DetectorError(f"{src} is not a detector folder (no config.json)")
    doc = read_json(cfg_path)
    fmt = doc.get("format") if isinstance(doc, dict) else None
    if fmt not in _FORMATS:
        raise DetectorError(
            f"{cfg_path}: unknown detector format {fmt!r} (known: {', '.join(known_formats())})"
        )
    target = _resolve(_FORMATS[str(fmt)])
    if isinstance(target, type) and issubclass(target, BaseDetector):
        return target.load(src, **_options_for(target, options))
    return target(src, **options)


def _options_for(cls: type[BaseDetector], options: dict[str, Any]) -> dict[str, Any]:
    """Keep the options ``cls.load`` accepts (a folder's kind decides which apply)."""
    import inspect

    params = inspect.signature(cls.load).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(options)
    return {k: v for k, v in options.items() if k in params}
