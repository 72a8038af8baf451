"""A WAV file that keeps growing, followed by ``stetho monitor`` (``kind: wav``)."""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import numpy as np

from stetho.data import AudioError
from stetho.serving.source_base import BaseSource, LoadedDetector, Sink, Window
from stetho.serving.stream import PCM_DTYPES, StreamEvent, StreamScorer

__all__ = ["WavFormat", "WavSource", "read_wav_header"]

logger = logging.getLogger(__name__)


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
            # unbuffered: a buffered reader may answer a re-read of the header from its cache
            with open(path, "rb", buffering=0) as fh:
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
        ``resume[1]``); True when it must be reopened.

        When the header declares its final data size and all of it was read (the writer closed
        the file), the stream is drained: with resampling, the last window is scored too. Should
        the file grow again, a new stream starts where the next window starts.
        """
        if self.cfg.channel >= fmt.channels:
            raise AudioError(
                f"{path}: has {fmt.channels} channel(s); channel {self.cfg.channel} does not exist"
            )
        f = _Follow(fmt, resume[0], resume[1])
        f.restart(self.new_stream(fmt.rate))
        while not stop.is_set():
            try:
                st = os.stat(path)
            except OSError:
                return True
            if st.st_ino != ino or st.st_size < f.pos:
                logger.warning(
                    "source %s: %s was replaced or truncated; starting over", self.name, path
                )
                return True
            fh.seek(0)
            fmt_now = read_wav_header(fh) or fmt  # the writer may update the data size
            end = fmt_now.data_end(st.st_size)
            if end <= f.pos:
                complete = fmt_now.data_size not in (0, 0xFFFFFFFF) and end >= (
                    fmt_now.data_offset + fmt_now.data_size - fmt.frame_bytes + 1
                )
                if complete and f.stream is not None and f.stream.resampling:
                    det = self.sync_stream(f.stream)
                    self._emit(sink, det, f, f.stream.flush(), end, ino)
                    f.stream = None  # drained: a new stream starts if the file grows again
                stop.wait(self.poll_seconds)
                continue
            if f.stream is None:
                f.restart(self.new_stream(fmt.rate))
                continue
            fh.seek(f.pos)
            data = fh.read(min(end - f.pos, f.max_read))
            data = data[: len(data) - len(data) % fmt.frame_bytes]
            f.pos += len(data)
            np_dtype, scale = PCM_DTYPES[fmt.dtype]
            pcm = np.frombuffer(data, dtype=np_dtype).reshape(-1, fmt.channels)
            x = pcm[:, self.cfg.channel].astype(np.float32) * np.float32(scale)
            det = self.sync_stream(f.stream)
            self._emit(sink, det, f, f.stream.push(x), end, ino)
        return False

    def _emit(
        self,
        sink: Sink,
        det: LoadedDetector,
        f: _Follow,
        events: list[StreamEvent],
        end: int,
        ino: int,
    ) -> None:
        """Stamp and store the windows of ``events`` with the resume position."""
        if not events:
            return
        fmt = f.fmt
        # a window was recorded when its end was written: now, less the audio after it;
        # never before an earlier window (a writer faster than real time)
        now = datetime.now(UTC)
        in_file = (end - fmt.data_offset) / fmt.frame_bytes / fmt.rate  # seconds
        windows = []
        for e in events:
            t = now - timedelta(seconds=max(0.0, in_file - (f.t0 + e.t_end)))
            f.last = t = max(t, f.last) if f.last is not None else t
            windows.append(Window(t, f.t0 + e.t_start, f.t0 + e.t_end, e.score))
        hop = f.stream.hop_seconds if f.stream is not None else 0.0
        f.next_start = round((windows[-1].t_start + hop) * fmt.rate)
        position = {"frame": f.next_start, "ino": ino, "time": windows[-1].time.isoformat()}
        sink(self, det, windows, json.dumps(position))


class _Follow:
    """Where :meth:`WavSource._follow` is in the file: stream, byte position, clock."""

    def __init__(self, fmt: WavFormat, start: int, last: datetime | None) -> None:
        self.fmt = fmt
        self.stream: StreamScorer | None = None
        self.next_start = start  # frame where the next window starts
        self.last = last  # time of the last window stored
        self.max_read = max(1, round(60 * fmt.rate)) * fmt.frame_bytes  # ≤ 1 min per step
        self.t0 = 0.0
        self.pos = 0

    def restart(self, stream: StreamScorer) -> None:
        """A new stream from the start of the next window."""
        self.stream = stream
        self.t0 = self.next_start / self.fmt.rate  # stream time of the first frame read
        self.pos = self.fmt.data_offset + self.next_start * self.fmt.frame_bytes
