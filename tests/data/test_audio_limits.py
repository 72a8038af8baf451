"""Decode bombs by rate × channels: refused from the header; accepted files decode in bounded
memory (one block of all channels, the kept channel at the output rate)."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from stetho.data import AudioError, load_audio
from stetho.data.audio import MAX_SAMPLES, AudioTooLarge
from tests.badinput import RATE_CHANNEL_BOMBS, bomb_flac


@pytest.mark.parametrize("case", sorted(RATE_CHANNEL_BOMBS))
def test_rate_channel_bombs_are_refused_from_the_header(tmp_path: Path, case: str) -> None:
    seconds, rate, channels = RATE_CHANNEL_BOMBS[case]
    path = bomb_flac(tmp_path / f"{case}.flac", seconds, rate, channels)
    assert path.stat().st_size < 10_000  # a few KB declaring hundreds of millions of samples
    declared = round(seconds * rate) * channels
    assert declared > MAX_SAMPLES
    # within the duration limit serving uses (600 s): only the sample bound catches it
    tracemalloc.start()
    try:
        with pytest.raises(AudioTooLarge, match=rf"declares {declared} samples") as err:
            load_audio(path, sr=16000, max_seconds=600.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5e6, f"refused from the header, yet {peak / 1e6:.1f} MB were allocated"
    assert str(path) in str(err.value) and f"{channels} channel(s)" in str(err.value)
    with pytest.raises(AudioTooLarge, match="<request body>"):
        load_audio(io.BytesIO(path.read_bytes()), sr=16000, name="<request body>")
    # the bound can be raised (or lifted): the lying header is then caught while decoding
    with pytest.raises(AudioError, match="corrupt"):
        load_audio(path, channel=0, max_samples=None)


def test_rate_above_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fast.wav"
    sf.write(path, np.zeros(100, np.int16), 1_000_000, subtype="PCM_16")
    with pytest.raises(AudioTooLarge, match=r"1000000 Hz.*768000"):
        load_audio(path)


def _silence_flac(path: Path, seconds: float, rate: int, channels: int, tone: bool) -> Path:
    """A real FLAC (every declared sample present), written block by block."""
    t = np.arange(rate) / rate
    second = np.zeros((rate, channels), np.float32)
    if tone:
        second[:, 0] = 0.25 * np.sin(2 * np.pi * 440.0 * t)
        second[:, -1] = 0.1 * np.sin(2 * np.pi * 1000.0 * t)
    with sf.SoundFile(path, "w", rate, channels, subtype="PCM_16", format="FLAC") as fh:
        for _ in range(round(seconds)):
            fh.write(second)
    return path


def test_many_channels_at_a_high_rate_decode_in_bounded_memory(tmp_path: Path) -> None:
    # 30 s × 96 kHz × 8 channels = 23 M samples (92 MB as float32): under the sample bound
    path = _silence_flac(tmp_path / "wide.flac", 30, 96_000, 8, tone=True)
    tracemalloc.start()
    try:
        wave, rate = load_audio(path, sr=16000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rate == 16000 and wave.shape == (30 * 16000,)
    # output 1.9 MB + one decode block (4 MB) + resampler state; decoding everything at once
    # took > 92 MB. Generous bound.
    assert peak < 30e6, f"peak {peak / 1e6:.1f} MB while decoding 30 s × 96 kHz × 8 channels"


def test_block_decoding_equals_decoding_the_whole_clip(tmp_path: Path) -> None:
    """Channel choice, mix and streaming resampling block by block give what decoding the whole
    file and resampling it at once gives (bit for bit)."""
    path = _silence_flac(tmp_path / "tone.flac", 3, 44_100, 3, tone=True)
    data, sr = sf.read(path, dtype="float32", always_2d=True)  # (N, 3)
    import stetho.data.audio as audio

    small = 4096  # several blocks per file
    old = audio.BLOCK_SAMPLES
    audio.BLOCK_SAMPLES = small
    try:
        for channel, ref in (
            (None, data[:, 0]),
            (2, data[:, 2]),
            ("mix", data.mean(axis=1)),
        ):
            got, rate = load_audio(path, sr=16000, channel=channel)
            want = np.clip(soxr.resample(ref, sr, 16000, quality="HQ"), -1, 1)
            assert rate == 16000
            np.testing.assert_array_equal(got, want)
        every, _ = load_audio(path, sr=16000, mono=False)  # (C, N)
        want = np.clip(soxr.resample(data, sr, 16000, quality="HQ"), -1, 1).T
        np.testing.assert_array_equal(every, want)
        same, _ = load_audio(path, channel=1)  # no resampling
        np.testing.assert_array_equal(same, data[:, 1])
    finally:
        audio.BLOCK_SAMPLES = old
