"""Explanations: a tone burst is found where and at the frequency it was injected."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from stetho.data import load_audio, scan_dataset
from stetho.detector import Detector
from stetho.frontend.librosa_mel import hz_to_mel
from stetho.reporting import band_edges_hz, band_replace, explain_file, explain_waveform
from stetho.reporting.figures import plot_explanation

from .conftest import SR, hum, tone_burst

BURSTS = [(0.6, 3000.0), (2.7, 1000.0), (1.5, 6000.0), (3.2, 1500.0), (0.2, 7000.0)]


@pytest.mark.parametrize(("start", "freq"), BURSTS)
@pytest.mark.parametrize("fill", ["nearest", "median"])
def test_tone_burst_is_localised_in_time_and_frequency(
    fitted_detector: Path, start: float, freq: float, fill: str
) -> None:
    det = Detector.load(fitted_detector)
    rng = np.random.default_rng(int(start * 10 + freq))
    length = 0.5
    x = hum(rng) + tone_burst(int(4.0 * SR), start, length, freq)
    ex = explain_waveform(det, x, "fan", "00", load_nearest=fill == "nearest")
    assert ex.band_fill == fill
    assert ex.threshold is not None and ex.score > ex.threshold  # the burst is an anomaly
    # time: the peak window's centre lies within one window of the burst's centre
    t0, t1 = ex.peak_seconds()
    assert abs((t0 + t1) / 2 - (start + length / 2)) <= ex.window_seconds
    # frequency: the most important band group is the injected one or a neighbour
    injected = int(np.searchsorted(ex.band_edges, freq, side="right")) - 1
    assert abs(ex.peak_band - injected) <= 1
    assert ex.band_importance[ex.peak_band] > 0


def test_band_edges_have_equal_mel_width() -> None:
    edges = band_edges_hz(16000, 8)
    assert edges[0] == 0.0 and edges[-1] == 8000.0
    widths = np.diff(np.asarray(hz_to_mel(edges)))
    np.testing.assert_allclose(widths, widths[0], rtol=1e-9)


def test_band_replace_removes_a_tone_and_keeps_the_rest() -> None:
    t = np.arange(SR) / SR
    x = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.5 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)
    out = band_replace(x, SR, [(2500.0, 3500.0)], reference=np.zeros(SR, dtype=np.float32))[0]
    spec_in, spec_out = np.abs(np.fft.rfft(x)), np.abs(np.fft.rfft(out))
    f = np.fft.rfftfreq(SR, 1 / SR)
    at = {hz: int(np.argmin(np.abs(f - hz))) for hz in (440, 3000)}
    assert spec_out[at[3000]] < 1e-3 * spec_in[at[3000]]
    np.testing.assert_allclose(spec_out[at[440]], spec_in[at[440]], rtol=1e-3)
    # filling a band from the clip itself gives the clip back (STFT round trip)
    same = band_replace(x, SR, [(2500.0, 3500.0)], reference=x)[0]
    np.testing.assert_allclose(same, x, atol=1e-5)


def test_nearest_normal_is_the_bank_clip_with_the_smallest_distance(
    fitted_detector: Path, synth_root: Path
) -> None:
    det = Detector.load(fitted_detector)
    train = [c for c in scan_dataset(synth_root) if c.split == "train"]
    test = next(c for c in scan_dataset(synth_root) if c.split == "test" and c.label == "anomaly")
    ex = explain_file(det, test.path)
    assert (ex.machine, ex.section) == ("fan", "00")
    # independent check in float64: cosine distances to every training clip's embedding
    q = det.embed_files([test.path]).astype(np.float64)[0]
    bank = det.embed_files([c.path for c in train]).astype(np.float64)
    dist = 1 - bank @ q / (np.linalg.norm(bank, axis=1) * np.linalg.norm(q))
    assert ex.nearest_name == train[int(np.argmin(dist))].name
    assert ex.nearest_distance == pytest.approx(dist.min(), abs=1e-5)
    assert ex.score == pytest.approx(dist.min(), abs=1e-5)  # k = 1: the score is that distance
    assert ex.nearest_spectrogram is not None
    png = plot_explanation(ex)
    assert png.startswith(b"\x89PNG")


def _as_pre_manifest_folder(folder: Path) -> None:
    import json

    meta = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**meta, "format_version": 1}))
    (folder / "manifest.json").unlink()


def test_old_detector_folder_without_clip_names_still_explains(
    fitted_detector: Path, tmp_path: Path, synth_root: Path
) -> None:
    old = tmp_path / "old"
    shutil.copytree(fitted_detector, old)
    (old / "bank_clips.json").unlink()
    _as_pre_manifest_folder(old)  # old folders predate both bank_clips.json and the manifest
    det = Detector.load(old)
    test = next(c for c in scan_dataset(synth_root) if c.split == "test")
    ex = explain_file(det, test.path)
    assert ex.nearest_name is None and ex.nearest_domain is not None
    assert ex.band_fill == "median"
    assert "does not record" in ex.summary()
    assert plot_explanation(ex).startswith(b"\x89PNG")


def test_mismatched_bank_clips_file_is_ignored(fitted_detector: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(fitted_detector, bad)
    _as_pre_manifest_folder(bad)  # with a manifest, an altered file is refused outright
    (bad / "bank_clips.json").write_text('{"banks": {"fan/00/source": ["x.wav"]}}')
    det = Detector.load(bad)
    assert det.scorer.refs == {}
    (bad / "bank_clips.json").write_text("not json")
    assert Detector.load(bad).scorer.refs == {}


def test_explain_resamples_and_names_unknown_sections(fitted_detector: Path) -> None:
    det = Detector.load(fitted_detector)
    rng = np.random.default_rng(0)
    x = hum(rng, sr=32000)
    ex = explain_waveform(det, x, "fan", "00", sample_rate=32000, window_seconds=2.0)
    assert ex.sample_rate == SR and ex.duration == pytest.approx(4.0, abs=1e-3)
    assert ex.window_seconds == 2.0 and ex.hop_seconds == 1.0
    with pytest.raises(KeyError, match="fan"):
        explain_waveform(det, x, "pump", "00")


def test_explain_cli_writes_png_and_json(
    fitted_detector: Path, synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from stetho.cli import main

    clip = next(c for c in scan_dataset(synth_root) if c.label == "anomaly")
    out = tmp_path / "ex"
    assert (
        main(["explain", str(clip.path), "--detector", str(fitted_detector), "--out", str(out)])
        == 0
    )
    stem = Path(clip.name).stem
    assert (out / f"{stem}.png").read_bytes().startswith(b"\x89PNG")
    assert "nearest normal clip" in capsys.readouterr().out
    wave, _ = load_audio(clip.path)
    assert wave.size == 4 * SR


def test_long_recordings_get_a_bounded_number_of_windows(fitted_detector: Path) -> None:
    det = Detector.load(fitted_detector)
    x = np.concatenate([hum(np.random.default_rng(i)) for i in range(3)])  # 12 s
    ex = explain_waveform(det, x, "fan", "00", max_windows=6, n_bands=4)
    assert ex.window_starts.size == 6 and ex.time_scores.size == 6
    assert ex.window_starts[0] == 0 and ex.window_starts[-1] + ex.window_seconds == 12.0
    assert ex.band_scores.size == 4


def test_summary_says_when_no_window_or_band_stands_out(fitted_detector: Path) -> None:
    import dataclasses

    det = Detector.load(fitted_detector)
    ex = explain_waveform(det, hum(np.random.default_rng(1)), "fan", "00")
    # a fault that spans the clip: making any one window or band normal raises the score
    spread = dataclasses.replace(
        ex, time_scores=np.full_like(ex.time_scores, ex.score + 1.0),
        band_scores=np.full_like(ex.band_scores, ex.score + 0.5))  # fmt: skip
    text = spread.summary()
    assert "no single 1 s stretch stands out" in text and "spans the clip" in text
    assert "no single band stands out" in text and "lowers the score by -" not in text
    # a localised one: the window and band are named with a positive effect
    local = dataclasses.replace(
        ex, time_scores=np.r_[ex.score - 2.0, np.full(ex.time_scores.size - 1, ex.score)],
        band_scores=np.r_[np.full(ex.band_scores.size - 1, ex.score), ex.score - 1.0])  # fmt: skip
    t0, t1 = local.peak_seconds()
    assert f"most anomalous {t0:.2f}-{t1:.2f} s (making it normal lowers the score by 2" in (
        local.summary()
    )
    f0, f1 = local.peak_band_hz()
    assert f"{f0:.0f}-{f1:.0f} Hz (making it normal lowers the score by 1" in local.summary()
