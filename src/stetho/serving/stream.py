"""Score a continuous audio stream in sliding windows.

::

    scorer = StreamScorer(det, "fan", "00", window_seconds=10.0, hop_seconds=5.0, input_rate=48000)
    for block in microphone_blocks():                    # float32 (N,) at 48 kHz
        for ev in scorer.push(block):
            print(f"{ev.t_start:.1f}-{ev.t_end:.1f} s  score {ev.score:.4f}  decision {ev.decision}")
    scorer.flush()

    # raw PCM on stdin (e.g. ``arecord -f S16_LE -r 16000 -c 1 | stetho stream …``)
    for ev in score_pcm_stream(sys.stdin.buffer, 16000, 1, "int16", detector=det, machine="fan",
                               section="00"):
        ...

Samples are resampled to the detector's rate with soxr's streaming resampler when the input rate
differs (the result equals resampling the whole recording at once). Window ``k`` covers
``[k·hop, k·hop + window)`` seconds of the stream (at the detector's rate) and is scored exactly
like :meth:`Scorer.score_waveforms` scores a clip of those samples.

Non-finite samples (NaN/Inf, e.g. a glitching float32 source) never end the stream: they are
replaced by silence before resampling, and every window that overlaps them is skipped and logged
(its score would be meaningless); the windows after them are scored as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Literal

import numpy as np

from stetho.data.names import normalize_section
from stetho.scoring.threshold import decide

if TYPE_CHECKING:
    from stetho.detector.scorer import Scorer

__all__ = [
    "DEFAULT_WINDOW_SECONDS",
    "MAX_WINDOW_SECONDS",
    "PCM_DTYPES",
    "StreamEvent",
    "StreamScorer",
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
    """

    t_start: float
    t_end: float
    score: float
    decision: int | None


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
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x).astype(np.float32, copy=False)
        return self._consume(x)

    def flush(self) -> list[StreamEvent]:
        """End of stream: drain the resampler and return the events of the last full windows.

        A trailing partial window is not scored.
        """
        events: list[StreamEvent] = []
        if self._resampler is not None and not self._flushed:
            tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            events = self._consume(tail.astype(np.float32, copy=False))
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
        events = []
        for end, score in zip(ends, scores):
            dec = None if self.threshold is None else int(decide([score], self.threshold)[0])
            events.append(
                StreamEvent(
                    t_start=(end - self.window) / self.sample_rate,
                    t_end=end / self.sample_rate,
                    score=float(score),
                    decision=dec,
                )
            )
        return events


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
    if scorer._next_end == scorer.window:  # not one window was complete (scored or skipped)
        seconds = scorer._pushed / sample_rate
        raise ValueError(
            f"the stream ended after {seconds:.3f} s ({scorer._pushed} samples at {sample_rate} "
            f"Hz), shorter than one window of {scorer.window_seconds:g} s: nothing was scored"
        )
