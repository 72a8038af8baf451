"""Scores and decisions of many clips, grouped by (machine, section), for every kind of scorer."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from stetho.data import Clip, group_by_key
from stetho.data.names import Key

__all__ = ["decisions_by_key", "scores_by_key"]


def scores_by_key(
    clips: Iterable[Clip], score_files: Callable[[Sequence[Path], Key], np.ndarray]
) -> dict[Key, dict[str, float]]:
    """``{(machine, section): {file name: score}}`` with ``score_files(paths, key) -> (M,)``."""
    out: dict[Key, dict[str, float]] = {}
    for key, group in group_by_key(clips).items():
        values = score_files([c.path for c in group], key)
        out[key] = {c.name: float(v) for c, v in zip(group, values)}
    return out


def decisions_by_key(
    scores: dict[Key, dict[str, float]], decide: Callable[[np.ndarray, Key], np.ndarray]
) -> dict[Key, dict[str, int]]:
    """Decisions for grouped scores, in the same layout, with ``decide(scores, key) -> (M,)``."""
    out: dict[Key, dict[str, int]] = {}
    for key, named in scores.items():
        names = list(named)
        dec = decide(np.array([named[n] for n in names]), key)
        out[key] = {n: int(d) for n, d in zip(names, dec)}
    return out
