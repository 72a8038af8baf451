"""The sources ``stetho monitor`` watches: a folder, a growing WAV, raw PCM on stdin, a sound card.

Every source runs in its own thread (see :class:`~stetho.serving.monitor.Monitor`) and hands
scored windows to a *sink* together with its resume position; the monitor writes both to the
store in one transaction, so that a restart continues after the last stored window:

- ``folder``: the newest scored file, as ``{"mtime_ns", "name"}`` (files at or before it are
  skipped on restart);
- ``wav``: the frame where the next window starts, with the file's inode (a new file starts over)
  and the time of the last window;
- ``stdin``, ``soundcard``: live streams, nothing to resume.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from stetho.data import AudioError, is_audio_file_name, load_audio
from stetho.serving.monitor_config import SourceConfig
from stetho.serving.stream import PCM_DTYPES, StreamEvent, StreamScorer

if TYPE_CHECKING:
    from stetho.detector.scorer import Scorer

__all__ = [
    "DetectorHandle",
    "LoadedDetector",
    "Sink",
    "SourceUnavailable",
    "WavFormat",
    "Window",
    "make_source",
    "read_wav_header",
]

logger = logging.getLogger(__name__)


class SourceUnavailable(RuntimeError):
    """A source cannot run here (e.g. no sound-card support installed); the message says why."""


@dataclass(frozen=True)
class Window:
    """One scored window of a source: when it was recorded, its span and its score."""

    time: datetime
    t_start: float
    t_end: float
    score: float


@dataclass(frozen=True)
class LoadedDetector:
    """One loaded version of a detector, with the lock that serialises its scoring.

    It offers what :class:`~stetho.serving.stream.StreamScorer` needs from a scorer, so a stream
    scores through the lock.
    """

    scorer: Scorer
    id: str
    version: int
    lock: threading.Lock

    @property
    def keys(self) -> list[tuple[str, str]]:
        return list(self.scorer.keys)

    @property
    def sample_rate(self) -> int:
        return int(self.scorer.sample_rate)

    @property
    def thresholds(self) -> dict[tuple[str, str], float]:
        return dict(self.scorer.thresholds)

    def window_seconds(self) -> float | None:
        return self.scorer.window_seconds()

    def score_waveforms(
        self, waves: Any, machine: str, section: str, sample_rate: int | None = None
    ) -> np.ndarray:
        with self.lock:
            return self.scorer.score_waveforms(waves, machine, section, sample_rate)


class DetectorHandle:
    """A detector folder shared by sources; reloaded when ``stetho calibrate`` replaces it.

    Args:
        path: The detector folder.
        load: ``load(path) -> Scorer`` (e.g. :func:`stetho.detector.load_scorer` with a device).
    """

    def __init__(self, path: str | os.PathLike[str], load: Callable[[Path], Scorer]) -> None:
        self.path = Path(path)
        self._load = load
        self._lock = threading.Lock()  # scoring of every version of this detector
        self._current: LoadedDetector | None = None
        self._signature: tuple[int, int] | None = None

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = (self.path / "config.json").stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    def current(self) -> LoadedDetector:
        """The loaded detector (loading it on first use).

        Raises:
            DetectorError: the folder cannot be loaded (the source using it fails and is retried).
        """
        if self._current is None:
            self.reload()
        assert self._current is not None
        return self._current

    def reload(self) -> bool:
        """Load the folder again if it changed since the last load; True when a new one is used."""
        from stetho.detector import identity

        sig = self._stat()
        if self._current is not None and sig == self._signature:
            return False
        scorer = self._load(self.path)
        ident, version = identity(scorer, self.path)
        old = self._current
        self._current = LoadedDetector(scorer, ident, version, self._lock)
        self._signature = sig
        if old is not None:
            logger.warning(
                "detector %s reloaded: %s version %d -> %d", self.path, ident, old.version, version
            )
        return True


#: ``sink(source, detector, windows, position)`` stores the windows and the source's position.
Sink = Callable[["BaseSource", LoadedDetector, list[Window], "str | None"], None]


class BaseSource:
    """What every source shares: its config, detector handle, windowing and stream swaps."""

    def __init__(
        self,
        cfg: SourceConfig,
        handle: DetectorHandle,
        *,
        window_seconds: float | None,
        hop_seconds: float | None,
        poll_seconds: float,
        last_position: Callable[[str], str | None],
    ) -> None:
        self.cfg = cfg
        self.name = cfg.label
        self.machine = cfg.machine
        self.section = str(cfg.section)
        self.handle = handle
        self.window_seconds = cfg.window_seconds or window_seconds
        self.hop_seconds = cfg.hop_seconds or hop_seconds
        self.poll_seconds = poll_seconds
        self.last_position = last_position
        self.det: LoadedDetector | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.machine, self.section)

    def detector(self) -> LoadedDetector:
        """The detector version to score with now (checking that it knows this source's key)."""
        det = self.handle.current()
        if self.key not in det.keys:
            valid = ", ".join(f"{m}/{s}" for m, s in det.keys) or "none"
            raise KeyError(
                f"source {self.name}: detector {self.handle.path} has no model for "
                f"{self.machine}/{self.section}; valid keys: {valid}"
            )
        self.det = det
        return det

    def new_stream(self, input_rate: int) -> StreamScorer:
        return StreamScorer(
            self.detector(),  # type: ignore[arg-type]  # LoadedDetector offers what it uses
            self.machine,
            self.section,
            self.window_seconds,
            self.hop_seconds,
            input_rate,
        )

    def sync_stream(self, stream: StreamScorer) -> LoadedDetector:
        """Point ``stream`` at the current detector version (buffered samples are kept)."""
        det = self.detector()
        if stream.detector is not det:
            stream.detector = det  # type: ignore[assignment]
            stream.threshold = det.thresholds.get(self.key)
        return det

    def run(self, sink: Sink, stop: threading.Event) -> None:
        """Watch the source until ``stop`` is set (or its stream ends)."""
        raise NotImplementedError


# --------------------------------------------------------------------------------- folder
class FolderSource(BaseSource):
    """New recordings arriving in a folder; each is scored once it stopped growing."""

    def _files(self, root: Path) -> Iterator[Path]:
        walk = root.rglob("*") if self.cfg.recursive else root.iterdir()
        for f in walk:
            if is_audio_file_name(f.name) and not f.name.startswith("."):
                yield f

    def run(self, sink: Sink, stop: threading.Event) -> None:
        root = Path(str(self.cfg.path))
        if not root.is_dir():
            raise FileNotFoundError(f"source {self.name}: no such folder {root}")
        raw = self.last_position(self.name)
        mark: tuple[int, str] | None = None
        if raw:
            pos = json.loads(raw)
            mark = (int(pos["mtime_ns"]), str(pos["name"]))
        done: set[str] = set()
        pending: dict[str, tuple[int, int, float]] = {}  # name -> (size, mtime_ns, stable since)
        first = True
        while not stop.is_set():
            found = []
            for f in self._files(root):
                try:
                    st = f.stat()
                except OSError:
                    continue  # removed meanwhile
                found.append((st.st_mtime_ns, f.relative_to(root).as_posix(), f, st.st_size))
            for mtime_ns, name, f, size in sorted(found):
                if name in done:
                    continue
                if first and mark is not None and (mtime_ns, name) <= mark:
                    done.add(name)  # scored before the restart
                    continue
                prev = pending.get(name)
                if prev is None or prev[:2] != (size, mtime_ns):
                    pending[name] = (size, mtime_ns, time.monotonic())
                    continue
                if size == 0 or time.monotonic() - prev[2] < self.cfg.settle_seconds:
                    continue
                if mark is None or (mtime_ns, name) > mark:
                    mark = (mtime_ns, name)
                position = json.dumps({"mtime_ns": mark[0], "name": mark[1]})
                det = self.detector()
                sink(self, det, self._score(f, mtime_ns, det), position)
                done.add(name)
                pending.pop(name, None)
                if stop.is_set():
                    return
            first = False
            stop.wait(self.poll_seconds)

    def _score(self, path: Path, mtime_ns: int, det: LoadedDetector) -> list[Window]:
        """Windows of one recording (none when it cannot be read or scored: logged)."""
        try:
            wave, _ = load_audio(path, sr=det.sample_rate)
            if wave.size == 0:
                raise AudioError(f"audio file {path} contains no samples")
        except AudioError as err:
            logger.warning("source %s: skipping %s", self.name, err)
            return []
        end = datetime.fromtimestamp(mtime_ns / 1e9, UTC)  # the recording ended when written
        duration = wave.shape[0] / det.sample_rate
        try:
            if self.cfg.mode == "file":
                score = float(det.score_waveforms([wave], self.machine, self.section)[0])
                return [Window(end, 0.0, duration, score)]
            stream = self.new_stream(det.sample_rate)
            events = stream.push(wave) + stream.flush()
        except ValueError as err:
            logger.warning(
                "source %s: cannot score %s (%.3g s): %s", self.name, path, duration, err
            )
            return []
        return [
            Window(end - timedelta(seconds=duration - e.t_end), e.t_start, e.t_end, e.score)
            for e in events
        ]


# ----------------------------------------------------------------------------- growing WAV
@dataclass(frozen=True)
class WavFormat:
    """What a WAV header says: sample format, channels, rate and where the samples are."""

    dtype: str  # key of PCM_DTYPES
    channels: int
    rate: int
    data_offset: int
    data_size: int  # as written in the header (0 or 0xFFFFFFFF while recording)

    @property
    def frame_bytes(self) -> int:
        return np.dtype(PCM_DTYPES[self.dtype][0]).itemsize * self.channels

    def data_end(self, file_size: int) -> int:
        """Byte offset where the samples end: the header's size when it is final, else EOF."""
        end = self.data_offset + self.data_size
        if self.data_size in (0, 0xFFFFFFFF) or end >= file_size:
            end = file_size
        return end - (end - self.data_offset) % self.frame_bytes


def read_wav_header(fh: IO[bytes]) -> WavFormat | None:
    """Parse a RIFF/WAVE header up to the start of the ``data`` chunk.

    Returns:
        The format, or None when the header is not complete yet (a file being created).

    Raises:
        AudioError: not a WAV file, or a sample format the monitor cannot follow (supported: PCM
            16/32-bit integer and 32-bit float, also as WAVE_FORMAT_EXTENSIBLE).
    """
    fh.seek(0)
    head = fh.read(12)
    if len(head) < 12:
        return None
    if head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        raise AudioError(f"{getattr(fh, 'name', 'file')} is not a WAV file")
    fmt: tuple[int, int, int, int] | None = None
    while True:
        chunk = fh.read(8)
        if len(chunk) < 8:
            return None
        cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if cid == b"data":
            if fmt is None:
                raise AudioError("WAV file has its data chunk before the fmt chunk")
            tag, channels, rate, bits = fmt
            dtype = {(1, 16): "int16", (1, 32): "int32", (3, 32): "float32"}.get((tag, bits))
            if dtype is None:
                raise AudioError(
                    f"WAV format tag {tag} with {bits}-bit samples cannot be followed; record "
                    "16/32-bit PCM or 32-bit float"
                )
            return WavFormat(dtype, channels, rate, fh.tell(), size)
        body = fh.read(size + (size & 1))
        if len(body) < size:
            return None
        if cid == b"fmt ":
            tag, channels, rate = struct.unpack("<HHI", body[:8])
            bits = struct.unpack("<H", body[14:16])[0]
            if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format GUID
                tag = struct.unpack("<H", body[24:26])[0]
            fmt = (tag, channels, rate, bits)


class WavSource(BaseSource):
    """A WAV file that keeps growing (e.g. ``arecord -f S16_LE -r 16000 file.wav``)."""

    def run(self, sink: Sink, stop: threading.Event) -> None:
        path = Path(str(self.cfg.path))
        raw = self.last_position(self.name)
        resume = json.loads(raw) if raw else None
        while not stop.is_set():
            if not path.is_file():
                stop.wait(self.poll_seconds)
                continue
            with open(path, "rb") as fh:
                fmt = read_wav_header(fh)
                if fmt is None:
                    stop.wait(self.poll_seconds)
                    continue
                ino = os.fstat(fh.fileno()).st_ino
                start, last = 0, None
                if resume is not None and int(resume.get("ino", -1)) == ino:
                    start = int(resume["frame"])
                    last = datetime.fromisoformat(resume["time"]) if "time" in resume else None
                resume = None
                if self._follow(fh, fmt, ino, (start, last), path, sink, stop):
                    continue  # the file was replaced or truncated: start over
                return

    def _follow(
        self,
        fh: IO[bytes],
        fmt: WavFormat,
        ino: int,
        resume: tuple[int, datetime | None],
        path: Path,
        sink: Sink,
        stop: threading.Event,
    ) -> bool:
        """Score the file from frame ``resume[0]`` on (windows never stamped before
        ``resume[1]``); True when it must be reopened."""
        start, last = resume
        if self.cfg.channel >= fmt.channels:
            raise AudioError(
                f"{path}: has {fmt.channels} channel(s); channel {self.cfg.channel} does not exist"
            )
        np_dtype, scale = PCM_DTYPES[fmt.dtype]
        stream = self.new_stream(fmt.rate)
        t0 = start / fmt.rate  # stream time of the first frame read
        pos = fmt.data_offset + start * fmt.frame_bytes
        max_read = max(1, round(60 * fmt.rate)) * fmt.frame_bytes  # ≤ 1 min of audio per step
        while not stop.is_set():
            try:
                st = os.stat(path)
            except OSError:
                return True
            if st.st_ino != ino or st.st_size < pos:
                logger.warning(
                    "source %s: %s was replaced or truncated; starting over", self.name, path
                )
                return True
            fh.seek(0)
            fmt_now = read_wav_header(fh) or fmt  # the writer may update the data size
            end = fmt_now.data_end(st.st_size)
            if end <= pos:
                stop.wait(self.poll_seconds)
                continue
            fh.seek(pos)
            data = fh.read(min(end - pos, max_read))
            data = data[: len(data) - len(data) % fmt.frame_bytes]
            pos += len(data)
            pcm = np.frombuffer(data, dtype=np_dtype).reshape(-1, fmt.channels)
            x = pcm[:, self.cfg.channel].astype(np.float32) * np.float32(scale)
            det = self.sync_stream(stream)
            events = stream.push(x)
            if not events:
                continue
            # a window was recorded when its end was written: now, less the audio after it;
            # never before an earlier window (a writer faster than real time)
            now = datetime.now(UTC)
            in_file = (end - fmt.data_offset) / fmt.frame_bytes / fmt.rate  # seconds
            windows = []
            for e in events:
                t = now - timedelta(seconds=max(0.0, in_file - (t0 + e.t_end)))
                last = t = max(t, last) if last is not None else t
                windows.append(Window(t, t0 + e.t_start, t0 + e.t_end, e.score))
            next_start = round((windows[-1].t_start + stream.hop_seconds) * fmt.rate)
            position = {"frame": next_start, "ino": ino, "time": windows[-1].time.isoformat()}
            sink(self, det, windows, json.dumps(position))
        return False


# ------------------------------------------------------------------------------ raw streams
class PcmSource(BaseSource):
    """Raw interleaved little-endian PCM from a binary stream (standard input by default)."""

    def __init__(self, *args: Any, stream: IO[bytes] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stream = stream

    def run(self, sink: Sink, stop: threading.Event) -> None:
        import sys

        fileobj = self.stream if self.stream is not None else sys.stdin.buffer
        np_dtype, scale = PCM_DTYPES[self.cfg.dtype]
        frame = np.dtype(np_dtype).itemsize * self.cfg.channels
        block = max(1, round(self.cfg.block_seconds * self.cfg.rate)) * frame
        stream = self.new_stream(self.cfg.rate)
        pending = b""
        while True:
            if stop.is_set():
                return
            chunk = fileobj.read(block)
            if not chunk:
                break  # end of stream
            data = pending + chunk
            usable = len(data) - len(data) % frame
            pending = data[usable:]
            pcm = np.frombuffer(data[:usable], dtype=np_dtype).reshape(-1, self.cfg.channels)
            det = self.sync_stream(stream)
            x = pcm[:, self.cfg.channel].astype(np.float32) * np.float32(scale)
            self._emit(sink, det, stream.push(x))
        if pending:
            logger.warning(
                "source %s: %d byte(s) of an incomplete frame ignored", self.name, len(pending)
            )
        self._emit(sink, self.sync_stream(stream), stream.flush())
        logger.info("source %s: end of stream", self.name)

    def _emit(self, sink: Sink, det: LoadedDetector, events: list[StreamEvent]) -> None:
        if events:
            now = datetime.now(UTC)
            sink(self, det, [Window(now, e.t_start, e.t_end, e.score) for e in events], None)


class SoundCardSource(BaseSource):
    """A live input device through ``sounddevice`` (PortAudio); imported only when used."""

    def run(self, sink: Sink, stop: threading.Event) -> None:
        try:
            import sounddevice as sd
        except (ImportError, OSError) as err:  # OSError: the module is there, PortAudio is not
            raise SourceUnavailable(
                f"source {self.name}: sound-card input needs the optional extra: "
                "pip install 'stetho[sounddevice]' and the PortAudio library (Debian/Ubuntu: "
                f"apt-get install libportaudio2) ({err})"
            ) from err
        blocks: queue.Queue[np.ndarray] = queue.Queue(maxsize=256)
        dropped = [0]

        def callback(indata: np.ndarray, frames: int, t: Any, status: Any) -> None:
            try:
                blocks.put_nowait(indata[:, self.cfg.channel].copy())
            except queue.Full:
                dropped[0] += frames

        device: int | str | None = self.cfg.device
        if isinstance(device, str) and device.isdigit():
            device = int(device)
        stream = self.new_stream(self.cfg.rate)
        with sd.InputStream(
            samplerate=self.cfg.rate,
            channels=self.cfg.channels,
            device=device,
            dtype="float32",
            blocksize=max(1, round(self.cfg.block_seconds * self.cfg.rate)),
            callback=callback,
        ):
            while not stop.is_set():
                try:
                    x = blocks.get(timeout=self.poll_seconds)
                except queue.Empty:
                    continue
                if dropped[0]:
                    logger.warning(
                        "source %s: %d frame(s) dropped (scoring too slow)", self.name, dropped[0]
                    )
                    dropped[0] = 0
                det = self.sync_stream(stream)
                events = stream.push(x)
                if events:
                    now = datetime.now(UTC)
                    sink(
                        self, det, [Window(now, e.t_start, e.t_end, e.score) for e in events], None
                    )


_KINDS: dict[str, type[BaseSource]] = {
    "folder": FolderSource,
    "wav": WavSource,
    "stdin": PcmSource,
    "soundcard": SoundCardSource,
}


def make_source(cfg: SourceConfig, handle: DetectorHandle, **kwargs: Any) -> BaseSource:
    """The source object for ``cfg`` (see :class:`BaseSource` for ``kwargs``)."""
    return _KINDS[cfg.kind](cfg, handle, **kwargs)
