"""Robustness curves: SNR mixing is exact and deterministic, the clean point is the plain evaluation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stetho.data import scan_dataset
from stetho.detector import Detector
from stetho.evaluation import evaluate, truth_from_clips
from stetho.reporting import (
    NoiseError,
    RobustnessCurve,
    evaluate_under_noise,
    list_noise_files,
    mix_at_snr,
    noise_segment,
)


@pytest.mark.parametrize("snr", [30.0, 6.0, 0.0, -7.5])
def test_mix_hits_the_requested_snr(snr: float) -> None:
    rng = np.random.default_rng(0)
    clip = 0.3 * rng.standard_normal(16000)
    noise = 0.01 * rng.standard_normal(16000)
    mixed = mix_at_snr(clip, noise, snr).astype(np.float64)
    added = mixed - clip.astype(np.float32).astype(np.float64)
    measured = 20 * math.log10(np.sqrt(np.mean(clip**2)) / np.sqrt(np.mean(added**2)))
    assert measured == pytest.approx(snr, abs=1e-3)
    assert np.array_equal(mix_at_snr(clip, noise, math.inf), clip.astype(np.float32))


def test_mix_refuses_silence_and_length_mismatch() -> None:
    with pytest.raises(NoiseError, match="RMS"):
        mix_at_snr(np.zeros(10), np.ones(10), 0.0)
    with pytest.raises(NoiseError, match="equal length"):
        mix_at_snr(np.ones(10), np.ones(11), 0.0)


def test_noise_segment_is_seeded_looped_and_cropped() -> None:
    short = np.arange(7, dtype=np.float32)
    i, offset, seg = noise_segment([short], 30, "fan/00/a.wav", seed=1)
    assert i == 0 and 0 <= offset < 7 and seg.shape == (30,)
    np.testing.assert_array_equal(seg, (np.arange(30) + offset) % 7)  # looped from the offset
    again = noise_segment([short], 30, "fan/00/a.wav", seed=1)
    assert again[1] == offset and np.array_equal(again[2], seg)
    offsets = {noise_segment([np.arange(1000.0)], 5, f"c{k}", seed=1)[1] for k in range(20)}
    assert len(offsets) > 1  # different clips get different segments


def test_noise_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(NoiseError, match="does not exist"):
        list_noise_files(tmp_path / "nope")
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(NoiseError, match="no audio"):
        list_noise_files(tmp_path)


def test_curve_clean_point_equals_plain_evaluation(
    fitted_detector: Path, synth_root: Path, tmp_path: Path
) -> None:
    det = Detector.load(fitted_detector)
    noise = tmp_path / "noise"
    noise.mkdir()
    sf.write(noise / "n.wav", 0.1 * np.random.default_rng(1).standard_normal(12000), 16000)
    curve = evaluate_under_noise(det, synth_root, noise, [20, -20], progress=False)
    clips = [c for c in scan_dataset(synth_root) if c.split == "test"]
    plain = evaluate(det.score_clips(clips), truth_from_clips(clips), year=2023)
    assert [r["snr_db"] for r in curve.rows] == [math.inf, 20.0, -20.0]
    assert curve.rows[0]["official_score"] == pytest.approx(plain.official_score, abs=1e-12)
    assert curve.n_clips == len(clips) == 16
    # white noise 20 dB above the machine drowns the 0.1-amplitude bursts
    assert curve.rows[2]["official_score"] < curve.rows[0]["official_score"]
    paths = curve.write(tmp_path / "rob")
    data = json.loads(paths[0].read_text())
    assert data["rows"][0]["snr_db"] is None
    back = RobustnessCurve.from_dict(data)
    assert back.rows[1]["official_score"] == curve.rows[1]["official_score"]
    # same inputs → the same numbers (seeded noise choice)
    again = evaluate_under_noise(det, synth_root, noise, [20], progress=False)
    assert again.rows[1]["official_score"] == curve.rows[1]["official_score"]


def test_evaluate_noise_cli(
    fitted_detector: Path, synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from stetho.cli import main

    noise = tmp_path / "noise"
    noise.mkdir()
    sf.write(noise / "n.flac", 0.1 * np.random.default_rng(1).standard_normal(4000), 16000)
    out = tmp_path / "rob"
    argv = ["evaluate", "--noise", str(noise), "--snr", "10", "0", "--detector"]
    argv += [str(fitted_detector), "--data", str(synth_root), "--out", str(out)]
    assert main(argv) == 0
    assert "| clean |" in capsys.readouterr().out
    assert len(json.loads((out / "robustness.json").read_text())["rows"]) == 3
    assert main(["evaluate", "--noise", str(noise)]) == 2  # needs --detector and --data
    assert main(["evaluate", str(tmp_path)]) == 2  # needs --truth
