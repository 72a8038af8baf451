"""The sources ``stetho monitor`` watches: a folder, a growing WAV, raw PCM on stdin, a sound card.

Every source runs in its own thread (see :class:`~stetho.serving.monitor.Monitor`) and hands
scored windows to a *sink* together with its resume position; the monitor writes both to the
store in one transaction, so that a restart continues after the last stored window:

- ``folder``: the files handled (scored or failed) that are still present, by name with their
  size, mtime and the end of their last stored window (``{"files": …}``), and the newest one
  (``{"mtime_ns", "name"}``, also the whole position of older versions);
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
from dataclasses import dataclass
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
#: A file's modification time is taken as the end of its recording only when it lies within this
#: many seconds before the scan; older (``cp -p``, ``rsync -a``, a wrong clock) or future times
#: give way to the time the file was scored, so no window is stamped before the retention
#: horizon (retention is expected to keep at least this long). Not in the paper.
PLAUSIBLE_MTIME_SECONDS = 3600.0


@dataclass
class _Seen:
    """A file already handled: its size and mtime then, and the end of its last stored window
    (None: it failed, or was scored as one clip)."""

    size: int
    mtime_ns: int
    end: float | None


class FolderSource(BaseSource):
    """Recordings arriving in a folder; each is scored once it stopped changing.

    Files are tracked by name, size and modification time (not by "newer than the last scan"):
    a file copied in with an old mtime is scored, a file that changes again after it was scored
    (a writer that paused longer than ``settle_seconds``) is scored again: from where its last
    stored window ended when it grew (``mode: windows``), whole otherwise. A file that cannot be
    scored, for any reason, is logged and marked failed with its size and mtime: it is retried
    only when it changes, and later files go on. The handled files (those still present) are
    the source's resume position.
    """

    _newest: tuple[int, str] | None = None  # (mtime_ns, name) of the newest file handled

    def _files(self, root: Path) -> Iterator[Path]:
        walk = root.rglob("*") if self.cfg.recursive else root.iterdir()
        for f in walk:
            if is_audio_file_name(f.name) and not f.name.startswith("."):
                yield f

    def _scan(self, root: Path) -> dict[str, tuple[Path, int, int]]:
        found = {}
        for f in self._files(root):
            try:
                st = f.stat()
            except OSError:
                continue  # removed meanwhile
            found[f.relative_to(root).as_posix()] = (f, st.st_size, st.st_mtime_ns)
        return found

    def _restore(self, root: Path) -> tuple[dict[str, _Seen], tuple[int, str] | None]:
        """The handled files and the newest of them, from the stored position."""
        raw = self.last_position(self.name)
        if not raw:
            return {}, None
        pos = json.loads(raw)
        newest = (int(pos["mtime_ns"]), str(pos["name"])) if "mtime_ns" in pos else None
        if "files" in pos:
            return {
                name: _Seen(int(size), int(mtime), None if end is None else float(end))
                for name, (size, mtime, end) in pos["files"].items()
            }, newest
        # a position written before files were tracked: files up to its mark count as handled
        logger.info("source %s: resuming from an older position format", self.name)
        return {
            name: _Seen(size, mtime, None)
            for name, (_, size, mtime) in self._scan(root).items()
            if newest is not None and (mtime, name) <= newest
        }, newest

    def run(self, sink: Sink, stop: threading.Event) -> None:
        root = Path(str(self.cfg.path))
        if not root.is_dir():
            raise FileNotFoundError(f"source {self.name}: no such folder {root}")
        seen, self._newest = self._restore(root)
        pending: dict[str, tuple[int, int, float]] = {}  # name -> (size, mtime_ns, stable since)
        while not stop.is_set():
            found = self._scan(root)
            for gone in set(seen) - set(found):  # a new file of the same name is scored
                del seen[gone]
            for gone in set(pending) - set(found):
                del pending[gone]
            for name, (f, size, mtime_ns) in sorted(found.items(), key=lambda kv: kv[1][2:]):
                old = seen.get(name)
                if old is not None and (old.size, old.mtime_ns) == (size, mtime_ns):
                    continue
                if not self._settled(pending, name, size, mtime_ns):
                    continue
                del pending[name]
                self._take(sink, seen, name, f, (size, mtime_ns))
                if stop.is_set():
                    return
            stop.wait(self.poll_seconds)

    def _settled(
        self, pending: dict[str, tuple[int, int, float]], name: str, size: int, mtime_ns: int
    ) -> bool:
        """True once the file kept its size and mtime for ``settle_seconds`` (seen twice)."""
        prev = pending.get(name)
        if prev is None or prev[:2] != (size, mtime_ns):
            pending[name] = (size, mtime_ns, time.monotonic())
            return False
        return size > 0 and time.monotonic() - prev[2] >= self.cfg.settle_seconds

    def _take(
        self, sink: Sink, seen: dict[str, _Seen], name: str, path: Path, sig: tuple[int, int]
    ) -> None:
        """Score one settled file (or mark it failed) and store its windows with the position."""
        size, mtime_ns = sig
        det = self.detector()  # a detector that cannot be loaded fails the source, not the file
        old = seen.get(name)
        since = None
        if old is not None:
            grown = size > old.size and old.end is not None and self.cfg.mode == "windows"
            since = old.end if grown else None
            logger.info(
                "source %s: %s changed since it was handled (%d -> %d bytes): scoring it %s",
                self.name, path, old.size, size, f"from {since:.3f} s" if since is not None else "again",
            )  # fmt: skip
        elif self._newest is not None and (mtime_ns, name) < self._newest:
            logger.info(
                "source %s: %s has an older modification time than files already scored "
                "(copied with cp -p / rsync -a, or moved in): scoring it",
                self.name, path,
            )  # fmt: skip
        end: float | None = None
        try:
            windows = self._score(path, mtime_ns, det, since)
            if windows and self.cfg.mode == "windows":
                end = windows[-1].t_end
            elif since is not None:
                end = since
        except AudioError as err:
            logger.warning(
                "source %s: cannot read %s: %s (marked failed; scored again if it changes)",
                self.name, path, err,
            )  # fmt: skip
            windows = []
        except Exception as err:  # MemoryError included: this file fails, later files go on
            logger.error(
                "source %s: scoring %s failed (%s: %s); marked failed, going on with later files",
                self.name, path, type(err).__name__, err,
            )  # fmt: skip
            windows = []
        seen[name] = _Seen(size, mtime_ns, end)
        if self._newest is None or (mtime_ns, name) > self._newest:
            self._newest = (mtime_ns, name)
        sink(self, det, windows, self._position(seen))

    def _position(self, seen: dict[str, _Seen]) -> str:
        assert self._newest is not None
        return json.dumps(
            {
                "mtime_ns": self._newest[0],
                "name": self._newest[1],
                "files": {n: [s.size, s.mtime_ns, s.end] for n, s in seen.items()},
            }
        )

    def _recording_end(self, path: Path, mtime_ns: int) -> datetime:
        """When the recording ended: its mtime when plausible, else now (see
        :data:`PLAUSIBLE_MTIME_SECONDS`)."""
        now = datetime.now(UTC)
        mtime = datetime.fromtimestamp(mtime_ns / 1e9, UTC)
        if now - timedelta(seconds=PLAUSIBLE_MTIME_SECONDS) <= mtime:
            return min(mtime, now)
        logger.info(
            "source %s: %s was modified at %s, more than %g s ago: its windows are stamped "
            "with the time it was scored",
            self.name, path, mtime.isoformat(), PLAUSIBLE_MTIME_SECONDS,
        )  # fmt: skip
        return now

    def _score(
        self, path: Path, mtime_ns: int, det: LoadedDetector, since: float | None = None
    ) -> list[Window]:
        """Windows of one recording (``since``: only those ending after it).

        Raises:
            AudioError: the file cannot be read or holds no samples; anything else the
                scoring raises (the caller marks the file failed).
        """
        wave, _ = load_audio(path, sr=det.sample_rate)
        if wave.size == 0:
            raise AudioError(f"audio file {path} contains no samples")
        duration = wave.shape[0] / det.sample_rate
        end = self._recording_end(path, mtime_ns)
        if self.cfg.mode == "file":
            score = float(det.score_waveforms([wave], self.machine, self.section)[0])
            return [Window(end, 0.0, duration, score, str(path), wave)]
        stream = self.new_stream(det.sample_rate)
        events = stream.push(wave) + stream.flush()
        sr = det.sample_rate
        return [
            Window(
                end - timedelta(seconds=duration - e.t_end),
                e.t_start,
                e.t_end,
                e.score,
                str(path),
                wave[round(e.t_start * sr) : round(e.t_end * sr)],
            )
            for e in events
            if since is None or e.t_end > since + 1e-9
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
            windows = [  # a stream's anomalous windows carry their audio (kept for the alarm)
                Window(now, e.t_start, e.t_end, e.score, source=self.name, wave=e.wave)
                for e in events
            ]
            sink(self, det, windows, None)


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
