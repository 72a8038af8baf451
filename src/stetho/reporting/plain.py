"""The report's first paragraph: what the detector learned and how it does, in plain words.

Three counts, before any DCASE table:

* **learned from** — the normal recordings each machine/section's model was fitted on (the
  held-out scores the threshold was fitted on, one per recording);
* **own normals flagged** — how many of those recordings the detector calls anomalous when each
  is scored against the others (held out): the false-alarm rate its thresholds were set for;
* **known faulty caught** — labelled anomalous test clips decided anomalous (and normal test
  clips flagged), with the detector's decisions or the run's decision files.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from stetho.detector import KIND_NAMES, BaseDetector
from stetho.reporting.html import table_html

__all__ = ["held_out_counts", "plain_summary"]

Key = tuple[str, str]


class _Section(Protocol):
    key: Key
    labels: np.ndarray
    decisions: np.ndarray | None


def held_out_counts(detector: BaseDetector, key: Key) -> tuple[int, int] | None:
    """(flagged, total) of the key's held-out normal scores under its own threshold."""
    held = detector.held_out.get(key)
    if held is None or key not in detector.thresholds or not len(held.scores):
        return None
    flagged = int(np.asarray(detector.decide(held.scores, key)).sum())
    return flagged, len(held.scores)


def _of(k: int, n: int) -> str:
    return f"{k} of {n}"


def _detector_part(det: BaseDetector) -> tuple[list[str], dict[Key, list[str]]]:
    info = det.describe()
    rule = info.get("threshold_rule", {})
    alpha = rule.get("false_alarm")
    aim = (
        f" (its thresholds aim at false alarms on {float(alpha):.0%} of normal clips)"
        if alpha is not None and rule.get("method") == "conformal"
        else f" (threshold rule: {rule.get('method', 'unknown')})"
    )
    rows: dict[Key, list[str]] = {}
    learned = flagged = total = 0
    for key in det.keys:
        held = det.held_out.get(key)
        n = 0 if held is None else len(held.scores)
        counts = held_out_counts(det, key)
        thr = det.thresholds.get(key)
        thr_txt = (
            "none" if thr is None else ("never anomalous" if not np.isfinite(thr) else f"{thr:.4g}")
        )
        rows[key] = [str(n or "n/a"), thr_txt, "n/a" if counts is None else _of(*counts)]
        learned += n
        if counts is not None:
            flagged, total = flagged + counts[0], total + counts[1]
    name = KIND_NAMES.get(det.kind, det.kind)
    lines = [
        f"The detector is a {html.escape(name)} (id {html.escape(str(info.get('id', ''))[:12])}, "
        f"version {info.get('version', 1)}). It has models of {len(det.keys)} machine/section(s)"
        + (f", learned from {learned} normal recording(s)." if learned else ".")
    ]
    if total:
        lines.append(
            f"On its own normal recordings, each scored against the others, it flags "
            f"{_of(flagged, total)} as anomalous{aim}."
        )
    never = [f"{m}/{s}" for (m, s), t in det.thresholds.items() if not np.isfinite(t)]
    if never:
        lines.append(
            f"No threshold could be fitted for {', '.join(never)} (too few or identical normal "
            "recordings): those are never called anomalous; record more normal operation."
        )
    return lines, rows


def _test_part(sections: Sequence[_Section]) -> tuple[list[str], dict[Key, list[str]]]:
    rows: dict[Key, list[str]] = {}
    caught = faulty = flagged = normal = 0
    for sd in sections:
        if sd.decisions is None:
            continue
        y, d = np.asarray(sd.labels), np.asarray(sd.decisions)
        c, f = int(((y == 1) & (d == 1)).sum()), int(((y == 0) & (d == 1)).sum())
        nf, nn = int((y == 1).sum()), int((y == 0).sum())
        rows[sd.key] = [_of(c, nf), _of(f, nn)]
        caught, faulty, flagged, normal = caught + c, faulty + nf, flagged + f, normal + nn
    if not rows:
        return [], rows
    return [
        f"On the labelled test clips it catches {_of(caught, faulty)} known faulty clip(s) and "
        f"flags {_of(flagged, normal)} normal one(s)."
    ], rows


def plain_summary(detector: BaseDetector | None, sections: Sequence[Any]) -> str:
    """HTML: a few sentences and one table per machine/section (empty when nothing is known).

    Args:
        detector: The run's detector (None: only the test counts are given).
        sections: Per-section data with ``key``, ``labels`` (0/1) and ``decisions`` (0/1 or
            None).
    """
    lines: list[str] = []
    det_rows: dict[Key, list[str]] = {}
    if detector is not None:
        lines, det_rows = _detector_part(detector)
    test_lines, test_rows = _test_part(sections)
    if detector is None and test_lines:
        test_lines = [test_lines[0].replace("it catches", "the decision files catch", 1)]
    lines += test_lines
    if not lines:
        return ""
    header = ["machine/section"]
    if detector is not None:
        header += ["normal recordings learned", "threshold", "own normals flagged"]
    if test_rows:
        header += ["known faulty caught", "test normals flagged"]
    keys = sorted(set(det_rows) | set(test_rows))
    table = [header] + [
        [f"{m}/{s}"]
        + (det_rows.get((m, s), ["n/a"] * 3) if detector is not None else [])
        + (test_rows.get((m, s), ["n/a"] * 2) if test_rows else [])
        for m, s in keys
    ]
    paragraph = " ".join(lines)
    return f'<h3>In plain words</h3><p class="plain">{paragraph}</p>' + table_html(table)
