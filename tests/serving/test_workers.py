"""Folder scoring with decoding workers gives the same records as the in-process loop."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from stetho.data import ClipTable
from stetho.detector import Detector
from stetho.serving import score_paths


def test_workers_give_identical_records(
    detector: Detector, serving_data: tuple[Path, ClipTable], tmp_path: Path
) -> None:
    root, _ = serving_data
    folder = tmp_path / "dev_data"
    shutil.copytree(root / "dev_data", folder)
    broken = folder / "raw" / "fan" / "test" / "section_00_source_test_normal_0999_x.wav"
    broken.write_bytes(b"RIFF0000WAVEjunk")
    base = score_paths(detector, [folder])
    par = score_paths(detector, [folder], num_workers=2)
    assert [r.path for r in par] == [r.path for r in base]
    assert [r.error is None for r in par] == [r.error is None for r in base]
    assert sum(not r.ok for r in par) == 1 and not next(r for r in par if r.path == broken).ok
    assert [r.score for r in par] == [r.score for r in base]  # bit-identical
    assert [r.decision for r in par] == [r.decision for r in base]


def test_embed_files_with_workers(detector: Detector, serving_data: tuple[Path, ClipTable]) -> None:
    _, table = serving_data
    paths = [c.path for c in table.filter(split="test")]
    a = detector.embed_files(paths)
    b = detector.embed_files(paths, num_workers=2)
    np.testing.assert_array_equal(a, b)
    key = table.filter(split="test").sections()[0]
    paths_k = [c.path for c in table.filter(split="test", key=key)]
    np.testing.assert_array_equal(
        detector.score_files(paths_k, *key, num_workers=2), detector.score_files(paths_k, *key)
    )
