"""``stetho watch`` reads WAV/FLAC with their header (stdin pipe or ``--input``), raw PCM only with
its format given; scores equal the detector's Python API on the same windows."""

from __future__ import annotations

import io
import os
import re
import sys
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stetho.cli.main import main
from stetho.data import load_audio
from stetho.detector import Detector
from stetho.serving.stream import RawFormat, score_audio_stream
from stetho.utils.errors import InputError

WINDOW, HOP = 2.0, 1.0
_LINE = re.compile(
    r"^\s*([\d.]+)s-\s*([\d.]+)s\s+score (-?[\d.]+)(?:\s+normalised -?[\d.]+)?\s+(\S+)$"
)


@pytest.fixture(scope="module")
def detector_dir(detector: Detector, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return detector.save(tmp_path_factory.mktemp("watch_det") / "detector")


@pytest.fixture(scope="module")
def clip(shared_dir: Path) -> Path:
    clips = sorted((shared_dir / "data/dcase2023t2_mini/dev_data/raw/fan/train").glob("*.wav"))
    if not clips:
        pytest.skip("no real fan clip in the shared folder")
    return clips[0]


def _reference(det: Detector, wave: np.ndarray) -> list[float]:
    """The detector's own scores of the windows watch cuts (each window scored alone)."""
    sr, w, h = det.sample_rate, round(WINDOW * det.sample_rate), round(HOP * det.sample_rate)
    return [
        float(det.score_waveforms([wave[a : a + w]], "fan", "00")[0])
        for a in range(0, wave.shape[0] - w + 1, h)
    ] or pytest.fail(f"clip shorter than a window at {sr} Hz")


@contextmanager
def _stdin_pipe(data: bytes) -> Iterator[None]:
    """sys.stdin replaced by a real pipe (not seekable) that a thread fills with ``data``."""
    r, w = os.pipe()

    def feed() -> None:
        try:
            with os.fdopen(w, "wb") as fh:
                fh.write(data)
        except BrokenPipeError:  # the reader refused the input early
            pass

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    old = sys.stdin
    with os.fdopen(r, "rb") as reader:
        sys.stdin = types.SimpleNamespace(buffer=reader)  # type: ignore[assignment]
        try:
            yield
        finally:
            sys.stdin = old
    t.join(30)


def _watch(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[float], str]:
    code = main(["watch", *args, "--machine", "fan", "--section", "00"])
    out, err = capsys.readouterr()
    scores = [float(m.group(3)) for line in out.splitlines() if (m := _LINE.match(line))]
    return code, scores, err


def _args(detector_dir: Path) -> list[str]:
    return ["--detector", str(detector_dir), "--window", str(WINDOW), "--hop", str(HOP)]


def test_wav_piped_into_watch_scores_like_the_python_api(
    detector_dir: Path, clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    det = Detector.load(detector_dir)
    wave, _ = load_audio(clip, sr=det.sample_rate)
    want = _reference(det, wave)
    with _stdin_pipe(clip.read_bytes()):
        code, got, err = _watch(_args(detector_dir), capsys)
    assert code == 0, err
    assert len(got) == len(want) == 9  # 10 s clip, 2 s windows, 1 s hop
    # printed with 6 decimals: rounding ≤ 5e-7
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # --input FILE reads the same header
    code, from_file, err = _watch([*_args(detector_dir), "--input", str(clip)], capsys)
    assert code == 0, err
    np.testing.assert_allclose(from_file, want, rtol=0, atol=1e-6)
    # the same samples as raw PCM, their format given, still work
    pcm = sf.read(clip, dtype="int16")[0].astype("<i2").tobytes()
    with _stdin_pipe(pcm):
        code, raw, err = _watch(
            [*_args(detector_dir), "--dtype", "int16", "--rate", "16000"], capsys
        )
    assert code == 0, err
    np.testing.assert_allclose(raw, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("via", ["pipe", "file"])
def test_stereo_flac_at_another_rate_is_resampled_like_load_audio(
    detector: Detector, clip: Path, tmp_path: Path, via: str
) -> None:
    mono, sr = sf.read(clip, dtype="float32")
    right = mono[::-1].copy()
    flac = tmp_path / "stereo.flac"
    wide = np.stack([mono, right], axis=1)  # (N, 2) at 16 kHz, written at 44.1 kHz below
    import soxr

    sf.write(flac, soxr.resample(wide, sr, 44100), 44100, subtype="PCM_24", format="FLAC")
    wave, _ = load_audio(flac, sr=detector.sample_rate, channel=1)
    want = _reference(detector, wave)
    source = io.BytesIO(flac.read_bytes())
    if via == "pipe":  # a stream that cannot seek
        source.seekable = lambda: False  # type: ignore[method-assign]
    events = list(
        score_audio_stream(
            source, detector=detector, machine="fan", section="00", channel=1,
            window_seconds=WINDOW, hop_seconds=HOP, expect_channels=2, name="stereo.flac",
        )
    )  # fmt: skip
    assert [e.t_start for e in events] == pytest.approx([float(k) for k in range(len(want))])
    np.testing.assert_allclose([e.score for e in events], want, rtol=0, atol=1e-6)


def test_pcm_float_wav_from_a_pipe_is_followed_to_its_declared_end(
    detector: Detector, clip: Path
) -> None:
    """Float WAV from a pipe, with a chunk after the data that must not be read as samples."""
    wave, _ = load_audio(clip, sr=detector.sample_rate)
    buf = io.BytesIO()
    sf.write(
        buf, wave[: 4 * detector.sample_rate], detector.sample_rate, subtype="FLOAT", format="WAV"
    )
    data = buf.getvalue() + b"LIST" + (400).to_bytes(4, "little") + b"\x7f" * 400
    source = io.BytesIO(data)
    source.seekable = lambda: False  # type: ignore[method-assign]
    events = list(
        score_audio_stream(source, detector=detector, machine="fan", section="00",
                           window_seconds=WINDOW, hop_seconds=HOP)
    )  # fmt: skip
    want = _reference(detector, wave[: 4 * detector.sample_rate])
    assert len(events) == len(want) == 3
    np.testing.assert_allclose([e.score for e in events], want, rtol=0, atol=1e-6)


def test_input_errors_name_the_input(
    detector_dir: Path, clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # headerless bytes without a format: refused, not guessed
    with _stdin_pipe(b"\x01\x02" * 40000):
        code, _, err = _watch(_args(detector_dir), capsys)
    assert code == 2 and "<stdin>" in err and "--dtype" in err and "neither WAV nor FLAC" in err
    # a WAV header with a raw format given
    with _stdin_pipe(clip.read_bytes()):
        code, _, err = _watch([*_args(detector_dir), "--dtype", "int16", "--rate", "16000"], capsys)
    assert code == 2 and "starts with a WAV header" in err
    # a header contradicting --rate / --channels / --channel-index
    code, _, err = _watch([*_args(detector_dir), "--input", str(clip), "--rate", "8000"], capsys)
    assert code == 2 and str(clip) in err and "16000 Hz" in err and "--rate 8000" in err
    code, _, err = _watch([*_args(detector_dir), "--input", str(clip), "--channels", "2"], capsys)
    assert code == 2 and "1 channel(s)" in err
    code, _, err = _watch(
        [*_args(detector_dir), "--input", str(clip), "--channel-index", "1"], capsys
    )
    assert code == 2 and "channel 1 does not exist" in err
    # --dtype without --rate
    code, _, err = _watch([*_args(detector_dir), "--dtype", "int16"], capsys)
    assert code == 2 and "--rate" in err
    # a broken header behind the magic
    with _stdin_pipe(b"RIFF\x00\x00\x00\x00WAVEjunkjunk"):
        code, _, err = _watch(_args(detector_dir), capsys)
    assert code == 2 and "<stdin>" in err


def test_library_refuses_headerless_input_without_a_format(detector: Detector) -> None:
    with pytest.raises(InputError, match=r"mic: .*neither WAV nor FLAC|mic is neither"):
        list(score_audio_stream(io.BytesIO(b"\x00" * 100), detector=detector, machine="fan",
                                section="00", name="mic"))  # fmt: skip
    events = list(
        score_audio_stream(
            io.BytesIO(np.zeros(16000, "<i2").tobytes()), detector=detector, machine="fan",
            section="00", raw=RawFormat(16000), window_seconds=0.5, hop_seconds=0.5,
        )
    )  # fmt: skip
    assert len(events) == 2
