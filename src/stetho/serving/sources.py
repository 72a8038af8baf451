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
import queue
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import numpy as np

from stetho.data import AudioError, is_audio_file_name, load_audio
from stetho.serving.monitor_config import SourceConfig
from stetho.serving.source_base import (
    BaseSource,
    DetectorHandle,
    LoadedDetector,
    Sink,
    SourceUnavailable,
    Window,
)
from stetho.serving.stream import PCM_DTYPES, StreamEvent
from stetho.serving.wav_source import WavFormat, WavSource, read_wav_header

__all__ = [
    "BaseSource",
    "DetectorHandle",
    "LoadedDetector",
    "Sink",
    "SourceUnavailable",
    "WavFormat",
    "WavSource",
    "Window",
    "make_source",
    "read_wav_header",
]

logger = logging.getLogger(__name__)


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
            present = {name for _, name, _, _ in found}
            done &= present  # forget removed files (a new file of the same name is scored)
            for name in set(pending) - present:
                del pending[name]
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
