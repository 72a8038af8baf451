"""A plain-words summary of a fitted detector, for a plant engineer, before any DCASE table.

For every machine/section: how many normal recordings the detector learnt from, the false-alarm
rate its threshold was fitted for and what that means per 100 clips and per day of monitoring,
how many of its own (held-out) normal recordings it flags, and — when the run had labelled test
clips — how many known-faulty clips it catches and how many unseen normal clips it flags.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from stetho.data.names import ClipNameError, Key, parse_clip_name
from stetho.detector.base import BaseDetector
from stetho.scoring.threshold import min_clips_below_maximum

__all__ = ["plain_summary"]

#: Windows a monitor scores per hour in the summary's "per day" figure (one 10 s clip a minute).
WINDOWS_PER_HOUR = 60.0


def _label(name: str) -> str | None:
    try:
        return parse_clip_name(name).label
    except ClipNameError:
        return None


def _key_lines(
    det: BaseDetector, key: Key, named: Mapping[str, float] | None, windows_per_hour: float
) -> list[str]:
    m, s = key
    held = det.held_out.get(key)
    thr = det.thresholds.get(key)
    n = 0 if held is None else int(np.isfinite(held.scores).sum())
    fit = {} if held is None else held.fit
    alpha = fit.get("alpha")
    lines = [f"{m} (section {s}): learnt from {n} normal recording(s)."]
    if thr is None or not np.isfinite(thr):
        return [
            *lines,
            "  No threshold could be fitted: it never raises an alarm (add recordings).",
        ]
    if alpha is not None:
        per_day = float(alpha) * windows_per_hour * 24
        lines.append(
            f"  Threshold set for {100 * float(alpha):.0f} false alarms per 100 normal clips "
            f"(≈ {per_day:.0f} a day at {windows_per_hour:.0f} clips an hour)."
        )
        if not fit.get("achievable", True):
            lines.append(
                f"  With {n} recordings that rate cannot be promised; about "
                f"{fit.get('n_needed')} are needed."
            )
        elif fit.get("method") == "conformal" and fit.get("rank") == n:
            more = min_clips_below_maximum(float(alpha))
            lines.append(
                f"  With {n} recordings the threshold is the highest of their own scores: only a "
                f"clip beyond all of them raises an alarm. {more} or more recordings let it sit "
                "lower and catch more faults."
            )
    if held is not None and n:
        flagged = int(det.decide(held.scores[np.isfinite(held.scores)], key).sum())
        lines.append(
            f"  Its own normal recordings, each left out in turn: {flagged} of {n} flagged."
        )
    if named:
        names = list(named)
        dec = det.decide(np.array([named[x] for x in names]), key)
        labels = [_label(x) for x in names]
        bad = [d for d, lab in zip(dec, labels) if lab == "anomaly"]
        ok = [d for d, lab in zip(dec, labels) if lab == "normal"]
        if bad:
            lines.append(f"  Known-faulty test clips caught: {int(sum(bad))} of {len(bad)}.")
        if ok:
            lines.append(f"  Unseen normal test clips flagged: {int(sum(ok))} of {len(ok)}.")
    return lines


def plain_summary(
    det: BaseDetector,
    scores: Mapping[Key, Mapping[str, float]] | None = None,
    *,
    windows_per_hour: float = WINDOWS_PER_HOUR,
    keys: Sequence[Key] | None = None,
) -> str:
    """The summary text (one paragraph per machine/section).

    Args:
        det: A fitted detector of any kind.
        scores: Optional test scores ``{key: {clip name: score}}``; labels come from the names.
        windows_per_hour: Monitoring rate for the "per day" figure.
        keys: Only these machine/sections (default: all).
    """
    out = [f"Detector {det.describe()['id'][:8]} (version {det.version}, {det.kind}):"]
    for key in det.keys if keys is None else keys:
        out += _key_lines(det, key, (scores or {}).get(key), windows_per_hour)
    return "\n".join(out)
