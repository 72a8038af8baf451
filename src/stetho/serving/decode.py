"""Turn request bodies into waveforms: WAV/FLAC uploads and raw PCM, with size limits.

Uploads go through :func:`stetho.data.load_audio`, the decoder ``stetho detect`` uses, so a clip
scores the same over HTTP as from a file (same channel choice, resampling and clipping). The
duration is checked from the header *before* decoding: a small FLAC holding an hour of silence
is refused without allocating the hour.
"""

from __future__ import annotations

import io
import re
from http import HTTPStatus

import numpy as np
import soundfile as sf

from stetho.data import AudioError, load_audio
from stetho.data.audio import AudioTooLarge
from stetho.serving.stream import PCM_DTYPES
from stetho.utils.errors import StethoError

__all__ = ["RequestError", "decode_pcm", "decode_upload"]

#: Lowest and highest sample rates accepted for raw PCM.
MIN_RATE, MAX_RATE = 1000, 768_000


class RequestError(StethoError):
    """A client error with its HTTP status; the message is returned as ``{"error": …}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = int(status)
        self.http_status = self.status
        self.message = message
        self.headers = headers or {}


def _too_long(seconds: float, max_seconds: float) -> RequestError:
    return RequestError(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        f"the audio lasts {seconds:.1f} s, more than the limit of {max_seconds:g} s "
        "(server option --max-seconds); send shorter clips",
    )


def _header_seconds(body: bytes) -> float:
    """Duration from the audio header; raises 415 when the body is no known audio format."""
    try:
        info = sf.info(io.BytesIO(body))
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        why = re.sub(r"^Error opening <[^>]*>: ", "", str(err))
        raise RequestError(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            f"cannot decode the request body as WAV/FLAC audio ({len(body)} bytes): {why} "
            "send a WAV or FLAC file, or raw PCM with ?rate=…&format=…",
        ) from err
    if info.samplerate <= 0 or info.frames <= 0:
        raise RequestError(HTTPStatus.BAD_REQUEST, "the audio in the request body has no samples")
    return float(info.frames) / float(info.samplerate)


def decode_upload(body: bytes, sample_rate: int, max_seconds: float) -> tuple[np.ndarray, float]:
    """Decode a WAV/FLAC body to channel 0 at ``sample_rate`` (float32, clipped to [-1, 1]).

    Args:
        body: The file's bytes.
        sample_rate: The detector's rate (resampled with soxr HQ like ``stetho detect``).
        max_seconds: Longest accepted duration, checked from the header before decoding.

    Returns:
        ``(wave (N,), seconds)`` where ``seconds`` is the duration of the upload.

    Raises:
        RequestError: 400 empty/corrupt/truncated/non-finite audio, 413 too long or too many
            samples (:data:`stetho.data.audio.MAX_SAMPLES`, rate above
            :data:`~stetho.data.audio.MAX_RATE`), 415 not audio.
    """
    if not body:
        raise RequestError(HTTPStatus.BAD_REQUEST, "empty request body: send a WAV or FLAC file")
    seconds = _header_seconds(body)
    if seconds > max_seconds:
        raise _too_long(seconds, max_seconds)
    try:  # the one decoder: it also refuses NaN/Inf samples, naming the first bad frame, and
        # audio declaring too many samples (rate × channels × frames) before decoding
        wave, _ = load_audio(body, sr=sample_rate, max_seconds=max_seconds, name="<request body>")
    except AudioTooLarge as err:
        raise RequestError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"{err}; send shorter clips"
        ) from err
    except AudioError as err:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"bad audio in the request body: {err}") from err
    return wave, seconds


def decode_pcm(
    body: bytes,
    rate: int,
    fmt: str,
    channels: int,
    channel: int,
    sample_rate: int,
    max_seconds: float,
) -> tuple[np.ndarray, float]:
    """Decode raw interleaved little-endian PCM as ``stetho watch`` does, then resample/clip.

    Args:
        body: The samples.
        rate: Their rate in Hz.
        fmt: ``int16``, ``int32`` or ``float32``.
        channels: Interleaved channels; ``channel`` (0-based) is scored.
        sample_rate: The detector's rate.
        max_seconds: Longest accepted duration.

    Raises:
        RequestError: 400 bad parameters, length or samples; 413 too long.
    """
    if fmt not in PCM_DTYPES:
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            f"unknown PCM format {fmt!r}; use one of {', '.join(PCM_DTYPES)}",
        )
    if not MIN_RATE <= rate <= MAX_RATE:
        raise RequestError(
            HTTPStatus.BAD_REQUEST, f"rate must be in {MIN_RATE}..{MAX_RATE} Hz, got {rate}"
        )
    if channels < 1 or not 0 <= channel < channels:
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            f"channel {channel} out of range for {channels} channel(s) (0-based)",
        )
    dtype, scale = PCM_DTYPES[fmt]
    frame = np.dtype(dtype).itemsize * channels
    if not body or len(body) % frame:
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            f"raw PCM body of {len(body)} bytes is not a whole number of {fmt} frames "
            f"({frame} bytes each for {channels} channel(s))",
        )
    seconds = len(body) / frame / rate
    if seconds > max_seconds:
        raise _too_long(seconds, max_seconds)
    data = np.frombuffer(body, dtype=dtype).reshape(-1, channels)[:, channel]
    wave = data.astype(np.float32) * np.float32(scale)
    if not np.isfinite(wave).all():
        raise RequestError(HTTPStatus.BAD_REQUEST, "the raw PCM holds NaN or infinite samples")
    if rate != sample_rate:
        import soxr

        wave = soxr.resample(wave, rate, sample_rate, quality="HQ")
    return np.clip(np.ascontiguousarray(wave, dtype=np.float32), -1.0, 1.0), seconds
