"""load_audio / audio_info: real mono and 8-channel clips, resampling, and every error case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stetho.data import AudioError, audio_info, load_audio


def _write(path: Path, x: np.ndarray, sr: int = 16000, subtype: str = "PCM_16") -> Path:
    sf.write(str(path), x, sr, subtype=subtype)
    return path


def _tone(sr: int, seconds: float, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(sr * seconds)) / sr
    return amp * np.sin(2 * np.pi * freq * t)


# --- real data -----------------------------------------------------------------------------


def test_real_mimii_8ch_channels_and_mix(shared_dir: Path) -> None:
    files = sorted((shared_dir / "data" / "mimii_8ch").glob("*.wav"))
    assert len(files) == 8
    for path in files:
        info = audio_info(path)
        assert (info.channels, info.samplerate, info.frames) == (8, 16000, 160000)
        assert info.format == "WAVEX"  # WAVE_FORMAT_EXTENSIBLE
        ref, _ = sf.read(str(path), dtype="float32")  # (N, 8)
        x0, sr = load_audio(path)  # default: channel 0
        assert sr == 16000 and x0.dtype == np.float32 and x0.shape == (160000,)
        np.testing.assert_array_equal(x0, ref[:, 0])
        for ch in (3, 7, -1):
            xc, _ = load_audio(path, channel=ch)
            np.testing.assert_array_equal(xc, ref[:, ch])
        mix, _ = load_audio(path, channel="mix")
        np.testing.assert_allclose(mix, ref.mean(axis=1), atol=1e-7)
        assert not np.array_equal(mix, x0)  # really a mix-down, not channel 0
        allc, _ = load_audio(path, mono=False)
        assert allc.shape == (8, 160000)
        np.testing.assert_array_equal(allc, ref.T)


def test_real_mimii_channel_out_of_range(shared_dir: Path) -> None:
    path = shared_dir / "data" / "mimii_8ch" / "fan_normal.wav"
    for bad in (8, -9, 100):
        with pytest.raises(AudioError) as err:
            load_audio(path, channel=bad)
        msg = str(err.value)
        assert str(path) in msg and "0..7" in msg and str(bad) in msg
    with pytest.raises(AudioError, match="mix"):
        load_audio(path, channel="left")  # type: ignore[arg-type]


def test_real_2023_clips_mono_16k(shared_dir: Path) -> None:
    files = sorted((shared_dir / "data" / "dcase2023t2_mini").rglob("*.wav"))
    assert len(files) == 28
    for path in files:
        x, sr = load_audio(path)
        machine = path.parts[-3]
        expected = 12.0 if machine in ("ToyCar", "ToyTrain") else 10.0
        assert sr == 16000 and x.ndim == 1 and x.dtype == np.float32
        assert len(x) == round(expected * 16000), path
        assert np.abs(x).max() <= 1.0 and np.abs(x).max() > 0


def test_real_resample_to_32k(shared_dir: Path) -> None:
    path = shared_dir / "data" / "mimii_8ch" / "pump_normal.wav"
    x, sr = load_audio(path, sr=32000, channel="mix")
    assert sr == 32000 and x.shape == (320000,) and x.dtype == np.float32


# --- synthetic files -------------------------------------------------------------------------


@pytest.mark.parametrize("target_sr", [8000, 22050, 44100])
def test_resampling_accuracy(tmp_path: Path, target_sr: int) -> None:
    path = _write(tmp_path / "tone.wav", _tone(16000, 1.0, 1000.0), subtype="FLOAT")
    y, sr = load_audio(path, sr=target_sr)
    assert sr == target_sr and len(y) == target_sr
    ref = _tone(target_sr, 1.0, 1000.0)
    core = slice(target_sr // 10, -target_sr // 10)  # away from the edges
    assert np.max(np.abs(y[core] - ref[core])) < 1e-5  # measured ~1.6e-7 (soxr HQ)


def test_flac_equals_wav(tmp_path: Path) -> None:
    x = np.round(_tone(16000, 0.5, 300.0, 0.3) * 32767).astype(np.int16)  # exact in both
    w = _write(tmp_path / "a.wav", x)
    f = _write(tmp_path / "a.flac", x)
    a, _ = load_audio(w)
    b, _ = load_audio(f)
    np.testing.assert_array_equal(a, b)
    assert audio_info(f).format == "FLAC"


def test_mono_file_shapes_and_info(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.wav", _tone(16000, 0.25))
    x, sr = load_audio(path, mono=False)
    assert x.shape == (1, 4000) and sr == 16000
    x, _ = load_audio(path, channel=0)
    assert x.shape == (4000,)
    info = audio_info(path)
    assert (info.samplerate, info.channels, info.frames, info.seconds) == (16000, 1, 4000, 0.25)
    assert info.subtype == "PCM_16"


def test_stereo_default_is_channel0(tmp_path: Path) -> None:
    left, right = _tone(16000, 0.2, 200.0), _tone(16000, 0.2, 900.0)
    path = _write(tmp_path / "s.wav", np.stack([left, right], axis=1), subtype="FLOAT")
    x, _ = load_audio(path)
    np.testing.assert_allclose(x, left, atol=1e-7)
    x, _ = load_audio(path, channel=1)
    np.testing.assert_allclose(x, right, atol=1e-7)
    x, _ = load_audio(path, channel="mix")
    np.testing.assert_allclose(x, (left + right) / 2, atol=1e-7)


def test_float_file_is_clipped_to_unit_range(tmp_path: Path) -> None:
    path = _write(tmp_path / "loud.wav", np.array([0.0, 1.5, -2.0, 0.25]), subtype="FLOAT")
    x, _ = load_audio(path)
    np.testing.assert_array_equal(x, np.array([0.0, 1.0, -1.0, 0.25], dtype=np.float32))


def _wav_bytes(tmp_path: Path) -> bytes:
    return _write(tmp_path / "ok.wav", _tone(16000, 0.5)).read_bytes()


def _corrupt_header(tmp_path: Path) -> Path:
    b = bytearray(_wav_bytes(tmp_path))
    b[12:36] = b"\xff" * 24  # destroy the fmt chunk
    (p := tmp_path / "corrupt_header.wav").write_bytes(bytes(b))
    return p


def _empty(tmp_path: Path) -> Path:
    (p := tmp_path / "empty.wav").write_bytes(b"")
    return p


def _zero_frames(tmp_path: Path) -> Path:
    return _write(tmp_path / "zero_frames.wav", np.zeros(0))


def _truncated(tmp_path: Path) -> Path:
    b = _wav_bytes(tmp_path)
    (p := tmp_path / "truncated.wav").write_bytes(b[: len(b) // 2])
    return p


def _header_only(tmp_path: Path) -> Path:
    (p := tmp_path / "header_only.wav").write_bytes(_wav_bytes(tmp_path)[:44])
    return p


def _text(tmp_path: Path) -> Path:
    (p := tmp_path / "notes.wav").write_text("this is a text file, not audio\n" * 20)
    return p


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "does_not_exist.wav"


@pytest.mark.parametrize(
    ("make", "cause"),
    [
        (_corrupt_header, "header"),
        (_empty, "empty"),
        (_zero_frames, "0 frames"),
        (_truncated, "truncated"),
        (_header_only, "truncated"),
        (_text, "header"),
        (_missing, "not found"),
    ],
)
def test_bad_files_raise_audio_error(tmp_path: Path, make, cause: str) -> None:  # type: ignore[no-untyped-def]
    path = make(tmp_path)
    for fn in (load_audio, audio_info):
        with pytest.raises(AudioError) as err:
            fn(path)
        msg = str(err.value)
        assert str(path) in msg, msg
        assert cause in msg, msg


def test_truncated_flac_raises(tmp_path: Path) -> None:
    b = _write(
        tmp_path / "ok.flac", np.random.default_rng(0).uniform(-0.5, 0.5, 16000)
    ).read_bytes()
    path = tmp_path / "cut.flac"
    path.write_bytes(b[: len(b) // 2])
    with pytest.raises(AudioError) as err:
        load_audio(path)
    assert str(path) in str(err.value) and "corrupt or truncated" in str(err.value)


def test_audio_error_is_runtime_error() -> None:
    assert issubclass(AudioError, RuntimeError)
