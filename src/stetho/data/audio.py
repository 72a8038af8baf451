"""Audio loading: WAV/FLAC via soundfile, channel selection, soxr resampling, strict error checks.

All DCASE Task 2 data 2020–2025 is mono 16 kHz. Multichannel files (8-channel MIMII, the 2026
stereo data) are reduced to one channel: by default channel 0, which in the 2026 data is the near
microphone = the legacy mono signal; ``channel="mix"`` averages all channels instead.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import soxr

__all__ = ["AudioError", "AudioInfo", "audio_info", "load_audio"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


class AudioError(RuntimeError):
    """An audio file could not be read (corrupt, empty, truncated, not audio, bad channel)."""


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file.

    Attributes:
        path: The file.
        samplerate: Sampling rate in Hz.
        channels: Number of channels.
        frames: Number of sample frames (per channel).
        seconds: Duration, ``frames / samplerate``.
        format: Container as reported by libsndfile (e.g. "WAV", "FLAC").
        subtype: Sample encoding (e.g. "PCM_16").
    """

    path: Path
    samplerate: int
    channels: int
    frames: int
    seconds: float
    format: str
    subtype: str


def _riff_data_shortfall(path: Path) -> tuple[int, int] | None:
    """For a RIFF/WAVE file whose ``data`` chunk claims more bytes than the file holds, return
    ``(declared, available)``; None when the file is complete or not a plain RIFF file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            pos = 12
            while pos + 8 <= size:
                fh.seek(pos)
                chunk_id, chunk_size = struct.unpack("<4sI", fh.read(8))
                if chunk_id == b"data":
                    available = size - (pos + 8)
                    if chunk_size not in (0, 0xFFFFFFFF) and chunk_size > available:
                        return chunk_size, available
                    return None
                pos += 8 + chunk_size + (chunk_size & 1)
    except OSError:
        return None
    return None


def _open_info(path: Path) -> sf._SoundFileInfo:
    if not path.exists():
        raise AudioError(f"audio file not found: {path}")
    if not path.is_file():
        raise AudioError(f"not a regular file: {path}")
    if path.stat().st_size == 0:
        raise AudioError(f"empty file (0 bytes), not audio: {path}")
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"cannot read audio header of {path}: {err}") from err


def audio_info(path: PathLike) -> AudioInfo:
    """Read the header of an audio file (no sample data is decoded).

    Raises:
        AudioError: missing, empty, corrupt, non-audio, 0-frame, or truncated file.
    """
    path = Path(path)
    info = _open_info(path)
    if short := _riff_data_shortfall(path):
        raise AudioError(
            f"truncated audio file {path}: header declares {short[0]} data bytes, "
            f"only {short[1]} present"
        )
    if info.frames <= 0:
        raise AudioError(f"audio file has no samples (0 frames): {path}")
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError(
            f"invalid audio header in {path}: rate {info.samplerate}, channels {info.channels}"
        )
    return AudioInfo(
        path=path,
        samplerate=int(info.samplerate),
        channels=int(info.channels),
        frames=int(info.frames),
        seconds=info.frames / info.samplerate,
        format=str(info.format),
        subtype=str(info.subtype),
    )


def load_audio(
    path: PathLike,
    sr: int | None = None,
    channel: int | Literal["mix"] | None = None,
    mono: bool = True,
) -> tuple[np.ndarray, int]:
    """Load an audio clip as float32 in [-1, 1].

    Args:
        path: WAV or FLAC file (any libsndfile format, incl. WAVE_FORMAT_EXTENSIBLE multichannel).
        sr: Target rate; resampled with soxr (HQ) when it differs. None keeps the file's rate.
        channel: Channel index (0-based; negative indices count from the end), ``"mix"`` for
            the mean of all channels, or None: channel 0 of a multichannel file when ``mono``
            (the 2026 stereo data puts the legacy mono signal on channel 0).
        mono: With ``channel=None``: True returns one channel ``(N,)``; False returns all channels
            ``(C, N)`` (channels first; a mono file gives ``(1, N)``). Ignored when ``channel`` is
            given, which always yields ``(N,)``.

    Returns:
        ``(audio, rate)``: audio float32 ``(N,)`` or ``(C, N)``; rate = ``sr`` or the file's rate.

    Raises:
        AudioError: corrupt / empty / truncated / non-audio file, or a channel out of range; the
            message names the file and the cause.
    """
    path = Path(path)
    info = audio_info(path)
    n_ch = info.channels
    if isinstance(channel, str):
        if channel != "mix":
            raise AudioError(
                f"invalid channel {channel!r} for {path}: expected an int in "
                f"[{-n_ch}, {n_ch - 1}], 'mix' or None"
            )
    elif channel is not None:
        if isinstance(channel, bool) or not isinstance(channel, int | np.integer):
            raise AudioError(f"invalid channel {channel!r} for {path}: expected int, 'mix' or None")
        if not -n_ch <= int(channel) < n_ch:
            raise AudioError(
                f"channel {channel} out of range for {path}: the file has {n_ch} channel(s), "
                f"valid indices are 0..{n_ch - 1} (or -{n_ch}..-1), or 'mix'"
            )
    if sr is not None and (not isinstance(sr, int | np.integer) or sr <= 0):
        raise ValueError(f"sr must be a positive int or None, got {sr!r}")

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (N, C)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(
            f"cannot decode audio data of {path} (corrupt or truncated file): {err}"
        ) from err
    if data.shape[0] != info.frames:
        raise AudioError(
            f"truncated or corrupt audio file {path}: header declares {info.frames} frames, "
            f"decoded {data.shape[0]}"
        )

    if channel == "mix":
        out = data.mean(axis=1)  # (N,)
    elif channel is not None:
        out = data[:, int(channel)]  # (N,)
    elif mono:
        out = data[:, 0]  # (N,)
    else:
        out = data.T  # (C, N)

    if sr is not None and sr != rate:
        # soxr works on (N,) or (N, C)
        res = soxr.resample(out.T if out.ndim == 2 else out, rate, int(sr), quality="HQ")
        out = res.T if out.ndim == 2 else res
        rate = int(sr)
    out = np.clip(np.ascontiguousarray(out, dtype=np.float32), -1.0, 1.0)
    return out, int(rate)
