"""Scoring files and folders: key resolution, error records, CSV and text output."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stetho.data import AudioError, ClipTable
from stetho.detector import Detector
from stetho.serving import (
    CSV_COLUMNS,
    KeyResolutionError,
    format_records,
    score_paths,
    write_records_csv,
)
from tests.numerics import SCORE_ATOL

# scores of different batchings: CPU-dependent kernels, re-run by .ci/run
pytestmark = pytest.mark.float_sensitive


def test_folder_is_walked_and_keys_inferred_from_the_layout(
    detector: Detector, serving_data: tuple[Path, ClipTable]
) -> None:
    root, table = serving_data
    test = table.filter(split="test")
    records = score_paths(detector, [root / "dev_data"])
    assert len(records) == len(table)  # every .wav below the folder, train and test
    by_path = {r.path: r for r in records}
    assert all(r.ok for r in records)
    for key in test.sections():
        clips = list(test.filter(key=key))
        want = detector.score_files([c.path for c in clips], *key)
        for clip, w in zip(clips, want):
            rec = by_path[clip.path]
            assert (rec.machine, rec.section) == key
            assert rec.score == pytest.approx(float(w), rel=1e-5, abs=SCORE_ATOL)
            assert rec.threshold == detector.thresholds[key]
            assert rec.decision == int(rec.score > rec.threshold)


def test_explicit_key_and_single_key_detector(
    detector: Detector,
    single_key_detector: Detector,
    serving_data: tuple[Path, ClipTable],
    tmp_path: Path,
) -> None:
    _, table = serving_data
    clip = next(iter(table.filter(split="test", machine="valve")))
    loose = tmp_path / "recording.wav"  # no DCASE name, no machine folder
    shutil.copy(clip.path, loose)
    # multi-key detector: cannot infer → error record that lists the keys
    (rec,) = score_paths(detector, [loose])
    assert not rec.ok and rec.score is None
    assert "recording.wav" in rec.error and "fan/00" in rec.error and "valve/00" in rec.error
    with pytest.raises(KeyResolutionError, match="valve/00"):
        score_paths(detector, [loose], on_error="raise")
    # explicit key (section normalised)
    (rec,) = score_paths(detector, [loose], machine="valve", section="0")
    assert (rec.machine, rec.section) == ("valve", "00") and rec.ok
    want = detector.score_files([clip.path], "valve", "00")[0]
    assert rec.score == pytest.approx(float(want), rel=1e-5, abs=SCORE_ATOL)
    # unknown machine → error naming the valid keys
    (bad,) = score_paths(detector, [loose], machine="pump", section="00")
    assert "pump" in bad.error and "it knows: fan/00, valve/00" in bad.error
    # single-key detector: its only key is used
    (one,) = score_paths(single_key_detector, [loose])
    assert (one.machine, one.section) == ("fan", "00") and one.ok
    assert one.threshold == single_key_detector.thresholds[("fan", "00")]


def test_bad_audio_and_missing_paths_become_error_records(
    detector: Detector, serving_data: tuple[Path, ClipTable], tmp_path: Path
) -> None:
    _, table = serving_data
    good = next(iter(table.filter(split="test", machine="fan")))
    folder = tmp_path / "fan" / "test"
    folder.mkdir(parents=True)
    shutil.copy(good.path, folder / good.name)
    broken = folder / "section_00_source_test_normal_0999_spd_30_ld_1.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not audio")
    missing = tmp_path / "nope.wav"
    records = score_paths(detector, [tmp_path / "fan", missing])
    assert [r.path.name for r in records] == [*sorted([broken.name, good.name]), "nope.wav"]
    by_name = {r.path.name: r for r in records}
    bad, ok, gone = by_name[broken.name], by_name[good.name], by_name["nope.wav"]
    assert ok.ok and ok.machine == "fan"
    assert not bad.ok and broken.name in bad.error and (bad.machine, bad.section) == ("fan", "00")
    assert not gone.ok and "no such file" in gone.error
    with pytest.raises(AudioError, match=re.escape(broken.name)):
        score_paths(detector, [folder], on_error="raise")
    with pytest.raises(FileNotFoundError, match=r"nope\.wav"):
        score_paths(detector, [missing], on_error="raise")
    with pytest.raises(ValueError, match="on_error"):
        score_paths(detector, [missing], on_error="ignore")  # type: ignore[arg-type]

    text = format_records(records)
    assert good.name in text and broken.name in text and "ERROR" in text
    assert "3 file(s): 1 scored" in text and "2 error(s)" in text


def test_too_short_audio_becomes_an_error_record_and_others_are_scored(
    detector: Detector, serving_data: tuple[Path, ClipTable], tmp_path: Path
) -> None:
    _, table = serving_data
    goods = list(table.filter(split="test", machine="fan"))[:2]
    folder = tmp_path / "fan" / "test"
    folder.mkdir(parents=True)
    for c in goods:
        shutil.copy(c.path, folder / c.name)
    short = folder / "section_00_source_test_normal_0998_spd_30_ld_1.wav"
    sf.write(short, np.zeros(100, np.float32), 16000)  # 6 ms: below the model's minimum length
    records = score_paths(detector, [tmp_path / "fan"], on_error="report")
    by_name = {r.path.name: r for r in records}
    assert sorted(by_name) == sorted([short.name, *(c.name for c in goods)])
    bad = by_name[short.name]
    assert not bad.ok and bad.score is None and bad.decision is None
    assert short.name in bad.error and "100 samples" in bad.error
    assert (bad.machine, bad.section) == ("fan", "00")
    # the chunk with the short clip is scored file by file: compare with single-file scores
    want = [detector.score_files([c.path], "fan", "00")[0] for c in goods]
    for c, w in zip(goods, want):
        rec = by_name[c.name]
        assert rec.ok and rec.score == pytest.approx(float(w), rel=0, abs=SCORE_ATOL)
        assert rec.decision == int(rec.score > detector.thresholds[("fan", "00")])
    with pytest.raises(ValueError, match=re.escape(short.name)):
        score_paths(detector, [tmp_path / "fan"], on_error="raise")


def test_write_records_csv_round_trips(
    detector: Detector, serving_data: tuple[Path, ClipTable], tmp_path: Path
) -> None:
    root, table = serving_data
    records = score_paths(
        detector, [root / "dev_data" / "raw" / "valve" / "test", tmp_path / "x.wav"]
    )
    out = write_records_csv(records, tmp_path / "out" / "scores.csv")
    assert sorted(p.name for p in out.parent.iterdir()) == ["scores.csv"]  # no temp file left
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(records) == len(table.filter(split="test", machine="valve")) + 1
    for row, rec in zip(rows, records):
        assert row["path"] == str(rec.path)
        if rec.ok:
            assert float(row["score"]) == rec.score  # repr round-trips exactly
            assert int(row["decision"]) == rec.decision and row["error"] == ""
        else:
            assert row["score"] == "" and "x.wav" in row["error"]
