"""Grouping clips by (machine, section) and the grouped scores and decisions every scorer shares."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stetho.data import Clip, group_by_key
from stetho.scoring.grouped import decisions_by_key, scores_by_key


def _clip(machine: str, section: str, name: str) -> Clip:
    return Clip(
        Path(f"/d/{machine}/{name}"), name, machine, section, "source", "normal", "test",
        "dev", 2023, None,
    )  # fmt: skip


CLIPS = [
    _clip("valve", "00", "c.wav"),
    _clip("fan", "01", "b.wav"),
    _clip("fan", "00", "z.wav"),
    _clip("fan", "01", "a.wav"),
]


def test_group_by_key_sorts_keys_and_keeps_clip_order() -> None:
    groups = group_by_key(iter(CLIPS))  # any iterable
    assert list(groups) == [("fan", "00"), ("fan", "01"), ("valve", "00")]
    assert [c.name for c in groups[("fan", "01")]] == ["b.wav", "a.wav"]


def test_scores_and_decisions_by_key_pair_each_clip_with_its_own_score() -> None:
    calls: list[tuple[tuple[str, str], list[str]]] = []

    def score_files(paths: list[Path], key: tuple[str, str]) -> np.ndarray:
        calls.append((key, [p.name for p in paths]))
        return np.array([len(key[0]) + i for i in range(len(paths))], dtype=np.float64)

    scores = scores_by_key(CLIPS, score_files)
    assert calls == [
        (("fan", "00"), ["z.wav"]),
        (("fan", "01"), ["b.wav", "a.wav"]),
        (("valve", "00"), ["c.wav"]),
    ]
    assert scores == {
        ("fan", "00"): {"z.wav": 3.0},
        ("fan", "01"): {"b.wav": 3.0, "a.wav": 4.0},
        ("valve", "00"): {"c.wav": 5.0},
    }
    thresholds = {("fan", "00"): 3.5, ("fan", "01"): 3.5, ("valve", "00"): 4.0}
    decisions = decisions_by_key(
        scores, lambda s, key: (np.asarray(s) > thresholds[key]).astype(int)
    )
    assert decisions == {
        ("fan", "00"): {"z.wav": 0},
        ("fan", "01"): {"b.wav": 0, "a.wav": 1},
        ("valve", "00"): {"c.wav": 1},
    }
