"""Audio loading: WAV/FLAC via soundfile, channel selection, soxr resampling, strict error checks.

All DCASE Task 2 data 2020–2025 is mono 16 kHz. Multichannel files (8-channel MIMII, the 2026
stereo data) are reduced to one channel: by default channel 0, which in the 2026 data is the near
microphone = the legacy mono signal; ``channel="mix"`` averages all channels instead.

This is the one decoding path of stetho: files on disk, HTTP request bodies and uploaded bytes all
go through :func:`load_audio` (a path, ``bytes`` or a binary file object), so they get the same
checks, the same clipping of float data and the same errors. Non-finite samples (NaN/Inf in float
WAV/FLAC data) are always refused; ``max_seconds`` refuses overlong audio from its header, before
any sample is decoded (a tiny FLAC can declare hours of silence).

Limits (docs/hardening.md, "Audio input limits and watched folders"): a file may declare at most
``max_samples`` decoded samples (frames × channels at the file's own rate, default
:data:`MAX_SAMPLES`) and a rate of at most :data:`MAX_RATE` Hz, both checked from the header
before decoding. Decoding runs block by block (:data:`BLOCK_SAMPLES` samples of all channels at
a time); only the channel(s) asked for are kept and resampled as they come (soxr's streaming
resampler, bit-identical to resampling the whole clip), so memory follows the *output*, not the
file's rate × channels.
"""

from __future__ import annotations

import io
import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import numpy as np
import soundfile as sf
import soxr

from stetho.utils.errors import StethoError

__all__ = [
    "BLOCK_SAMPLES",
    "MAX_RATE",
    "MAX_SAMPLES",
    "AudioError",
    "AudioInfo",
    "AudioSource",
    "AudioTooLarge",
    "audio_info",
    "load_audio",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
#: What :func:`load_audio` reads: a file path, the bytes of a file, or a binary file object.
AudioSource = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]

#: Default bound on the samples a file may declare: frames × channels at the file's own rate
#: (2**27 = 134,217,728: 2.3 h of mono 16 kHz, 23 min of mono 96 kHz, 17 min of 8 channels at
#: 16 kHz). Decoding time grows with it; memory does not (see the module docstring). Not in the
#: paper: a limit against decode bombs (a 475 KB FLAC can declare 599 s × 96 kHz × 8 channels).
MAX_SAMPLES = 1 << 27
#: Highest sample rate accepted in a file header (Hz).
MAX_RATE = 768_000
#: Samples (all channels together) decoded at once: the decode buffer is 4 × this many bytes.
BLOCK_SAMPLES = 1 << 20


class AudioError(StethoError, RuntimeError):
    """An audio file could not be read (corrupt, empty, truncated, not audio, bad channel,
    non-finite samples, too long)."""

    http_status = 422


class AudioTooLarge(AudioError):
    """The header declares more audio than allowed (duration, samples or rate): refused before
    decoding."""

    http_status = 413


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file.

    Attributes:
        path: The file (for in-memory audio: its ``name``, e.g. ``<request body>``).
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

    @property
    def is_float(self) -> bool:
        """True for float-encoded samples (the only encodings that can hold NaN/Inf)."""
        return self.subtype.upper() in ("FLOAT", "DOUBLE")


class _Source:
    """A path or an in-memory/file-object source with the name used in error messages."""

    def __init__(self, source: AudioSource, name: str | None) -> None:
        self.path: Path | None = None
        self.fileobj: IO[bytes] | None = None
        if isinstance(source, str | os.PathLike):
            self.path = Path(source)
            self.name = name or str(self.path)
            return
        if isinstance(source, bytes | bytearray | memoryview):
            fileobj: IO[bytes] = io.BytesIO(bytes(source))
        else:
            fileobj = source
            if not (hasattr(fileobj, "read") and _seekable(fileobj)):
                fileobj = io.BytesIO(fileobj.read())  # e.g. a pipe: soundfile needs to seek
        self.fileobj = fileobj
        self.start = fileobj.tell()
        self.name = name or str(getattr(source, "name", "") or "<audio data>")

    def size(self) -> int:
        if self.path is not None:
            return self.path.stat().st_size
        assert self.fileobj is not None
        end = self.fileobj.seek(0, io.SEEK_END)
        self.fileobj.seek(self.start)
        return end - self.start

    def handle(self) -> str | IO[bytes]:
        """What soundfile opens (rewound to the start for file objects)."""
        if self.path is not None:
            return str(self.path)
        assert self.fileobj is not None
        self.fileobj.seek(self.start)
        return self.fileobj

    def read_at(self, pos: int, n: int) -> bytes:
        if self.path is not None:
            with open(self.path, "rb") as fh:
                fh.seek(pos)
                return fh.read(n)
        assert self.fileobj is not None
        self.fileobj.seek(self.start + pos)
        data = self.fileobj.read(n)
        self.fileobj.seek(self.start)
        return data


def _seekable(fileobj: IO[bytes]) -> bool:
    try:
        return bool(fileobj.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _riff_data_shortfall(src: _Source) -> tuple[int, int] | None:
    """For a RIFF/WAVE file whose ``data`` chunk claims more bytes than the file holds, return
    ``(declared, available)``; None when the file is complete or not a plain RIFF file."""
    try:
        size = src.size()
        head = src.read_at(0, 12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            chunk_id, chunk_size = struct.unpack("<4sI", src.read_at(pos, 8))
            if chunk_id == b"data":
                available = size - (pos + 8)
                if chunk_size not in (0, 0xFFFFFFFF) and chunk_size > available:
                    return chunk_size, available
                return None
            pos += 8 + chunk_size + (chunk_size & 1)
    except (OSError, struct.error, ValueError):
        return None
    return None


def _open_info(src: _Source) -> sf._SoundFileInfo:
    if src.path is not None:
        if not src.path.exists():
            raise AudioError(f"audio file not found: {src.name}")
        if not src.path.is_file():
            raise AudioError(f"not a regular file: {src.name}")
    try:
        size = src.size()
    except OSError as err:
        raise AudioError(f"cannot read {src.name}: {err}") from err
    if size == 0:
        raise AudioError(f"empty file (0 bytes), not audio: {src.name}")
    try:
        return sf.info(src.handle())
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError) as err:
        raise AudioError(f"cannot read audio header of {src.name}: {err}") from err


def _info(src: _Source) -> AudioInfo:
    info = _open_info(src)
    if short := _riff_data_shortfall(src):
        raise AudioError(
            f"truncated audio file {src.name}: header declares {short[0]} data bytes, "
            f"only {short[1]} present"
        )
    if info.frames <= 0:
        raise AudioError(f"audio file has no samples (0 frames): {src.name}")
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError(
            f"invalid audio header in {src.name}: rate {info.samplerate}, channels {info.channels}"
        )
    return AudioInfo(
        path=src.path if src.path is not None else Path(src.name),
        samplerate=int(info.samplerate),
        channels=int(info.channels),
        frames=int(info.frames),
        seconds=info.frames / info.samplerate,
        format=str(info.format),
        subtype=str(info.subtype),
    )


def _check_finite(data: np.ndarray, name: str, offset: int = 0) -> None:
    """Refuse NaN/Inf samples, naming the source and the first bad frame."""
    finite = np.isfinite(data)
    if finite.all():
        return
    bad = data.size - int(finite.sum())
    first = offset + int(np.argwhere(~finite)[0][0])
    raise AudioError(
        f"{name}: {bad} sample(s) are not finite (NaN or Inf), first at frame {first}; "
        "the recording is corrupt: re-record or remove it"
    )


def _check_size(
    info: AudioInfo, name: str, max_seconds: float | None, max_samples: int | None
) -> None:
    """Refuse, from the header alone, audio that is too long, too fast or has too many samples."""
    if max_seconds is not None and info.seconds > max_seconds:
        raise AudioTooLarge(
            f"{name} is {info.seconds:.6g} s long ({info.frames} frames at {info.samplerate} Hz), "
            f"more than the limit of {max_seconds:g} s"
        )
    if info.samplerate > MAX_RATE:
        raise AudioTooLarge(
            f"{name} declares a sample rate of {info.samplerate} Hz, more than the limit of "
            f"{MAX_RATE} Hz: resample it first (e.g. sox in.wav -r 48000 out.wav)"
        )
    samples = info.frames * info.channels
    if max_samples is not None and samples > max_samples:
        raise AudioTooLarge(
            f"{name} declares {samples} samples ({info.seconds:.6g} s × {info.samplerate} Hz × "
            f"{info.channels} channel(s)), more than the limit of {max_samples} samples: split "
            "it into shorter files or keep fewer channels (limit: max_samples, "
            "stetho.data.audio.MAX_SAMPLES)"
        )


def audio_info(
    source: AudioSource,
    *,
    check_samples: bool = False,
    max_seconds: float | None = None,
    max_samples: int | None = None,
    name: str | None = None,
) -> AudioInfo:
    """Read the header of an audio file (no sample data is decoded unless ``check_samples``).

    Args:
        source: A file path, the file's bytes, or a seekable binary file object.
        check_samples: Also decode float-encoded files block by block and refuse NaN/Inf samples
            and a sample count short of the header's (integer PCM cannot hold NaN/Inf and is
            not decoded).
        max_seconds: Refuse audio longer than this (from the header).
        max_samples: Refuse audio declaring more samples (frames × channels) than this
            (default None: reading a header decodes nothing; :func:`load_audio` applies
            :data:`MAX_SAMPLES`).
        name: How the source is named in error messages (default: the path or file name).

    Raises:
        AudioError: missing, empty, corrupt, non-audio, 0-frame, truncated or too long, or
            (``check_samples``) non-finite samples; :class:`AudioTooLarge` for the limits.
    """
    src = _Source(source, name)
    info = _info(src)
    _check_size(info, src.name, max_seconds, max_samples)
    if check_samples and info.is_float:
        seen = 0
        for block in _blocks(src, info):
            _check_finite(block, src.name, seen)
            seen += block.shape[0]
        if seen != info.frames:
            raise AudioError(
                f"truncated or corrupt audio file {src.name}: header declares {info.frames} "
                f"frames, decoded {seen}"
            )
    return info


def _check_channel(channel: int | Literal["mix"] | None, n_ch: int, name: str) -> None:
    if isinstance(channel, str):
        if channel != "mix":
            raise AudioError(
                f"invalid channel {channel!r} for {name}: expected an int in "
                f"[{-n_ch}, {n_ch - 1}], 'mix' or None"
            )
    elif channel is not None:
        if isinstance(channel, bool) or not isinstance(channel, int | np.integer):
            raise AudioError(f"invalid channel {channel!r} for {name}: expected int, 'mix' or None")
        if not -n_ch <= int(channel) < n_ch:
            raise AudioError(
                f"channel {channel} out of range for {name}: the file has {n_ch} channel(s), "
                f"valid indices are 0..{n_ch - 1} (or -{n_ch}..-1), or 'mix'"
            )


def _blocks(src: _Source, info: AudioInfo) -> Iterator[np.ndarray]:
    """The frames as blocks ``(n, C)`` float32 of at most :data:`BLOCK_SAMPLES` samples: memory
    follows one block, never the header's claim, and never more than its frame count is read."""
    step = max(1, BLOCK_SAMPLES // info.channels)
    left = info.frames
    try:
        fh = sf.SoundFile(src.handle())
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"cannot decode audio data of {src.name}: {err}") from err
    with fh:
        while left > 0:
            try:
                block = fh.read(min(left, step), dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, OSError) as err:
                raise AudioError(
                    f"cannot decode audio data of {src.name} (corrupt or truncated file): {err}"
                ) from err
            if block.shape[0] == 0:
                return
            left -= block.shape[0]
            yield block


def _pick(block: np.ndarray, channel: int | Literal["mix"] | None, mono: bool) -> np.ndarray:
    """The channel(s) kept of one block ``(n, C)``: ``(n,)``, or ``(n, C)`` for all channels."""
    if channel == "mix":
        return block.mean(axis=1)
    if channel is not None:
        return np.ascontiguousarray(block[:, int(channel)])
    if mono:
        return np.ascontiguousarray(block[:, 0])
    return block


def _decode(
    src: _Source,
    info: AudioInfo,
    channel: int | Literal["mix"] | None,
    mono: bool,
    sr: int | None,
) -> np.ndarray:
    """The kept channel(s) ``(N,)`` or ``(N, C)`` float32 at ``sr`` (or the file's rate),
    decoded and resampled block by block; refuses non-finite samples and truncated data."""
    resampler = None
    if sr is not None and sr != info.samplerate:
        width = info.channels if (channel is None and not mono) else 1
        resampler = soxr.ResampleStream(
            info.samplerate, int(sr), width, dtype="float32", quality="HQ"
        )
    parts: list[np.ndarray] = []
    seen = 0
    for block in _blocks(src, info):
        _check_finite(block, src.name, seen)
        seen += block.shape[0]
        part = _pick(block, channel, mono)
        parts.append(part if resampler is None else resampler.resample_chunk(part))
    if seen != info.frames:
        raise AudioError(
            f"truncated or corrupt audio file {src.name}: header declares {info.frames} frames, "
            f"decoded {seen}"
        )
    if resampler is not None:
        empty = np.zeros((0, *parts[0].shape[1:]), dtype=np.float32)
        parts.append(resampler.resample_chunk(empty, last=True))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def load_audio(
    source: AudioSource,
    sr: int | None = None,
    channel: int | Literal["mix"] | None = None,
    mono: bool = True,
    *,
    max_seconds: float | None = None,
    max_samples: int | None = MAX_SAMPLES,
    name: str | None = None,
) -> tuple[np.ndarray, int]:
    """Load an audio clip as float32 in [-1, 1].

    Args:
        source: WAV or FLAC (any libsndfile format, incl. WAVE_FORMAT_EXTENSIBLE multichannel):
            a file path, the file's bytes (e.g. an HTTP body), or a seekable binary file object.
        sr: Target rate; resampled with soxr (HQ) when it differs. None keeps the file's rate.
        channel: Channel index (0-based; negative indices count from the end), ``"mix"`` for
            the mean of all channels, or None: channel 0 of a multichannel file when ``mono``
            (the 2026 stereo data puts the legacy mono signal on channel 0).
        mono: With ``channel=None``: True returns one channel ``(N,)``; False returns all channels
            ``(C, N)`` (channels first; a mono file gives ``(1, N)``). Ignored when ``channel`` is
            given, which always yields ``(N,)``.
        max_seconds: Refuse audio longer than this, checked from the header before decoding.
        max_samples: Refuse audio whose header declares more samples (frames × channels at
            its own rate) than this, before decoding (default :data:`MAX_SAMPLES`; None: no
            limit). Memory follows the output, not this bound.
        name: How the source is named in error messages (default: the path; for bytes
            ``<audio data>``).

    Returns:
        ``(audio, rate)``: audio float32 ``(N,)`` or ``(C, N)``; rate = ``sr`` or the file's rate.
        Float data outside [-1, 1] is clipped.

    Raises:
        AudioError: corrupt / empty / truncated / non-audio file, non-finite (NaN/Inf) samples,
            longer than ``max_seconds``, or a channel out of range; the message names the file
            and the cause. :class:`AudioTooLarge` (an ``AudioError``) for the size limits.
    """
    src = _Source(source, name)
    info = _info(src)
    _check_size(info, src.name, max_seconds, max_samples)
    _check_channel(channel, info.channels, src.name)
    if sr is not None and (not isinstance(sr, int | np.integer) or sr <= 0):
        raise ValueError(f"sr must be a positive int or None, got {sr!r}")
    out = _decode(src, info, channel, mono, None if sr is None else int(sr))  # (N,) or (N, C)
    if out.ndim == 2:
        out = out.T  # (C, N)
    rate = info.samplerate if sr is None else int(sr)
    out = np.clip(np.ascontiguousarray(out, dtype=np.float32), -1.0, 1.0)
    return out, int(rate)
