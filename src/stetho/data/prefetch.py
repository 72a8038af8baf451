"""Decode audio files in worker threads (or processes) while the caller runs the model.

Scoring a folder is a loop of *decode + resample* (soundfile, soxr; numpy) and *embed* (torch). With
``num_workers > 0`` the next files are decoded while the caller embeds the current ones, so the two
overlap::

    for i, wave, error in decode_files(paths, 32000, num_workers=2):
        ...   # in input order; ``error`` is the AudioError message of an unreadable file

Workers are threads by default: libsndfile and soxr release the GIL, a thread starts in
microseconds and hands its waveform over without a copy. Measured on 2 cores (64 clips of 10 s,
16 → 32 kHz): 2 threads decode 435–508 clips/s, decoding in the caller 276–280, and two
DataLoader worker processes 196–198 (start-up plus pickling each waveform through a pipe).
``executor="process"`` keeps worker processes for loaders that hold the GIL (pure-Python
decoders). ``num_workers=0`` decodes in the calling process (the behaviour of stetho before this
module). The end-to-end speed-up is in ``docs/benchmarks.md`` (folder scoring).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stetho.data.audio import AudioError, load_audio

__all__ = ["Decoded", "Executor", "WaveLoader", "decode_files"]

#: ``loader(path, sample_rate) -> (N,) float32``; must be picklable for spawned workers.
WaveLoader = Callable[[Path, int], np.ndarray]
#: ``(index in the input, waveform or None, AudioError message or None)``.
Decoded = tuple[int, np.ndarray | None, str | None]
#: Where ``num_workers > 0`` decode: threads (default) or DataLoader worker processes.
Executor = Literal["thread", "process"]


def _default_loader(path: Path, sample_rate: int) -> np.ndarray:
    wave, _ = load_audio(path, sr=sample_rate)
    return wave


class _DecodeDataset:
    """Map-style dataset: item ``i`` = the decoded file ``paths[i]`` (errors as messages)."""

    def __init__(self, paths: Sequence[Path], sample_rate: int, loader: WaveLoader) -> None:
        self.paths = list(paths)
        self.sample_rate = sample_rate
        self.loader = loader

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Decoded:
        path = self.paths[i]
        try:
            wave = np.ascontiguousarray(self.loader(path, self.sample_rate), dtype=np.float32)
            if not wave.flags.writeable:  # e.g. a read-only cache entry: hand out a copy
                wave = wave.copy()
        except AudioError as err:
            return i, None, str(err)
        if wave.ndim != 1:
            raise ValueError(f"{path}: the loader returned shape {wave.shape}, expected (N,)")
        if wave.size == 0:
            return i, None, f"audio file {path} contains no samples"
        return i, wave, None


def _identity(item: Any) -> Any:
    return item


def decode_files(
    paths: Sequence[str | os.PathLike[str]],
    sample_rate: int,
    *,
    num_workers: int = 0,
    loader: WaveLoader | None = None,
    prefetch: int = 8,
    executor: Executor = "thread",
) -> Iterator[Decoded]:
    """Decode (and resample) audio files, in input order, optionally in parallel workers.

    Args:
        paths: Audio files.
        sample_rate: Rate to resample to.
        num_workers: Worker threads or processes (0 = decode in this process, one file at a
            time).
        loader: ``loader(path, sample_rate) -> (N,) float32``; default
            :func:`stetho.data.load_audio` (channel 0, soxr HQ). Must be picklable for
            ``executor="process"``.
        prefetch: Files each worker decodes ahead of the consumer (bounds the memory held).
        executor: ``"thread"`` (default; decoders that release the GIL) or ``"process"``
            (a :class:`torch.utils.data.DataLoader` with worker processes).

    Yields:
        ``(i, wave, None)`` for a decoded file, ``(i, None, message)`` for one that raised
        :class:`~stetho.data.AudioError` or holds no samples. Other exceptions propagate.
    """
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if executor not in ("thread", "process"):
        raise ValueError(f"executor must be 'thread' or 'process', got {executor!r}")
    dataset = _DecodeDataset([Path(p) for p in paths], sample_rate, loader or _default_loader)
    if num_workers == 0 or len(dataset) <= 1:
        for i in range(len(dataset)):
            yield dataset[i]
        return
    workers = min(num_workers, len(dataset))
    if executor == "thread":
        yield from _threaded(dataset, workers, ahead=workers * max(1, prefetch))
        return
    from torch.utils.data import DataLoader

    yield from DataLoader(
        dataset,  # type: ignore[arg-type]  # a map-style dataset by protocol
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        collate_fn=_identity,  # keep numpy arrays (no tensor conversion, no extra copy)
        prefetch_factor=max(1, prefetch),
        persistent_workers=False,
    )


def _threaded(dataset: _DecodeDataset, workers: int, ahead: int) -> Iterator[Decoded]:
    """Items of ``dataset`` in order, at most ``ahead`` decoded or in flight at once."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix="stetho-decode")
    pending: deque[Future[Decoded]] = deque()
    try:
        nxt = 0
        while nxt < len(dataset) or pending:
            while nxt < len(dataset) and len(pending) < ahead:
                pending.append(pool.submit(dataset.__getitem__, nxt))
                nxt += 1
            yield pending.popleft().result()
    finally:  # also when the consumer stops early: drop what is queued, do not wait for it
        pool.shutdown(wait=False, cancel_futures=True)
