"""Stream scoring: window timing, scores equal to clip scoring, resampling, raw PCM input."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soxr

from stetho.detector import Detector
from stetho.serving import DEFAULT_WINDOW_SECONDS, StreamEvent, StreamScorer, score_pcm_stream
from stetho.serving.stream import _RingBuffer
from tests.numerics import SCORE_ATOL

# scores of different batchings: CPU-dependent kernels, re-run by .ci/run
pytestmark = pytest.mark.float_sensitive


def _signal(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 220.0 * t) + 0.05 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def test_ring_buffer_keeps_the_last_samples() -> None:
    ring = _RingBuffer(7)
    ref = np.zeros(0, dtype=np.float32)
    rng = np.random.default_rng(1)
    for size in (3, 1, 5, 0, 9, 2, 14, 6):
        x = rng.standard_normal(size).astype(np.float32)
        ring.extend(x)
        ref = np.concatenate([ref, x])
        n = min(7, ref.size)
        np.testing.assert_array_equal(ring.last(n), ref[ref.size - n :])
    with pytest.raises(ValueError):
        ring.last(8)


def test_events_at_the_right_times_and_scores_equal_clip_scores(detector: Detector) -> None:
    sr = detector.sample_rate
    x = _signal(2.0, sr)
    scorer = StreamScorer(detector, "fan", "00", window_seconds=0.5, hop_seconds=0.25)
    assert (scorer.window, scorer.hop) == (sr // 2, sr // 4)
    # nothing until the first window is complete, then exactly one event
    assert scorer.push(x[: sr // 2 - 1]) == []
    first = scorer.push(x[sr // 2 - 1 : sr // 2])
    assert len(first) == 1 and (first[0].t_start, first[0].t_end) == (0.0, 0.5)
    events = list(first)
    pos = sr // 2
    for size in (100, 3999, 1, 8000, 17):  # irregular blocks
        events += scorer.push(x[pos : pos + size])
        pos += size
    events += scorer.push(x[pos:])
    events += scorer.flush()  # no partial window
    starts = [e.t_start for e in events]
    assert starts == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5])
    assert all(e.t_end == pytest.approx(e.t_start + 0.5) for e in events)
    thr = detector.thresholds[("fan", "00")]
    for e in events:
        a, b = round(e.t_start * sr), round(e.t_end * sr)
        want = float(detector.score_waveforms(x[a:b], "fan", "00")[0])
        assert e.score == pytest.approx(want, rel=1e-5, abs=SCORE_ATOL)
        assert e.decision == int(e.score > thr)
        # anomalous windows carry their audio (the monitor keeps it for the alarm), others not
        if e.decision == 1:
            assert e.wave is not None and np.array_equal(e.wave, x[a:b])
        else:
            assert e.wave is None
    with pytest.raises(RuntimeError, match="flushed"):
        scorer.push(x[:10])
    scorer.reset()
    assert len(scorer.push(x[: sr // 2])) == 1


def test_resampled_stream_matches_resampling_the_whole_recording(detector: Detector) -> None:
    sr_in, sr = 44100, detector.sample_rate
    x = _signal(1.6, sr_in, seed=3)
    scorer = StreamScorer(detector, "valve", "00", 0.5, 0.5, input_rate=sr_in)
    events: list[StreamEvent] = []
    for start in range(0, x.size, 1234):
        events += scorer.push(x[start : start + 1234])
    events += scorer.flush()
    assert [e.t_start for e in events] == pytest.approx([0.0, 0.5, 1.0])
    y = soxr.resample(x, sr_in, sr, quality="HQ")  # (≈1.6·sr,)
    for e in events:
        a, b = round(e.t_start * sr), round(e.t_end * sr)
        want = float(detector.score_waveforms(y[a:b], "valve", "00")[0])
        assert e.score == pytest.approx(want, rel=1e-5, abs=SCORE_ATOL)


class _Trickle(io.RawIOBase):
    """A binary stream that returns at most ``n`` bytes per read (partial PCM frames)."""

    def __init__(self, data: bytes, n: int) -> None:
        self._buf = io.BytesIO(data)
        self._n = n

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._buf.read(min(self._n, size if size >= 0 else self._n))


def test_pcm_stream_from_a_binary_stream(detector: Detector) -> None:
    sr = detector.sample_rate
    left = _signal(1.25, sr, seed=5)
    right = _signal(1.25, sr, seed=6)
    pcm = np.clip(np.stack([left, right], axis=1) * 32768, -32768, 32767).astype("<i2")  # (N, 2)
    stream = _Trickle(pcm.tobytes(), n=777)  # odd sizes: frames split across reads
    events = list(
        score_pcm_stream(
            stream, sr, 2, "int16", detector=detector, machine="fan", section="00",
            window_seconds=0.5, hop_seconds=0.375, channel=0,
        )
    )  # fmt: skip
    assert [e.t_start for e in events] == pytest.approx([0.0, 0.375, 0.75])
    expected = pcm[:, 0].astype(np.float32) / 32768.0
    for e in events:
        a, b = round(e.t_start * sr), round(e.t_end * sr)
        want = float(detector.score_waveforms(expected[a:b], "fan", "00")[0])
        assert e.score == pytest.approx(want, rel=1e-5, abs=SCORE_ATOL)
    with pytest.raises(ValueError, match="dtype"):
        next(score_pcm_stream(io.BytesIO(b""), sr, dtype="int8", detector=detector,  # type: ignore[arg-type]
                              machine="fan", section="00"))  # fmt: skip
    with pytest.raises(ValueError, match="channel"):
        next(score_pcm_stream(io.BytesIO(b""), sr, 1, channel=1, detector=detector,
                              machine="fan", section="00"))  # fmt: skip


def test_defaults_and_errors(detector: Detector) -> None:
    scorer = StreamScorer(detector, "fan", "00")
    # the logmel detector scores whole clips → the 10 s default window, half-window hop
    assert scorer.window_seconds == DEFAULT_WINDOW_SECONDS
    assert scorer.hop_seconds == DEFAULT_WINDOW_SECONDS / 2
    with pytest.raises(KeyError, match="valid keys: fan/00, valve/00"):
        StreamScorer(detector, "pump", "00")
    # sections are normalised as in score_paths and the HTTP service
    for section in ("0", 0, "section_00"):
        same = StreamScorer(detector, "fan", section)
        assert (same.machine, same.section) == ("fan", "00")
        assert same.threshold == detector.thresholds[("fan", "00")]
    with pytest.raises(ValueError, match="float samples"):
        scorer.push(np.zeros(10, dtype=np.int16))
    with pytest.raises(ValueError, match="> 0"):
        StreamScorer(detector, "fan", "00", window_seconds=0.0)


@pytest.mark.parametrize("input_rate", [16000, 48000])
def test_nan_and_inf_skip_only_the_windows_they_touch(detector: Detector, input_rate: int) -> None:
    x = _signal(6.0, input_rate, seed=3)
    bad = x.copy()
    bad[int(2.5 * input_rate)] = np.nan  # in windows [1, 3) and [2, 4) (2 s windows, 1 s hop)
    bad[int(5.5 * input_rate)] = np.inf  # in windows [4, 6)
    clean = StreamScorer(detector, "fan", "00", 2.0, 1.0, input_rate=input_rate)
    want = {e.t_start: e.score for e in clean.push(x) + clean.flush()}
    scorer = StreamScorer(detector, "fan", "00", 2.0, 1.0, input_rate=input_rate)
    events = []
    for block in np.array_split(bad, 17):  # arbitrary block boundaries
        events += scorer.push(block)
    events += scorer.flush()
    starts = [e.t_start for e in events]
    assert starts == [0.0, 3.0]  # [1,3), [2,4), [4,6) skipped; the stream went on
    assert scorer.skipped == 3
    for e in events:
        assert np.isfinite(e.score)
        # the windows scored are those of the clean stream (NaN replaced only where skipped);
        # with resampling, the filter's reach ends well inside the next window
        assert e.score == pytest.approx(want[e.t_start], rel=1e-4, abs=1e-6)


def test_window_longer_than_an_hour_is_refused(detector: Detector) -> None:
    with pytest.raises(ValueError, match="at most 3600"):
        StreamScorer(detector, "fan", "00", window_seconds=1e9)
    with pytest.raises(ValueError, match="at most 3600"):
        StreamScorer(detector, "fan", "00", window_seconds=float("nan"))


def test_pcm_stream_shorter_than_a_window_raises(detector: Detector) -> None:
    with pytest.raises(ValueError, match=r"ended after 0\.500 s .*shorter than one window"):
        list(
            score_pcm_stream(
                io.BytesIO(np.zeros(8000, "<i2").tobytes()), 16000, detector=detector,
                machine="fan", section="00", window_seconds=1.0,
            )
        )  # fmt: skip
