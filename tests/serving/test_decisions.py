"""Serving decides with the detector's own ``decide`` (never ``score > threshold`` itself)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from stetho.data import ClipTable
from stetho.detector import Detector
from stetho.serving import StreamScorer, score_paths


def _inverted(det: Detector, monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, object]]:
    """Make ``det.decide`` the opposite of ``score > threshold``; returns its calls."""
    calls: list[tuple[object, object]] = []
    original = det.decide

    def decide(scores: np.ndarray | Sequence[float], key: object) -> np.ndarray:
        calls.append((list(np.asarray(scores, dtype=float)), key))
        return 1 - original(scores, key)  # type: ignore[arg-type]

    monkeypatch.setattr(det, "decide", decide)
    return calls


def test_score_paths_uses_the_detectors_decision(
    detector: Detector, serving_data: tuple[Path, ClipTable], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, table = serving_data
    paths = [c.path for c in table.filter(split="test", machine="fan")]
    plain = score_paths(detector, paths, machine="fan", section="00")
    calls = _inverted(detector, monkeypatch)
    flipped = score_paths(detector, paths, machine="fan", section="00")
    assert calls and all(key == ("fan", "00") for _, key in calls)
    assert [r.score for r in flipped] == [r.score for r in plain]
    assert [r.decision for r in flipped] == [1 - int(r.decision) for r in plain]  # type: ignore[arg-type]
    assert [r.threshold for r in flipped] == [detector.thresholds[("fan", "00")]] * len(paths)


def test_stream_uses_the_detectors_decision(
    detector: Detector, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    x = (0.2 * rng.standard_normal(2 * detector.sample_rate)).astype(np.float32)
    plain = StreamScorer(detector, "fan", "00", 0.5, 0.5)
    want = plain.push(x)
    calls = _inverted(detector, monkeypatch)
    got = StreamScorer(detector, "fan", "00", 0.5, 0.5).push(x)
    assert calls and len(got) == len(want) == 4
    assert [e.decision for e in got] == [1 - int(e.decision) for e in want]  # type: ignore[arg-type]
    assert [e.score for e in got] == [e.score for e in want]
