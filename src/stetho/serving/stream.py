"""Score a continuous audio stream in sliding windows.

::

    scorer = StreamScorer(det, "fan", "00", window_seconds=10.0, hop_seconds=5.0, input_rate=48000)
    for block in microphone_blocks():                    # float32 (N,) at 48 kHz
        for ev in scorer.push(block):
            print(f"{ev.t_start:.1f}-{ev.t_end:.1f} s  score {ev.score:.4f}  decision {ev.decision}")
    scorer.flush()

    # WAV or FLAC on stdin or from a file (``arecord -f S16_LE -r 16000 | stetho watch …``)
    for ev in score_audio_stream(sys.stdin.buffer, detector=det, machine="fan", section="00"):
        ...

    # raw PCM on stdin, its format given (``arecord -t raw … | stetho watch --dtype int16 …``)
    for ev in score_pcm_stream(sys.stdin.buffer, 16000, 1, "int16", detector=det, machine="fan",
                               section="00"):
        ...

Samples are resampled to the detector's rate with soxr's streaming resampler when the input rate
differs (the result equals resampling the whole recording at once). Window ``k`` covers
``[k·hop, k·hop + window)`` seconds of the stream (at the detector's rate) and is scored exactly
like :meth:`Scorer.score_waveforms` scores a clip of those samples.

:func:`score_audio_stream` reads a WAV/FLAC container (header parsed, rate and channels checked)
or raw PCM when its format is given; a stream starting with a container's magic bytes is never
read as raw PCM.

Non-finite samples (NaN/Inf, e.g. a glitching float32 source) never end the stream: they are
replaced by silence before resampling, and every window that overlaps them is skipped and logged
(its score would be meaningless); the windows after them are scored as usual.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Literal

import numpy as np

from stetho.data.audio import BLOCK_SAMPLES, MAX_RATE, AudioError
from stetho.data.names import normalize_section
from stetho.utils.errors import InputError

if TYPE_CHECKING:
    from stetho.detector.scorer import Scorer

__all__ = [
    "DEFAULT_WINDOW_SECONDS",
    "MAX_WINDOW_SECONDS",
    "PCM_DTYPES",
    "RawFormat",
    "StreamEvent",
    "StreamScorer",
    "score_audio_stream",
    "score_pcm_stream",
]

logger = logging.getLogger(__name__)

#: Window length when the detector scores whole clips (spectrogram models).
DEFAULT_WINDOW_SECONDS = 10.0
#: Longest window (and hop) accepted: the ring buffer holds one window of samples in memory.
MAX_WINDOW_SECONDS = 3600.0
#: Raw PCM sample formats: name → (little-endian numpy dtype, scale to [-1, 1]).
PCM_DTYPES: dict[str, tuple[str, float]] = {
    "int16": ("<i2", 1.0 / 32768.0),
    "int32": ("<i4", 1.0 / 2147483648.0),
    "float32": ("<f4", 1.0),
}


@dataclass(frozen=True)
class StreamEvent:
    """The score of one window of the stream.

    Attributes:
        t_start, t_end: Window bounds in seconds since the start of the stream.
        score: Anomaly score (higher = more anomalous).
        decision: 1 = anomalous, 0 = normal, None without a fitted threshold.
        normalised: The normalised score (1.0 = the threshold), None without one.
        wave: The window's samples at the detector's rate, kept for anomalous windows only (so
            that a monitor can keep the audio of an alarm); None otherwise.
    """

    t_start: float
    t_end: float
    score: float
    decision: int | None
    normalised: float | None = None
    wave: np.ndarray | None = field(default=None, repr=False, compare=False)


class _RingBuffer:
    """The last ``capacity`` samples of a stream (float32)."""

    def __init__(self, capacity: int) -> None:
        self.buf = np.zeros(capacity, dtype=np.float32)  # (capacity,)
        self.written = 0  # samples written in total

    def extend(self, x: np.ndarray) -> None:
        cap = self.buf.shape[0]
        if x.shape[0] >= cap:
            self.buf[:] = x[-cap:]
            self.written += x.shape[0]
            # keep the invariant "sample j lives at j % cap"
            self.buf = np.roll(self.buf, self.written % cap)
            return
        pos = self.written % cap
        first = min(cap - pos, x.shape[0])
        self.buf[pos : pos + first] = x[:first]
        self.buf[: x.shape[0] - first] = x[first:]
        self.written += x.shape[0]

    def last(self, n: int) -> np.ndarray:
        """Copy of the last ``n`` samples, oldest first (``n <= capacity``)."""
        cap = self.buf.shape[0]
        if n > min(cap, self.written):
            raise ValueError(f"asked for {n} samples, only {min(cap, self.written)} buffered")
        end = self.written % cap
        idx = (np.arange(end - n, end)) % cap
        return self.buf[idx].copy()


class StreamScorer:
    """Sliding-window anomaly scores of a stream of samples.

    Args:
        detector: A fitted detector.
        machine, section: Which memory bank scores the stream (section as in
            :func:`~stetho.serving.files.normalize_section`: ``"0"``, ``0`` or ``"section_00"``
            mean ``"00"``).
        window_seconds: Window length; default: the detector's scoring window (its training crop,
            e.g. 2 s for waveform models), or :data:`DEFAULT_WINDOW_SECONDS` when it scores whole
            clips.
        hop_seconds: Step between windows (default: half a window).
        input_rate: Rate of the pushed samples (default: the detector's rate).

    Raises:
        KeyError: the detector has no model for (machine, section) (the message lists its keys).
        ValueError: non-positive or overlong (> :data:`MAX_WINDOW_SECONDS`) window/hop, bad rate.
    """

    def __init__(
        self,
        detector: Scorer,
        machine: str,
        section: str | int,
        window_seconds: float | None = None,
        hop_seconds: float | None = None,
        input_rate: int | None = None,
    ) -> None:
        key = (str(machine), normalize_section(section))
        if key not in list(detector.keys):
            valid = ", ".join(f"{m}/{s}" for m, s in detector.keys) or "none"
            raise KeyError(f"the detector has no model for {key[0]}/{key[1]}; valid keys: {valid}")
        self.detector = detector
        self.machine, self.section = key
        self.sample_rate = int(detector.sample_rate)
        if window_seconds is None:
            window_seconds = detector.window_seconds()
            if window_seconds is None:
                window_seconds = DEFAULT_WINDOW_SECONDS
        if hop_seconds is None:
            hop_seconds = window_seconds / 2
        for what, value in (("window_seconds", window_seconds), ("hop_seconds", hop_seconds)):
            if not 0 < value <= MAX_WINDOW_SECONDS:  # also refuses NaN
                raise ValueError(
                    f"{what} must be > 0 and at most {MAX_WINDOW_SECONDS:g} s, got {value}"
                )
        self.window = max(1, round(window_seconds * self.sample_rate))  # samples
        self.hop = max(1, round(hop_seconds * self.sample_rate))  # samples
        self.input_rate = int(input_rate) if input_rate is not None else self.sample_rate
        if self.input_rate <= 0:
            raise ValueError(f"input_rate must be > 0, got {input_rate}")
        self.threshold: float | None = detector.thresholds.get(key)
        self.reset()

    @property
    def window_seconds(self) -> float:
        """Window length in seconds (at the detector's rate)."""
        return self.window / self.sample_rate

    @property
    def hop_seconds(self) -> float:
        """Hop in seconds."""
        return self.hop / self.sample_rate

    def reset(self) -> None:
        """Forget the buffered samples and restart the clock at 0."""
        self._ring = _RingBuffer(self.window)
        self._next_end = self.window  # absolute sample index (exclusive) of the next window end
        self._resampler = None
        if self.input_rate != self.sample_rate:
            import soxr

            self._resampler = soxr.ResampleStream(
                self.input_rate, self.sample_rate, 1, dtype="float32", quality="HQ"
            )
        self._flushed = False
        self._pushed = 0  # input samples pushed so far
        self._bad: list[tuple[int, int]] = []  # [start, end) at the detector's rate, non-finite
        self.skipped = 0  # windows skipped for non-finite samples

    def _mark_non_finite(self, x: np.ndarray) -> np.ndarray:
        """Replace NaN/Inf by 0 and remember where they were (at the detector's rate)."""
        bad = ~np.isfinite(x)
        if not bad.any():
            return x
        idx = np.flatnonzero(bad)
        ratio = self.sample_rate / self.input_rate
        # widen by the resampler's reach (a few ms) so no window touched by them is scored
        reach = 0 if self._resampler is None else round(0.01 * self.sample_rate)
        start = int((self._pushed + idx[0]) * ratio) - reach
        end = int(np.ceil((self._pushed + idx[-1] + 1) * ratio)) + reach
        self._bad.append((max(0, start), end))
        return np.where(bad, np.float32(0.0), x)

    def _as_mono(self, samples: np.ndarray) -> np.ndarray:
        x = np.asarray(samples)
        if x.ndim == 2:  # (N, C): channel 0, as load_audio does
            x = x[:, 0]
        elif x.ndim != 1:
            raise ValueError(f"expected samples (N,) or (N, channels), got shape {x.shape}")
        if x.dtype.kind in "iu":
            raise ValueError(
                f"expected float samples in [-1, 1], got {x.dtype}; convert PCM integers first "
                "(or use score_pcm_stream)"
            )
        return np.ascontiguousarray(x, dtype=np.float32)

    def push(self, samples: np.ndarray) -> list[StreamEvent]:
        """Add samples; return the events of the windows they complete (possibly none).

        Args:
            samples: Float samples in [-1, 1] at ``input_rate``: ``(N,)`` or ``(N, C)`` (channel 0).
        """
        if self._flushed:
            raise RuntimeError("the stream was flushed; call reset() to start a new one")
        x = self._mark_non_finite(self._as_mono(samples))
        self._pushed += x.shape[0]
        # clipped to [-1, 1] after resampling, as load_audio does
        x = self._resample(x) if self._resampler is not None else np.clip(x, -1.0, 1.0)
        return self._consume(x)

    def _resample(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        """Resampled to the detector's rate and clipped to [-1, 1] as :func:`load_audio` does."""
        assert self._resampler is not None
        y = self._resampler.resample_chunk(x, last=last).astype(np.float32, copy=False)
        return np.clip(y, -1.0, 1.0)

    @property
    def resampling(self) -> bool:
        """True when the input rate differs from the detector's: the resampler holds back a few
        milliseconds until :meth:`flush`."""
        return self._resampler is not None

    def flush(self) -> list[StreamEvent]:
        """End of stream: drain the resampler and return the events of the last full windows.

        A trailing partial window is not scored.
        """
        events: list[StreamEvent] = []
        if self._resampler is not None and not self._flushed:
            events = self._consume(self._resample(np.zeros(0, dtype=np.float32), last=True))
        self._flushed = True
        return events

    def _overlaps_bad(self, start: int, end: int) -> bool:
        self._bad = [(a, b) for a, b in self._bad if b > start]  # older ones can never matter
        return any(a < end and b > start for a, b in self._bad)

    def _consume(self, x: np.ndarray) -> list[StreamEvent]:
        windows: list[np.ndarray] = []
        ends: list[int] = []
        pos = 0
        while pos < x.shape[0]:
            need = self._next_end - self._ring.written  # samples until the next window is complete
            take = min(need, x.shape[0] - pos)
            self._ring.extend(x[pos : pos + take])
            pos += take
            if self._ring.written == self._next_end:
                if self._overlaps_bad(self._next_end - self.window, self._next_end):
                    self.skipped += 1
                    logger.warning(
                        "window %.2f-%.2f s holds non-finite (NaN/Inf) samples: skipped",
                        (self._next_end - self.window) / self.sample_rate,
                        self._next_end / self.sample_rate,
                    )
                else:
                    windows.append(self._ring.last(self.window))
                    ends.append(self._next_end)
                self._next_end += self.hop
        if not windows:
            return []
        scores = self.detector.score_waveforms(windows, self.machine, self.section)  # (W,)
        decisions: list[int | None] = [None] * len(ends)
        norms: list[float | None] = [None] * len(ends)
        key = (self.machine, self.section)
        if self.threshold is not None:  # the detector decides, with its own rule
            decisions = [int(d) for d in self.detector.decide(scores, key)]
            normalise = getattr(self.detector, "normalise", None)
            if normalise is not None:
                norms = [float(v) if np.isfinite(v) else None for v in normalise(scores, key)]
        return [
            StreamEvent(
                t_start=(end - self.window) / self.sample_rate,
                t_end=end / self.sample_rate,
                score=float(score),
                decision=dec,
                normalised=nrm,
                wave=win if dec == 1 else None,
            )
            for end, score, dec, nrm, win in zip(ends, scores, decisions, norms, windows)
        ]


def score_pcm_stream(
    fileobj: IO[bytes],
    sample_rate: int,
    channels: int = 1,
    dtype: Literal["int16", "int32", "float32"] = "int16",
    *,
    detector: Scorer,
    machine: str,
    section: str,
    window_seconds: float | None = None,
    hop_seconds: float | None = None,
    channel: int = 0,
    block_seconds: float = 0.25,
) -> Iterator[StreamEvent]:
    """Score raw interleaved little-endian PCM read from a binary stream (e.g. stdin).

    Args:
        fileobj: Binary stream; read in blocks until EOF.
        sample_rate: Rate of the PCM data.
        channels: Interleaved channels.
        dtype: Sample format: ``"int16"`` (default), ``"int32"`` or ``"float32"``.
        detector, machine, section: What scores the stream.
        window_seconds, hop_seconds: Windowing (see :class:`StreamScorer`).
        channel: Channel scored.
        block_seconds: Seconds of audio read per block.

    Yields:
        :class:`StreamEvent` as soon as each window is complete.

    Raises:
        ValueError: unknown dtype, channel out of range, bad rate or window; or the stream ended
            before one window was complete (the message says how much audio it held).
    """
    if dtype not in PCM_DTYPES:
        raise ValueError(f"unknown PCM dtype {dtype!r}; valid: {', '.join(PCM_DTYPES)}")
    if channels < 1 or not 0 <= channel < channels:
        raise ValueError(f"channel {channel} out of range for {channels} channel(s)")
    np_dtype, scale = PCM_DTYPES[dtype]
    frame_bytes = np.dtype(np_dtype).itemsize * channels
    scorer = StreamScorer(detector, machine, section, window_seconds, hop_seconds, sample_rate)
    block = max(1, round(block_seconds * sample_rate)) * frame_bytes
    pending = b""
    while True:
        chunk = fileobj.read(block)
        if not chunk:
            break
        data = pending + chunk
        usable = len(data) - len(data) % frame_bytes
        pending = data[usable:]
        if not usable:
            continue
        pcm = np.frombuffer(data[:usable], dtype=np_dtype).reshape(-1, channels)  # (n, C)
        x = pcm[:, channel].astype(np.float32) * np.float32(scale)
        yield from scorer.push(x)
    if pending:
        logger.warning(
            "stream ended with %d byte(s) of an incomplete frame (ignored)", len(pending)
        )
    yield from scorer.flush()
    _check_some_window(scorer)


def _check_some_window(scorer: StreamScorer, name: str = "the stream") -> None:
    """Raise when the stream ended before one window was complete (scored or skipped)."""
    if scorer._next_end == scorer.window:
        seconds = scorer._pushed / scorer.input_rate
        raise ValueError(
            f"{name} ended after {seconds:.3f} s ({scorer._pushed} samples at "
            f"{scorer.input_rate} Hz), shorter than one window of {scorer.window_seconds:g} s: "
            "nothing was scored"
        )


@dataclass(frozen=True)
class RawFormat:
    """The format of raw interleaved little-endian PCM (no header): given, never guessed."""

    rate: int
    channels: int = 1
    dtype: Literal["int16", "int32", "float32"] = "int16"


#: Largest FLAC read from a pipe (a FLAC decoder needs to seek: the stream is held in memory).
MAX_PIPE_BYTES = 256 << 20
_WAV_MAGIC = (b"RIFF", b"RF64")


class _Reader:
    """A binary stream read sequentially, with the bytes already peeked put back in front and
    an optional byte limit (the size of a WAV ``data`` chunk)."""

    def __init__(self, head: bytes, fileobj: IO[bytes], limit: int | None = None) -> None:
        self.head = head
        self.fileobj = fileobj
        self.left = limit

    def read(self, n: int = -1) -> bytes:
        if self.left is not None:
            n = self.left if n < 0 else min(n, self.left)
        if self.head:
            out, self.head = (self.head, b"") if n < 0 else (self.head[:n], self.head[n:])
        else:
            out = self.fileobj.read(n) if n != 0 else b""
        if self.left is not None:
            self.left -= len(out)
        return out


def _read_up_to(fileobj: IO[bytes], n: int) -> bytes:
    """Up to ``n`` bytes (fewer only at end of stream), across short reads of a pipe."""
    out = b""
    while len(out) < n:
        chunk = fileobj.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def _container(head: bytes) -> str | None:
    if head[:4] in _WAV_MAGIC and head[8:12] == b"WAVE":
        return "WAV"
    if head[:4] == b"fLaC":
        return "FLAC"
    return None


def _check_header(
    name: str,
    rate: int,
    channels: int,
    channel: int,
    expect: tuple[int | None, int | None],
) -> None:
    """Refuse a header whose rate or channels contradict what was given, or are unusable."""
    expect_rate, expect_channels = expect
    if not 0 < rate <= MAX_RATE or channels < 1:
        raise AudioError(f"{name}: invalid audio header (rate {rate} Hz, {channels} channel(s))")
    if expect_rate is not None and expect_rate != rate:
        raise InputError(
            f"{name}: the header says {rate} Hz, but --rate {expect_rate} was given; drop --rate "
            "(WAV/FLAC input is resampled to the detector's rate) or fix the recording"
        )
    if expect_channels is not None and expect_channels != channels:
        raise InputError(
            f"{name}: the header says {channels} channel(s), but --channels {expect_channels} "
            "was given; drop --channels or fix the recording"
        )
    if not 0 <= channel < channels:
        raise InputError(
            f"{name}: channel {channel} does not exist, the audio has {channels} channel(s) "
            f"(0..{channels - 1})"
        )


def _wav_pipe_format(head: bytes, fileobj: IO[bytes], name: str) -> tuple[Any, bytes]:
    """Parse a WAV header from a stream that cannot seek: ``(format, first data bytes)``."""
    from stetho.serving.wav_source import read_wav_header

    buf = head
    while True:
        try:
            fmt = read_wav_header(io.BytesIO(buf))
        except AudioError as err:
            raise AudioError(
                f"{name}: {err} (from a pipe; a file given with --input may use any WAV/FLAC "
                "sample format)"
            ) from err
        if fmt is not None:
            return fmt, buf[fmt.data_offset :]
        more = fileobj.read(4096)
        if not more or len(buf) > 1 << 20:
            raise AudioError(f"{name}: the WAV header ends before its data chunk")
        buf += more


def score_audio_stream(
    fileobj: IO[bytes],
    *,
    detector: Scorer,
    machine: str,
    section: str,
    raw: RawFormat | None = None,
    expect_rate: int | None = None,
    expect_channels: int | None = None,
    channel: int = 0,
    window_seconds: float | None = None,
    hop_seconds: float | None = None,
    name: str = "<stdin>",
    block_seconds: float = 0.25,
) -> Iterator[StreamEvent]:
    """Score WAV/FLAC (or raw PCM of a given format) read from a binary stream, window by window.

    The first bytes decide: ``RIFF``/``RF64`` … ``WAVE`` is a WAV file, ``fLaC`` a FLAC file;
    their header gives rate and channels and the samples are resampled to the detector's rate.
    Anything else is raw PCM, read only when ``raw`` gives its format. A WAV from a pipe is
    followed as it grows (16/32-bit PCM or 32-bit float, up to the size its header declares, or
    to the end of the stream); a FLAC from a pipe is read whole first (at most
    :data:`MAX_PIPE_BYTES`); a seekable file (``--input``) is decoded by libsndfile in blocks.

    Args:
        fileobj: Binary stream (stdin's buffer, an open file).
        detector, machine, section: What scores the stream.
        raw: The format of headerless PCM; None refuses headerless input.
        expect_rate, expect_channels: Checked against a container's header when given.
        channel: Channel scored (0-based).
        window_seconds, hop_seconds: Windowing (see :class:`StreamScorer`).
        name: How the input is named in error messages.
        block_seconds: Seconds of audio read per block.

    Yields:
        :class:`StreamEvent` as soon as each window is complete.

    Raises:
        InputError: headerless input without ``raw``, a container with ``raw`` given, or a
            header contradicting ``expect_rate``/``expect_channels``/``channel``.
        AudioError: a header or data that cannot be decoded (the message names the input).
        ValueError: the input ended before one window was complete.
    """
    start = fileobj.tell() if _seekable(fileobj) else None
    head = _read_up_to(fileobj, 12)
    kind = _container(head)
    if raw is not None:
        if kind is not None:
            raise InputError(
                f"{name} starts with a {kind} header, but a raw PCM format was given "
                "(--dtype); drop --dtype to read the header (its rate and channels are used)"
            )
        yield from score_pcm_stream(
            _Reader(head, fileobj),  # type: ignore[arg-type]  # read() is all it uses
            raw.rate, raw.channels, raw.dtype, detector=detector, machine=machine,
            section=section, window_seconds=window_seconds, hop_seconds=hop_seconds,
            channel=channel, block_seconds=block_seconds,
        )  # fmt: skip
        return
    if kind is None:
        what = "is empty" if not head else f"starts with {head[:4]!r}"
        raise InputError(
            f"{name} is neither WAV nor FLAC (it {what}); for headerless PCM give its format, "
            "e.g. --dtype int16 --rate 16000 --channels 1"
        )
    common: dict[str, Any] = {
        "detector": detector, "machine": machine, "section": section,
        "window_seconds": window_seconds, "hop_seconds": hop_seconds, "channel": channel,
        "expect": (expect_rate, expect_channels), "name": name, "block_seconds": block_seconds,
    }  # fmt: skip
    if start is not None:
        fileobj.seek(start)
        yield from _score_soundfile(fileobj, **common)
    elif kind == "WAV":
        yield from _score_wav_pipe(head, fileobj, **common)
    else:
        data = head + _read_up_to(fileobj, MAX_PIPE_BYTES + 1 - len(head))
        if len(data) > MAX_PIPE_BYTES:
            raise AudioError(
                f"{name}: a FLAC stream larger than {MAX_PIPE_BYTES >> 20} MiB cannot be read "
                "from a pipe; give the file with --input FILE"
            )
        yield from _score_soundfile(io.BytesIO(data), **common)


def _seekable(fileobj: IO[bytes]) -> bool:
    try:
        return bool(fileobj.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _score_soundfile(
    fileobj: IO[bytes],
    *,
    name: str,
    channel: int,
    expect: tuple[int | None, int | None],
    block_seconds: float,
    **kw: Any,
) -> Iterator[StreamEvent]:
    """A seekable WAV/FLAC decoded by libsndfile block by block."""
    import soundfile as sf

    try:
        snd = sf.SoundFile(fileobj)
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError) as err:
        raise AudioError(f"cannot read audio header of {name}: {err}") from err
    with snd:
        _check_header(name, snd.samplerate, snd.channels, channel, expect)
        scorer = StreamScorer(
            kw["detector"], kw["machine"], kw["section"], kw["window_seconds"],
            kw["hop_seconds"], snd.samplerate,
        )  # fmt: skip
        step = max(1, min(round(block_seconds * snd.samplerate), BLOCK_SAMPLES // snd.channels))
        while True:
            try:
                block = snd.read(step, dtype="float32", always_2d=True)  # (n, C)
            except (sf.LibsndfileError, RuntimeError, OSError) as err:
                raise AudioError(f"cannot decode audio data of {name}: {err}") from err
            if block.shape[0] == 0:
                break
            yield from scorer.push(block[:, channel])
    yield from scorer.flush()
    _check_some_window(scorer, name)


def _score_wav_pipe(
    head: bytes,
    fileobj: IO[bytes],
    *,
    name: str,
    channel: int,
    expect: tuple[int | None, int | None],
    block_seconds: float,
    **kw: Any,
) -> Iterator[StreamEvent]:
    """A WAV from a pipe: header parsed, then its samples streamed as PCM of that format."""
    fmt, first = _wav_pipe_format(head, fileobj, name)
    _check_header(name, fmt.rate, fmt.channels, channel, expect)
    final = fmt.data_size not in (0, 0xFFFFFFFF)  # else: recording, read to the end
    reader = _Reader(first, fileobj, fmt.data_size if final else None)
    events = score_pcm_stream(
        reader,  # type: ignore[arg-type]  # read() is all it uses
        fmt.rate, fmt.channels, fmt.dtype, channel=channel, block_seconds=block_seconds, **kw,
    )  # fmt: skip
    try:
        yield from events
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from err
