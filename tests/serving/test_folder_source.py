"""Monitor sources that must not lose recordings (#22 items 4 and 8): a file whose scoring raises,
a writer pausing longer than ``settle_seconds``, files copied in with an old mtime while the monitor
was stopped, window time stamps, and the growing WAV's last window when rates differ."""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

import stetho.serving.sources as sources
from stetho.data import load_audio
from stetho.detector import Detector
from stetho.serving.monitor_config import MonitorConfig
from stetho.serving.sources import BaseSource, DetectorHandle, Window, make_source
from tests.badinput import FOLDER_CASES

SR = 16000
WIN = 0.5


def wait_for(pred: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def noise(seed: int, seconds: float = 2.0, sr: int = SR) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.2 * rng.standard_normal(round(seconds * sr))).astype(np.float32)


def wav_bytes(wave: np.ndarray, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def detector_dir(detector: Detector, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return detector.save(tmp_path_factory.mktemp("folder_det") / "detector")


@pytest.fixture(scope="module")
def loaded(detector_dir: Path) -> Detector:
    return Detector.load(detector_dir)


class Sink:
    """Collects what a source stores: ``(windows, position)`` per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[Window], str | None]] = []

    def __call__(self, src: Any, det: Any, windows: list[Window], position: str | None) -> None:
        self.calls.append((list(windows), position))

    @property
    def windows(self) -> list[Window]:
        return [w for ws, _ in self.calls for w in ws]

    def handled(self, name: str) -> bool:
        """True once a stored position names the file (as handled, or as the newest file)."""
        positions = [json.loads(p) for _, p in self.calls if p is not None]
        return any(name in pos.get("files", {}) or pos.get("name") == name for pos in positions)


def make(detector_dir: Path, spec: dict[str, Any], position: str | None = None) -> BaseSource:
    cfg = MonitorConfig.from_dict(
        {"detector": str(detector_dir), "db": str(detector_dir / "unused.db"), "sources": [spec]}
    )
    handle = DetectorHandle(detector_dir, Detector.load)
    return make_source(
        cfg.sources[0],
        handle,
        window_seconds=WIN,
        hop_seconds=WIN,
        poll_seconds=0.02,
        last_position=lambda _name: position,
    )


@contextmanager
def running(src: BaseSource, sink: Sink) -> Iterator[list[BaseException]]:
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            src.run(sink, stop)
        except BaseException as err:  # the monitor would restart the source on it
            errors.append(err)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    try:
        yield errors
    finally:
        stop.set()
        t.join(30)
        assert not t.is_alive()


def reference(det: Detector, wave: np.ndarray) -> list[float]:
    n = round(WIN * det.sample_rate)
    return [
        float(det.score_waveforms([wave[a : a + n]], "fan", "00")[0])
        for a in range(0, wave.shape[0] - n + 1, n)
    ]


def test_a_file_whose_scoring_raises_is_marked_failed_and_later_files_go_on(
    tmp_path: Path, detector_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "raises" in FOLDER_CASES
    inbox = tmp_path / "in"
    inbox.mkdir()
    calls: dict[str, int] = {}
    real = sources.load_audio

    def load(path: Path, *args: Any, **kwargs: Any) -> Any:
        calls[Path(path).name] = calls.get(Path(path).name, 0) + 1
        if Path(path).name == "a_bomb.wav":
            raise MemoryError("cannot allocate 15 GB")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(sources, "load_audio", load)
    (inbox / "a_bomb.wav").write_bytes(wav_bytes(noise(1)))
    sink = Sink()
    src = make(detector_dir, {"kind": "folder", "path": str(inbox), "machine": "fan",
                              "settle_seconds": 0})  # fmt: skip
    with running(src, sink) as errors:
        wait_for(lambda: sink.handled("a_bomb.wav") or bool(errors), "the failing file")
        (inbox / "b_good.wav").write_bytes(wav_bytes(noise(2)))
        wait_for(lambda: sink.handled("b_good.wav") or bool(errors), "the next file")
        time.sleep(0.3)  # many polls: the failed file must not be retried
    assert not errors, errors
    assert calls == {"a_bomb.wav": 1, "b_good.wav": 1}
    assert len(sink.windows) == 1  # mode "file": one window, the good file's


@pytest.mark.parametrize("header", ["final", "open"])
def test_a_writer_pausing_longer_than_settle_is_scored_again_without_duplicates(
    tmp_path: Path, detector_dir: Path, loaded: Detector, header: str
) -> None:
    assert f"paused_writer_{header}_header" in FOLDER_CASES
    inbox = tmp_path / "in"
    inbox.mkdir()
    wave = noise(3)
    data = bytearray(wav_bytes(wave))
    if header == "open":  # a recorder that writes the sizes only when it closes the file
        data[4:8] = data[40:44] = struct.pack("<I", 0xFFFFFFFF)
    path = inbox / "rec.wav"
    path.write_bytes(bytes(data[: 44 + SR * 2]))  # 1 s of 2, then the writer pauses
    sink = Sink()
    src = make(detector_dir, {"kind": "folder", "path": str(inbox), "machine": "fan",
                              "settle_seconds": 0.2, "mode": "windows"})  # fmt: skip
    with running(src, sink) as errors:
        wait_for(lambda: sink.handled("rec.wav"), "the paused file")
        first = len(sink.windows)
        with open(path, "ab") as fh:  # the writer goes on
            fh.write(bytes(data[44 + SR * 2 :]))
        wait_for(lambda: len(sink.windows) >= 4 or bool(errors), "the rest of the recording")
        time.sleep(0.3)
    assert not errors, errors
    assert first == (0 if header == "final" else 2)  # truncated: refused; open: 1 s scored
    spans = [(w.t_start, w.t_end) for w in sink.windows]
    assert spans == [(0.0, 0.5), (0.5, 1.0), (1.0, 1.5), (1.5, 2.0)]  # no gap, no duplicate
    stored, _ = load_audio(path, sr=loaded.sample_rate)  # the 16-bit samples of the file
    np.testing.assert_allclose(
        [w.score for w in sink.windows], reference(loaded, stored), rtol=0, atol=1e-6
    )


def test_files_copied_in_with_old_mtimes_while_stopped_are_scored_and_stamped_now(
    tmp_path: Path, detector_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert "old_mtime" in FOLDER_CASES
    inbox = tmp_path / "in"
    inbox.mkdir()
    spec = {"kind": "folder", "path": str(inbox), "machine": "fan", "settle_seconds": 0}
    for i, name in enumerate(("a.wav", "b.wav")):
        (inbox / name).write_bytes(wav_bytes(noise(10 + i)))
    sink = Sink()
    with running(make(detector_dir, spec), sink) as errors:
        wait_for(lambda: sink.handled("a.wav") and sink.handled("b.wav"), "the first files")
    assert not errors, errors
    fresh = {w.time for w in sink.windows}
    mtimes = {
        datetime.fromtimestamp((inbox / n).stat().st_mtime_ns / 1e9, UTC)
        for n in ("a.wav", "b.wav")
    }
    assert fresh == mtimes  # a plausible mtime is the end of the recording
    position = sink.calls[-1][1]
    # while the monitor is stopped: a recording arrives with last year's mtime (cp -p, rsync -a)
    old = inbox / "0_old.wav"
    old.write_bytes(wav_bytes(noise(12)))
    year_ago = time.time() - 365 * 86400
    os.utime(old, (year_ago, year_ago))
    before = datetime.now(UTC) - timedelta(seconds=1)
    again = Sink()
    with (
        caplog.at_level(logging.INFO, logger="stetho.serving.sources"),
        running(make(detector_dir, spec, position), again) as errors,
    ):
        wait_for(lambda: again.handled("0_old.wav") or bool(errors), "the old-mtime file")
        time.sleep(0.3)
    assert not errors, errors
    assert len(again.windows) == 1  # only the new file; a and b are not scored twice
    # stamped with the time it was scored, not last year (retention would delete it)
    assert again.windows[0].time >= before
    assert "0_old.wav" in caplog.text and "older modification time" in caplog.text


def test_growing_wav_at_another_rate_scores_its_last_window(
    tmp_path: Path, detector_dir: Path, loaded: Detector
) -> None:
    rate = 48000
    wave = noise(4, 2.0, rate)
    path = tmp_path / "live.wav"
    path.write_bytes(wav_bytes(wave, rate))
    ref, _ = load_audio(path, sr=loaded.sample_rate)  # the whole 2 s file, resampled at once
    sink = Sink()
    src = make(detector_dir, {"kind": "wav", "path": str(path), "machine": "fan"})
    with running(src, sink) as errors:
        wait_for(lambda: len(sink.windows) >= 4 or bool(errors), "four windows")
        time.sleep(0.2)
        # the file grows again: windows go on where the next one starts
        with open(path, "r+b") as fh:
            more = wav_bytes(np.concatenate([wave, noise(5, 1.0, rate)]), rate)
            fh.write(more)
        wait_for(lambda: len(sink.windows) >= 6 or bool(errors), "six windows")
        time.sleep(0.2)
    assert not errors, errors
    spans = [(w.t_start, w.t_end) for w in sink.windows]
    assert spans == [(0.5 * k, 0.5 * k + 0.5) for k in range(6)]
    np.testing.assert_allclose(
        [w.score for w in sink.windows[:4]], reference(loaded, ref)[:4], rtol=0, atol=1e-6
    )
