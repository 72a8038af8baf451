"""The files of a saved detector folder: safetensors, thresholds and bank clip lists, read with checks.

Every reader turns a damaged or altered file into a :class:`DetectorError` naming it; writers turn
OS errors (disk full, permissions) into messages naming the path.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stetho.data.names import Key
from stetho.detector.artifact import DetectorError, read_json
from stetho.scoring.knn import DomainKNNScorer
from stetho.utils.io import atomic_write_text, write_error

__all__ = [
    "BANK_CLIPS",
    "load_state",
    "read_bank_clips",
    "read_safetensors",
    "read_thresholds",
    "write_bank_clips",
    "write_safetensors",
]

logger = logging.getLogger(__name__)


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``safetensors.torch.save_file``; write failures (disk full…) name the file."""
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path))
    except Exception as err:
        if isinstance(err, OSError | RuntimeError) or type(err).__name__ == "SafetensorError":
            raise write_error(path, err) from err
        raise


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; a damaged file gives a :class:`DetectorError` naming it."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:  # SafetensorError, OSError, …: all mean "damaged file"
        raise DetectorError(f"{path}: not a readable safetensors file ({err})") from err


def load_state(module: Any, path: Path, strict: bool = True) -> None:
    """Load the state dict in ``path`` into ``module``; mismatches name the file."""
    state = read_safetensors(path)
    try:
        if isinstance(module, torch.nn.Module):
            module.load_state_dict(state, strict=strict)
        else:
            module.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as err:
        raise DetectorError(f"{path}: weights do not fit the saved architecture ({err})") from err


def read_thresholds(path: Path, *, nonnegative: bool = True) -> dict[Key, float]:
    """Decision thresholds from ``thresholds.json``: each finite (and >= 0 for distance scores)."""
    doc = read_json(path)
    try:
        rows = doc["thresholds"]
        out = {(str(t["machine"]), str(t["section"])): float(t["threshold"]) for t in rows}
    except (KeyError, TypeError, ValueError) as err:
        raise DetectorError(f"{path}: invalid thresholds file ({err!r})") from err
    for (m, sec), t in out.items():
        # a NaN threshold would call every clip normal; k-NN scores are distances (>= 0)
        if not np.isfinite(t) or (nonnegative and t < 0):
            raise DetectorError(
                f"{path}: threshold of {m}/{sec} is {t!r}; expected a finite number >= 0 (the "
                "file is damaged: fit the thresholds again, e.g. stetho train or Detector.fit)"
            )
    return out


def read_thresholds_doc(
    path: Path, nonnegative: bool = False
) -> tuple[dict[Key, float], dict[Key, tuple[list[float], dict[str, Any]]]]:
    """Thresholds and, where saved, each key's held-out scores and fit record.

    ``+inf`` (no threshold could be fitted: the key never decides "anomalous") loads with a
    warning; NaN, ``-inf`` or (``nonnegative``) a negative threshold is refused naming the file.
    """
    doc = read_json(path)
    try:
        rows = doc["thresholds"]
        out = {(str(t["machine"]), str(t["section"])): float(t["threshold"]) for t in rows}
        held = {
            (str(t["machine"]), str(t["section"])): (
                [float(v) for v in t.get("held_out", [])],
                dict(t.get("fit", {})),
            )
            for t in rows
        }
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise DetectorError(f"{path}: invalid thresholds file ({err!r})") from err
    for (m, sec), t in out.items():
        if t == float("inf"):
            logger.warning("%s: %s/%s has no fitted threshold (never anomalous)", path, m, sec)
            continue
        if not np.isfinite(t) or (nonnegative and t < 0):
            raise DetectorError(
                f"{path}: threshold of {m}/{sec} is {t!r}; expected a finite number (the "
                "file is damaged: fit the thresholds again, e.g. stetho train or calibrate)"
            )
    for (m, sec), (vals, _) in held.items():
        if any(np.isnan(v) for v in vals):
            raise DetectorError(f"{path}: held-out scores of {m}/{sec} contain NaN")
    return out, held


BANK_CLIPS = "bank_clips.json"


def write_bank_clips(path: Path, scorer: DomainKNNScorer) -> None:
    """``bank_clips.json``: ``{"banks": {"<machine>/<section>/<domain>": [clip path, …]}}``."""
    banks = {
        f"{m}/{s}/{d}": list(paths)
        for (m, s), by_domain in sorted(scorer.refs.items())
        for d, paths in by_domain.items()
    }
    atomic_write_text(path, json.dumps({"banks": banks}, indent=1) + "\n")


def read_bank_clips(path: Path, scorer: DomainKNNScorer) -> None:
    """Attach ``bank_clips.json`` to the loaded banks; a missing or unreadable file is no error."""
    if not path.is_file():
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["banks"]
        refs: dict[Key, dict[str, list[str]]] = {}
        for name, paths in data.items():
            machine, section, domain = name.rsplit("/", 2)
            refs.setdefault((machine, section), {})[domain] = [str(p) for p in paths]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        logger.warning("%s: unreadable (%s); bank clip names unavailable", path, err)
        return
    scorer.load_refs(refs)
